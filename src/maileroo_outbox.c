/*-------------------------------------------------------------------------
 *
 * maileroo_outbox.c
 *		maileroo_send, maileroo_send_template and maileroo_cancel: queueing
 *		mail in maileroo_outbox inside the caller's transaction.
 *
 * The outbox grants nothing to PUBLIC, yet a role that may EXECUTE
 * maileroo_send must be able to queue without any privilege on the table.
 * The functions are therefore plain C functions (not SECURITY DEFINER, so
 * the caller's identity is what GetUserId() returns) that record the caller
 * in queued_by and then run their one statement as the owner of the outbox,
 * through SetUserIdAndSecContext with SECURITY_LOCAL_USERID_CHANGE |
 * SECURITY_RESTRICTED_OPERATION, the way PostgreSQL runs maintenance
 * commands as a table's owner.  The statement is fixed and parameterised:
 * the caller controls only the values.
 *
 * The request builder chooses the sending account (by the account argument
 * or the sender's domain) and checks the caller's USAGE on it; the row
 * records the account's name, never its key.
 *
 * After the row is written, maileroo_outbox_wake_at_commit() (in
 * maileroo_wakeup.c) arranges for the delivery worker to be woken when the
 * transaction commits.  A rolled-back transaction leaves no row behind and
 * wakes nobody.
 *
 * src/maileroo_outbox.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo.h"
#include "datatype/timestamp.h"
#include "maileroo_request.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

/* The outbox of the schema the calling function lives in, and its plans. */
typedef struct MrOutboxCache
{
	Oid			relid;
	SPIPlanPtr	insert_plan;	/* plain INSERT, for generated ids */
	SPIPlanPtr	insert_given_plan;	/* ON CONFLICT DO NOTHING, for given ids */
	SPIPlanPtr	cancel_plan;
} MrOutboxCache;

static MrOutboxCache mr_cache;

/*
 * SPI_prepare, raising on failure.  The statements run as the outbox owner
 * and the caller controls search_path (a cached plan is analysed again
 * whenever search_path changes), so they name every table, type and
 * operator with its schema: nothing resolves through a schema the caller
 * could have planted ahead of pg_catalog.
 */
static SPIPlanPtr
mr_prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	return plan;
}

/*
 * Find maileroo_outbox next to the called function; returns its OID and
 * owner.  Prepares the plans when the table is new to this backend (after
 * CREATE EXTENSION, or DROP and CREATE again).  Must be called with SPI
 * connected.
 */
static Oid
mr_outbox_lookup(FunctionCallInfo fcinfo, Oid *owner)
{
	Oid			nsp = get_func_namespace(fcinfo->flinfo->fn_oid);
	Oid			relid = get_relname_relid("maileroo_outbox", nsp);
	HeapTuple	tup;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table maileroo_outbox is missing from schema \"%s\"",
						get_namespace_name(nsp)),
				 errhint("Recreate the extension with DROP EXTENSION maileroo; CREATE EXTENSION maileroo.")));

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	*owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);

	if (relid != mr_cache.relid)
	{
		const char *qname = quote_qualified_identifier(get_namespace_name(nsp),
													   "maileroo_outbox");
		Oid			insert_args[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, NAMEOID, TEXTOID, TEXTOID};
		Oid			cancel_args[3] = {TEXTOID, NAMEOID, BOOLOID};
		char	   *sql;
		SPIPlanPtr	insert_plan,
					insert_given_plan,
					cancel_plan;

		/*
		 * A generated reference_id (96 random bits) cannot collide: it skips
		 * the speculative insertion that a given one needs.
		 */
		sql = psprintf("INSERT INTO %s (reference_id, endpoint, request, status, queued_by, last_error, account)"
					   " VALUES ($1, $2, $3::pg_catalog.json, $4, $5, $6, $7)", qname);
		insert_plan = mr_prepare(sql, 7, insert_args);
		sql = psprintf("%s ON CONFLICT (reference_id) DO NOTHING", sql);
		insert_given_plan = mr_prepare(sql, 7, insert_args);
		sql = psprintf("UPDATE %s SET status = 'cancelled', lease_until = NULL,"
					   " last_error = 'cancelled by '::pg_catalog.text OPERATOR(pg_catalog.||) $2::pg_catalog.text"
					   " WHERE reference_id OPERATOR(pg_catalog.=) $1"
					   " AND (status::pg_catalog.text OPERATOR(pg_catalog.=) 'queued'::pg_catalog.text"
					   "   OR status::pg_catalog.text OPERATOR(pg_catalog.=) 'retrying'::pg_catalog.text)"
					   " AND ($3 OR queued_by OPERATOR(pg_catalog.=) $2)", qname);
		cancel_plan = mr_prepare(sql, 3, cancel_args);
		SPI_keepplan(insert_plan);
		SPI_keepplan(insert_given_plan);
		SPI_keepplan(cancel_plan);

		if (mr_cache.insert_plan)
			SPI_freeplan(mr_cache.insert_plan);
		if (mr_cache.insert_given_plan)
			SPI_freeplan(mr_cache.insert_given_plan);
		if (mr_cache.cancel_plan)
			SPI_freeplan(mr_cache.cancel_plan);
		mr_cache.insert_plan = insert_plan;
		mr_cache.insert_given_plan = insert_given_plan;
		mr_cache.cancel_plan = cancel_plan;
		mr_cache.relid = relid;
	}
	return relid;
}

