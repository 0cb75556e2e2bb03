/*-------------------------------------------------------------------------
 *
 * maileroo.h
 *		Declarations shared by the maileroo extension's source files.
 *
 * Each source file owns one job and keeps everything else static; what
 * crosses files is declared here.  Settings live in maileroo.c.
 *
 * src/maileroo.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILEROO_H
#define MAILEROO_H

#include "compat.h"

#ifndef MAILEROO_VERSION
#define MAILEROO_VERSION "unknown"
#endif

/* Bounds of the settings, shared with the code that uses them. */
#define MAILEROO_DEFAULT_API_URL		"https://smtp.maileroo.com/api/v2"
#define MAILEROO_DEFAULT_TIMEOUT_MS		30000
#define MAILEROO_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define MAILEROO_MAX_TIMEOUT_MS			(3600 * 1000)
#define MAILEROO_DEFAULT_MAX_ATTEMPTS	8
#define MAILEROO_MAX_MAX_ATTEMPTS		100
#define MAILEROO_DEFAULT_CONCURRENCY	16
#define MAILEROO_MAX_CONCURRENCY		1024

/* Maileroo's own limits (see the API documentation). */
#define MAILEROO_SUBJECT_MAX_CHARS		255
#define MAILEROO_MAP_KEY_MAX_CHARS		128
#define MAILEROO_MAP_VALUE_MAX_CHARS	768
#define MAILEROO_REFERENCE_ID_BYTES		12
#define MAILEROO_REFERENCE_ID_CHARS		24
#define MAILEROO_SCHEDULE_MAX_DAYS		21

/*
 * The largest request body queued or sent: 30 MiB, attachments counted as
 * base64.  Maileroo does not publish a limit; this is above the 25 MB that
 * the large mailbox providers accept for a whole message, and keeps what
 * the delivery worker holds per message bounded.
 */
#define MAILEROO_REQUEST_MAX_BYTES		(30 * 1024 * 1024)

/* maileroo.c: settings */
extern int	maileroo_timeout_ms;
extern int	maileroo_connect_timeout_ms;
extern int	maileroo_max_attempts;
extern int	maileroo_concurrency;
extern char *maileroo_database_name;

/* maileroo_wakeup.c: background worker registration, called by _PG_init */
extern void maileroo_worker_init(void);

/* maileroo_wakeup.c: wake (or start) this database's worker at commit */
extern void maileroo_outbox_wake_at_commit(void);

/*
 * maileroo_outbox.c: run a prepared statement as the owner of the
 * extension's tables (owner), with SECURITY_RESTRICTED_OPERATION, raising
 * unless SPI answers expected; returns SPI_processed.  SPI must be
 * connected.  And the owner of a relation.
 */
struct _SPI_plan;
extern uint64 maileroo_run_as_owner(struct _SPI_plan *plan, Oid owner,
									Datum *args, const char *nulls,
									int expected);
extern Oid	maileroo_relation_owner(Oid relid);

#endif							/* MAILEROO_H */
