/*-------------------------------------------------------------------------
 *
 * maileroo_account.c
 *		Sending accounts: the validator of the maileroo_fdw foreign-data
 *		wrapper, and the lookups that turn an account name (or a sender
 *		domain) into the URL, key and limits a request uses.
 *
 * Design notes:
 *
 * - An account is a FOREIGN SERVER of the handler-less wrapper maileroo_fdw,
 *   the way dblink and postgres_fdw keep credentials.  Server options are
 *   not secret (pg_foreign_server is readable by every role): api_url,
 *   domains, rate_limit, burst, concurrency, and the names of the files
 *   api_key_file and webhook_secret_file.  Secrets live in user mappings
 *   (api_key, webhook_secret): pg_user_mapping is readable by superusers
 *   only, and the pg_user_mappings view shows options to a role only for
 *   its own mapping on a server it owns.
 *
 * - Which mapping: the key for a send is the api_key of the sending role's
 *   mapping, else of the PUBLIC mapping (postgres_fdw's order), else the
 *   server's api_key_file.  A webhook comes from Maileroo, not from a role,
 *   so the webhook secret is the account's: the PUBLIC mapping's
 *   webhook_secret, else webhook_secret_file.
 *
 * - Nothing is cached but the list of accounts and their domains (rebuilt
 *   when pg_foreign_server changes): secrets are read from the catalog or
 *   the file on every lookup, so a rotated key is used by the next request.
 *
 * - A key file must be a regular file owned by the server's OS user with no
 *   access for group or other (as PostgreSQL demands of its TLS key); the
 *   file options may be set by superusers only, since the file is read with
 *   the server's own rights.  Trailing whitespace (the newline an editor
 *   adds) is dropped.
 *
 * - No message quotes a secret, and the validator never echoes an option's
 *   value for the secret options.
 *
 * src/maileroo_account.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_account.h"

#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>
#include <curl/curl.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/reloptions.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(maileroo_fdw_validator);

/* Where an option may appear. */
typedef struct MrOption
{
	const char *name;
	Oid			context;		/* catalog the option belongs to */
	bool		secret;			/* never quote its value */
} MrOption;

static const MrOption mr_options[] = {
	{"api_url", ForeignServerRelationId, false},
	{"domains", ForeignServerRelationId, false},
	{"rate_limit", ForeignServerRelationId, false},
	{"burst", ForeignServerRelationId, false},
	{"concurrency", ForeignServerRelationId, false},
	{"api_key_file", ForeignServerRelationId, false},
	{"webhook_secret_file", ForeignServerRelationId, false},
	{"api_key", UserMappingRelationId, true},
	{"webhook_secret", UserMappingRelationId, true},
	{NULL, InvalidOid, false}
};

/* The cached list of accounts (for the lookup by domain). */
typedef struct MrCachedAccount
{
	Oid			serverid;
	char	   *name;
	List	   *domains;
} MrCachedAccount;

static MemoryContext mr_account_cxt = NULL;
static List *mr_accounts = NIL;
static bool mr_accounts_valid = false;
static bool mr_callbacks_registered = false;

/* ----------------------------------------------------------------
 * Option values
 * ----------------------------------------------------------------
 */

/* The comma-separated valid options of a catalog, for a hint. */
static char *
mr_valid_options(Oid context)
{
	StringInfoData buf;
	const MrOption *o;

	initStringInfo(&buf);
	for (o = mr_options; o->name; o++)
		if (o->context == context)
			appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", o->name);
	return buf.data;
}

/*
 * Check api_url and return it without trailing slashes.  libcurl's own URL
 * parser judges it; we add that it is http(s), names a host, and has no
 * query, fragment or whitespace (paths are appended to it).
 */
