/*-------------------------------------------------------------------------
 *
 * maileroo_account.h
 *		Sending accounts (maileroo_account.c): the foreign servers of the
 *		maileroo_fdw wrapper, their options, and the secrets kept in user
 *		mappings or key files.
 *
 * A MailerooAccount is a snapshot read for one use: secrets are read again
 * from the catalogs (or the file) on every lookup that asks for them, so a
 * rotated key is used by the next request without a restart.  A caller that
 * asked for secrets wipes them with maileroo_account_wipe() when done.
 *
 * src/maileroo_account.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILEROO_ACCOUNT_H
#define MAILEROO_ACCOUNT_H

#include "maileroo.h"

#include "nodes/pg_list.h"

/* The foreign-data wrapper whose servers are accounts. */
#define MAILEROO_FDW_NAME			"maileroo_fdw"

/* Longest secret accepted (a key file is read up to this). */
#define MAILEROO_SECRET_MAX_BYTES	4096

/* Bounds of the numeric server options. */
#define MAILEROO_MAX_RATE_LIMIT		1000000.0
#define MAILEROO_MAX_BURST			1000000

typedef struct MailerooAccount
{
	Oid			serverid;
	char	   *name;			/* the foreign server's name */
	char	   *api_url;		/* base URL without a trailing slash */
	List	   *domains;		/* lower-case sender domains (char *), or NIL */
	double		rate_limit;		/* messages per second; 0: no limit */
	int			burst;			/* messages allowed at once; 0: not set */
	int			concurrency;	/* requests in flight; 0: not set */
	char	   *api_key;		/* only with MR_ACCOUNT_KEY, else NULL */
	char	   *webhook_secret; /* only with MR_ACCOUNT_SECRET; NULL if none */
} MailerooAccount;

/* What maileroo_account_get() reads besides the server options. */
#define MR_ACCOUNT_KEY		0x01	/* api_key (required: raises if none) */
#define MR_ACCOUNT_SECRET	0x02	/* webhook_secret (optional) */

/*
 * The account named name, in CurrentMemoryContext.  The key is the api_key
 * of roleid's user mapping, else of the PUBLIC mapping, else the content of
 * the server's api_key_file (roleid InvalidOid: PUBLIC only); the webhook
 * secret is the PUBLIC mapping's webhook_secret, else webhook_secret_file.
 * Returns NULL when there is no such account and missing_ok; raises ERROR
 * otherwise, and when a requested key is absent or its file is unsafe.  No
 * message quotes a secret.  Checks no privilege (see
 * maileroo_account_check_usage).
 */
extern MailerooAccount *maileroo_account_get(const char *name, Oid roleid,
											 int flags, bool missing_ok);

/*
 * As maileroo_account_get(name, roleid, MR_ACCOUNT_KEY, false), but never
 * raises for a missing account or key: returns NULL and sets *problem to a
 * message that names the account (for the delivery worker).
 */
extern MailerooAccount *maileroo_account_try_get_key(const char *name,
													 Oid roleid,
													 char **problem);

/*
 * The account a send uses: given (an account name) when not NULL, else the
 * account whose domains option lists sender_domain, else the only account
 * when there is exactly one and it lists no domains (or sender_domain is
 * NULL: a call that concerns no sender).  Raises ERROR (42704)
 * naming the domain when none fits, and (42501) when roleid lacks USAGE on
 * it.  Returns the account's name, palloc'd.
 */
extern char *maileroo_account_choose(const char *given,
									 const char *sender_domain, Oid roleid);

/* Raise ERROR (42501) unless roleid holds USAGE on the account. */
extern void maileroo_account_check_usage(const MailerooAccount *acct,
										 Oid roleid);

/* Names of every account (palloc'd char *), in name order. */
extern List *maileroo_account_names(void);

/* Overwrite and free the secrets an account holds. */
extern void maileroo_account_wipe(MailerooAccount *acct);

#endif							/* MAILEROO_ACCOUNT_H */
