/*-------------------------------------------------------------------------
 *
 * maileroo_worker.c
 *		The delivery worker that sends queued mail from maileroo_outbox, and
 *		the backend side that wakes (or starts) it when a transaction that
 *		queued mail commits.
 *
 * One worker serves one database.  When the library is preloaded, a static
 * worker is registered for maileroo.database_name; for any other database,
 * and on a server that does not preload the library at all, a dynamic
 * worker is started on demand by the first maileroo_send of a transaction
 * that finds no worker serving its database.
 *
 * Exactly one worker per database: a worker holds a session-level advisory
 * lock (classid MR_LOCK_KEY1, objid MR_LOCK_KEY2, objsubid 2) in its database
 * for as long as it serves it, so a second one started by a race gives way.
 * The lock also lets a backend find the worker without shared memory (by
 * pg_locks).  When the library is preloaded, a small shared memory area maps
 * each database to its worker's pid and carries the figures that
 * maileroo_worker_status() reports (requests in flight, last error, ...).
 *
 * Wakeup: maileroo_send marks the transaction; at XACT_EVENT_COMMIT the
 * backend sets the worker's process latch (or starts a worker when the one
 * it found has gone).  Nothing is signalled on rollback, and the rows of a
 * rolled-back transaction never become visible, so nothing is sent.
 *
 * The loop never holds a transaction or a row lock across a network call:
 *
 *	 1. In one short transaction: record the outcome of finished requests
 *		and claim up to (concurrency - in flight) due rows, turning them into
 *		'sending' with attempts + 1 and a lease (FOR UPDATE SKIP LOCKED).
 *	 2. Outside any transaction: add the claimed requests to one curl multi
 *		handle (at most maileroo.concurrency connections, kept alive and
 *		reused), drive it with curl_multi_poll in rounds of at most
 *		MR_POLL_MS, checking the latch, SIGHUP and SIGTERM between rounds.
 *	 3. Judge each answer (maileroo_http_judge): sent, retry later with
 *		exponential backoff and full jitter (Retry-After honoured when
 *		longer), failed at once, or outcome unknown (never retried).
 *
 * Crash safety: the claim and the outcome are separate commits, so a crash
 * between them leaves rows in 'sending'.  A worker that starts serving a
 * database turns every 'sending' row back into 'retrying' (it holds the
 * advisory lock, so no other worker can have them in flight), and a row
 * whose lease expired is treated the same way.  Such a message is sent again
 * with the same reference_id: delivery is at least once.
 *
 * DROP DATABASE: PostgreSQL waits (it does not signal) for other sessions
 * to leave a database being dropped.  The worker probes the database's lock
 * every MR_DB_PROBE_MS and leaves when someone holds it exclusively, so it
 * never blocks DROP DATABASE or ALTER DATABASE ... RENAME.  DROP EXTENSION:
 * the worker holds no lock between its short transactions, looks the
 * extension up again in each of them, and sleeps while it is absent.
 *
 * Citus: on a worker node (maileroo_citus.c) the worker leaves for good and
 * maileroo_send refuses to queue; mail goes out from the coordinator only.
 *
 * src/maileroo_worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo.h"
#include "maileroo_http.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* The advisory lock a worker holds in the database it serves. */
#define MR_LOCK_KEY1		0x6D61696C	/* "mail" */
#define MR_LOCK_KEY2		1

#define MR_MAX_DB_SLOTS		32		/* databases tracked in shared memory */
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

#define MR_RESTART_SECONDS	5		/* static worker restart delay */
#define MR_WORKER_TYPE		"maileroo delivery worker"

/* Shared memory, present only when the library is preloaded. */
typedef struct MrWorkerSlot
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		pid;
	int			in_flight;
	int64		delivered;		/* since the worker started */
	int64		given_up;
	TimestampTz started_at;
	TimestampTz last_error_at;
	char		last_error[MR_ERROR_LEN];
} MrWorkerSlot;

typedef struct MrShared
{
	slock_t		mutex;
	MrWorkerSlot slots[MR_MAX_DB_SLOTS];
} MrShared;

static MrShared *mr_shared = NULL;

#ifdef MR_HAVE_SHMEM_REQUEST_HOOK
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

PGDLLEXPORT void maileroo_worker_main(Datum main_arg);

/* ----------------------------------------------------------------------
 * Shared memory and registration
 * ----------------------------------------------------------------------
 */

static void
mr_shmem_request(void)
{
#ifdef MR_HAVE_SHMEM_REQUEST_HOOK
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(MAXALIGN(sizeof(MrShared)));
}