static char *
mr_check_api_url(const char *value)
{
	CURLU	   *u;
	CURLUcode	rc;
	char	   *host = NULL;
	char	   *url = pstrdup(value);
	size_t		len = strlen(url);
	const char *p;

	for (p = value; *p; p++)
		if ((unsigned char) *p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid api_url \"%s\"", value),
					 errdetail("It may not contain whitespace, control characters, a query or a fragment.")));
	if (pg_strncasecmp(value, "https://", 8) != 0 &&
		pg_strncasecmp(value, "http://", 7) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid api_url \"%s\"", value),
				 errdetail("It must start with https:// or http://.")));

	u = curl_url();
	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	rc = curl_url_set(u, CURLUPART_URL, value, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(u, CURLUPART_HOST, &host, 0);
	if (rc != CURLUE_OK || host == NULL || host[0] == '\0')
	{
		char	   *why = pstrdup(rc != CURLUE_OK ? curl_url_strerror(rc) : "no host");

		if (host)
			curl_free(host);
		curl_url_cleanup(u);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid api_url \"%s\"", value),
				 errdetail_internal("%s", why)));
	}
	curl_free(host);
	curl_url_cleanup(u);

	while (len > 0 && url[len - 1] == '/')
		url[--len] = '\0';
	return url;
}

/* Check a domains option and return its lower-cased domains. */
static List *
mr_parse_domains(const char *value)
{
	List	   *result = NIL;
	char	   *copy = pstrdup(value);
	char	   *item = copy;

	for (;;)
	{
		char	   *comma = strchr(item, ',');
		char	   *end;
		char	   *p;

		if (comma)
			*comma = '\0';
		while (*item == ' ' || *item == '\t')
			item++;
		end = item + strlen(item);
		while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		for (p = item; *p; p++)
		{
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
				  (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
				break;
			*p = pg_ascii_tolower((unsigned char) *p);
		}
		if (*p != '\0' || item[0] == '\0' || strchr(item, '.') == NULL ||
			item[0] == '.' || item[0] == '-' || end[-1] == '.' || end[-1] == '-' ||
			strstr(item, "..") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid domain \"%s\" in domains", item),
					 errdetail("domains is a comma-separated list of sender domains such as 'example.com, news.example.com'.")));
		result = lappend(result, pstrdup(item));
		if (comma == NULL)
			break;
		item = comma + 1;
	}
	return result;
}

/* A non-negative number (rate_limit). */
static double
mr_parse_rate(const char *name, const char *value)
{
	char	   *end;
	double		d;

	errno = 0;
	d = strtod(value, &end);
	if (end == value || *end != '\0' || errno != 0 || isnan(d) ||
		d < 0 || d > MAILEROO_MAX_RATE_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for %s: \"%s\"", name, value),
				 errdetail("%s must be a number of messages per second between 0 (no limit) and %.0f.",
						   name, MAILEROO_MAX_RATE_LIMIT)));
	return d;
}

/* An integer between 1 and max (burst, concurrency). */
static int
mr_parse_count(const char *name, const char *value, int max)
{
	char	   *end;
	long		n;

	errno = 0;
	n = strtol(value, &end, 10);
	if (end == value || *end != '\0' || errno != 0 || n < 1 || n > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for %s: \"%s\"", name, value),
				 errdetail("%s must be a whole number between 1 and %d.", name, max)));
	return (int) n;
}

/*
 * Check a secret's text: not empty, not too long, and for a key no control
 * character (it goes into an HTTP header).  what names the option; the
 * value is never quoted.
 */
static void
mr_check_secret(const char *value, const char *what, bool is_key)
{
	const char *p;
	size_t		len = strlen(value);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is empty", what)));
	if (len > MAILEROO_SECRET_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is longer than %d bytes", what, MAILEROO_SECRET_MAX_BYTES)));
	if (is_key)
		for (p = value; *p; p++)
			if ((unsigned char) *p < 0x20 || *p == 0x7f)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s contains a control character", what),
						 errdetail("An HTTP header cannot carry it.")));
}

/*
 * Read a secret from a file: a regular file owned by the server's OS user,
 * with no access for group or other.  option names the server option (for
 * messages).  Returns the content without trailing whitespace, palloc'd;
 * the read buffer is wiped.
 */
