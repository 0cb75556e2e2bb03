/*-------------------------------------------------------------------------
 *
 * maileroo.c
 *		Module entry point and the maileroo.* settings.
 *
 * The module can be loaded two ways: through shared_preload_libraries, in
 * which case the delivery worker is registered at server start, or on first
 * use of one of its functions.  Settings are defined here either way.
 *
 * The two secrets (maileroo.api_key, maileroo.webhook_secret) are
 * superuser-only and hidden from SHOW ALL and pg_settings.  Their check hook
 * refuses values coming from ALTER DATABASE/ROLE ... SET and function SET
 * clauses, because those are stored in catalogs (pg_db_role_setting,
 * pg_proc.proconfig) that every role can read.
 *
 * src/maileroo.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

MR_MODULE_MAGIC;

char	   *maileroo_api_key = NULL;
char	   *maileroo_api_url = NULL;
int			maileroo_timeout_ms = MAILEROO_DEFAULT_TIMEOUT_MS;
int			maileroo_connect_timeout_ms = MAILEROO_DEFAULT_CONNECT_TIMEOUT_MS;
char	   *maileroo_webhook_secret = NULL;
int			maileroo_max_attempts = MAILEROO_DEFAULT_MAX_ATTEMPTS;
int			maileroo_concurrency = MAILEROO_DEFAULT_CONCURRENCY;
char	   *maileroo_database_name = NULL;

void		_PG_init(void);

/*
 * Refuse a secret from a place every role can read.  An empty value is
 * always allowed, so a stray setting can be reset.
 */
static bool
check_secret(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;

	switch (source)
	{
		case PGC_S_GLOBAL:
		case PGC_S_DATABASE:
		case PGC_S_USER:
		case PGC_S_DATABASE_USER:
		case PGC_S_TEST:
			GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
			GUC_check_errmsg("maileroo secrets cannot be set per database, per role or per function");
			GUC_check_errdetail("Such settings are stored in pg_db_role_setting or pg_proc, which every role can read.");
			GUC_check_errhint("Set it in postgresql.conf or with ALTER SYSTEM, then reload.");
			return false;
		default:
			return true;
	}
}

/* maileroo.api_url must be an http(s) URL; a trailing slash is dropped. */
static bool
check_api_url(char **newval, void **extra, GucSource source)
{
	char	   *url = *newval;
	size_t		len;

	if (url == NULL)
		return true;
	if (pg_strncasecmp(url, "https://", 8) != 0 &&
		pg_strncasecmp(url, "http://", 7) != 0)
	{
		GUC_check_errdetail("maileroo.api_url must start with https:// or http://.");
		return false;
	}
	len = strlen(url);
	while (len > 0 && url[len - 1] == '/')
		url[--len] = '\0';
	return true;
}

void
_PG_init(void)
{
	DefineCustomStringVariable("maileroo.api_key",
							   "Maileroo sending key.",
							   "Set it in postgresql.conf or with ALTER SYSTEM; it is never shown to other roles.",
							   &maileroo_api_key,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   check_secret, NULL, NULL);

	DefineCustomStringVariable("maileroo.api_url",
							   "Base URL of the Maileroo sending API.",
							   NULL,
							   &maileroo_api_url,
							   MAILEROO_DEFAULT_API_URL,
							   PGC_SUSET,
							   0,
							   check_api_url, NULL, NULL);

	DefineCustomIntVariable("maileroo.timeout",
							"Time allowed for one whole Maileroo API request.",
							NULL,
							&maileroo_timeout_ms,
							MAILEROO_DEFAULT_TIMEOUT_MS,
							1, MAILEROO_MAX_TIMEOUT_MS,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maileroo.connect_timeout",
							"Time allowed to connect to the Maileroo API.",
							NULL,
							&maileroo_connect_timeout_ms,
							MAILEROO_DEFAULT_CONNECT_TIMEOUT_MS,
							1, MAILEROO_MAX_TIMEOUT_MS,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("maileroo.webhook_secret",
							   "Shared secret that signs Maileroo webhooks.",
							   "Set it in postgresql.conf or with ALTER SYSTEM; it is never shown to other roles.",
							   &maileroo_webhook_secret,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   check_secret, NULL, NULL);

	DefineCustomIntVariable("maileroo.max_attempts",
							"Delivery attempts before a queued message is marked failed.",
							NULL,
							&maileroo_max_attempts,
							MAILEROO_DEFAULT_MAX_ATTEMPTS,
							1, MAILEROO_MAX_MAX_ATTEMPTS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("maileroo.concurrency",
							"Requests the delivery worker keeps in flight.",
							NULL,
							&maileroo_concurrency,
							MAILEROO_DEFAULT_CONCURRENCY,
							1, MAILEROO_MAX_CONCURRENCY,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	/*
	 * A PGC_POSTMASTER setting can only be defined while preloading; loaded
	 * later (no static worker to configure) it is merely reported.
	 */
	DefineCustomStringVariable("maileroo.database_name",
							   "Database the preloaded delivery worker serves.",
							   NULL,
							   &maileroo_database_name,
							   "postgres",
							   process_shared_preload_libraries_in_progress ?
							   PGC_POSTMASTER : PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("maileroo");

	maileroo_worker_init();
}

PG_FUNCTION_INFO_V1(maileroo_version);

/* The version of the loaded library, taken from maileroo.control at build. */
Datum
maileroo_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(MAILEROO_VERSION));
}