static void
mr_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	mr_shared = ShmemInitStruct("maileroo", sizeof(MrShared), &found);
	if (!found)
	{
		memset(mr_shared, 0, sizeof(MrShared));
		SpinLockInit(&mr_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Fill in what every maileroo worker has in common. */
static void
mr_worker_template(BackgroundWorker *bgw, Oid dboid)
{
	memset(bgw, 0, sizeof(*bgw));
	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	snprintf(bgw->bgw_library_name, BGW_MAXLEN, "maileroo");
	snprintf(bgw->bgw_function_name, BGW_MAXLEN, "maileroo_worker_main");
	snprintf(bgw->bgw_type, BGW_MAXLEN, MR_WORKER_TYPE);
	bgw->bgw_main_arg = ObjectIdGetDatum(dboid);
}

/*
 * Called by _PG_init.  When preloaded: request shared memory and register
 * the static worker for maileroo.database_name, restarted MR_RESTART_SECONDS
 * after it exits (at once after a crash).
 */
void
maileroo_worker_init(void)
{
	BackgroundWorker bgw;

	if (!process_shared_preload_libraries_in_progress)
		return;

#ifdef MR_HAVE_SHMEM_REQUEST_HOOK
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = mr_shmem_request;
#else
	mr_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = mr_shmem_startup;

	mr_worker_template(&bgw, InvalidOid);
	bgw.bgw_restart_time = MR_RESTART_SECONDS;
	snprintf(bgw.bgw_name, BGW_MAXLEN, MR_WORKER_TYPE " for database %s",
			 maileroo_database_name);
	RegisterBackgroundWorker(&bgw);
}

/* ----------------------------------------------------------------------
 * Finding, waking and starting the worker of this database (backend side)
 * ----------------------------------------------------------------------
 */

/* Per transaction: what to do at commit. */
static bool mr_xact_queued = false;
static pid_t mr_xact_worker_pid = 0;
static BackgroundWorkerHandle *mr_xact_handle = NULL;
static bool mr_xact_callback_registered = false;

/* Per backend: the worker last seen serving this database, and its name. */
static pid_t mr_cached_worker_pid = 0;
static char mr_backend_dbname[NAMEDATALEN];

/* Is pid a live process connected to this database? */
static bool
mr_pid_serves_here(pid_t pid)
{
	PGPROC	   *proc;

	if (pid == 0)
		return false;
	proc = BackendPidGetProc(pid);
	return proc != NULL && proc->databaseId == MyDatabaseId;
}

static void
mr_set_latch_of(pid_t pid)
{
	PGPROC	   *proc = BackendPidGetProc(pid);

	if (proc != NULL)
		SetLatch(&proc->procLatch);
}

/* The pid that shared memory names for this database, or 0. */
static pid_t
mr_shmem_worker_pid(Oid dboid)
{
	pid_t		pid = 0;
	int			i;

	if (mr_shared == NULL)
		return 0;
	SpinLockAcquire(&mr_shared->mutex);
	for (i = 0; i < MR_MAX_DB_SLOTS; i++)
	{
		if (mr_shared->slots[i].dboid == dboid)
		{
			pid = mr_shared->slots[i].pid;
			break;
		}
	}
	SpinLockRelease(&mr_shared->mutex);
	return pid;
}

/*
 * The pid of the worker serving this database, or 0.  Shared memory first,
 * then this backend's cache, then pg_locks (which needs a transaction: the
 * caller is inside one).
 */
static pid_t
mr_find_worker(void)
{
	pid_t		pid;
	int			ret;
	char		sql[256];

	pid = mr_shmem_worker_pid(MyDatabaseId);
	if (mr_pid_serves_here(pid))
		return pid;
	if (mr_pid_serves_here(mr_cached_worker_pid))
		return mr_cached_worker_pid;

	mr_cached_worker_pid = 0;
	snprintf(sql, sizeof(sql),
			 "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory'"
			 " AND database = %u AND classid = %u AND objid = %u"
			 " AND objsubid = 2 AND granted AND pid IS NOT NULL LIMIT 1",
			 MyDatabaseId, (uint32) MR_LOCK_KEY1, (uint32) MR_LOCK_KEY2);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute(sql, true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			mr_cached_worker_pid = DatumGetInt32(d);
	}
	SPI_finish();
	return mr_cached_worker_pid;
}

/*
 * Ask the postmaster for a dynamic worker for this database.  Returns false
 * (and says why in a WARNING when warn is true) when no slot is free.
 */
static bool
mr_launch_worker(bool warn)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	MemoryContext old;

	mr_worker_template(&bgw, MyDatabaseId);
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_name, BGW_MAXLEN, MR_WORKER_TYPE " for database %s",
			 mr_backend_dbname);

	old = MemoryContextSwitchTo(TopTransactionContext);
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		MemoryContextSwitchTo(old);
		if (warn)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("no delivery worker can be started for database \"%s\"",
							mr_backend_dbname),
					 errdetail("Every background worker slot is in use (max_worker_processes is %d); the message stays queued and is sent when a delivery worker starts.",
							   max_worker_processes),
					 errhint("Raise max_worker_processes, or preload maileroo (shared_preload_libraries) with maileroo.database_name set to this database.")));
		return false;
	}
	MemoryContextSwitchTo(old);
	mr_xact_handle = handle;
	return true;
}

static void
mr_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (mr_xact_queued)
			{
				pid_t		pid = 0;

				if (mr_xact_handle != NULL)
				{
					if (GetBackgroundWorkerPid(mr_xact_handle, &pid) != BGWH_STARTED)
						pid = 0;	/* not started yet: it scans at start */
					if (pid != 0)
						mr_set_latch_of(pid);
				}
				else if (mr_pid_serves_here(mr_xact_worker_pid))
					mr_set_latch_of(mr_xact_worker_pid);
				else
				{
					/* The worker found earlier has left: start another. */
					pid = mr_shmem_worker_pid(MyDatabaseId);
					if (mr_pid_serves_here(pid))
						mr_set_latch_of(pid);
					else
						(void) mr_launch_worker(false);
				}
			}
			/* FALLTHROUGH */
		case XACT_EVENT_PREPARE:
			/* COMMIT PREPARED runs elsewhere: the safety poll finds it. */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			mr_xact_queued = false;
			mr_xact_worker_pid = 0;
			mr_xact_handle = NULL;
			break;
		default:
			break;
	}
}