static char *
mr_read_secret_file(const char *path, const char *option, bool is_key)
{
	int			fd;
	struct stat st;
	char		buf[MAILEROO_SECRET_MAX_BYTES + 2];
	ssize_t		n;
	size_t		len;
	char	   *result;

	if (!is_absolute_path(path))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be an absolute path", option)));
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open %s \"%s\": %m", option, path)));
	if (fstat(fd, &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat %s \"%s\": %m", option, path)));
	if (!S_ISREG(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s \"%s\" is not a regular file", option, path)));
	if (st.st_uid != geteuid())
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s \"%s\" is not owned by the database server's user", option, path),
				 errdetail("It is owned by user id %u; the server runs as user id %u.",
						   (unsigned) st.st_uid, (unsigned) geteuid()),
				 errhint("Give the file to the user the server runs as, with mode 0600.")));
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s \"%s\" is accessible to other users", option, path),
				 errdetail("Its mode is %04o; group and other must have no access.",
						   (unsigned) (st.st_mode & 07777)),
				 errhint("Run chmod 600 on the file.")));

	len = 0;
	while (len < sizeof(buf) - 1 &&
		   (n = read(fd, buf + len, sizeof(buf) - 1 - len)) != 0)
	{
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			explicit_bzero(buf, sizeof(buf));
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read %s \"%s\": %m", option, path)));
		}
		len += n;
	}
	CloseTransientFile(fd);
	buf[len] = '\0';
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
					   buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		buf[--len] = '\0';
	if (strlen(buf) != len)
	{
		explicit_bzero(buf, sizeof(buf));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" contains a zero byte", option, path)));
	}
	PG_TRY();
	{
		mr_check_secret(buf, is_key ? "the key in api_key_file" : "the secret in webhook_secret_file",
						is_key);
	}
	PG_CATCH();
	{
		explicit_bzero(buf, sizeof(buf));
		PG_RE_THROW();
	}
	PG_END_TRY();
	result = pstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return result;
}

/* Overwrite the string values of an option list (user mapping options). */
static void
mr_wipe_options(List *options)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);

		if (def->arg && IsA(def->arg, String))
		{
			char	   *s = strVal(def->arg);

			explicit_bzero(s, strlen(s));
		}
	}
}

/* ----------------------------------------------------------------
 * The validator
 * ----------------------------------------------------------------
 */

/*
 * maileroo_fdw_validator(options text[], catalog oid)
 *
 * Called by CREATE/ALTER FOREIGN DATA WRAPPER, SERVER and USER MAPPING with
 * the complete new option list.  Refuses unknown options (listing the valid
 * ones), malformed values, and file options set by a non-superuser; reads a
 * named key file once so that a bad file is reported now rather than at the
 * first send.
 */
Datum
maileroo_fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));
	Oid			catalog = PG_GETARG_OID(1);
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);
		const MrOption *o;
		const char *value;

		for (o = mr_options; o->name; o++)
			if (o->context == catalog && strcmp(o->name, def->defname) == 0)
				break;
		if (o->name == NULL)
		{
			char	   *valid = mr_valid_options(catalog);
			bool		is_secret = strcmp(def->defname, "api_key") == 0 ||
				strcmp(def->defname, "webhook_secret") == 0;

			mr_wipe_options(options);
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", def->defname),
					 is_secret && catalog == ForeignServerRelationId ?
					 errdetail("Secrets belong in a user mapping, which only superusers can read.") : 0,
					 valid[0] ?
					 errhint("Valid options in this context are: %s.", valid) :
					 errhint("There are no valid options in this context.")));
		}

		value = defGetString(def);
		if (strcmp(def->defname, "api_url") == 0)
			(void) mr_check_api_url(value);
		else if (strcmp(def->defname, "domains") == 0)
			(void) mr_parse_domains(value);
		else if (strcmp(def->defname, "rate_limit") == 0)
			(void) mr_parse_rate(def->defname, value);
		else if (strcmp(def->defname, "burst") == 0)
			(void) mr_parse_count(def->defname, value, MAILEROO_MAX_BURST);
		else if (strcmp(def->defname, "concurrency") == 0)
			(void) mr_parse_count(def->defname, value, MAILEROO_MAX_CONCURRENCY);
		else if (strcmp(def->defname, "api_key_file") == 0 ||
				 strcmp(def->defname, "webhook_secret_file") == 0)
		{
			char	   *secret;

			if (!superuser())
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("only superusers may set %s", def->defname),
						 errdetail("The file is read with the database server's own rights.")));
			secret = mr_read_secret_file(value, def->defname,
										 strcmp(def->defname, "api_key_file") == 0);
			explicit_bzero(secret, strlen(secret));
		}
		else if (strcmp(def->defname, "api_key") == 0 ||
				 strcmp(def->defname, "webhook_secret") == 0)
		{
			PG_TRY();
			{
				mr_check_secret(value, def->defname,
								strcmp(def->defname, "api_key") == 0);
			}
			PG_CATCH();
			{
				mr_wipe_options(options);
				PG_RE_THROW();
			}
			PG_END_TRY();
		}
	}
	mr_wipe_options(options);
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------
 * The list of accounts
 * ----------------------------------------------------------------
 */

