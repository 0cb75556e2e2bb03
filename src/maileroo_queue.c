/*-------------------------------------------------------------------------
 *
 * maileroo_queue.c
 *		The delivery worker's statements on maileroo_outbox, run in one
 *		short transaction per step.
 *
 * A step never holds a transaction or a row lock across a network call.  In
 * order, each statement a function of its own:
 *
 *	 1. record: the outcomes of finished requests (one UPDATE ... FROM
 *		unnest of arrays, whatever their number);
 *	 2. requeue orphans: rows still 'sending' after that have no request in
 *		flight (all of them when a worker starts serving the database, else
 *		those whose lease expired) go back to 'retrying';
 *	 3. claim: up to claim_n due rows become 'sending' with attempts + 1
 *		and a lease (FOR UPDATE SKIP LOCKED), into free job slots; their
 *		transfers start after the commit;
 *	 4. next due: when the claim left nothing due behind, how long until
 *		the next row falls due.
 *
 * The claim and the outcome are separate commits, so a crash between them
 * leaves rows in 'sending': step 2 sends them again with the same
 * reference_id (delivery is at least once).
 *
 * Plans are prepared once per installed extension (its OID and schema) and
 * kept; DROP EXTENSION is noticed in the next step, which then reports the
 * extension missing.
 *
 * src/maileroo_queue.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_worker.h"
#include "maileroo_account.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* A claimed row whose account has no usable key is tried again this late. */
#define MR_NO_KEY_WAIT_MS	5000

/* Plans, valid for the extension they were made for. */
static Oid	mr_plan_ext = InvalidOid;
static SPIPlanPtr mr_plan_claim;
static SPIPlanPtr mr_plan_record;
static SPIPlanPtr mr_plan_orphans;
static SPIPlanPtr mr_plan_next_due;
static SPIPlanPtr mr_plan_pauses;
static SPIPlanPtr mr_plan_no_key;

static Datum mr_blocked_accounts(MrWorker *w);

/* The text each MrRowStatus is stored as. */
static const char *const mr_row_status_names[] = {
	[MR_ROW_SENT] = "sent",
	[MR_ROW_RETRYING] = "retrying",
	[MR_ROW_FAILED] = "failed",
};

/* Free each plan of plans[] that is set, and clear it. */
void
mr_queue_free_plans(struct _SPI_plan **const *plans, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		if (*plans[i])
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
}

void
mr_queue_forget_plans(void)
{
	SPIPlanPtr *const plans[] = {&mr_plan_claim, &mr_plan_record, &mr_plan_orphans,
	&mr_plan_next_due, &mr_plan_pauses, &mr_plan_no_key};

	mr_queue_free_plans(plans, lengthof(plans));
	mr_plan_ext = InvalidOid;
	mr_bulk_forget_plans();
}

