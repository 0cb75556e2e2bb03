/*-------------------------------------------------------------------------
 *
 * maileroo_scheduler.c
 *		Per-account pacing of the delivery worker: how much it may claim
 *		now, and what each answer means for the message and the account.
 *
 * An account is where mail is sent through (one key, one rate limit at
 * Maileroo).  Each has, in worker memory, keyed by its name:
 *
 *	 - a token bucket at the account's rate: the configured ceiling
 *	   (rate_limit messages/s with burst) when set, never exceeded, and the
 *	   adaptive pace once Maileroo has answered 429, whichever is lower.  A
 *	   claim takes one token per message; with no ceiling and no 429 seen
 *	   the account is not limited at all.
 *	 - adaptive pacing: on a 429 the whole account pauses (Retry-After, or
 *	   a backoff doubling from MR_HOLD_BASE_MS), then resumes at 90% of the
 *	   rate Maileroo was accepting over the last second before it refused
 *	   (unchanged when that was under two messages: too few to measure),
 *	   and probes upward by 5% (at least 0.2/s) for each second it spent
 *	   limited by its pace: additive increase, multiplicative decrease.
 *	 - a circuit breaker: 401 or 403, or MR_FAILURE_RUN network errors or
 *	   5xx in a row, open it.  Nothing is claimed for the account then,
 *	   except one probe message after MR_PROBE_BASE_MS, doubling up to
 *	   MR_PROBE_CAP_MS (and at once after a reload of the configuration);
 *	   the first probe that is accepted closes it.
 *	 - a pause set by an operator (maileroo_pauses, read at least every
 *	   MR_PAUSE_POLL_MS and whenever the worker is woken).
 *
 * A message refused because of its account (429, 401, 403, or a 5xx or
 * network error while the circuit is open) waits as 'retrying' and gets
 * its attempt back; it is never failed for it.  Otherwise a retryable
 * answer uses an attempt and is retried with exponential backoff and full
 * jitter (Retry-After honoured when longer) up to maileroo.max_attempts;
 * anything else (a 400 naming the message, a malformed 2xx) fails the
 * message alone.
 *
 * Claims are batched: an unlimited account waits until at least a
 * sixteenth of maileroo.concurrency is free; a paced one until 20 ms worth
 * of tokens (at least one) is there.
 *
 * src/maileroo_scheduler.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_worker.h"

#include <math.h>

#include "utils/memutils.h"

#define MR_OK_BUCKETS		10		/* accepted answers per 100 ms, 1 s in all */
#define MR_MIN_PACE			1.0		/* messages/s */
#define MR_PACE_STEP		0.2		/* least increase per second */

struct MrAccount
{
	char		name[NAMEDATALEN];

	/* configured (0: not set) */
	double		ceiling;
	int			burst;
	int			concurrency;

	/* token bucket */
	double		tokens;
	TimestampTz refilled_at;	/* may lie ahead: no refill before */
	bool		limited;		/* tokens ran out since the last increase */

	/* adaptive pace, 0 until the first 429 */
	double		pace;
	TimestampTz hold_until;		/* a 429's pause, or 0 */
	int			holds;			/* 429 pauses without an accepted answer */
	TimestampTz last_increase;
	int			ok[MR_OK_BUCKETS];
	int64		ok_epoch;		/* 100 ms period of the newest bucket */

	/* circuit breaker */
	bool		circuit_open;
	int			failure_run;
	int			probe_ms;
	TimestampTz next_probe;

	bool		paused;
	int			in_flight;

	/* for maileroo_account_status() */
	int64		sent;
	int64		rate_limited;
	TimestampTz last_error_at;
	char		last_error[MR_ERROR_LEN];
};

/* What an answer says about the account. */
typedef enum MrVerdict
{
	MR_VERDICT_ACCEPTED,		/* sent */
	MR_VERDICT_MESSAGE,			/* the message's own problem: retry or fail */
	MR_VERDICT_RATE_LIMITED,	/* 429 */
	MR_VERDICT_REFUSED,			/* 401, 403: the key is wrong */
	MR_VERDICT_UNAVAILABLE		/* network error, timeout, 408, 5xx */
} MrVerdict;

