/*-------------------------------------------------------------------------
 *
 * maileroo_status.c
 *		Shared memory of the delivery workers: which worker serves which
 *		database, and the figures maileroo_worker_status() reports.
 *
 * Present only when the library is preloaded (shared memory can be asked
 * for at server start alone).  Without it every function here does nothing
 * and a backend finds its worker through the lock manager instead (see
 * maileroo_wakeup.c).  One slot per database, MR_MAX_DB_SLOTS in all, under
 * one spinlock: a slot is a few words copied in and out, never held across
 * anything that can fail.
 *
 * src/maileroo_status.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_worker.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"

#define MR_MAX_DB_SLOTS		32		/* databases tracked in shared memory */

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
static MrWorkerSlot *mr_my_slot = NULL;	/* in a worker: its own slot */

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
mr_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
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

/* While preloading: ask for the shared memory and install the hooks. */
void
mr_status_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = mr_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = mr_shmem_startup;
}

/* The pid that shared memory names for this database, or 0. */
pid_t
mr_status_worker_pid(Oid dboid)
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

/* In a worker: take (or refresh) this database's slot. */
void
mr_status_register(void)
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

/* In a worker: give the slot up (also a before_shmem_exit callback). */
void
mr_status_unregister(int code, Datum arg)
{
	if (mr_shared == NULL || mr_my_slot == NULL)
		return;
	SpinLockAcquire(&mr_shared->mutex);
	if (mr_my_slot->pid == MyProcPid)
		mr_my_slot->dboid = InvalidOid;
	SpinLockRelease(&mr_shared->mutex);
	mr_my_slot = NULL;
}

/* In a worker: keep an error for maileroo_worker_status(). */
void
mr_status_note_error(const char *msg)
{
	if (mr_my_slot == NULL)
		return;
	SpinLockAcquire(&mr_shared->mutex);
	strlcpy(mr_my_slot->last_error, msg, MR_ERROR_LEN);
	mr_my_slot->last_error_at = GetCurrentTimestamp();
	SpinLockRelease(&mr_shared->mutex);
}

/* In a worker: the requests in flight, and what was just recorded. */
void
mr_status_note_progress(int in_flight, int delivered, int given_up)
{
	if (mr_my_slot == NULL)
		return;
	SpinLockAcquire(&mr_shared->mutex);
	mr_my_slot->in_flight = in_flight;
	mr_my_slot->delivered += delivered;
	mr_my_slot->given_up += given_up;
	SpinLockRelease(&mr_shared->mutex);
}

/*
 * maileroo_worker_info(): what shared memory says about the worker of this
 * database (running and pid found through the lock manager when not preloaded).
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
