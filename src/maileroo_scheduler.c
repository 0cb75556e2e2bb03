/*-------------------------------------------------------------------------
 *
 * maileroo_scheduler.c
 *		How much the delivery worker may claim now, and what an answer
 *		means for the message: sent, retried later (and when), or failed.
 *
 * Claims are batched: with requests already in flight the worker waits
 * until at least a sixteenth of maileroo.concurrency is free, so that one
 * step claims many rows rather than one per answer.
 *
 * Retries use exponential backoff with full jitter (MR_BACKOFF_BASE_MS
 * doubling up to MR_BACKOFF_CAP_MS), Retry-After honoured when longer, up to
 * maileroo.max_attempts; then the message fails.
 *
 * src/maileroo_scheduler.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_worker.h"

#include <math.h>

/* Rows to claim now (0: not worth a step yet). */
int
mr_sched_claim_budget(MrWorker *w)
{
	int			conc = maileroo_concurrency;
	int			free_slots = Min(conc, w->njobs) - w->in_flight;

	if (free_slots <= 0)
		return 0;
	if (w->in_flight > 0 && free_slots < Max(1, conc / 16))
		return 0;
	return free_slots;
}

/* Exponential backoff with full jitter; Retry-After honoured when longer. */
static double
mr_backoff_ms(int attempts, int retry_after_ms)
{
	double		ceiling = MR_BACKOFF_BASE_MS * pow(2.0, Max(attempts - 1, 0));
	uint32		r;
	double		delay;

	if (ceiling > MR_BACKOFF_CAP_MS)
		ceiling = MR_BACKOFF_CAP_MS;
	if (!pg_strong_random(&r, sizeof(r)))
		r = (uint32) random();
	delay = ceiling * ((double) r / (double) PG_UINT32_MAX);
	if (retry_after_ms >= 0)
		delay = Max(delay, (double) Min(retry_after_ms, MR_RETRY_AFTER_CAP_MS));
	return delay;
}

/*
 * The row status an answer gives a message on its attempts-th attempt;
 * *delay_ms is set (0 unless retrying) to when it is tried again.
 */
MrRowStatus
mr_sched_judge(const MailerooResult *res, int attempts, int max_attempts,
			   double *delay_ms)
{
	*delay_ms = 0;
	switch (res->outcome)
	{
		case MR_OUTCOME_SENT:
			return MR_ROW_SENT;
		case MR_OUTCOME_RETRY:
			if (attempts >= max_attempts)
				return MR_ROW_FAILED;
			*delay_ms = mr_backoff_ms(attempts, res->retry_after_ms);
			return MR_ROW_RETRYING;
		case MR_OUTCOME_FAILED:
		case MR_OUTCOME_UNKNOWN:
			return MR_ROW_FAILED;
	}
	return MR_ROW_FAILED;
}