/*
 * Called by maileroo_send after it queued a row: arrange for the worker of
 * this database to be woken at commit, starting one now if none serves the
 * database.  The first call in a transaction does the work; later calls
 * return at once.  Raises WARNING (never ERROR) when nothing will deliver.
 */
void
maileroo_outbox_wake_at_commit(void)
{
	if (mr_xact_queued)
		return;

	if (maileroo_citus_worker_node())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("mail cannot be queued on a Citus worker node"),
				 errdetail("The outbox and its delivery worker live on the coordinator; mail queued here would never be sent."),
				 errhint("Call maileroo_send on the coordinator.")));

	if (!mr_xact_callback_registered)
	{
		/* Known now, for a worker started where catalogs cannot be read. */
		strlcpy(mr_backend_dbname, get_database_name(MyDatabaseId), NAMEDATALEN);
		RegisterXactCallback(mr_xact_callback, NULL);
		mr_xact_callback_registered = true;
	}

	mr_xact_worker_pid = mr_find_worker();
	if (mr_xact_worker_pid == 0)
		(void) mr_launch_worker(true);
	mr_xact_queued = true;

	if (maileroo_api_key == NULL || maileroo_api_key[0] == '\0')
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("maileroo.api_key is not set"),
				 errdetail("The message stays queued until the key is set."),
				 errhint("Set maileroo.api_key in postgresql.conf or with ALTER SYSTEM, then reload.")));
}

/* ----------------------------------------------------------------------
 * The worker
 * ----------------------------------------------------------------------
 */

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
	int			attempts;
} MrJob;

/* One finished request waiting to be recorded. */
typedef struct MrOutcome
{
	char	   *reference_id;
	const char *status;			/* sent, retrying, failed */
	int			http_status;	/* 0: none */
	char	   *error;			/* or NULL */
	char	   *response;		/* JSON text, or NULL */
	double		delay_ms;		/* for retrying */
} MrOutcome;

/* Worker state. */
static MrJob *mr_jobs;
static int	mr_njobs_alloc;
static int	mr_in_flight;
static CURLM *mr_multi;
static int	mr_multi_concurrency;
static MemoryContext mr_pending_cxt;
static MrOutcome *mr_pending;
static int	mr_npending;
static int	mr_pending_alloc;
static TimestampTz mr_oldest_pending;
static MrWorkerSlot *mr_my_slot;
static bool mr_dynamic;
static char *mr_dbname;

/* Plans, valid for the extension they were made for. */
static Oid	mr_plan_ext = InvalidOid;
static SPIPlanPtr mr_plan_claim;
static SPIPlanPtr mr_plan_record;
static SPIPlanPtr mr_plan_orphans;
static SPIPlanPtr mr_plan_next_due;

/* Set when the database turns out to be on a Citus worker node. */
static bool mr_citus_worker = false;

static void
mr_forget_plans(void)
{
	if (mr_plan_claim)
		SPI_freeplan(mr_plan_claim);
	if (mr_plan_record)
		SPI_freeplan(mr_plan_record);
	if (mr_plan_orphans)
		SPI_freeplan(mr_plan_orphans);
	if (mr_plan_next_due)
		SPI_freeplan(mr_plan_next_due);
	mr_plan_claim = mr_plan_record = mr_plan_orphans = mr_plan_next_due = NULL;
	mr_plan_ext = InvalidOid;
}