static void
mr_accounts_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	mr_accounts_valid = false;
}

/* The wrapper's OID, or InvalidOid when the extension is not installed. */
static Oid
mr_fdw_oid(void)
{
	return get_foreign_data_wrapper_oid(MAILEROO_FDW_NAME, true);
}

static int
mr_cached_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(((MrCachedAccount *) lfirst(a))->name,
				  ((MrCachedAccount *) lfirst(b))->name);
}

/* Rebuild the list of accounts from pg_foreign_server when stale. */
static void
mr_accounts_load(void)
{
	Oid			fdwid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	MemoryContext old;

	if (!mr_callbacks_registered)
	{
		CacheRegisterSyscacheCallback(FOREIGNSERVEROID, mr_accounts_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(FOREIGNDATAWRAPPEROID, mr_accounts_invalidate, (Datum) 0);
		mr_callbacks_registered = true;
	}
	if (mr_accounts_valid)
		return;

	if (mr_account_cxt == NULL)
		mr_account_cxt = AllocSetContextCreate(CacheMemoryContext, "maileroo accounts",
											   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(mr_account_cxt);
	mr_accounts = NIL;
	/* Set first: an invalidation during the scan makes the next call reload. */
	mr_accounts_valid = true;

	fdwid = mr_fdw_oid();
	if (!OidIsValid(fdwid))
		return;

	rel = table_open(ForeignServerRelationId, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_foreign_server srv = (Form_pg_foreign_server) GETSTRUCT(tup);
		ForeignServer *fs;
		MrCachedAccount *a;
		ListCell   *lc;

		if (srv->srvfdw != fdwid)
			continue;
		fs = GetForeignServer(srv->oid);
		old = MemoryContextSwitchTo(mr_account_cxt);
		a = palloc0(sizeof(MrCachedAccount));
		a->serverid = fs->serverid;
		a->name = pstrdup(fs->servername);
		foreach(lc, fs->options)
		{
			DefElem    *def = (DefElem *) lfirst(lc);

			if (strcmp(def->defname, "domains") == 0)
				a->domains = mr_parse_domains(defGetString(def));
		}
		mr_accounts = lappend(mr_accounts, a);
		MemoryContextSwitchTo(old);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	/* In name order, so that messages naming several do not vary. */
	list_sort(mr_accounts, mr_cached_cmp);
}

static int
mr_name_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp((const char *) lfirst(a), (const char *) lfirst(b));
}

/* See maileroo_account.h. */
List *
maileroo_account_names(void)
{
	List	   *names = NIL;
	ListCell   *lc;

	mr_accounts_load();
	foreach(lc, mr_accounts)
		names = lappend(names, pstrdup(((MrCachedAccount *) lfirst(lc))->name));
	list_sort(names, mr_name_cmp);
	return names;
}

/* ----------------------------------------------------------------
 * Lookups
 * ----------------------------------------------------------------
 */

/* The api_key (or webhook_secret) of one user mapping, or NULL. */
static char *
mr_mapping_secret(Oid roleid, Oid serverid, const char *option)
{
	HeapTuple	tp;
	Datum		datum;
	bool		isnull;
	List	   *options;
	ListCell   *lc;
	char	   *result = NULL;

	tp = SearchSysCache2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(roleid),
						 ObjectIdGetDatum(serverid));
	if (!HeapTupleIsValid(tp))
		return NULL;
	datum = SysCacheGetAttr(USERMAPPINGUSERSERVER, tp,
							Anum_pg_user_mapping_umoptions, &isnull);
	options = isnull ? NIL : untransformRelOptions(datum);
	ReleaseSysCache(tp);

	foreach(lc, options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);

		if (strcmp(def->defname, option) == 0)
			result = pstrdup(defGetString(def));
	}
	mr_wipe_options(options);
	list_free_deep(options);
	return result;
}

