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
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* One address as parsed from the forms people write. */
typedef struct MailerooAddress
{
	char	   *address;
	char	   *display_name;	/* NULL when none */
} MailerooAddress;

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

/*
 * Set hit[k] for each of the n lower-cased addresses (text Datums) that is
 * on the suppression list relid (maileroo_suppressions in schema nsp), read
 * through its unique index on lower(address) with one scan rescanned per
 * address.  Raises ERROR when the index is missing.
 */
extern void maileroo_suppressed_mask(Oid nsp, Oid relid, const Datum *lower,
									 int n, bool *hit);

/*
 * The pieces of the builder that the campaign builder (maileroo_campaign.c)
 * shares, so that a campaign's messages are validated and written exactly
 * as a single send's.  All raise ERROR naming argname on invalid input.
 */
extern void maileroo_check_subject(const char *subject);
extern MailerooAddress *maileroo_parse_one_address(const char *argname, text *t);
extern List *maileroo_parse_address_list(const char *argname, text *t);
extern void maileroo_append_address(StringInfo buf, const MailerooAddress *a);
extern void maileroo_append_address_field(StringInfo buf, const char *key,
										  List *list, bool always_array);
extern void maileroo_append_string_map(StringInfo buf, const char *argname,
									   Jsonb *jb, bool is_header);
extern void maileroo_append_attachments(StringInfo buf, ArrayType *arr);

#endif							/* MAILEROO_REQUEST_H */
