/*-------------------------------------------------------------------------
 *
 * maileroo_wakeup.c
 *		The backend side of delivery: register the static worker, find the
 *		worker serving this database, wake it at commit, or start one.
 *
 * One worker serves one database.  When the library is preloaded, a static
 * worker is registered for maileroo.database_name; for any other database,
 * and on a server that does not preload the library at all, a dynamic
 * worker is started on demand by the first maileroo_send of a transaction
 * that finds no worker serving its database.
 *
 * A worker holds a session-level advisory lock (classid MR_LOCK_KEY1, objid
 * MR_LOCK_KEY2, objsubid 2) in its database, which lets a backend find it
 * without shared memory (through the lock manager's C API, never by a query
 * on pg_locks); with shared memory the slot of the
 * database names it directly (maileroo_status.c).
 *
 * Wakeup: maileroo_send marks the transaction; at XACT_EVENT_COMMIT the
 * backend sets the worker's process latch (or starts a worker when the one
 * it found has gone).  Nothing is signalled on rollback, and the rows of a
 * rolled-back transaction never become visible, so nothing is sent.
 *
 * src/maileroo_wakeup.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_worker.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "storage/lock.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/memutils.h"

/* Per transaction: what to do at commit. */
static bool mr_xact_queued = false;
static pid_t mr_xact_worker_pid = 0;
static BackgroundWorkerHandle *mr_xact_handle = NULL;
static bool mr_xact_callback_registered = false;

/* Per backend: the worker last seen serving this database, and its name. */
static pid_t mr_cached_worker_pid = 0;
static char mr_backend_dbname[NAMEDATALEN];

/* Fill in what every maileroo worker has in common. */
void
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

	mr_status_shmem_init();

	mr_worker_template(&bgw, InvalidOid);
	bgw.bgw_restart_time = MR_RESTART_SECONDS;
	snprintf(bgw.bgw_name, BGW_MAXLEN, MR_WORKER_TYPE " for database %s",
			 maileroo_database_name);
	RegisterBackgroundWorker(&bgw);
}

/* Is pid a live process connected to this database? */
bool
mr_pid_serves_here(pid_t pid)
{
	PGPROC	   *proc;

	if (pid == 0)
		return false;
	proc = BackendPidGetProc(pid);
	return proc != NULL && proc->databaseId == MyDatabaseId;
}

void
mr_set_latch_of(pid_t pid)
{
	PGPROC	   *proc = BackendPidGetProc(pid);

	if (proc != NULL)
		SetLatch(&proc->procLatch);
}

/*
 * The pid of the backend holding this database's worker lock, or 0.  Read
 * from the lock manager through its C API rather than by a query on
 * pg_locks: a statement would resolve its operators through the caller's
 * search_path.
 */
static pid_t
mr_lock_holder_pid(void)
{
	LockData   *data = GetLockStatusData();
	pid_t		pid = 0;

	for (int i = 0; i < data->nelements; i++)
	{
		LockInstanceData *inst = &data->locks[i];
		LOCKTAG    *tag = &inst->locktag;

		if (tag->locktag_type == LOCKTAG_ADVISORY &&
			tag->locktag_field1 == MyDatabaseId &&
			tag->locktag_field2 == (uint32) MR_LOCK_KEY1 &&
			tag->locktag_field3 == (uint32) MR_LOCK_KEY2 &&
			tag->locktag_field4 == 2 &&
			inst->holdMask != 0 && inst->pid != 0)
		{
			pid = inst->pid;
			break;
		}
	}
	return pid;
}

/*
 * The pid of the worker serving this database, or 0.  Shared memory first,
 * then this backend's cache, then the lock manager.
 */
pid_t
mr_find_worker(void)
{
	pid_t		pid;

	pid = mr_status_worker_pid(MyDatabaseId);
	if (mr_pid_serves_here(pid))
		return pid;
	if (mr_pid_serves_here(mr_cached_worker_pid))
		return mr_cached_worker_pid;

	mr_cached_worker_pid = mr_lock_holder_pid();
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

/* At commit: wake the worker found earlier, or the one serving now, or start one. */
static void
mr_wake_at_commit(void)
{
	pid_t		pid = 0;

	if (mr_xact_handle != NULL)
	{
		if (GetBackgroundWorkerPid(mr_xact_handle, &pid) != BGWH_STARTED)
			pid = 0;			/* not started yet: it scans at start */
		if (pid != 0)
			mr_set_latch_of(pid);
	}
	else if (mr_pid_serves_here(mr_xact_worker_pid))
		mr_set_latch_of(mr_xact_worker_pid);
	else
	{
		/* The worker found earlier has left: start another. */
		pid = mr_status_worker_pid(MyDatabaseId);
		if (mr_pid_serves_here(pid))
			mr_set_latch_of(pid);
		else
			(void) mr_launch_worker(false);
	}
}

static void
mr_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (mr_xact_queued)
				mr_wake_at_commit();
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
}