/* See maileroo_account.h. */
MailerooAccount *
maileroo_account_get(const char *name, Oid roleid, int flags, bool missing_ok)
{
	ForeignServer *fs = GetForeignServerByName(name, true);
	Oid			fdwid = mr_fdw_oid();
	MailerooAccount *acct;
	ListCell   *lc;
	char	   *key_file = NULL;
	char	   *secret_file = NULL;

	if (fs == NULL || fs->fdwid != fdwid || !OidIsValid(fdwid))
	{
		if (missing_ok)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sending account \"%s\" does not exist", name),
				 errhint("Accounts are the foreign servers of the %s foreign-data wrapper.",
						 MAILEROO_FDW_NAME)));
	}

	acct = palloc0(sizeof(MailerooAccount));
	acct->serverid = fs->serverid;
	acct->name = pstrdup(fs->servername);
	acct->api_url = MAILEROO_DEFAULT_API_URL;
	foreach(lc, fs->options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);
		const char *v = defGetString(def);

		if (strcmp(def->defname, "api_url") == 0)
			acct->api_url = mr_check_api_url(v);
		else if (strcmp(def->defname, "domains") == 0)
			acct->domains = mr_parse_domains(v);
		else if (strcmp(def->defname, "rate_limit") == 0)
			acct->rate_limit = mr_parse_rate(def->defname, v);
		else if (strcmp(def->defname, "burst") == 0)
			acct->burst = mr_parse_count(def->defname, v, MAILEROO_MAX_BURST);
		else if (strcmp(def->defname, "concurrency") == 0)
			acct->concurrency = mr_parse_count(def->defname, v, MAILEROO_MAX_CONCURRENCY);
		else if (strcmp(def->defname, "api_key_file") == 0)
			key_file = pstrdup(v);
		else if (strcmp(def->defname, "webhook_secret_file") == 0)
			secret_file = pstrdup(v);
	}

	if (flags & MR_ACCOUNT_KEY)
	{
		if (OidIsValid(roleid))
			acct->api_key = mr_mapping_secret(roleid, fs->serverid, "api_key");
		if (acct->api_key == NULL)
			acct->api_key = mr_mapping_secret(InvalidOid, fs->serverid, "api_key");
		if (acct->api_key == NULL && key_file != NULL)
			acct->api_key = mr_read_secret_file(key_file, "api_key_file", true);
		if (acct->api_key == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("sending account \"%s\" has no api_key", acct->name),
					 OidIsValid(roleid) ?
					 errdetail("Neither the user mapping for role \"%s\" nor the one for PUBLIC sets api_key, and the server sets no api_key_file.",
							   GetUserNameFromId(roleid, true) ? GetUserNameFromId(roleid, true) : "?") :
					 errdetail("The user mapping for PUBLIC sets no api_key, and the server sets no api_key_file."),
					 errhint("As a superuser: CREATE USER MAPPING FOR PUBLIC SERVER %s OPTIONS (api_key '...'), or ALTER SERVER %s OPTIONS (ADD api_key_file '/path/to/key').",
							 quote_identifier(acct->name), quote_identifier(acct->name))));
	}
	if (flags & MR_ACCOUNT_SECRET)
	{
		acct->webhook_secret = mr_mapping_secret(InvalidOid, fs->serverid, "webhook_secret");
		if (acct->webhook_secret == NULL && secret_file != NULL)
			acct->webhook_secret = mr_read_secret_file(secret_file, "webhook_secret_file", false);
	}
	return acct;
}

/* See maileroo_account.h. */
MailerooAccount *
maileroo_account_try_get_key(const char *name, Oid roleid, char **problem)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	MailerooAccount *volatile acct = NULL;

	*problem = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		acct = maileroo_account_get(name, roleid, MR_ACCOUNT_KEY, false);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*problem = edata->message;
		acct = NULL;
	}
	PG_END_TRY();
	return acct;
}

