/*-------------------------------------------------------------------------
 *
 * maileroo_worker.c
 *		The delivery worker: its life and its main loop.
 *
 * One worker serves one database (see maileroo_wakeup.c for how it is
 * registered, found and started).  Exactly one per database: a worker holds
 * a session-level advisory lock (MR_LOCK_KEY1, MR_LOCK_KEY2, objsubid 2) in
 * its database for as long as it serves it, so a second one started by a
 * race gives way.
 *
 * The main loop is a few calls, each a function:
 *
 *	 begin the round	reset the round's memory, reload settings on SIGHUP,
 *						note a latch set by a committing sender
 *	 leave?				SIGTERM, or DROP DATABASE waiting for us
 *	 collect			drive the transfers in flight, turn finished ones
 *						into pending outcomes (maileroo_transfer.c)
 *	 step				when there is something to record or to claim: one
 *						short transaction (maileroo_queue.c), then start the
 *						claimed transfers
 *	 idle exit?			a dynamic worker with nothing to do leaves
 *	 wait				for an answer, the latch, a signal or the next due
 *						row
 *
 * The loop never holds a transaction or a row lock across a network call.
 * A step that fails (say the outbox is locked by ALTER TABLE) is logged,
 * kept for maileroo_worker_status(), and tried again after
 * MR_ERROR_BACKOFF_MS; outcomes that fail to record three times in a row
 * keep their status but lose their response bodies.
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
#include "maileroo_worker.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

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

/*
 * One worker per database: a dynamic worker gives way to the one already
 * serving (after waking it); the static worker waits for its turn.  Does
 * not return unless this worker now holds the lock.
 */
static void
mr_become_the_worker(MrWorker *w)
{
	while (!mr_try_advisory_lock())
	{
		if (w->dynamic)
		{
			pid_t		pid = mr_status_worker_pid(MyDatabaseId);

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
	before_shmem_exit(mr_status_unregister, (Datum) 0);
	mr_status_register();
}

/* Connect, become the database's worker, and set up the loop's state. */
static void
mr_worker_start(MrWorker *w, Oid dboid)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	memset(w, 0, sizeof(*w));
	w->dynamic = OidIsValid(dboid);
	if (w->dynamic)
		BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	else
		BackgroundWorkerInitializeConnection(maileroo_database_name, NULL, 0);

	pgstat_report_appname(MR_WORKER_TYPE);

	/* The worker is a superuser: resolve nothing through user schemas. */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	mr_become_the_worker(w);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	w->dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();
	ereport(LOG,
			(errmsg("maileroo delivery worker started for database \"%s\"",
					w->dbname)));

	w->loop_cxt = AllocSetContextCreate(TopMemoryContext, "maileroo worker loop",
										ALLOCSET_DEFAULT_SIZES);
	mr_transfer_init(w);
	w->want_claim = true;
	w->orphans_all = true;
	w->last_busy = GetCurrentTimestamp();
}

/* Reset the round's memory; take in SIGHUP and the latch. */
static void
mr_round_begin(MrWorker *w)
{
	MemoryContextReset(w->loop_cxt);
	MemoryContextSwitchTo(w->loop_cxt);

	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		mr_transfer_apply_concurrency(w);
		w->want_claim = true;
		w->ext_missing = false;
	}
	if (MyLatch->is_set)
	{
		ResetLatch(MyLatch);
		w->want_claim = true;
		w->ext_missing = false;
	}
	w->now = GetCurrentTimestamp();
}

/*
 * SIGTERM, DROP DATABASE (probed every MR_DB_PROBE_MS) waiting for us, or
 * the last step found a Citus worker node.
 */
static bool
mr_should_leave(MrWorker *w)
{
	if (ShutdownRequestPending)
		return true;
	if (w->citus_worker)
	{
		ereport(LOG,
				(errmsg("maileroo delivery worker leaves database \"%s\", which is on a Citus worker node",
						w->dbname),
				 errdetail("Mail is queued and delivered on the coordinator.")));
		return true;
	}
	if (!TimestampDifferenceExceeds(w->last_probe, w->now, MR_DB_PROBE_MS))
		return false;
	w->last_probe = w->now;
	if (!mr_database_wanted())
		return false;
	ereport(LOG,
			(errmsg("maileroo delivery worker leaves database \"%s\", which another session is dropping or altering",
					w->dbname)));
	return true;
}

/* Drive the transfers in flight and collect what finished. */
static void
mr_collect(MrWorker *w)
{
	if (w->in_flight == 0)
		return;
	mr_transfer_collect(w);
	if (w->in_flight > 0)
		w->last_busy = w->now;
}

/*
 * mr_queue_step, catching its errors: on failure the transaction is
 * aborted, the error logged and kept for maileroo_worker_status(), claimed
 * slots freed, and false returned.
 */
static bool
mr_try_step(MrWorker *w, MrStep *step)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = false;

	PG_TRY();
	{
		(void) mr_queue_step(w, step);
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(cxt);
		pgstat_report_activity(STATE_IDLE, NULL);
		mr_queue_forget_plans();
		ereport(LOG,
				(errmsg("maileroo delivery worker: %s", edata->message)));
		mr_status_note_error(edata->message);
		mr_transfer_release_unstarted(w);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return ok;
}

/* After a failed step: pause, and drop details that keep failing to record. */
static void
mr_step_failed(MrWorker *w)
{
	if (++w->record_failures >= 3)
	{
		for (int i = 0; i < w->npending; i++)
			w->pending[i].response = NULL;
	}
	w->pause_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												 MR_ERROR_BACKOFF_MS);
	w->want_claim = true;
}