static MrAccount *
mr_account_find(MrWorker *w, const char *name)
{
	for (int i = 0; i < w->naccounts; i++)
		if (strcmp(w->accounts[i].name, name) == 0)
			return &w->accounts[i];
	return NULL;
}

/* The account named name, added when new (the last slot is shared when full). */
static MrAccount *
mr_account_get(MrWorker *w, const char *name)
{
	MrAccount  *a = mr_account_find(w, name);

	if (a != NULL)
		return a;
	if (w->naccounts >= MR_MAX_ACCOUNTS)
		return &w->accounts[MR_MAX_ACCOUNTS - 1];
	a = &w->accounts[w->naccounts++];
	memset(a, 0, sizeof(*a));
	strlcpy(a->name, name, NAMEDATALEN);
	a->probe_ms = MR_PROBE_BASE_MS;
	return a;
}

void
mr_sched_init(MrWorker *w)
{
	w->accounts = MemoryContextAllocZero(TopMemoryContext,
										 sizeof(MrAccount) * MR_MAX_ACCOUNTS);
	w->naccounts = 0;
	w->pauses_stale = true;
}

/* The rate tokens come at (0: not limited) and the bucket's size. */
static double
mr_account_rate(const MrAccount *a, double *capacity)
{
	double		rate = a->ceiling;

	*capacity = a->burst > 0 ? a->burst : Max(1.0, ceil(a->ceiling));
	if (a->pace > 0 && (rate == 0 || a->pace < rate))
	{
		rate = a->pace;
		*capacity = Max(1.0, rate * 0.05);
	}
	return rate;
}

/* Tokens worth a claim: 20 ms of the rate, at least one, at most the bucket. */
static double
mr_account_batch(double rate, double capacity)
{
	return Max(1.0, floor(Min(capacity, rate * 0.02)));
}

static void
mr_account_refill(MrAccount *a, double rate, double capacity, TimestampTz now)
{
	if (now <= a->refilled_at)
		return;
	a->tokens = Min(capacity, a->tokens +
					(double) (now - a->refilled_at) / 1000000.0 * rate);
	a->refilled_at = now;
}

/* Additive increase: a little faster for each second spent limited by pace. */
static void
mr_account_probe_up(MrAccount *a, TimestampTz now)
{
	if (a->pace <= 0 || !TimestampDifferenceExceeds(a->last_increase, now, 1000))
		return;
	if (a->limited && now >= a->hold_until)
		a->pace += Max(MR_PACE_STEP, a->pace * 0.05);
	a->limited = false;
	a->last_increase = now;
}

/* Messages the account may have claimed now (INT_MAX: no limit). */
static int
mr_account_budget(MrAccount *a, TimestampTz now)
{
	double		rate,
				capacity;
	int			n;

	if (a->paused || now < a->hold_until)
		return 0;
	if (a->circuit_open)
		return (a->in_flight == 0 && now >= a->next_probe) ? 1 : 0;

	mr_account_probe_up(a, now);
	rate = mr_account_rate(a, &capacity);
	if (rate > 0)
	{
		mr_account_refill(a, rate, capacity, now);
		n = (int) floor(a->tokens);
		if (n < mr_account_batch(rate, capacity))
		{
			a->limited = true;
			return 0;
		}
	}
	else
		n = INT_MAX;
	if (a->concurrency > 0)
		n = Min(n, Max(0, a->concurrency - a->in_flight));
	return n;
}

/*
 * Rows to claim now (0: not worth a step yet): the free job slots, within
 * what the account allows.
 */
int
mr_sched_claim_budget(MrWorker *w)
{
	int			conc = maileroo_concurrency;
	int			free_slots = Min(conc, w->njobs) - w->in_flight;
	int			n = INT_MAX;
	bool		any = w->naccounts == 0;

	if (free_slots <= 0)
		return 0;

	/*
	 * One claim serves every account that may send now (the others are
	 * left out of it, see mr_sched_blocked): at most what the most limited
	 * of them allows.
	 */
	for (int i = 0; i < w->naccounts; i++)
	{
		int			b = mr_account_budget(&w->accounts[i], w->now);

		if (b > 0)
		{
			n = Min(n, b);
			any = true;
		}
	}
	if (!any)
		return 0;				/* every account is held back */
	if (n == INT_MAX && w->in_flight > 0 && free_slots < Max(1, conc / 16))
		return 0;
	return Min(n, free_slots);
}

