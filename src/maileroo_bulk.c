/*-------------------------------------------------------------------------
 *
 * maileroo_bulk.c
 *		The delivery worker's side of campaigns: claiming campaign rows
 *		into POST /emails/bulk requests of up to MAILEROO_BULK_MAX
 *		messages, and turning a bulk answer into one outcome per message.
 *
 * Campaign rows (campaign_id set, endpoint /emails/bulk) are claimed by a
 * statement of their own, after ordinary mail has taken the job slots it
 * needs, so transactional mail goes first.  The rows claimed are grouped by
 * campaign, up to MAILEROO_BULK_MAX per job; a job's body is the campaign's
 * shared content with the rows' message objects (maileroo_campaign_body),
 * and it carries the reference ids of its messages in order.
 *
 * One answer, many rows:
 *	 - 2xx with success true: every message whose reference id is listed in
 *	   data.reference_ids is sent; a message missing from the list fails
 *	   alone (Maileroo refused it);
 *	 - an answer that fails as a whole (network error, timeout, 408, 429,
 *	   5xx): every message is retried, together, with the same reference
 *	   ids and one delay, so they are claimed together again;
 *	 - a 4xx, or a 2xx whose answer cannot be read: every message fails.
 * The answer is read with PostgreSQL's JSON parser and semantic actions
 * that never raise; nothing a server sends can make the worker exit.
 *
 * src/maileroo_bulk.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_worker.h"
#include "maileroo_account.h"
#include "maileroo_campaign.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

static SPIPlanPtr mr_plan_bulk_claim;
static SPIPlanPtr mr_plan_bulk_content;
static SPIPlanPtr mr_plan_bulk_unclaim;
static SPIPlanPtr mr_plan_bulk_orphaned;
static SPIPlanPtr mr_plan_bulk_no_key;

/* Rows whose account has no usable key are tried again this late. */
#define MR_BULK_NO_KEY_WAIT_MS	5000

/*
 * Bulk requests claimed per step at most: keeps each claim and record
 * statement (and what the worker holds) to a few thousand rows; slots left
 * free are filled by the next steps.
 */
#define MR_BULK_JOBS_PER_STEP	16

/* Forget the plans (the extension went away or was recreated). */
void
mr_bulk_forget_plans(void)
{
	SPIPlanPtr *const plans[] = {&mr_plan_bulk_claim, &mr_plan_bulk_content,
	&mr_plan_bulk_unclaim, &mr_plan_bulk_orphaned, &mr_plan_bulk_no_key};

	mr_queue_free_plans(plans, lengthof(plans));
}