/* Raise ERROR (42501) unless roleid holds USAGE on the server. */
static void
mr_check_usage(Oid serverid, const char *name, Oid roleid)
{
	if (mr_server_aclcheck(serverid, roleid, ACL_USAGE) != ACLCHECK_OK)
	{
		const char *role = GetUserNameFromId(roleid, false);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for sending account \"%s\"", name),
				 errdetail("Role \"%s\" lacks USAGE on the foreign server \"%s\".",
						   role, name),
				 errhint("GRANT USAGE ON FOREIGN SERVER %s TO %s;",
						 quote_identifier(name), quote_identifier(role))));
	}
}

/* See maileroo_account.h. */
void
maileroo_account_check_usage(const MailerooAccount *acct, Oid roleid)
{
	mr_check_usage(acct->serverid, acct->name, roleid);
}

/* See maileroo_account.h. */
char *
maileroo_account_choose(const char *given, const char *sender_domain, Oid roleid)
{
	if (given != NULL)
	{
		ForeignServer *fs = GetForeignServerByName(given, true);
		Oid			fdwid = mr_fdw_oid();

		if (fs == NULL || !OidIsValid(fdwid) || fs->fdwid != fdwid)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("sending account \"%s\" does not exist", given),
					 errhint("Accounts are the foreign servers of the %s foreign-data wrapper.",
							 MAILEROO_FDW_NAME)));
		mr_check_usage(fs->serverid, fs->servername, roleid);
		return pstrdup(fs->servername);
	}
	else
	{
		ListCell   *lc;
		MrCachedAccount *match = NULL;
		MrCachedAccount *second = NULL;

		mr_accounts_load();
		foreach(lc, mr_accounts)
		{
			MrCachedAccount *a = (MrCachedAccount *) lfirst(lc);
			ListCell   *dc;

			foreach(dc, a->domains)
				if (sender_domain && strcmp((char *) lfirst(dc), sender_domain) == 0)
				{
					if (match == NULL)
						match = a;
					else if (second == NULL)
						second = a;
					break;
				}
		}
		if (second != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_AMBIGUOUS_PARAMETER),
					 errmsg("sender domain \"%s\" is served by more than one sending account",
							sender_domain),
					 errdetail("Accounts \"%s\" and \"%s\" both list it in domains.",
							   match->name, second->name),
					 errhint("Pass account => 'name', or list the domain on one account only.")));
		if (match == NULL && list_length(mr_accounts) == 1 &&
			(sender_domain == NULL ||
			 ((MrCachedAccount *) linitial(mr_accounts))->domains == NIL))
			match = (MrCachedAccount *) linitial(mr_accounts);
		if (match == NULL && sender_domain == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("no sending account given"),
					 mr_accounts == NIL ?
					 errdetail("There is no sending account.") :
					 errdetail("There are %d sending accounts.", list_length(mr_accounts)),
					 errhint("Pass account => 'name'.")));
		if (match == NULL)
		{
			if (mr_accounts == NIL)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("no sending account serves sender domain \"%s\"",
								sender_domain ? sender_domain : ""),
						 errdetail("There is no sending account."),
						 errhint("As a superuser: CREATE SERVER name FOREIGN DATA WRAPPER %s OPTIONS (domains '%s'); then CREATE USER MAPPING FOR PUBLIC SERVER name OPTIONS (api_key '...').",
								 MAILEROO_FDW_NAME, sender_domain ? sender_domain : "")));
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("no sending account serves sender domain \"%s\"",
							sender_domain ? sender_domain : ""),
					 errhint("Pass account => 'name', or add the domain to an account: ALTER SERVER name OPTIONS (ADD domains '%s').",
							 sender_domain ? sender_domain : "")));
		}
		mr_check_usage(match->serverid, match->name, roleid);
		return pstrdup(match->name);
	}
}

/* See maileroo_account.h. */
void
maileroo_account_wipe(MailerooAccount *acct)
{
	if (acct == NULL)
		return;
	if (acct->api_key)
	{
		explicit_bzero(acct->api_key, strlen(acct->api_key));
		pfree(acct->api_key);
		acct->api_key = NULL;
	}
	if (acct->webhook_secret)
	{
		explicit_bzero(acct->webhook_secret, strlen(acct->webhook_secret));
		pfree(acct->webhook_secret);
		acct->webhook_secret = NULL;
	}
}