static SPIPlanPtr
mr_prepare(const char *fmt, const char *schema, int nargs, Oid *argtypes)
{
	StringInfoData sql;
	SPIPlanPtr	plan;

	const char *p;

	/* Every @ in fmt stands for the extension's schema. */
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

/*
 * Inside a transaction with SPI connected: make sure the plans belong to
 * the installed extension.  Returns false when the extension is absent.
 */
static bool
mr_ensure_plans(void)
{
	Oid			ext = get_extension_oid("maileroo", true);
	const char *schema;

	if (!OidIsValid(ext))
	{
		mr_forget_plans();
		return false;
	}
	if (maileroo_citus_worker_node())
	{
		/* Mail is delivered from the coordinator only. */
		mr_forget_plans();
		mr_citus_worker = true;
		return false;
	}
	if (ext == mr_plan_ext && mr_plan_claim != NULL)
		return true;

	mr_forget_plans();
	{
		char		sql[128];
		bool		isnull;

		Datum		nsp;

		snprintf(sql, sizeof(sql),
				 "SELECT extnamespace FROM pg_catalog.pg_extension WHERE oid = %u", ext);
		if (SPI_execute(sql, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			return false;
		nsp = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		schema = quote_identifier(get_namespace_name(DatumGetObjectId(nsp)));
	}

	{
		Oid			claim_args[2] = {INT4OID, FLOAT8OID};
		Oid			record_args[6] = {TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
			TEXTARRAYOID, TEXTARRAYOID, FLOAT8ARRAYOID};
		Oid			orphan_args[1] = {BOOLOID};

		mr_plan_claim = mr_prepare(
								   "UPDATE @.maileroo_outbox o"
								   "   SET status = 'sending', attempts = o.attempts + 1,"
								   "       lease_until = now() + $2 * interval '1 millisecond'"
								   " WHERE o.reference_id = ANY (ARRAY("
								   "       SELECT reference_id FROM @.maileroo_outbox"
								   "        WHERE status IN ('queued', 'retrying')"
								   "          AND next_attempt_at <= now()"
								   "        ORDER BY next_attempt_at LIMIT $1"
								   "          FOR UPDATE SKIP LOCKED))"
								   " RETURNING o.reference_id, o.endpoint, o.request::text, o.attempts",
								   schema, 2, claim_args);
		mr_plan_record = mr_prepare(
									"UPDATE @.maileroo_outbox o"
									"   SET status = r.status,"
									"       last_http_status = r.http,"
									"       last_error = coalesce(r.err, o.last_error),"
									"       response = r.resp::jsonb,"
									"       sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE o.sent_at END,"
									"       next_attempt_at = CASE WHEN r.status = 'retrying'"
									"            THEN now() + r.delay_ms * interval '1 millisecond'"
									"            ELSE o.next_attempt_at END,"
									"       lease_until = NULL"
									"  FROM unnest($1, $2, $3, $4, $5, $6) AS r(ref, status, http, err, resp, delay_ms)"
									" WHERE o.reference_id = r.ref AND o.status = 'sending'",
									schema, 6, record_args);
		mr_plan_orphans = mr_prepare(
									 "UPDATE @.maileroo_outbox"
									 "   SET status = 'retrying', next_attempt_at = now(), lease_until = NULL,"
									 "       last_error = 'delivery was interrupted before an answer arrived; sent again with the same reference_id'"
									 " WHERE status = 'sending' AND ($1 OR lease_until < now())",
									 schema, 1, orphan_args);
		mr_plan_next_due = mr_prepare(
									  "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 * 1000"
									  "  FROM @.maileroo_outbox WHERE status IN ('queued', 'retrying')",
									  schema, 0, NULL);
	}
	mr_plan_ext = ext;
	return true;
}

/* Record an error for maileroo_worker_status() and the server log. */
static void
mr_note_error(const char *msg)
{
	if (mr_my_slot != NULL)
	{
		SpinLockAcquire(&mr_shared->mutex);
		strlcpy(mr_my_slot->last_error, msg, MR_ERROR_LEN);
		mr_my_slot->last_error_at = GetCurrentTimestamp();
		SpinLockRelease(&mr_shared->mutex);
	}
}

static void
mr_note_progress(int delivered, int given_up)
{
	if (mr_my_slot != NULL)
	{
		SpinLockAcquire(&mr_shared->mutex);
		mr_my_slot->in_flight = mr_in_flight;
		mr_my_slot->delivered += delivered;
		mr_my_slot->given_up += given_up;
		SpinLockRelease(&mr_shared->mutex);
	}
}

/* Build a text[] / int4[] / float8[] Datum from C values with nulls. */
static Datum
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
 * The transaction step: record the pending outcomes, then optionally turn
 * orphaned 'sending' rows back into 'retrying', then claim up to claim_n
 * due rows into free job slots and start their transfers.  Sets
 * *next_due_ms to the delay before the next due row (or -1 when none) when
 * the claim left nothing due behind.  Returns false when the extension is
 * not installed.  Raises ERROR on failure; the caller catches it.
 */
static bool
mr_transaction_step(int claim_n, bool orphans_all, bool orphans_expired,
					int *nclaimed, double *next_due_ms)
{
	bool		ext_ok;
	int			delivered = 0,
				given_up = 0;

	*nclaimed = 0;
	*next_due_ms = -2;			/* not computed */

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "maileroo: recording and claiming");

	ext_ok = mr_ensure_plans();
	if (ext_ok)
	{
		if (mr_npending > 0)
		{
			int			n = mr_npending;
			char	  **refs = palloc(sizeof(char *) * n);
			char	  **statuses = palloc(sizeof(char *) * n);
			char	  **errs = palloc(sizeof(char *) * n);
			char	  **resps = palloc(sizeof(char *) * n);
			Datum	   *https = palloc(sizeof(Datum) * n);
			bool	   *http_nulls = palloc(sizeof(bool) * n);
			Datum	   *delays = palloc(sizeof(Datum) * n);
			int			dims[1] = {n};
			int			lbs[1] = {1};
			Datum		args[6];
			int			i;

			for (i = 0; i < n; i++)
			{
				MrOutcome  *o = &mr_pending[i];

				refs[i] = o->reference_id;
				statuses[i] = (char *) o->status;
				errs[i] = o->error;
				resps[i] = o->response;
				https[i] = Int32GetDatum(o->http_status);
				http_nulls[i] = o->http_status == 0;
				delays[i] = Float8GetDatum(o->delay_ms);
				if (strcmp(o->status, "sent") == 0)
					delivered++;
				else if (strcmp(o->status, "failed") == 0)
					given_up++;
			}
			args[0] = mr_text_array(refs, n);
			args[1] = mr_text_array(statuses, n);
			args[2] = PointerGetDatum(construct_md_array(https, http_nulls, 1, dims, lbs,
														 INT4OID, 4, true, TYPALIGN_INT));
			args[3] = mr_text_array(errs, n);
			args[4] = mr_text_array(resps, n);
			args[5] = PointerGetDatum(construct_array(delays, n, FLOAT8OID, 8,
													  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			if (SPI_execute_plan(mr_plan_record, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not record delivery outcomes");
		}

		/* After the outcomes: what is still 'sending' now has none. */
		if (orphans_all || orphans_expired)
		{
			Datum		arg = BoolGetDatum(orphans_all);

			if (SPI_execute_plan(mr_plan_orphans, &arg, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not requeue interrupted messages");
		}

		if (claim_n > 0)
		{
			Datum		args[2];
			uint64		i;
			int			slot = 0;

			args[0] = Int32GetDatum(claim_n);
			args[1] = Float8GetDatum((double) maileroo_timeout_ms +
									 maileroo_connect_timeout_ms + MR_LEASE_SLACK_MS);
			if (SPI_execute_plan(mr_plan_claim, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
				elog(ERROR, "could not claim queued messages");

			for (i = 0; i < SPI_processed; i++)
			{
				HeapTuple	tup = SPI_tuptable->vals[i];
				TupleDesc	desc = SPI_tuptable->tupdesc;
				MrJob	   *job;
				MemoryContext old;
				bool		isnull;

				while (slot < mr_njobs_alloc && mr_jobs[slot].busy)
					slot++;
				if (slot >= mr_njobs_alloc)
					elog(ERROR, "claimed more messages than free job slots");
				job = &mr_jobs[slot];
				if (job->cxt == NULL)
					job->cxt = AllocSetContextCreate(TopMemoryContext, "maileroo job",
													 ALLOCSET_SMALL_SIZES);
				old = MemoryContextSwitchTo(job->cxt);
				job->reference_id = SPI_getvalue(tup, desc, 1);
				job->path = SPI_getvalue(tup, desc, 2);
				job->body = SPI_getvalue(tup, desc, 3);
				job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
				MemoryContextSwitchTo(old);
				job->busy = true;	/* started after commit */
				(*nclaimed)++;
			}
		}

		if (claim_n == 0 || *nclaimed < claim_n)
		{
			bool		isnull;
			Datum		d;

			/* Not read-only: it must see the rows just updated. */
			if (SPI_execute_plan(mr_plan_next_due, NULL, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "could not read the outbox");
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			*next_due_ms = isnull ? -1 : Max(0.0, DatumGetFloat8(d));
		}
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	/* Recorded: forget the outcomes. */
	mr_npending = 0;
	MemoryContextReset(mr_pending_cxt);
	mr_pending = NULL;
	mr_pending_alloc = 0;
	mr_note_progress(delivered, given_up);
	return ext_ok;
}

/* A job slot whose claim did not commit goes back to free. */
static void
mr_job_release(MrJob *job)
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
	if (job->cxt)
		MemoryContextReset(job->cxt);
	job->reference_id = job->path = job->body = NULL;
}

/* Start the transfers of claimed jobs not started yet. */
static void
mr_start_claimed(void)
{
	int			i;

	for (i = 0; i < mr_njobs_alloc; i++)
	{
		MrJob	   *job = &mr_jobs[i];

		if (!job->busy || job->added)
			continue;
		if (job->easy == NULL)
		{
			job->easy = curl_easy_init();
			if (job->easy == NULL)
				elog(ERROR, "curl_easy_init failed");
		}
		memset(&job->buf, 0, sizeof(job->buf));
		maileroo_http_prepare(job->easy, "POST", job->path, job->body,
							  &job->headers, &job->buf, false);
		curl_easy_setopt(job->easy, CURLOPT_PRIVATE, (void *) job);
		curl_multi_add_handle(mr_multi, job->easy);
		job->added = true;
		mr_in_flight++;
	}
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

/* Collect finished transfers into the pending outcomes. */
static void
mr_collect(int max_attempts)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(mr_multi, &left)) != NULL)
	{
		MrJob	   *job;
		long		http = 0;
		MailerooResult res;
		MrOutcome  *o;
		MemoryContext old;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &job);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &http);

		old = MemoryContextSwitchTo(mr_pending_cxt);
		memset(&res, 0, sizeof(res));
		maileroo_http_judge(msg->data.result, http, &job->buf, &res);

		if (mr_npending >= mr_pending_alloc)
		{
			int			n = Max(64, mr_pending_alloc * 2);

			mr_pending = mr_pending ? repalloc(mr_pending, sizeof(MrOutcome) * n)
				: palloc(sizeof(MrOutcome) * n);
			mr_pending_alloc = n;
		}
		if (mr_npending == 0)
			mr_oldest_pending = GetCurrentTimestamp();
		o = &mr_pending[mr_npending++];
		o->reference_id = pstrdup(job->reference_id);
		o->http_status = (int) res.http_status;
		o->response = mr_response_json(res.body);
		o->delay_ms = 0;
		o->error = NULL;
		switch (res.outcome)
		{
			case MR_OUTCOME_SENT:
				o->status = "sent";
				break;
			case MR_OUTCOME_FAILED:
				o->status = "failed";
				o->error = mr_clean_text(res.message);
				break;
			case MR_OUTCOME_UNKNOWN:
				o->status = "failed";
				o->error = psprintf("outcome unknown, not retried (Maileroo may have accepted the message): %s",
									res.message ? res.message : "unreadable answer");
				o->error = mr_clean_text(o->error);
				break;
			case MR_OUTCOME_RETRY:
				o->error = mr_clean_text(res.message);
				if (job->attempts >= max_attempts)
					o->status = "failed";
				else
				{
					o->status = "retrying";
					o->delay_ms = mr_backoff_ms(job->attempts, res.retry_after_ms);
				}
				break;
		}
		if (o->error && strcmp(o->status, "sent") != 0)
			mr_note_error(o->error);
		MemoryContextSwitchTo(old);

		curl_multi_remove_handle(mr_multi, job->easy);
		mr_job_release(job);
		mr_in_flight--;
	}
}

/* Apply maileroo.concurrency to the multi handle and the job table. */
static void
mr_apply_concurrency(void)
{
	int			conc = maileroo_concurrency;

	/*
	 * Transfers point at their job (CURLOPT_PRIVATE, the write buffer), so
	 * the table never moves: it is sized for the largest concurrency once.
	 */
	if (mr_jobs == NULL)
	{
		mr_jobs = MemoryContextAllocZero(TopMemoryContext,
										 sizeof(MrJob) * MAILEROO_MAX_CONCURRENCY);
		mr_njobs_alloc = MAILEROO_MAX_CONCURRENCY;
	}
	if (conc != mr_multi_concurrency)
	{
		curl_multi_setopt(mr_multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) conc);
		curl_multi_setopt(mr_multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) conc);
		curl_multi_setopt(mr_multi, CURLMOPT_MAXCONNECTS, (long) conc);
		mr_multi_concurrency = conc;
	}
}

/*
 * True when another session holds the database lock exclusively: DROP
 * DATABASE (or a rename) is waiting for us to leave.
 */
static bool
mr_database_wanted(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, MyDatabaseId, 0);
	if (LockAcquire(&tag, AccessShareLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		return true;
	LockRelease(&tag, AccessShareLock, true);
	return false;
}

static bool
mr_try_advisory_lock(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, MR_LOCK_KEY1, MR_LOCK_KEY2, 2);
	return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
}

static void
mr_release_advisory_lock(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, MR_LOCK_KEY1, MR_LOCK_KEY2, 2);
	LockRelease(&tag, ExclusiveLock, true);
}

/* Take (or refresh) this database's slot in shared memory. */
static void
mr_register_slot(void)
{
	int			i,
				free_slot = -1;

	if (mr_shared == NULL)
		return;
	SpinLockAcquire(&mr_shared->mutex);
	for (i = 0; i < MR_MAX_DB_SLOTS; i++)
	{
		if (mr_shared->slots[i].dboid == MyDatabaseId)
			break;
		if (free_slot < 0 && mr_shared->slots[i].dboid == InvalidOid)
			free_slot = i;
	}
	if (i == MR_MAX_DB_SLOTS)
		i = free_slot;
	if (i >= 0)
	{
		mr_my_slot = &mr_shared->slots[i];
		memset(mr_my_slot, 0, sizeof(MrWorkerSlot));
		mr_my_slot->dboid = MyDatabaseId;
		mr_my_slot->pid = MyProcPid;
		mr_my_slot->started_at = GetCurrentTimestamp();
	}
	SpinLockRelease(&mr_shared->mutex);
}

static void
mr_unregister_slot(int code, Datum arg)
{
	if (mr_shared == NULL || mr_my_slot == NULL)
		return;
	SpinLockAcquire(&mr_shared->mutex);
	if (mr_my_slot->pid == MyProcPid)
		mr_my_slot->dboid = InvalidOid;
	SpinLockRelease(&mr_shared->mutex);
	mr_my_slot = NULL;
}

/*
 * mr_transaction_step, catching its errors: on failure the transaction is
 * aborted, the error logged and kept for maileroo_worker_status(), claimed
 * slots freed, and false returned.
 */
static bool
mr_try_step(int claim_n, bool orphans_all, bool orphans_expired,
			int *nclaimed, double *due_ms, bool *ext_missing)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = false;

	PG_TRY();
	{
		*ext_missing = !mr_transaction_step(claim_n, orphans_all, orphans_expired,
											nclaimed, due_ms);
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		mr_forget_plans();
		ereport(LOG,
				(errmsg("maileroo delivery worker: %s", edata->message)));
		mr_note_error(edata->message);
		/* Claims did not commit: free their slots. */
		for (int i = 0; i < mr_njobs_alloc; i++)
			if (mr_jobs[i].busy && !mr_jobs[i].added)
				mr_job_release(&mr_jobs[i]);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return ok;
}

/*
 * On the way out: abandon the transfers in flight and put their rows back
 * in the queue (best effort: a worker that starts later does it anyway).
 */
static void
mr_shutdown_transfers(void)
{
	int			i;
	bool		any = false;

	for (i = 0; i < mr_njobs_alloc; i++)
	{
		MrJob	   *job = &mr_jobs[i];

		if (!job->busy)
			continue;
		if (job->added)
			curl_multi_remove_handle(mr_multi, job->easy);
		mr_job_release(job);
		any = true;
	}
	mr_in_flight = 0;

	if (any || mr_npending > 0)
	{
		int			n;
		double		due;
		bool		missing;

		(void) mr_try_step(0, true, false, &n, &due, &missing);
	}
}

/*
 * Entry point of a delivery worker.  main_arg is the OID of the database to
 * serve, or InvalidOid for the static worker (maileroo.database_name).
 */
void
maileroo_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	MemoryContext loop_cxt;
	bool		want_claim = true;
	bool		orphans_all = true;
	bool		ext_missing = false;
	int			record_failures = 0;
	TimestampTz next_due = 0;
	TimestampTz last_probe = 0;
	TimestampTz last_lease_check = 0;
	TimestampTz last_busy;
	TimestampTz pause_until = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	mr_dynamic = OidIsValid(dboid);
	if (mr_dynamic)
		BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	else
		BackgroundWorkerInitializeConnection(maileroo_database_name, NULL, 0);

	pgstat_report_appname(MR_WORKER_TYPE);

	/* The worker is a superuser: resolve nothing through user schemas. */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * One worker per database: a dynamic worker gives way to the one already
	 * serving (after waking it); the static worker waits for its turn.
	 */
	while (!mr_try_advisory_lock())
	{
		if (mr_dynamic)
		{
			pid_t		pid = mr_shmem_worker_pid(MyDatabaseId);

			if (mr_pid_serves_here(pid))
				mr_set_latch_of(pid);
			proc_exit(0);
		}
		if (ShutdownRequestPending || mr_database_wanted())
			proc_exit(0);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	before_shmem_exit(mr_unregister_slot, (Datum) 0);
	mr_register_slot();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	mr_dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();
	ereport(LOG,
			(errmsg("maileroo delivery worker started for database \"%s\"",
					mr_dbname)));

	maileroo_http_global_init();
	mr_multi = curl_multi_init();
	if (mr_multi == NULL)
		elog(ERROR, "curl_multi_init failed");

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "maileroo worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	mr_pending_cxt = AllocSetContextCreate(TopMemoryContext, "maileroo outcomes",
										   ALLOCSET_DEFAULT_SIZES);
	mr_apply_concurrency();
	last_busy = GetCurrentTimestamp();

	for (;;)
	{
		TimestampTz now;
		int			conc;
		int			free_slots;
		bool		paused;
		bool		do_claim;
		bool		do_record;
		int			still_running;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);

		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			mr_apply_concurrency();
			want_claim = true;
			ext_missing = false;
		}
		if (MyLatch->is_set)
		{
			ResetLatch(MyLatch);
			want_claim = true;
			ext_missing = false;
		}

		now = GetCurrentTimestamp();
		if (TimestampDifferenceExceeds(last_probe, now, MR_DB_PROBE_MS))
		{
			last_probe = now;
			if (mr_database_wanted())
			{
				ereport(LOG,
						(errmsg("maileroo delivery worker leaves database \"%s\", which another session is dropping or altering",
								mr_dbname)));
				break;
			}
		}

		/* Drive the transfers and collect what finished. */
		if (mr_in_flight > 0)
		{
			curl_multi_perform(mr_multi, &still_running);
			mr_collect(maileroo_max_attempts);
			if (mr_in_flight > 0)
				last_busy = now;
		}

		if (next_due != 0 && now >= next_due)
		{
			want_claim = true;
			next_due = 0;
		}
		paused = pause_until != 0 && now < pause_until;

		conc = maileroo_concurrency;
		free_slots = Min(conc, mr_njobs_alloc) - mr_in_flight;
		do_claim = want_claim && !ext_missing && !paused && free_slots > 0 &&
			(mr_in_flight == 0 || free_slots >= Max(1, conc / 16));
		if (do_claim && (maileroo_api_key == NULL || maileroo_api_key[0] == '\0'))
		{
			mr_note_error("maileroo.api_key is not set: queued mail waits until it is");
			do_claim = false;
			want_claim = false;
		}
		do_record = mr_npending > 0 && !paused &&
			(do_claim || mr_in_flight == 0 || mr_npending >= Max(1, conc / 4) ||
			 TimestampDifferenceExceeds(mr_oldest_pending, now, MR_RECORD_AGE_MS));

		if (do_claim || do_record || (orphans_all && !paused))
		{
			bool		orphans_expired = TimestampDifferenceExceeds(last_lease_check, now, MR_IDLE_POLL_MS);
			int			nclaimed = 0;
			double		due_ms = -2;
			bool		ok;

			ok = mr_try_step(do_claim ? free_slots : 0, orphans_all,
							 orphans_expired, &nclaimed, &due_ms, &ext_missing);
			if (!ok)
			{
				/* Outcomes that keep failing to record lose their details. */
				if (++record_failures >= 3)
				{
					for (int i = 0; i < mr_npending; i++)
						mr_pending[i].response = NULL;
				}
				pause_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  MR_ERROR_BACKOFF_MS);
				want_claim = true;
			}

			if (ok && mr_citus_worker)
			{
				ereport(LOG,
						(errmsg("maileroo delivery worker leaves database \"%s\", which is on a Citus worker node",
								mr_dbname),
						 errdetail("Mail is queued and delivered on the coordinator.")));
				break;
			}
			if (ok)
			{
				record_failures = 0;
				pause_until = 0;
				if (orphans_expired)
					last_lease_check = now;
				if (ext_missing)
				{
					want_claim = false;
					next_due = TimestampTzPlusMilliseconds(now, MR_IDLE_POLL_MS);
				}
				else
				{
					orphans_all = false;
					if (do_claim)
					{
						if (nclaimed > 0)
							last_busy = now;
						mr_start_claimed();
						mr_note_progress(0, 0);
					}
					if (due_ms >= -1)
					{
						/* When the next row falls due (or a safety poll). */
						TimestampTz t = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																	due_ms >= 0 ? (int64) ceil(due_ms) : MR_IDLE_POLL_MS);

						if (do_claim)
						{
							/* No due row left behind. */
							want_claim = false;
							next_due = t;
						}
						else if (next_due == 0 || t < next_due)
							next_due = t;
					}
				}
			}
		}

		/* A dynamic worker with nothing to do leaves after a while. */
		if (mr_dynamic && mr_in_flight == 0 && mr_npending == 0 && !want_claim &&
			TimestampDifferenceExceeds(last_busy, GetCurrentTimestamp(), MR_DYNAMIC_IDLE_MS))
		{
			/* Stop being findable, then look once more before leaving. */
			mr_unregister_slot(0, (Datum) 0);
			mr_release_advisory_lock();
			if (!MyLatch->is_set || !mr_try_advisory_lock())
				break;
			mr_register_slot();
			last_busy = GetCurrentTimestamp();
			continue;
		}

		/* Wait for an answer, the latch, a signal or the next due row. */
		if (mr_in_flight > 0)
		{
			long		curl_timeout = -1;
			int			timeout = MR_POLL_MS;

			curl_multi_timeout(mr_multi, &curl_timeout);
			if (curl_timeout >= 0 && curl_timeout < timeout)
				timeout = (int) curl_timeout;
			curl_multi_poll(mr_multi, NULL, 0, timeout, NULL);
		}
		else
		{
			long		timeout = MR_DB_PROBE_MS;
			TimestampTz wake_at = next_due;

			now = GetCurrentTimestamp();
			if (pause_until != 0 && now < pause_until)
				wake_at = pause_until;
			else if ((want_claim && !ext_missing) || mr_npending > 0 || orphans_all)
				timeout = 0;
			if (timeout > 0 && wake_at != 0)
				timeout = Max(0, Min(timeout, (long) ((wake_at - now) / 1000) + 1));
			if (timeout > 0)
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 timeout, PG_WAIT_EXTENSION);
		}
		CHECK_FOR_INTERRUPTS();
	}

	mr_shutdown_transfers();
	curl_multi_cleanup(mr_multi);
	for (int i = 0; i < mr_njobs_alloc; i++)
		if (mr_jobs[i].easy)
			curl_easy_cleanup(mr_jobs[i].easy);

	/*
	 * Exit code 1 has the postmaster start the static worker again after
	 * bgw_restart_time (say after pg_terminate_backend); 0 unregisters a
	 * dynamic one, and any worker on a Citus worker node, for good.
	 */
	proc_exit(mr_dynamic || mr_citus_worker ? 0 : 1);
}

