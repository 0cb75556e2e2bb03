/*-------------------------------------------------------------------------
 *
 * maileroo_worker.h
 *		What the files of the delivery worker share with each other.
 *
 * The worker is split by job:
 *
 *	 maileroo_worker.c		the main loop and the worker's life (start, the
 *							one-worker-per-database lock, shutdown)
 *	 maileroo_queue.c		the outbox statements of a transaction step
 *							(record, requeue orphans, claim, next due)
 *	 maileroo_transfer.c	the requests in flight on one curl multi handle,
 *							and turning an answer into an outcome
 *	 maileroo_bulk.c		campaign rows: claimed into POST /emails/bulk
 *							requests, one answer split into an outcome
 *							per message
 *	 maileroo_scheduler.c	per-account pacing: how much may be claimed now,
 *							and what an answer says about the account
 *	 maileroo_status.c		shared memory: which worker serves which
 *							database, and the figures it reports
 *	 maileroo_wakeup.c		the backend side: find, wake or start the
 *							worker of a database at commit
 *
 * All of the loop's state lives in one MrWorker, owned by maileroo_worker.c
 * and passed to the functions of the other files.
 *
 * src/maileroo_worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILEROO_WORKER_H
#define MAILEROO_WORKER_H

#include "maileroo.h"
#include "maileroo_http.h"

#include "postmaster/bgworker.h"
#include "utils/timestamp.h"

/* The advisory lock a worker holds in the database it serves. */
#define MR_LOCK_KEY1		0x6D61696C	/* "mail" */
#define MR_LOCK_KEY2		1

#define MR_ERROR_LEN		256
#define MR_POLL_MS			20		/* longest curl wait between checks */
#define MR_IDLE_POLL_MS		10000	/* safety poll of an idle worker */
#define MR_DB_PROBE_MS		500		/* DROP DATABASE probe interval */
#define MR_DYNAMIC_IDLE_MS	60000	/* a dynamic worker leaves when idle */
#define MR_RECORD_AGE_MS	20		/* longest wait before recording results */
#define MR_ERROR_BACKOFF_MS 1000	/* pause after a failed transaction */
#define MR_LEASE_SLACK_MS	60000	/* lease = timeout + connect + slack */
#define MR_BACKOFF_BASE_MS	1000	/* first retry within 1 s ... */
#define MR_BACKOFF_CAP_MS	(15 * 60 * 1000)	/* ... growing to 15 min */
#define MR_RETRY_AFTER_CAP_MS (24 * 3600 * 1000)

/* Accounts (maileroo_scheduler.c) */
#define MR_MAX_ACCOUNTS		64		/* accounts one worker paces */
#define MR_FAILURE_RUN		5		/* 5xx or network errors that open the circuit */
#define MR_PROBE_BASE_MS	1000	/* first probe of an open circuit ... */
#define MR_PROBE_CAP_MS		30000	/* ... backing off to this */
#define MR_HOLD_BASE_MS		1000	/* 429 without Retry-After: pause ... */
#define MR_HOLD_CAP_MS		60000	/* ... doubling up to this */
#define MR_PAUSE_POLL_MS	1000	/* maileroo_pauses read at least this often */

#define MR_RESTART_SECONDS	5		/* static worker restart delay */
#define MR_WORKER_TYPE		"maileroo delivery worker"

/* The status an outcome gives the message's row. */
typedef enum MrRowStatus
{
	MR_ROW_SENT,
	MR_ROW_RETRYING,
	MR_ROW_FAILED
} MrRowStatus;

/* What an account is doing, as maileroo_account_status() shows it. */
typedef enum MrAccountState
{
	MR_ACCT_SENDING,
	MR_ACCT_PAUSED,
	MR_ACCT_RATE_LIMITED,
	MR_ACCT_CIRCUIT_OPEN
} MrAccountState;

/* What the worker publishes about an account in shared memory. */
typedef struct MrAccountInfo
{
	char		name[NAMEDATALEN];
	MrAccountState state;
	double		pace;			/* messages/s it sends at now; 0: no limit */
	double		rate_limit;		/* configured ceiling; 0: none */
	int			in_flight;
	int64		sent;			/* since the worker started */
	int64		rate_limited;	/* 429s since the worker started */
	TimestampTz resume_at;		/* end of a 429 pause, or 0 */
	TimestampTz next_probe_at;	/* of an open circuit, or 0 */
	TimestampTz last_error_at;
	char		last_error[MR_ERROR_LEN];
} MrAccountInfo;

typedef struct MrAccount MrAccount;

/* One request in flight. */
typedef struct MrJob
{
	bool		busy;			/* claimed */
	bool		added;			/* its transfer is on the multi handle */
	CURL	   *easy;			/* kept across jobs for reuse */
	struct curl_slist *headers;
	MailerooHttpBuffer buf;
	MemoryContext cxt;			/* the job's strings; reset when it ends */
	char	   *reference_id;
	char	   *path;
	char	   *body;
	int			attempts;		/* the largest of its messages' */
	int			nrefs;			/* a bulk request's messages; 0 otherwise */
	char	  **refs;			/* their reference ids, in body order */
	char	   *api_url;		/* from the row's account, read at claim */
	char	   *api_key;		/* wiped once it is in the header list */
	MrAccount  *account;		/* whose pace it counts against */
	bool		probe;			/* sent to probe an open circuit */
} MrJob;

/* One finished request waiting to be recorded. */
typedef struct MrOutcome
{
	char	   *reference_id;
	MrRowStatus status;
	int			http_status;	/* 0: none */
	char	   *error;			/* or NULL */
	char	   *response;		/* JSON text, or NULL */
	double		delay_ms;		/* for retrying */
	bool		refund;			/* the account's fault: no attempt used */
} MrOutcome;

