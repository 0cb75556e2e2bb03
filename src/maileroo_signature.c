/*-------------------------------------------------------------------------
 *
 * maileroo_signature.c
 *		Checking the HMAC-SHA256 signature Maileroo puts on each webhook.
 *
 * The signature (header X-Maileroo-Signature) is the hex HMAC-SHA256 of the
 * raw request body under the account's shared secret.  We accept an optional
 * "sha256=" prefix and hex digits in either case, compute the HMAC with
 * PostgreSQL's own code (compat.h: mr_hmac_sha256) over the exact bytes
 * received, and compare the decoded bytes in constant time.  A malformed
 * signature is simply not a match.
 *
 * maileroo_verify_signature() is pure and granted to everyone.
 * maileroo_ingest_authenticate() reads the webhook secrets of the sending
 * accounts itself (maileroo_account.h), for maileroo_ingest (SECURITY
 * DEFINER), so that a secret never passes through SQL where a caller might
 * see it.
 *
 * src/maileroo_signature.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo.h"
#include "maileroo_account.h"

#include "fmgr.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(maileroo_verify_signature);
PG_FUNCTION_INFO_V1(maileroo_ingest_authenticate);

#define MR_SIGNATURE_BYTES 32

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * True when sig (sig_len bytes) is the signature of body under secret.
 * Raises only when the HMAC itself cannot be computed (out of memory).
 */
static bool
signature_matches(const char *body, size_t body_len,
				  const char *sig, size_t sig_len,
				  const char *secret, size_t secret_len)
{
	uint8		given[MR_SIGNATURE_BYTES];
	uint8		expected[MR_SIGNATURE_BYTES];
	uint8		diff = 0;
	int			i;

	while (sig_len > 0 && (*sig == ' ' || *sig == '\t'))
		sig++, sig_len--;
	while (sig_len > 0 && (sig[sig_len - 1] == ' ' || sig[sig_len - 1] == '\t'))
		sig_len--;
	if (sig_len >= 7 && pg_strncasecmp(sig, "sha256=", 7) == 0)
		sig += 7, sig_len -= 7;
	if (sig_len != MR_SIGNATURE_BYTES * 2)
		return false;
	for (i = 0; i < MR_SIGNATURE_BYTES; i++)
	{
		int			hi = hex_value(sig[2 * i]);
		int			lo = hex_value(sig[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		given[i] = (uint8) (hi << 4 | lo);
	}

	if (!mr_hmac_sha256((const uint8 *) secret, secret_len,
						(const uint8 *) body, body_len, expected))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not compute the webhook signature")));

	/* constant time: look at every byte whatever the first difference */
	for (i = 0; i < MR_SIGNATURE_BYTES; i++)
		diff |= given[i] ^ expected[i];
	explicit_bzero(expected, sizeof(expected));
	return diff == 0;
}

/*
 * maileroo_verify_signature(body text, signature text, secret text)
 * RETURNS boolean
 */
Datum
maileroo_verify_signature(PG_FUNCTION_ARGS)
{
	text	   *body = PG_GETARG_TEXT_PP(0);
	text	   *sig = PG_GETARG_TEXT_PP(1);
	text	   *secret = PG_GETARG_TEXT_PP(2);

	PG_RETURN_BOOL(signature_matches(VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body),
									 VARDATA_ANY(sig), VARSIZE_ANY_EXHDR(sig),
									 VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret)));
}

/*
 * maileroo_ingest_authenticate(body text, signature text, account text)
 * RETURNS void
 *
 * The webhook secrets that apply: the named account's, or (account NULL)
 * every account's.  When none of them has a secret, any body is accepted,
 * signed or not.  Otherwise raises ERROR (SQLSTATE 28000) unless signature
 * is the body's signature under one of them.  Neither a secret nor the
 * expected signature appears in any message; each secret is wiped after
 * use.
 */
Datum
maileroo_ingest_authenticate(PG_FUNCTION_ARGS)
{
	List	   *names;
	ListCell   *lc;
	text	   *body = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	text	   *sig = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	bool		any_secret = false;
	bool		matched = false;

	if (PG_ARGISNULL(2))
		names = maileroo_account_names();
	else
	{
		/* Raises for an unknown account. */
		MailerooAccount *acct = maileroo_account_get(text_to_cstring(PG_GETARG_TEXT_PP(2)),
													 InvalidOid, 0, false);

		names = list_make1(acct->name);
	}

	foreach(lc, names)
	{
		MailerooAccount *acct = maileroo_account_get((char *) lfirst(lc), InvalidOid,
													 MR_ACCOUNT_SECRET, true);

		if (acct == NULL || acct->webhook_secret == NULL)
			continue;
		any_secret = true;
		if (sig != NULL && body != NULL && VARSIZE_ANY_EXHDR(sig) > 0 &&
			signature_matches(VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body),
							  VARDATA_ANY(sig), VARSIZE_ANY_EXHDR(sig),
							  acct->webhook_secret, strlen(acct->webhook_secret)))
			matched = true;
		maileroo_account_wipe(acct);
		if (matched)
			break;
	}

	if (!any_secret || matched)
		PG_RETURN_VOID();
	if (sig == NULL || VARSIZE_ANY_EXHDR(sig) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("webhook signature is missing"),
				 errdetail("A sending account has a webhook secret, so every webhook must be signed."),
				 errhint("Pass the X-Maileroo-Signature header's value as the signature argument.")));
	if (body == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("webhook body is null")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("webhook signature does not match"),
			 errdetail("The signature must be the hex HMAC-SHA256 of the raw body under the webhook secret of the sending account.")));
	PG_RETURN_VOID();
}