/* ----------------------------------------------------------------------
 * maileroo_worker_info(): what shared memory says about this database
 * ----------------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(maileroo_worker_info);

Datum
maileroo_worker_info(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[8];
	bool		nulls[8];
	MrWorkerSlot slot;
	bool		have_slot = false;
	pid_t		pid;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	memset(nulls, true, sizeof(nulls));
	memset(&slot, 0, sizeof(slot));
	if (mr_shared != NULL)
	{
		SpinLockAcquire(&mr_shared->mutex);
		for (int i = 0; i < MR_MAX_DB_SLOTS; i++)
		{
			if (mr_shared->slots[i].dboid == MyDatabaseId)
			{
				slot = mr_shared->slots[i];
				have_slot = true;
				break;
			}
		}
		SpinLockRelease(&mr_shared->mutex);
	}

	pid = have_slot ? slot.pid : 0;
	if (!mr_pid_serves_here(pid))
	{
		have_slot = false;
		pid = mr_find_worker();
	}

	values[0] = BoolGetDatum(pid != 0);
	nulls[0] = false;
	if (pid != 0)
	{
		values[1] = Int32GetDatum(pid);
		nulls[1] = false;
	}
	if (have_slot)
	{
		values[2] = Int32GetDatum(slot.in_flight);
		values[3] = Int64GetDatum(slot.delivered);
		values[4] = Int64GetDatum(slot.given_up);
		nulls[2] = nulls[3] = nulls[4] = false;
		if (slot.last_error_at != 0)
		{
			values[5] = CStringGetTextDatum(slot.last_error);
			values[6] = TimestampTzGetDatum(slot.last_error_at);
			nulls[5] = nulls[6] = false;
		}
		values[7] = TimestampTzGetDatum(slot.started_at);
		nulls[7] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
