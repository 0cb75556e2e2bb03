/*-------------------------------------------------------------------------
 *
 * maileroo_transfer.c
 *		The delivery worker's requests in flight: one curl multi handle,
 *		a fixed table of job slots, and the outcomes of finished requests
 *		waiting to be recorded.
 *
 * Many requests are in flight at once on one multi handle, which keeps at
 * most maileroo.concurrency connections alive and reuses them.  Each job
 * slot keeps its curl easy handle across jobs (connection and TLS session
 * reuse); a transfer points at its slot (CURLOPT_PRIVATE, the write buffer),
 * so the table is allocated once, for the largest concurrency, and never
 * moves.  A job's strings live in its own small context, reset when the job
 * ends.
 *
 * Outcomes of finished requests are kept in pending_cxt until the next
 * transaction step records them (maileroo_queue.c), then forgotten at once.
 * Nothing here raises for anything a server answers.
 *
 * src/maileroo_transfer.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_worker.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"
#include "utils/memutils.h"

/* Create the multi handle, the job table and the outcome context. */
void
mr_transfer_init(MrWorker *w)
{
	maileroo_http_global_init();
	w->multi = curl_multi_init();
	if (w->multi == NULL)
		elog(ERROR, "curl_multi_init failed");
	w->jobs = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(MrJob) * MAILEROO_MAX_CONCURRENCY);
	w->njobs = MAILEROO_MAX_CONCURRENCY;
	w->pending_cxt = AllocSetContextCreate(TopMemoryContext, "maileroo outcomes",
										   ALLOCSET_DEFAULT_SIZES);
	mr_transfer_apply_concurrency(w);
}

/* Apply maileroo.concurrency to the multi handle. */
void
mr_transfer_apply_concurrency(MrWorker *w)
{
	int			conc = maileroo_concurrency;

	if (conc == w->multi_concurrency)
		return;
	curl_multi_setopt(w->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) conc);
	curl_multi_setopt(w->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) conc);
	curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, (long) conc);
	w->multi_concurrency = conc;
}

/* A free job slot, its context ready; ERROR when none is free. */
MrJob *
mr_transfer_free_job(MrWorker *w)
{
	for (int i = 0; i < w->njobs; i++)
	{
		MrJob	   *job = &w->jobs[i];

		if (job->busy)
			continue;
		if (job->cxt == NULL)
			job->cxt = AllocSetContextCreate(TopMemoryContext, "maileroo job",
											 ALLOCSET_SMALL_SIZES);
		return job;
	}
	elog(ERROR, "claimed more messages than free job slots");
	return NULL;				/* keep the compiler quiet */
}

/* A job slot goes back to free (its easy handle is kept). */
void
mr_transfer_release(MrJob *job)
{
	job->busy = false;
	job->added = false;
	if (job->headers)
	{
		curl_slist_free_all(job->headers);
		job->headers = NULL;
	}
	maileroo_http_buffer_reset(&job->buf);
	memset(&job->buf, 0, sizeof(job->buf));
	if (job->api_key)
		explicit_bzero(job->api_key, strlen(job->api_key));
	if (job->cxt)
		MemoryContextReset(job->cxt);
	job->reference_id = job->path = job->body = NULL;
	job->refs = NULL;
	job->nrefs = 0;
	job->api_url = job->api_key = NULL;
}

/* Claims that did not commit: free their slots. */
void
mr_transfer_release_unstarted(MrWorker *w)
{
	for (int i = 0; i < w->njobs; i++)
		if (w->jobs[i].busy && !w->jobs[i].added)
			mr_transfer_release(&w->jobs[i]);
}

/* Start the transfers of claimed jobs not started yet. */
void
mr_transfer_start_claimed(MrWorker *w)
{
	for (int i = 0; i < w->njobs; i++)
	{
		MrJob	   *job = &w->jobs[i];

		if (!job->busy || job->added)
			continue;
		if (job->easy == NULL)
		{
			job->easy = curl_easy_init();
			if (job->easy == NULL)
				elog(ERROR, "curl_easy_init failed");
		}
		memset(&job->buf, 0, sizeof(job->buf));
		maileroo_http_prepare(job->easy, job->api_url, job->api_key, "POST",
							  job->path, job->body, &job->headers, &job->buf,
							  false);
		explicit_bzero(job->api_key, strlen(job->api_key));
		curl_easy_setopt(job->easy, CURLOPT_PRIVATE, (void *) job);
		curl_multi_add_handle(w->multi, job->easy);
		job->added = true;
		w->in_flight++;
	}
}

/* Text that is valid in the database encoding, or a placeholder. */
static char *
mr_clean_text(const char *s)
{
	if (s == NULL)
		return NULL;
	if (!pg_verifymbstr(s, strlen(s), true))
		return pstrdup("(text not valid in the database encoding)");
	return pstrdup(s);
}