/* Prepare and keep fmt, every @ in it standing for the extension's schema. */
SPIPlanPtr
mr_queue_prepare(const char *fmt, const char *schema, int nargs, Oid *argtypes)
{
	StringInfoData sql;
	SPIPlanPtr	plan;
	const char *p;

	initStringInfo(&sql);
	for (p = fmt; *p; p++)
	{
		if (*p == '@')
			appendStringInfoString(&sql, schema);
		else
			appendStringInfoChar(&sql, *p);
	}
	plan = SPI_prepare(sql.data, nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql.data,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	pfree(sql.data);
	return plan;
}

/* The quoted name of the schema extension ext lives in, or NULL. */
static const char *
mr_extension_schema(Oid ext)
{
	char		sql[128];
	bool		isnull;
	Datum		nsp;

	snprintf(sql, sizeof(sql),
			 "SELECT extnamespace FROM pg_catalog.pg_extension WHERE oid = %u", ext);
	if (SPI_execute(sql, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return NULL;
	nsp = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return quote_identifier(get_namespace_name(DatumGetObjectId(nsp)));
}

/*
 * Inside a transaction with SPI connected: make sure the plans belong to
 * the installed extension.  Returns false when the extension is absent,
 * or (setting *citus_worker) when this is a Citus worker node.
 */
static bool
mr_ensure_plans(bool *citus_worker)
{
	Oid			ext = get_extension_oid("maileroo", true);
	const char *schema;
	Oid			claim_args[3] = {INT4OID, FLOAT8OID, TEXTARRAYOID};
	Oid			record_args[7] = {TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID, FLOAT8ARRAYOID, BOOLARRAYOID};
	Oid			orphan_args[1] = {BOOLOID};
	Oid			next_due_args[1] = {TEXTARRAYOID};
	Oid			no_key_args[3] = {TEXTOID, TEXTOID, FLOAT8OID};

	if (!OidIsValid(ext))
	{
		mr_queue_forget_plans();
		return false;
	}
	if (ext == mr_plan_ext && mr_plan_claim != NULL)
		return true;

	mr_queue_forget_plans();
	/* Mail is delivered from the coordinator only (maileroo_citus.c). */
	if (maileroo_citus_worker_node())
	{
		*citus_worker = true;
		return false;
	}
	schema = mr_extension_schema(ext);
	if (schema == NULL)
		return false;

	mr_plan_claim = mr_queue_prepare(
							   "UPDATE @.maileroo_outbox o"
							   "   SET status = 'sending', attempts = o.attempts + 1,"
							   "       lease_until = now() + $2 * interval '1 millisecond'"
							   " WHERE o.reference_id = ANY (ARRAY("
							   "       SELECT reference_id FROM @.maileroo_outbox"
							   "        WHERE status IN ('queued', 'retrying')"
							   "          AND campaign_id IS NULL"
							   "          AND next_attempt_at <= now()"
							   "          AND account <> ALL ($3)"
							   "        ORDER BY priority DESC, next_attempt_at LIMIT $1"
							   "          FOR UPDATE SKIP LOCKED))"
							   " RETURNING o.reference_id, o.endpoint, o.request::text, o.attempts,"
							   "           o.account, o.queued_by",
							   schema, 3, claim_args);
	/* A claimed row whose account has no usable key waits, no attempt used. */
	mr_plan_no_key = mr_queue_prepare(
								"UPDATE @.maileroo_outbox"
								"   SET status = 'retrying', attempts = attempts - 1, lease_until = NULL,"
								"       next_attempt_at = now() + $3 * interval '1 millisecond',"
								"       last_error = $2"
								" WHERE reference_id = $1 AND status = 'sending'",
								schema, 3, no_key_args);
	mr_plan_record = mr_queue_prepare(
								"UPDATE @.maileroo_outbox o"
								"   SET status = r.status,"
								"       attempts = o.attempts - r.refund::int,"
								"       last_http_status = r.http,"
								"       last_error = coalesce(r.err, o.last_error),"
								"       response = r.resp::jsonb,"
								"       sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE o.sent_at END,"
								"       next_attempt_at = CASE WHEN r.status = 'retrying'"
								"            THEN now() + r.delay_ms * interval '1 millisecond'"
								"            ELSE o.next_attempt_at END,"
								"       lease_until = NULL"
								"  FROM unnest($1, $2, $3, $4, $5, $6, $7)"
								"       AS r(ref, status, http, err, resp, delay_ms, refund)"
								" WHERE o.reference_id = r.ref AND o.status = 'sending'",
								schema, 7, record_args);
	mr_plan_orphans = mr_queue_prepare(
								 "UPDATE @.maileroo_outbox"
								 "   SET status = 'retrying', next_attempt_at = now(), lease_until = NULL,"
								 "       last_error = 'delivery was interrupted before an answer arrived; sent again with the same reference_id'"
								 " WHERE status = 'sending' AND ($1 OR lease_until < now())",
								 schema, 1, orphan_args);
	mr_plan_next_due = mr_queue_prepare(
								  "SELECT extract(epoch FROM least("
								  "  (SELECT min(next_attempt_at) FROM @.maileroo_outbox"
								  "    WHERE status IN ('queued', 'retrying') AND campaign_id IS NULL"
								  "      AND account <> ALL ($1)),"
								  "  (SELECT min(next_attempt_at) FROM @.maileroo_outbox"
								  "    WHERE status IN ('queued', 'retrying') AND campaign_id IS NOT NULL))"
								  "  - now())::float8 * 1000",
								  schema, 1, next_due_args);
	mr_bulk_prepare(schema);
	mr_plan_pauses = mr_queue_prepare("SELECT account FROM @.maileroo_pauses",
									  schema, 0, NULL);
	mr_plan_ext = ext;
	return true;
}

/* A text[] Datum from C strings, NULL pointers becoming NULL elements. */
Datum
mr_text_array(char **vals, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			i;

	for (i = 0; i < n; i++)
	{
		nulls[i] = vals[i] == NULL;
		d[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(vals[i]);
	}
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, TEXTOID,
											  -1, false, TYPALIGN_INT));
}

/*
 * Statement 1: record the pending outcomes.  Adds to *delivered and
 * *given_up the messages sent and failed.
 */
static void
mr_queue_record(MrWorker *w, int *delivered, int *given_up)
{
	int			n = w->npending;
	char	  **refs = palloc(sizeof(char *) * n);
	char	  **statuses = palloc(sizeof(char *) * n);
	char	  **errs = palloc(sizeof(char *) * n);
	char	  **resps = palloc(sizeof(char *) * n);
	Datum	   *https = palloc(sizeof(Datum) * n);
	bool	   *http_nulls = palloc(sizeof(bool) * n);
	Datum	   *delays = palloc(sizeof(Datum) * n);
	Datum	   *refunds = palloc(sizeof(Datum) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};
	Datum		args[7];
	int			i;

	for (i = 0; i < n; i++)
	{
		MrOutcome  *o = &w->pending[i];

		refs[i] = o->reference_id;
		statuses[i] = (char *) mr_row_status_names[o->status];
		errs[i] = o->error;
		resps[i] = o->response;
		https[i] = Int32GetDatum(o->http_status);
		http_nulls[i] = o->http_status == 0;
		delays[i] = Float8GetDatum(o->delay_ms);
		refunds[i] = BoolGetDatum(o->refund);
		if (o->status == MR_ROW_SENT)
			(*delivered)++;
		else if (o->status == MR_ROW_FAILED)
			(*given_up)++;
	}
	args[0] = mr_text_array(refs, n);
	args[1] = mr_text_array(statuses, n);
	args[2] = PointerGetDatum(construct_md_array(https, http_nulls, 1, dims, lbs,
												 INT4OID, 4, true, TYPALIGN_INT));
	args[3] = mr_text_array(errs, n);
	args[4] = mr_text_array(resps, n);
	args[5] = PointerGetDatum(construct_array(delays, n, FLOAT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[6] = PointerGetDatum(construct_array(refunds, n, BOOLOID, 1, true,
											  TYPALIGN_CHAR));
	if (SPI_execute_plan(mr_plan_record, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record delivery outcomes");
}

/* Statement 2: rows left in 'sending' (all, or past their lease) go back. */
static void
mr_queue_requeue_orphans(bool all)
{
	Datum		arg = BoolGetDatum(all);

	if (SPI_execute_plan(mr_plan_orphans, &arg, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not requeue interrupted messages");
}

/*
 * Statement 3: claim up to claim_n due rows into free job slots (their
 * strings in the job's context).  Each row is sent through the account it
 * records, with the key read now for the role that queued it (rotation
 * needs no restart; consecutive rows of one account and role share one
 * read).  A row whose account has no usable key goes back to 'retrying'
 * without using an attempt.  Returns how many were claimed into slots.
 */
static int
mr_queue_claim(MrWorker *w, int claim_n)
{
	Datum		args[3];
	uint64		i;
	uint64		nrows;
	SPITupleTable *claimed;
	int			nclaimed = 0;
	MailerooAccount *acct = NULL;
	char	   *problem = NULL;
	char	   *acct_name = NULL;
	char	   *acct_role = NULL;

	args[0] = Int32GetDatum(claim_n);
	args[1] = Float8GetDatum((double) maileroo_timeout_ms +
							 maileroo_connect_timeout_ms + MR_LEASE_SLACK_MS);
	args[2] = mr_blocked_accounts(w);
	if (SPI_execute_plan(mr_plan_claim, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim queued messages");

	claimed = SPI_tuptable;
	nrows = SPI_processed;
	for (i = 0; i < nrows; i++)
	{
		HeapTuple	tup = claimed->vals[i];
		TupleDesc	desc = claimed->tupdesc;
		char	   *account = SPI_getvalue(tup, desc, 5);
		char	   *queued_by = SPI_getvalue(tup, desc, 6);
		MrJob	   *job;
		MemoryContext old;
		bool		isnull;

		if (acct_name == NULL || strcmp(acct_name, account) != 0 ||
			strcmp(acct_role, queued_by) != 0)
		{
			maileroo_account_wipe(acct);
			acct = maileroo_account_try_get_key(account, get_role_oid(queued_by, true),
												&problem);
			acct_name = account;
			acct_role = queued_by;
		}
		if (acct == NULL)
		{
			Datum		nk[3];

			nk[0] = CStringGetTextDatum(SPI_getvalue(tup, desc, 1));
			nk[1] = CStringGetTextDatum(problem);
			nk[2] = Float8GetDatum((double) MR_NO_KEY_WAIT_MS);
			if (SPI_execute_plan(mr_plan_no_key, nk, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not put back a message");
			mr_status_note_error(problem);
			continue;
		}

		job = mr_transfer_free_job(w);
		old = MemoryContextSwitchTo(job->cxt);
		job->reference_id = SPI_getvalue(tup, desc, 1);
		job->path = SPI_getvalue(tup, desc, 2);
		job->body = SPI_getvalue(tup, desc, 3);
		job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		job->api_url = pstrdup(acct->api_url);
		job->api_key = pstrdup(acct->api_key);
		MemoryContextSwitchTo(old);
		job->busy = true;		/* started after commit */
		mr_sched_claimed(w, job, account);
		nclaimed++;
	}
	maileroo_account_wipe(acct);
	return nclaimed;
}

/* The accounts the scheduler holds back now, as a text[] Datum. */
static Datum
mr_blocked_accounts(MrWorker *w)
{
	char	   *names[MR_MAX_ACCOUNTS];
	int			n = mr_sched_blocked(w, names);

	return mr_text_array(names, n);
}

/* Statement 0: which accounts an operator paused (maileroo_pauses). */
static void
mr_queue_read_pauses(MrWorker *w)
{
	char	  **names;
	int			n = 0;
	bool		all = false;
	ListCell   *lc;

	if (SPI_execute_plan(mr_plan_pauses, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read maileroo_pauses");
	names = palloc(sizeof(char *) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (name[0] == '\0')
			all = true;
		else
			names[n++] = name;
	}
	mr_sched_set_pauses(w, all, names, n);

	/* And every account's configured limits (server options, no secret). */
	foreach(lc, maileroo_account_names())
	{
		char	   *name = (char *) lfirst(lc);
		MailerooAccount *acct = maileroo_account_get(name, InvalidOid, 0, true);

		if (acct != NULL)
			mr_sched_configure(w, name, acct->rate_limit, acct->burst,
							   acct->concurrency);
	}
}

/* Statement 4: ms until the next row falls due, or -1 when none is waiting. */
static double
mr_queue_next_due(MrWorker *w)
{
	Datum		arg;
	bool		isnull;
	Datum		d;

	/* Not read-only: it must see the rows just updated. */
	arg = mr_blocked_accounts(w);
	if (SPI_execute_plan(mr_plan_next_due, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the outbox");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? -1 : Max(0.0, DatumGetFloat8(d));
}

/*
 * One transaction step (see the file header): what step asks for, its
 * findings written back into it.  The pending outcomes are forgotten once
 * recorded.  Returns false when the extension is not installed.  Raises
 * ERROR on failure; the caller catches it and aborts the transaction.
 */
bool
mr_queue_step(MrWorker *w, MrStep *step)
{
	bool		ext_ok;
	int			delivered = 0,
				given_up = 0;

	step->nclaimed = 0;
	step->next_due_ms = -2;
	step->citus_worker = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "maileroo: recording and claiming");

	ext_ok = mr_ensure_plans(&step->citus_worker);
	if (ext_ok)
	{
		if (step->read_pauses)
		{
			mr_queue_read_pauses(w);
			step->claim_n = mr_sched_limit_claim(w, step->claim_n);
		}
		if (w->npending > 0)
			mr_queue_record(w, &delivered, &given_up);
		/* After the outcomes: what is still 'sending' now has none. */
		if (step->orphans_all || step->orphans_expired)
			mr_queue_requeue_orphans(step->orphans_all);
		if (step->claim_n > 0)
			step->nclaimed = mr_queue_claim(w, step->claim_n);
		/* Campaign mail in the slots ordinary mail left (maileroo_bulk.c). */
		if (step->claim_n > step->nclaimed)
			step->nclaimed += mr_bulk_claim(w, step->claim_n - step->nclaimed);
		if (step->claim_n == 0 || step->nclaimed < step->claim_n)
			step->next_due_ms = mr_queue_next_due(w);
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(w->loop_cxt);
	pgstat_report_activity(STATE_IDLE, NULL);

	mr_pending_forget(w);
	mr_status_note_progress(w->in_flight, delivered, given_up);
	step->ext_missing = !ext_ok;
	return ext_ok;
}