/* Prepare the statements for the extension in schema (quoted). */
void
mr_bulk_prepare(const char *schema)
{
	Oid			claim_args[2] = {INT4OID, FLOAT8OID};
	Oid			content_args[1] = {INT8OID};
	Oid			unclaim_args[1] = {TEXTARRAYOID};
	Oid			no_key_args[3] = {TEXTARRAYOID, TEXTOID, FLOAT8OID};

	mr_bulk_forget_plans();
	mr_plan_bulk_claim = mr_queue_prepare(
										  "UPDATE @.maileroo_outbox o"
										  "   SET status = 'sending', attempts = o.attempts + 1,"
										  "       lease_until = now() + $2 * interval '1 millisecond'"
										  " WHERE o.reference_id = ANY (ARRAY("
										  "       SELECT reference_id FROM @.maileroo_outbox"
										  "        WHERE status IN ('queued', 'retrying')"
										  "          AND campaign_id IS NOT NULL"
										  "          AND next_attempt_at <= now()"
										  "        ORDER BY next_attempt_at LIMIT $1"
										  "          FOR UPDATE SKIP LOCKED))"
										  " RETURNING o.campaign_id, o.reference_id, o.request::text, o.attempts,"
										  "           o.account, o.queued_by",
										  schema, 2, claim_args);
	mr_plan_bulk_content = mr_queue_prepare(
											"SELECT content::text FROM @.maileroo_campaigns WHERE id = $1",
											schema, 1, content_args);
	/* A queued row has no attempt before its claim, a retrying one has. */
	mr_plan_bulk_unclaim = mr_queue_prepare(
											"UPDATE @.maileroo_outbox"
											"   SET status = CASE WHEN attempts <= 1 THEN 'queued' ELSE 'retrying' END,"
											"       attempts = attempts - 1, lease_until = NULL"
											" WHERE reference_id = ANY ($1) AND status = 'sending'",
											schema, 1, unclaim_args);
	mr_plan_bulk_orphaned = mr_queue_prepare(
											 "UPDATE @.maileroo_outbox"
											 "   SET status = 'failed', lease_until = NULL,"
											 "       last_error = 'not sent: its campaign is missing from maileroo_campaigns'"
											 " WHERE reference_id = ANY ($1) AND status = 'sending'",
											 schema, 1, unclaim_args);
	/* As for single messages: no attempt used, tried again later. */
	mr_plan_bulk_no_key = mr_queue_prepare(
										   "UPDATE @.maileroo_outbox"
										   "   SET status = 'retrying', attempts = attempts - 1, lease_until = NULL,"
										   "       next_attempt_at = now() + $3 * interval '1 millisecond',"
										   "       last_error = $2"
										   " WHERE reference_id = ANY ($1) AND status = 'sending'",
										   schema, 3, no_key_args);
}

/* One claimed row, while jobs are formed. */
typedef struct MrBulkRow
{
	int64		campaign_id;
	char	   *reference_id;
	char	   *message;
	int			attempts;
	char	   *account;		/* the same for every row of a campaign */
	char	   *queued_by;
	int			order;			/* as claimed, to keep it within a campaign */
} MrBulkRow;

static int
mr_bulk_row_cmp(const void *a, const void *b)
{
	const MrBulkRow *ra = a;
	const MrBulkRow *rb = b;

	if (ra->campaign_id != rb->campaign_id)
		return ra->campaign_id < rb->campaign_id ? -1 : 1;
	return (ra->order > rb->order) - (ra->order < rb->order);
}

/* Fill a free job slot with rows[0..n-1] of one campaign, sent through acct. */
static void
mr_bulk_fill_job(MrWorker *w, MrBulkRow *rows, int n, const char *content,
				 const MailerooAccount *acct)
{
	MrJob	   *job = mr_transfer_free_job(w);
	MemoryContext old = MemoryContextSwitchTo(job->cxt);
	char	  **msgs = palloc(sizeof(char *) * n);
	int			i;

	job->nrefs = n;
	job->refs = palloc(sizeof(char *) * n);
	job->attempts = 0;
	for (i = 0; i < n; i++)
	{
		job->refs[i] = pstrdup(rows[i].reference_id);
		msgs[i] = rows[i].message;
		job->attempts = Max(job->attempts, rows[i].attempts);
	}
	job->reference_id = job->refs[0];
	job->path = pstrdup(MAILEROO_BULK_PATH);
	job->body = maileroo_campaign_body(content, msgs, n);
	job->api_url = pstrdup(acct->api_url);
	job->api_key = pstrdup(acct->api_key);
	pfree(msgs);
	MemoryContextSwitchTo(old);
	job->busy = true;			/* started after commit */
}

/*
 * Inside the step's transaction: claim due campaign rows for up to
 * max_jobs bulk requests and put them into free job slots.  Returns the
 * number of job slots filled.  Raises ERROR on failure (the caller aborts
 * the transaction and frees the unstarted slots).
 */