/* Maileroo's body as jsonb input: itself when it is JSON, else a string. */
static char *
mr_response_json(const char *body)
{
	JsonLexContext *lex;
	JsonParseErrorType err;
	StringInfoData out;
	size_t		len;

	if (body == NULL || body[0] == '\0')
		return NULL;
	len = strlen(body);
	if (!pg_verifymbstr(body, len, true))
		return NULL;
	lex = mr_json_lexer_make(unconstify(char *, body), len, true);
	err = pg_parse_json(lex, &nullSemAction);
	if (err == JSON_SUCCESS)
		return pstrdup(body);
	initStringInfo(&out);
	escape_json(&out, body);
	return out.data;
}

/* A new pending outcome, in pending_cxt (the caller has switched to it). */
MrOutcome *
mr_pending_add(MrWorker *w)
{
	MrOutcome  *o;

	if (w->npending >= w->pending_alloc)
	{
		int			n = Max(64, w->pending_alloc * 2);

		w->pending = w->pending ? repalloc(w->pending, sizeof(MrOutcome) * n)
			: palloc(sizeof(MrOutcome) * n);
		w->pending_alloc = n;
	}
	if (w->npending == 0)
		w->oldest_pending = GetCurrentTimestamp();
	o = &w->pending[w->npending++];
	memset(o, 0, sizeof(*o));
	return o;
}

/* Recorded (or given up on): forget the pending outcomes. */
void
mr_pending_forget(MrWorker *w)
{
	w->npending = 0;
	MemoryContextReset(w->pending_cxt);
	w->pending = NULL;
	w->pending_alloc = 0;
}

/* Turn one finished transfer into a pending outcome. */
static void
mr_transfer_finish(MrWorker *w, MrJob *job, CURLcode code, long http)
{
	MailerooResult res;
	MrOutcome  *o;
	MemoryContext old;

	old = MemoryContextSwitchTo(w->pending_cxt);
	memset(&res, 0, sizeof(res));
	maileroo_http_judge(code, http, &job->buf, &res);
	if (job->nrefs > 0)
	{
		/* A bulk request: an outcome per message (maileroo_bulk.c). */
		mr_bulk_finish(w, job, &res);
		MemoryContextSwitchTo(old);
		return;
	}

	o = mr_pending_add(w);
	o->reference_id = pstrdup(job->reference_id);
	o->http_status = (int) res.http_status;
	o->response = mr_response_json(res.body);
	o->status = mr_sched_judge(&res, job->attempts, maileroo_max_attempts,
							   &o->delay_ms);
	if (res.outcome == MR_OUTCOME_UNKNOWN)
		o->error = psprintf("outcome unknown, not retried (Maileroo may have accepted the message): %s",
							res.message ? res.message : "unreadable answer");
	else if (res.outcome != MR_OUTCOME_SENT)
		o->error = res.message;
	o->error = mr_clean_text(o->error);
	if (o->error && o->status != MR_ROW_SENT)
		mr_status_note_error(o->error);
	MemoryContextSwitchTo(old);
}

/* Drive the transfers and turn the finished ones into pending outcomes. */
void
mr_transfer_collect(MrWorker *w)
{
	CURLMsg    *msg;
	int			left;
	int			still_running;

	if (w->in_flight == 0)
		return;
	curl_multi_perform(w->multi, &still_running);
	while ((msg = curl_multi_info_read(w->multi, &left)) != NULL)
	{
		MrJob	   *job;
		long		http = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &job);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &http);
		mr_transfer_finish(w, job, msg->data.result, http);
		curl_multi_remove_handle(w->multi, job->easy);
		mr_transfer_release(job);
		w->in_flight--;
	}
}

/* Wait for an answer, at most MR_POLL_MS (or what curl asks for). */
void
mr_transfer_wait(MrWorker *w)
{
	long		curl_timeout = -1;
	int			timeout = MR_POLL_MS;

	curl_multi_timeout(w->multi, &curl_timeout);
	if (curl_timeout >= 0 && curl_timeout < timeout)
		timeout = (int) curl_timeout;
	curl_multi_poll(w->multi, NULL, 0, timeout, NULL);
}

/*
 * On the way out: abandon every transfer and free its slot.  Returns true
 * when any was in flight (their rows are still 'sending').
 */
bool
mr_transfer_abandon_all(MrWorker *w)
{
	bool		any = false;

	for (int i = 0; i < w->njobs; i++)
	{
		MrJob	   *job = &w->jobs[i];

		if (!job->busy)
			continue;
		if (job->added)
			curl_multi_remove_handle(w->multi, job->easy);
		mr_transfer_release(job);
		any = true;
	}
	w->in_flight = 0;
	return any;
}

/* Free the multi handle and every easy handle. */
void
mr_transfer_cleanup(MrWorker *w)
{
	curl_multi_cleanup(w->multi);
	w->multi = NULL;
	for (int i = 0; i < w->njobs; i++)
		if (w->jobs[i].easy)
		{
			curl_easy_cleanup(w->jobs[i].easy);
			w->jobs[i].easy = NULL;
		}
}
