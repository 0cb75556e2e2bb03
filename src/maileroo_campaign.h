/*-------------------------------------------------------------------------
 *
 * maileroo_campaign.h
 *		Campaigns sent through Maileroo's POST /emails/bulk
 *		(maileroo_campaign.c): what the delivery worker needs to assemble a
 *		bulk request from a campaign's shared content and its rows.
 *
 * src/maileroo_campaign.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILEROO_CAMPAIGN_H
#define MAILEROO_CAMPAIGN_H

#include "maileroo.h"

/* Messages per POST /emails/bulk, Maileroo's limit. */
#define MAILEROO_BULK_MAX			500

/* The outbox priority of campaign mail (ordinary mail has 100). */
#define MAILEROO_CAMPAIGN_PRIORITY	10

/* The endpoint of campaign rows in maileroo_outbox. */
#define MAILEROO_BULK_PATH			"/emails/bulk"

/*
 * The body of one bulk request: content (maileroo_campaigns.content, the
 * shared fields as a JSON object) with "messages" set to the n message
 * objects (maileroo_outbox.request of the rows), in that order.  palloc'd
 * in CurrentMemoryContext.
 */
extern char *maileroo_campaign_body(const char *content, char **messages, int n);

#endif							/* MAILEROO_CAMPAIGN_H */