int
mr_bulk_claim(MrWorker *w, int max_jobs)
{
	Datum		args[2];
	uint64		n;
	uint64		i;
	MrBulkRow  *rows;
	int			jobs = 0;
	int			start;
	MailerooAccount *acct;
	char	   *problem = NULL;

	max_jobs = Min(max_jobs, MR_BULK_JOBS_PER_STEP);
	if (max_jobs <= 0 || mr_plan_bulk_claim == NULL)
		return 0;
	args[0] = Int32GetDatum(max_jobs * MAILEROO_BULK_MAX);
	args[1] = Float8GetDatum((double) maileroo_timeout_ms +
							 maileroo_connect_timeout_ms + MR_LEASE_SLACK_MS);
	if (SPI_execute_plan(mr_plan_bulk_claim, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim queued campaign messages");
	n = SPI_processed;
	if (n == 0)
		return 0;

	/* The rows, grouped by campaign, in the order claimed. */
	rows = palloc(sizeof(MrBulkRow) * n);
	for (i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		rows[i].campaign_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		rows[i].reference_id = SPI_getvalue(tup, desc, 2);
		rows[i].message = SPI_getvalue(tup, desc, 3);
		rows[i].attempts = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		rows[i].account = SPI_getvalue(tup, desc, 5);
		rows[i].queued_by = SPI_getvalue(tup, desc, 6);
		rows[i].order = (int) i;
	}
	qsort(rows, n, sizeof(MrBulkRow), mr_bulk_row_cmp);

	/*
	 * Per campaign: its content once, then jobs of up to MAILEROO_BULK_MAX.
	 * The claim asks for no more rows than max_jobs can carry, but rows of
	 * several campaigns may need a slot more each: the rows that do not fit
	 * go back to what they were, for the next step.
	 */
	start = 0;
	while (start < (int) n && jobs < max_jobs)
	{
		int64		cid = rows[start].campaign_id;
		int			end = start;
		Datum		arg = Int64GetDatum(cid);
		char	   *content;

		while (end < (int) n && rows[end].campaign_id == cid)
			end++;
		if (SPI_execute_plan(mr_plan_bulk_content, &arg, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read campaign " INT64_FORMAT, cid);
		if (SPI_processed != 1)
		{
			/* Its campaign was deleted: these rows can never be sent. */
			char	  **refs = palloc(sizeof(char *) * (end - start));
			Datum		d;
			int			j;

			for (j = start; j < end; j++)
				refs[j - start] = rows[j].reference_id;
			d = mr_text_array(refs, end - start);
			if (SPI_execute_plan(mr_plan_bulk_orphaned, &d, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not fail the messages of a missing campaign");
			mr_status_note_error("campaign messages failed: their campaign is missing from maileroo_campaigns");
			start = end;
			continue;
		}
		content = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		/* The key of the campaign's account, read now (rotation). */
		acct = maileroo_account_try_get_key(rows[start].account,
											get_role_oid(rows[start].queued_by, true),
											&problem);
		if (acct == NULL)
		{
			char	  **refs = palloc(sizeof(char *) * (end - start));
			Datum		nk[3];
			int			j;

			for (j = start; j < end; j++)
				refs[j - start] = rows[j].reference_id;
			nk[0] = mr_text_array(refs, end - start);
			nk[1] = CStringGetTextDatum(problem);
			nk[2] = Float8GetDatum((double) MR_BULK_NO_KEY_WAIT_MS);
			if (SPI_execute_plan(mr_plan_bulk_no_key, nk, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not put back campaign messages");
			mr_status_note_error(problem);
			start = end;
			continue;
		}
		while (start < end && jobs < max_jobs)
		{
			int			k = Min(end - start, MAILEROO_BULK_MAX);

			mr_bulk_fill_job(w, rows + start, k, content, acct);
			jobs++;
			start += k;
		}
		maileroo_account_wipe(acct);
	}
	if (start < (int) n)
	{
		char	  **back = palloc(sizeof(char *) * (n - start));
		Datum		d;
		int			j;

		for (j = start; j < (int) n; j++)
			back[j - start] = rows[j].reference_id;
		d = mr_text_array(back, (int) n - start);
		if (SPI_execute_plan(mr_plan_bulk_unclaim, &d, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not give back claimed campaign messages");
	}
	return jobs;
}

/* ----------------------------------------------------------------
 * Reading data.reference_ids of a bulk answer
 * ----------------------------------------------------------------
 */

typedef struct MrRefsParse
{
	int			obj_depth;		/* objects open */
	int			arr_depth;		/* arrays open */
	bool		next_is_data;	/* the value of top-level "data" follows */
	bool		next_is_refs;	/* the value of data.reference_ids follows */
	int			data_depth;		/* obj_depth inside data, or 0 */
	int			refs_arr_depth; /* arr_depth inside reference_ids, or 0 */
	bool		found;			/* data.reference_ids was an array */
	List	   *refs;			/* its string elements (char *) */
} MrRefsParse;

static JSON_ACTION_RESULT
mr_refs_object_start(void *state)
{
	MrRefsParse *p = state;

	p->obj_depth++;
	if (p->next_is_data && p->arr_depth == 0)
		p->data_depth = p->obj_depth;
	p->next_is_data = p->next_is_refs = false;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
mr_refs_object_end(void *state)
{
	MrRefsParse *p = state;

	if (p->data_depth == p->obj_depth)
		p->data_depth = 0;
	p->obj_depth--;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
mr_refs_field_start(void *state, char *fname, bool isnull)
{
	MrRefsParse *p = state;

	p->next_is_data = (p->obj_depth == 1 && p->arr_depth == 0 &&
					   strcmp(fname, "data") == 0);
	p->next_is_refs = (p->data_depth > 0 && p->obj_depth == p->data_depth &&
					   p->refs_arr_depth == 0 &&
					   strcmp(fname, "reference_ids") == 0);
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
mr_refs_array_start(void *state)
{
	MrRefsParse *p = state;

	p->arr_depth++;
	if (p->next_is_refs)
	{
		p->refs_arr_depth = p->arr_depth;
		p->found = true;
	}
	p->next_is_data = p->next_is_refs = false;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
mr_refs_array_end(void *state)
{
	MrRefsParse *p = state;

	if (p->refs_arr_depth == p->arr_depth)
		p->refs_arr_depth = 0;
	p->arr_depth--;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
mr_refs_scalar(void *state, char *token, JsonTokenType tokentype)
{
	MrRefsParse *p = state;

	if (p->refs_arr_depth > 0 && p->arr_depth == p->refs_arr_depth &&
		tokentype == JSON_TOKEN_STRING)
		p->refs = lappend(p->refs, token);
	p->next_is_data = p->next_is_refs = false;
	JSON_ACTION_RETURN;
}

/*
 * The strings of data.reference_ids in a bulk answer, or NIL with *found
 * false when the answer has no such array.  Never raises for what the body
 * holds (it was checked to be valid in the database encoding by the
 * judge, and parse errors are returned, not thrown).
 */
static List *
mr_bulk_answer_refs(const char *body, bool *found)
{
	JsonSemAction sem;
	MrRefsParse p;
	JsonLexContext *lex;

	*found = false;
	if (body == NULL || body[0] == '\0' || !pg_verifymbstr(body, strlen(body), true))
		return NIL;
	memset(&p, 0, sizeof(p));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &p;
	sem.object_start = mr_refs_object_start;
	sem.object_end = mr_refs_object_end;
	sem.object_field_start = mr_refs_field_start;
	sem.array_start = mr_refs_array_start;
	sem.array_end = mr_refs_array_end;
	sem.scalar = mr_refs_scalar;
	lex = mr_json_lexer_make(unconstify(char *, body), strlen(body), true);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
		return NIL;
	*found = p.found;
	return p.refs;
}

/* ----------------------------------------------------------------
 * One answer, an outcome per message
 * ----------------------------------------------------------------
 */

/* A set of reference ids: simplehash over the answer's strings. */
typedef struct MrRefEntry
{
	const char *ref;
	uint32		hash;
	char		status;
} MrRefEntry;

#define SH_PREFIX		mr_refset
#define SH_ELEMENT_TYPE	MrRefEntry
#define SH_KEY_TYPE		const char *
#define SH_KEY			ref
#define SH_HASH_KEY(tb, key) hash_bytes((const unsigned char *) (key), strlen(key))
#define SH_EQUAL(tb, a, b) (strcmp((a), (b)) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) ((a)->hash)
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/*
 * A finished bulk job: add one pending outcome per message (in
 * w->pending_cxt, which the caller has switched to).  res is the judged
 * answer.
 */
void
mr_bulk_finish(MrWorker *w, MrJob *job, const MailerooResult *res)
{
	double		delay_ms;
	MrRowStatus status;
	char	   *error = NULL;
	char	   *response = NULL;
	mr_refset_hash *accepted = NULL;
	char	   *message = NULL;
	int			i;
	MrOutcome	judged;

	memset(&judged, 0, sizeof(judged));
	mr_sched_judge(w, job, res, &judged);
	status = judged.status;
	delay_ms = judged.delay_ms;
	if (status == MR_ROW_SENT)
	{
		bool		found;
		List	   *refs = mr_bulk_answer_refs(res->body, &found);
		ListCell   *lc;

		if (!found)
		{
			/* Accepted, perhaps: never sent again, like any unreadable 2xx. */
			status = MR_ROW_FAILED;
			error = pstrdup("outcome unknown, not retried (Maileroo may have accepted the messages): the bulk answer has no data.reference_ids");
		}
		else
		{
			accepted = mr_refset_create(CurrentMemoryContext,
										Max(list_length(refs), 16), NULL);
			foreach(lc, refs)
			{
				bool		isfound;

				(void) mr_refset_insert(accepted, (const char *) lfirst(lc), &isfound);
			}
		}
		message = res->message;
	}
	else
	{
		if (res->outcome == MR_OUTCOME_UNKNOWN)
			error = psprintf("outcome unknown, not retried (Maileroo may have accepted the messages): %s",
							 res->message ? res->message : "unreadable answer");
		else
			error = res->message ? pstrdup(res->message) : NULL;
		if (res->body != NULL && res->body[0] != '\0')
		{
			StringInfoData b;

			/* Maileroo's answer to the request, for every message of it. */
			initStringInfo(&b);
			escape_json(&b, res->body);
			response = b.data;
		}
	}
	if (error != NULL && !pg_verifymbstr(error, strlen(error), true))
		error = pstrdup("(text not valid in the database encoding)");
	if (error != NULL)
		mr_status_note_error(error);

	for (i = 0; i < job->nrefs; i++)
	{
		MrOutcome  *o = mr_pending_add(w);

		o->reference_id = pstrdup(job->refs[i]);
		o->http_status = (int) res->http_status;
		o->delay_ms = delay_ms;
		if (accepted == NULL)
		{
			o->status = status;
			o->refund = judged.refund;
			o->error = error;
			o->response = response;
		}
		else if (mr_refset_lookup(accepted, job->refs[i]) != NULL)
		{
			StringInfoData r;

			/* What a single send would have answered for this message. */
			initStringInfo(&r);
			appendStringInfoString(&r, "{\"success\":true,\"message\":");
			if (message != NULL && pg_verifymbstr(message, strlen(message), true))
				escape_json(&r, message);
			else
				appendStringInfoString(&r, "null");
			appendStringInfo(&r, ",\"data\":{\"reference_id\":\"%s\"},\"bulk_messages\":%d}",
							 job->refs[i], job->nrefs);
			o->status = MR_ROW_SENT;
			o->response = r.data;
		}
		else
		{
			o->status = MR_ROW_FAILED;
			o->error = pstrdup("Maileroo accepted the bulk request without this message: its reference_id is missing from data.reference_ids");
			mr_status_note_error(o->error);
		}
	}
}
