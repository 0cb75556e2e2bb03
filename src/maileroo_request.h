/*-------------------------------------------------------------------------
 *
 * maileroo_request.h
 *		Building and validating a Maileroo send request from SQL arguments
 *		(maileroo_request.c).  The one builder behind maileroo_send,
 *		maileroo_send_template and their _now forms: the outbox stores what
 *		it builds and the worker sends that text unchanged.
 *
 * src/maileroo_request.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILEROO_REQUEST_H
#define MAILEROO_REQUEST_H

#include "maileroo.h"

#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"

typedef struct MailerooRequest
{
	const char *path;			/* "/emails" or "/emails/template" */
	char	   *account;		/* the sending account's name */
	char	   *reference_id;	/* 24 lowercase hex characters */
	char	   *body;			/* the JSON request body */
	TimestampTz scheduled_at;	/* or DT_NOBEGIN when not scheduled */
	List	   *dropped;		/* suppressed recipients left out (char *) */
	bool		all_suppressed; /* every recipient was suppressed */
} MailerooRequest;

/*
 * Validate the arguments of a send function and build its request, in
 * CurrentMemoryContext.  The argument order is the SQL signature's:
 * (sender, recipients, subject, html | template_id, plain | template_data,
 * cc, bcc, reply_to, tags, headers, attachments, tracking, scheduled_at,
 * reference_id[, ignore_suppressions[, account]]).  Raises ERROR, naming
 * the argument, on invalid input; chooses the sending account
 * (maileroo_account_choose) and raises when none fits or the caller lacks
 * USAGE on it.
 */
extern MailerooRequest *maileroo_request_from_args(FunctionCallInfo fcinfo,
												   bool is_template);

/* A new reference id: 12 bytes from pg_strong_random, lowercase hex. */
extern char *maileroo_new_reference_id(void);

/*
 * Check a reference id given by a caller (exactly 24 hexadecimal
 * characters) and return it lower-cased; raises ERROR otherwise.
 */
extern char *maileroo_check_reference_id(const char *s);

/*
 * Leave out suppressed recipients (a list of addresses in to, cc and bcc;
 * see maileroo_request.c), unless ignore is set.  Fills req->dropped and
 * req->all_suppressed.  Called by maileroo_request_from_args().
 */
extern void maileroo_request_filter_suppressed(FunctionCallInfo fcinfo,
											   MailerooRequest *req,
											   List **to, List **cc,
											   List **bcc, bool ignore);

#endif							/* MAILEROO_REQUEST_H */