/* After a step that committed: start the claims, plan the next step. */
static void
mr_step_done(MrWorker *w, const MrStep *step, bool claimed)
{
	TimestampTz t;

	w->record_failures = 0;
	w->pause_until = 0;
	if (step->orphans_expired)
		w->last_lease_check = w->now;
	w->ext_missing = step->ext_missing;
	w->citus_worker = step->citus_worker;
	if (step->ext_missing)
	{
		w->want_claim = false;
		w->next_due = TimestampTzPlusMilliseconds(w->now, MR_IDLE_POLL_MS);
		return;
	}
	w->orphans_all = false;
	if (claimed)
	{
		if (step->nclaimed > 0)
			w->last_busy = w->now;
		mr_transfer_start_claimed(w);
		mr_status_note_progress(w->in_flight, 0, 0);
	}
	if (step->next_due_ms < -1)
		return;

	/* When the next row falls due (or a safety poll). */
	t = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
									step->next_due_ms >= 0 ?
									(int64) ceil(step->next_due_ms) : MR_IDLE_POLL_MS);
	if (claimed)
	{
		/* No due row left behind. */
		w->want_claim = false;
		w->next_due = t;
	}
	else if (w->next_due == 0 || t < w->next_due)
		w->next_due = t;
}

/*
 * Record what finished and claim what is due, when either is worth a
 * transaction: claims when the scheduler allows some, records when a claim
 * runs anyway, nothing is in flight, a quarter of the concurrency waits, or
 * the oldest outcome waited MR_RECORD_AGE_MS.
 */
static void
mr_step(MrWorker *w)
{
	MrStep		step;
	bool		paused;
	bool		do_claim;
	bool		do_record;
	int			budget;

	if (w->next_due != 0 && w->now >= w->next_due)
	{
		w->want_claim = true;
		w->next_due = 0;
	}
	paused = w->pause_until != 0 && w->now < w->pause_until;

	budget = mr_sched_claim_budget(w);
	do_claim = w->want_claim && !w->ext_missing && !paused && budget > 0;
	do_record = w->npending > 0 && !paused &&
		(do_claim || w->in_flight == 0 ||
		 w->npending >= Max(1, maileroo_concurrency / 4) ||
		 TimestampDifferenceExceeds(w->oldest_pending, w->now, MR_RECORD_AGE_MS));
	if (!do_claim && !do_record && !(w->orphans_all && !paused))
		return;

	memset(&step, 0, sizeof(step));
	step.claim_n = do_claim ? budget : 0;
	step.orphans_all = w->orphans_all;
	step.orphans_expired = TimestampDifferenceExceeds(w->last_lease_check, w->now,
													  MR_IDLE_POLL_MS);
	if (mr_try_step(w, &step))
		mr_step_done(w, &step, do_claim);
	else
		mr_step_failed(w);
}

/*
 * A dynamic worker with nothing to do for MR_DYNAMIC_IDLE_MS leaves: it
 * stops being findable, then looks once more (a sender may have found it
 * just before) before it goes.  True when it should leave.
 */
static bool
mr_idle_exit(MrWorker *w)
{
	if (!w->dynamic || w->in_flight > 0 || w->npending > 0 || w->want_claim ||
		!TimestampDifferenceExceeds(w->last_busy, GetCurrentTimestamp(), MR_DYNAMIC_IDLE_MS))
		return false;
	mr_status_unregister(0, (Datum) 0);
	mr_release_advisory_lock();
	if (!MyLatch->is_set || !mr_try_advisory_lock())
		return true;
	mr_status_register();
	w->last_busy = GetCurrentTimestamp();
	return false;
}

/* Wait for an answer, the latch, a signal or the next due row. */
static void
mr_wait(MrWorker *w)
{
	long		timeout = MR_DB_PROBE_MS;
	TimestampTz wake_at = w->next_due;
	TimestampTz now;

	if (w->in_flight > 0)
	{
		mr_transfer_wait(w);
		CHECK_FOR_INTERRUPTS();
		return;
	}

	now = GetCurrentTimestamp();
	if (w->pause_until != 0 && now < w->pause_until)
		wake_at = w->pause_until;
	else if ((w->want_claim && !w->ext_missing) || w->npending > 0 || w->orphans_all)
		timeout = 0;
	if (timeout > 0 && wake_at != 0)
		timeout = Max(0, Min(timeout, (long) ((wake_at - now) / 1000) + 1));
	if (timeout > 0)
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
	CHECK_FOR_INTERRUPTS();
}

/*
 * On the way out: abandon the transfers in flight and put their rows back
 * in the queue (best effort: a worker that starts later does it anyway),
 * recording what finished, then free the curl handles.
 */
static void
mr_worker_stop(MrWorker *w)
{
	bool		any = mr_transfer_abandon_all(w);

	if (any || w->npending > 0)
	{
		MrStep		step;

		memset(&step, 0, sizeof(step));
		step.orphans_all = true;
		(void) mr_try_step(w, &step);
	}
	mr_transfer_cleanup(w);
}

/*
 * Entry point of a delivery worker.  main_arg is the OID of the database to
 * serve, or InvalidOid for the static worker (maileroo.database_name).
 */
void
maileroo_worker_main(Datum main_arg)
{
	MrWorker	w;

	mr_worker_start(&w, DatumGetObjectId(main_arg));
	for (;;)
	{
		mr_round_begin(&w);
		if (mr_should_leave(&w))
			break;
		mr_collect(&w);
		mr_step(&w);
		if (mr_idle_exit(&w))
			break;
		mr_wait(&w);
	}
	mr_worker_stop(&w);

	/*
	 * Exit code 1 has the postmaster start the static worker again after
	 * bgw_restart_time (say after pg_terminate_backend); 0 unregisters a
	 * dynamic one, and any worker on a Citus worker node, for good.
	 */
	proc_exit(w.dynamic || w.citus_worker ? 0 : 1);
}