/* Inside the step, after the pauses were read: at most what is allowed now. */
int
mr_sched_limit_claim(MrWorker *w, int claim_n)
{
	return Min(claim_n, mr_sched_claim_budget(w));
}

/*
 * The accounts that may not send now (paused, in a 429 pause, circuit open
 * with no probe due, out of tokens), into names (room for MR_MAX_ACCOUNTS);
 * returns how many.
 */
int
mr_sched_blocked(MrWorker *w, char **names)
{
	int			n = 0;

	for (int i = 0; i < w->naccounts; i++)
		if (mr_account_budget(&w->accounts[i], w->now) == 0)
			names[n++] = w->accounts[i].name;
	return n;
}

/* An account's configured limits (0: none), read from its server options. */
void
mr_sched_configure(MrWorker *w, const char *name, double rate_limit,
				   int burst, int concurrency)
{
	MrAccount  *a = mr_account_get(w, name);

	a->ceiling = rate_limit;
	a->burst = burst;
	a->concurrency = concurrency;
	if (a->refilled_at == 0 && rate_limit > 0)
	{
		double		capacity;

		(void) mr_account_rate(a, &capacity);
		a->tokens = capacity;
		a->refilled_at = GetCurrentTimestamp();
	}
}

/* The pauses in maileroo_pauses: all sending, and these accounts. */
void
mr_sched_set_pauses(MrWorker *w, bool all, char **names, int n)
{
	for (int i = 0; i < w->naccounts; i++)
		w->accounts[i].paused = all;
	for (int i = 0; i < n && !all; i++)
		mr_account_get(w, names[i])->paused = true;
	w->pauses_stale = false;
	w->pauses_read_at = GetCurrentTimestamp();
}

/*
 * When an account held back by its pace, a 429 pause or an open circuit may
 * claim again; 0 when none is held back.
 */
TimestampTz
mr_sched_next_wake(MrWorker *w)
{
	TimestampTz wake = 0;

	for (int i = 0; i < w->naccounts; i++)
	{
		MrAccount  *a = &w->accounts[i];
		TimestampTz t = 0;
		double		rate,
					capacity;

		if (a->paused)
			continue;
		if (a->circuit_open)
			t = a->in_flight == 0 ? a->next_probe : 0;
		else if (w->now < a->hold_until)
			t = a->hold_until;
		else if ((rate = mr_account_rate(a, &capacity)) > 0 &&
				 a->tokens < mr_account_batch(rate, capacity))
		{
			double		need = mr_account_batch(rate, capacity) - a->tokens;

			t = Max(a->refilled_at, w->now) + (int64) ceil(need / rate * 1000000.0);
		}
		if (t != 0 && (wake == 0 || t < wake))
			wake = t;
	}
	return wake;
}

/* A claimed row counts against its account; an open circuit's is a probe. */
void
mr_sched_claimed(MrWorker *w, MrJob *job, const char *account)
{
	MrAccount  *a = mr_account_get(w, account);

	job->account = a;
	job->probe = a->circuit_open;
	a->in_flight++;
	if (a->tokens >= 1.0)
		a->tokens -= 1.0;
	else
		a->tokens = 0;
}

void
mr_sched_released(MrJob *job)
{
	if (job->account != NULL)
		job->account->in_flight--;
	job->account = NULL;
	job->probe = false;
}