/* What one transaction step is asked to do, and what it found. */
typedef struct MrStep
{
	int			claim_n;		/* rows to claim (0: none) */
	bool		orphans_all;	/* requeue every 'sending' row */
	bool		orphans_expired;	/* requeue 'sending' rows past their lease */
	bool		read_pauses;	/* read maileroo_pauses first */
	int			nclaimed;		/* out: rows claimed */
	double		next_due_ms;	/* out: ms to the next due row, -1 none,
								 * -2 not computed */
	bool		ext_missing;	/* out: the extension is not installed */
	bool		citus_worker;	/* out: this is a Citus worker node */
} MrStep;

/* Everything the delivery loop keeps between rounds. */
typedef struct MrWorker
{
	/* who we are */
	bool		dynamic;		/* started on demand (else the static one) */
	char	   *dbname;
	MemoryContext loop_cxt;		/* reset every round */

	/* requests in flight */
	CURLM	   *multi;
	int			multi_concurrency;	/* what the multi handle is set to */
	MrJob	   *jobs;			/* MAILEROO_MAX_CONCURRENCY slots, never moved */
	int			njobs;
	int			in_flight;

	/* finished requests not recorded yet */
	MemoryContext pending_cxt;
	MrOutcome  *pending;
	int			npending;
	int			pending_alloc;
	TimestampTz oldest_pending;
	int			record_failures;	/* steps failed in a row */

	/* what to do next */
	TimestampTz now;			/* when this round began */
	bool		want_claim;		/* due rows may be waiting */
	bool		orphans_all;	/* requeue every 'sending' row (at start) */
	bool		ext_missing;	/* the extension is not installed */
	bool		citus_worker;	/* on a Citus worker node: leave for good */
	TimestampTz next_due;		/* when the next row falls due, or 0 */
	TimestampTz pause_until;	/* after a failed step, or 0 */
	TimestampTz last_probe;		/* DROP DATABASE probe */
	TimestampTz last_lease_check;
	TimestampTz last_busy;		/* for a dynamic worker's idle exit */

	/* accounts (maileroo_scheduler.c) */
	MrAccount  *accounts;		/* MR_MAX_ACCOUNTS slots */
	int			naccounts;
	bool		pauses_stale;	/* maileroo_pauses may have changed */
	TimestampTz sched_wake;		/* when a held-back account may send, or 0 */
	TimestampTz pauses_read_at;
} MrWorker;

/* maileroo_queue.c: the statements of a transaction step */
extern bool mr_queue_step(MrWorker *w, MrStep *step);
extern void mr_queue_forget_plans(void);
extern void mr_queue_free_plans(struct _SPI_plan **const *plans, int n);
extern struct _SPI_plan *mr_queue_prepare(const char *fmt, const char *schema,
										  int nargs, Oid *argtypes);
extern Datum mr_text_array(char **vals, int n);

/* maileroo_bulk.c: campaign rows through POST /emails/bulk */
extern void mr_bulk_prepare(const char *schema);
extern void mr_bulk_forget_plans(void);
extern int	mr_bulk_claim(MrWorker *w, int max_jobs);
extern void mr_bulk_finish(MrWorker *w, MrJob *job, const MailerooResult *res);

/* maileroo_transfer.c: requests in flight */
extern void mr_transfer_init(MrWorker *w);
extern void mr_transfer_apply_concurrency(MrWorker *w);
extern MrJob *mr_transfer_free_job(MrWorker *w);
extern void mr_transfer_start_claimed(MrWorker *w);
extern void mr_transfer_collect(MrWorker *w);
extern void mr_transfer_wait(MrWorker *w);
extern void mr_transfer_release(MrJob *job);
extern void mr_transfer_release_unstarted(MrWorker *w);
extern bool mr_transfer_abandon_all(MrWorker *w);
extern void mr_transfer_cleanup(MrWorker *w);
extern void mr_pending_forget(MrWorker *w);
extern MrOutcome *mr_pending_add(MrWorker *w);

/* maileroo_scheduler.c: how much to claim, and what an answer means */
extern void mr_sched_init(MrWorker *w);
extern int	mr_sched_claim_budget(MrWorker *w);
extern TimestampTz mr_sched_next_wake(MrWorker *w);
extern void mr_sched_set_pauses(MrWorker *w, bool all, char **names, int n);
extern int	mr_sched_limit_claim(MrWorker *w, int claim_n);
extern void mr_sched_claimed(MrWorker *w, MrJob *job, const char *account);
extern int	mr_sched_blocked(MrWorker *w, char **names);
extern void mr_sched_configure(MrWorker *w, const char *name, double rate_limit,
							   int burst, int concurrency);
extern void mr_sched_judge(MrWorker *w, MrJob *job, const MailerooResult *res,
						   MrOutcome *o);
extern void mr_sched_released(MrJob *job);
extern void mr_sched_wake_all(MrWorker *w);
extern void mr_sched_publish(MrWorker *w);

/* maileroo_status.c: shared memory */
extern void mr_status_shmem_init(void);
extern void mr_status_register(void);
extern void mr_status_unregister(int code, Datum arg);
extern pid_t mr_status_worker_pid(Oid dboid);
extern void mr_status_note_error(const char *msg);
extern void mr_status_note_progress(int in_flight, int delivered, int given_up);
extern void mr_status_publish_accounts(const MrAccountInfo *infos, int n);

/* maileroo_wakeup.c: finding and starting workers */
extern void mr_worker_template(BackgroundWorker *bgw, Oid dboid);
extern bool mr_pid_serves_here(pid_t pid);
extern void mr_set_latch_of(pid_t pid);
extern pid_t mr_find_worker(void);

PGDLLEXPORT void maileroo_worker_main(Datum main_arg);

#endif							/* MAILEROO_WORKER_H */
