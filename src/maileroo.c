/*-------------------------------------------------------------------------
 *
 * maileroo.c
 *		Module entry point and the maileroo.* settings.
 *
 * The module can be loaded two ways: through shared_preload_libraries, in
 * which case the delivery worker is registered at server start, or on first
 * use of one of its functions.  Settings are defined here either way.
 *
 * No setting holds a secret or says where mail goes: PostgreSQL logs every
 * changed setting on reload, and until the library is loaded in a session a
 * maileroo.* setting is a placeholder any role can SHOW.  Keys, webhook
 * secrets and API URLs belong to sending accounts (maileroo_account.c).
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

int			maileroo_timeout_ms = MAILEROO_DEFAULT_TIMEOUT_MS;
int			maileroo_connect_timeout_ms = MAILEROO_DEFAULT_CONNECT_TIMEOUT_MS;
int			maileroo_max_attempts = MAILEROO_DEFAULT_MAX_ATTEMPTS;
int			maileroo_concurrency = MAILEROO_DEFAULT_CONCURRENCY;
char	   *maileroo_database_name = NULL;

void		_PG_init(void);

void
_PG_init(void)
{
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