/* After a reload (a key may have been fixed): probe open circuits now. */
void
mr_sched_wake_all(MrWorker *w)
{
	for (int i = 0; i < w->naccounts; i++)
	{
		MrAccount  *a = &w->accounts[i];

		if (a->circuit_open)
		{
			a->next_probe = 0;
			a->probe_ms = MR_PROBE_BASE_MS;
		}
	}
	w->pauses_stale = true;
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

static MrVerdict
mr_verdict(const MailerooResult *res)
{
	if (res->outcome == MR_OUTCOME_SENT)
		return MR_VERDICT_ACCEPTED;
	if (res->http_status == 429)
		return MR_VERDICT_RATE_LIMITED;
	if (res->http_status == 401 || res->http_status == 403)
		return MR_VERDICT_REFUSED;
	if (res->outcome == MR_OUTCOME_RETRY)
		return MR_VERDICT_UNAVAILABLE;
	return MR_VERDICT_MESSAGE;
}

/*
 * Count an accepted answer (count_one), and return how many were accepted
 * over the last `buckets` periods of 100 ms (at most a second).
 */
static int
mr_account_accepted(MrAccount *a, TimestampTz now, bool count_one, int buckets)
{
	int64		epoch = now / 100000;
	int			sum = 0;

	if (epoch - a->ok_epoch >= MR_OK_BUCKETS)
		memset(a->ok, 0, sizeof(a->ok));
	else
		for (int64 e = a->ok_epoch + 1; e <= epoch; e++)
			a->ok[e % MR_OK_BUCKETS] = 0;
	a->ok_epoch = epoch;
	if (count_one)
		a->ok[epoch % MR_OK_BUCKETS]++;
	for (int i = 0; i < Min(buckets, MR_OK_BUCKETS); i++)
		sum += a->ok[(epoch - i + MR_OK_BUCKETS) % MR_OK_BUCKETS];
	return sum;
}

static void
mr_account_note_error(MrAccount *a, const MailerooResult *res, TimestampTz now)
{
	if (res->http_status > 0)
		snprintf(a->last_error, MR_ERROR_LEN, "HTTP %ld: %s", res->http_status,
				 res->message ? res->message : "");
	else
		strlcpy(a->last_error, res->message ? res->message : "no answer", MR_ERROR_LEN);
	a->last_error_at = now;
}

/* 429: pause the account, and resume below the rate that was refused. */
static void
mr_account_rate_limited(MrAccount *a, const MailerooResult *res, TimestampTz now)
{
	int			hold_ms;
	int			buckets;
	int			accepted;

	a->rate_limited++;
	if (res->retry_after_ms >= 0)
		hold_ms = Min(res->retry_after_ms, MR_HOLD_CAP_MS);
	else
		hold_ms = (int) Min((double) MR_HOLD_CAP_MS,
							MR_HOLD_BASE_MS * pow(2.0, Min(a->holds, 16)));
	if (now < a->hold_until)
	{
		/* Answers of requests sent before the pause began. */
		a->hold_until = Max(a->hold_until, TimestampTzPlusMilliseconds(now, hold_ms));
		a->refilled_at = a->hold_until;
		return;
	}
	/*
	 * The rate accepted since sending resumed after the last pause (at most
	 * the last second): a window that overlapped the pause would understate
	 * it.
	 */
	buckets = (int) Min((double) MR_OK_BUCKETS,
						(double) (now - a->hold_until) / 100000.0);
	accepted = mr_account_accepted(a, now, false, buckets);

	if (buckets >= 2 && accepted >= 2)
	{
		double		pace = 0.9 * accepted / (buckets * 0.1);

		if (a->pace > 0)
			pace = Max(pace, a->pace * 0.5);
		pace = Max(pace, MR_MIN_PACE);
		if (a->ceiling > 0)
			pace = Min(pace, a->ceiling);
		if (a->pace > 0 && pace > a->pace)
			pace = a->pace;		/* never faster than the refused pace */
		a->pace = pace;
		ereport(LOG,
				(errmsg("maileroo delivery worker: account \"%s\" is rate limited; pausing %d ms, then sending at %.1f messages per second",
						a->name, hold_ms, a->pace)));
	}
	a->holds++;
	a->hold_until = TimestampTzPlusMilliseconds(now, hold_ms);
	a->tokens = 0;
	a->refilled_at = a->hold_until;
	a->last_increase = a->hold_until;
	a->limited = false;
}

/* Open the circuit (or, after a failed probe, back off the next probe). */
static void
mr_account_trip(MrAccount *a, bool probe, TimestampTz now)
{
	if (!a->circuit_open)
	{
		a->circuit_open = true;
		a->probe_ms = MR_PROBE_BASE_MS;
		a->next_probe = TimestampTzPlusMilliseconds(now, a->probe_ms);
		ereport(LOG,
				(errmsg("maileroo delivery worker: sending through account \"%s\" stopped: %s",
						a->name, a->last_error),
				 errdetail("Queued mail waits; a probe is sent in %d ms.", a->probe_ms)));
		return;
	}
	if (probe)
	{
		a->probe_ms = Min(a->probe_ms * 2, MR_PROBE_CAP_MS);
		a->next_probe = TimestampTzPlusMilliseconds(now, a->probe_ms);
	}
}

static void
mr_account_accepted_answer(MrAccount *a, TimestampTz now)
{
	a->sent++;
	(void) mr_account_accepted(a, now, true, 0);
	a->failure_run = 0;
	a->holds = 0;
	if (a->circuit_open)
	{
		a->circuit_open = false;
		a->probe_ms = MR_PROBE_BASE_MS;
		a->next_probe = 0;
		ereport(LOG,
				(errmsg("maileroo delivery worker: sending through account \"%s\" resumed",
						a->name)));
	}
}

/*
 * Judge a finished request of job: fill o->status, o->delay_ms and
 * o->refund, and let the answer change the account's state.
 */
void
mr_sched_judge(MrWorker *w, MrJob *job, const MailerooResult *res, MrOutcome *o)
{
	static MrAccount unpaced;	/* a request of no known account */
	MrAccount  *a = job->account ? job->account : &unpaced;
	TimestampTz now = GetCurrentTimestamp();
	MrVerdict	v = mr_verdict(res);

	o->delay_ms = 0;
	o->refund = false;
	if (v != MR_VERDICT_ACCEPTED)
		mr_account_note_error(a, res, now);

	switch (v)
	{
		case MR_VERDICT_ACCEPTED:
			mr_account_accepted_answer(a, now);
			o->status = MR_ROW_SENT;
			return;
		case MR_VERDICT_RATE_LIMITED:
			mr_account_rate_limited(a, res, now);
			o->status = MR_ROW_RETRYING;
			o->refund = true;
			return;
		case MR_VERDICT_REFUSED:
			mr_account_trip(a, job->probe, now);
			o->status = MR_ROW_RETRYING;
			o->refund = true;
			return;
		case MR_VERDICT_UNAVAILABLE:
			if (a->circuit_open || ++a->failure_run >= MR_FAILURE_RUN)
			{
				mr_account_trip(a, job->probe, now);
				o->status = MR_ROW_RETRYING;
				o->refund = true;
				return;
			}
			break;
		case MR_VERDICT_MESSAGE:
			a->failure_run = 0;
			break;
	}

	if (res->outcome == MR_OUTCOME_RETRY && job->attempts < maileroo_max_attempts)
	{
		o->status = MR_ROW_RETRYING;
		o->delay_ms = mr_backoff_ms(job->attempts, res->retry_after_ms);
	}
	else
		o->status = MR_ROW_FAILED;
}

/* Publish every account's state for maileroo_account_status(). */
void
mr_sched_publish(MrWorker *w)
{
	MrAccountInfo infos[MR_MAX_ACCOUNTS];
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < w->naccounts; i++)
	{
		MrAccount  *a = &w->accounts[i];
		MrAccountInfo *info = &infos[i];
		double		capacity;

		memset(info, 0, sizeof(*info));
		strlcpy(info->name, a->name, NAMEDATALEN);
		if (a->paused)
			info->state = MR_ACCT_PAUSED;
		else if (a->circuit_open)
			info->state = MR_ACCT_CIRCUIT_OPEN;
		else if (now < a->hold_until)
			info->state = MR_ACCT_RATE_LIMITED;
		else
			info->state = MR_ACCT_SENDING;
		info->pace = mr_account_rate(a, &capacity);
		info->rate_limit = a->ceiling;
		info->in_flight = a->in_flight;
		info->sent = a->sent;
		info->rate_limited = a->rate_limited;
		info->resume_at = now < a->hold_until ? a->hold_until : 0;
		info->next_probe_at = a->circuit_open ? a->next_probe : 0;
		info->last_error_at = a->last_error_at;
		strlcpy(info->last_error, a->last_error, MR_ERROR_LEN);
	}
	mr_status_publish_accounts(infos, w->naccounts);
}