/*
 * Run a cached plan as the outbox owner.  Returns SPI_processed.
 */
static uint64
mr_run_as_owner(SPIPlanPtr plan, Oid owner, Datum *args, const char *nulls,
				int expected)
{
	Oid			save_userid;
	int			save_sec;
	volatile int ret = 0;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		ret = SPI_execute_plan(plan, args, nulls, false, 0);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_END_TRY();
	if (ret != expected)
		elog(ERROR, "outbox statement failed: %s", SPI_result_code_string(ret));
	return SPI_processed;
}

/* See maileroo.h. */
uint64
maileroo_run_as_owner(SPIPlanPtr plan, Oid owner, Datum *args,
					  const char *nulls, int expected)
{
	return mr_run_as_owner(plan, owner, args, nulls, expected);
}

/* See maileroo.h. */
Oid
maileroo_relation_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Validate and queue one message (is_template picks the endpoint).  Returns
 * the reference_id.  Raises ERROR on invalid arguments (from the request
 * builder) and when a given reference_id was used before.
 */
static Datum
mr_queue(FunctionCallInfo fcinfo, bool is_template)
{
	MailerooRequest *req;
	Oid			owner;
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', 'n', ' '};
	NameData	queued_by;
	uint64		n;

	req = maileroo_request_from_args(fcinfo, is_template);

	namestrcpy(&queued_by, GetUserNameFromId(GetUserId(), false));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	(void) mr_outbox_lookup(fcinfo, &owner);

	args[0] = CStringGetTextDatum(req->reference_id);
	args[1] = CStringGetTextDatum(req->path);
	args[2] = CStringGetTextDatum(req->body);
	args[3] = CStringGetTextDatum(req->all_suppressed ? "suppressed" : "queued");
	args[4] = NameGetDatum(&queued_by);
	if (req->all_suppressed)
	{
		args[5] = CStringGetTextDatum("not sent: every recipient is on the suppression list");
		nulls[5] = ' ';
	}
	args[6] = CStringGetTextDatum(req->account);
	/* Argument 13 is reference_id in both signatures. */
	n = mr_run_as_owner(PG_ARGISNULL(13) ? mr_cache.insert_plan : mr_cache.insert_given_plan,
						owner, args, nulls, SPI_OK_INSERT);
	SPI_finish();

	/*
	 * The row that holds the id may be another role's, which the caller
	 * cannot see: the answer is the same whoever queued it, and says
	 * neither whose it is nor anything about it.
	 */
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("reference_id \"%s\" cannot be used",
						req->reference_id),
				 errdetail("A reference_id given by the caller must not have been used for a queued message before."),
				 errhint("Leave reference_id out to get a new one.")));

	if (!req->all_suppressed)
		maileroo_outbox_wake_at_commit();

	PG_RETURN_TEXT_P(cstring_to_text(req->reference_id));
}

PG_FUNCTION_INFO_V1(maileroo_send);

/* maileroo_send(sender, recipients, subject, html, plain, ...) */
Datum
maileroo_send(PG_FUNCTION_ARGS)
{
	return mr_queue(fcinfo, false);
}

PG_FUNCTION_INFO_V1(maileroo_send_template);

/* maileroo_send_template(sender, recipients, subject, template_id, ...) */
Datum
maileroo_send_template(PG_FUNCTION_ARGS)
{
	return mr_queue(fcinfo, true);
}

PG_FUNCTION_INFO_V1(maileroo_cancel);

/*
 * maileroo_cancel(reference_id): cancel a queued or retrying message.  A
 * role may cancel what it queued; the outbox owner (and any role with its
 * privileges) and superusers may cancel anything.  Returns false when there
 * is no such message the caller may cancel, or when it is being sent or
 * already ended.
 */
Datum
maileroo_cancel(PG_FUNCTION_ARGS)
{
	text	   *ref = PG_GETARG_TEXT_PP(0);
	Oid			caller = GetUserId();
	Oid			owner;
	NameData	who;
	Datum		args[3];
	uint64		n;

	namestrcpy(&who, GetUserNameFromId(caller, false));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	(void) mr_outbox_lookup(fcinfo, &owner);
	args[0] = PointerGetDatum(ref);
	args[1] = NameGetDatum(&who);
	args[2] = BoolGetDatum(superuser_arg(caller) || has_privs_of_role(caller, owner));
	n = mr_run_as_owner(mr_cache.cancel_plan, owner, args, NULL, SPI_OK_UPDATE);
	SPI_finish();
	PG_RETURN_BOOL(n > 0);
}
