/*-------------------------------------------------------------------------
 *
 * maileroo_worker.c
 *		The delivery worker that sends queued mail from maileroo_outbox.
 *
 * src/maileroo_worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo.h"

/* Registers the worker when preloaded; filled in with the outbox. */
void
maileroo_worker_init(void)
{
}
