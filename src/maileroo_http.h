/*-------------------------------------------------------------------------
 *
 * maileroo_http.h
 *		The Maileroo HTTP client shared by synchronous sends (maileroo_http.c)
 *		and the delivery worker (maileroo_transfer.c).
 *
 * Both paths configure their curl easy handles the same way and judge
 * Maileroo's answers the same way; only the driving loop differs (a single
 * curl_easy_perform in a backend, a curl multi handle in the worker).
 *
 * src/maileroo_http.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILEROO_HTTP_H
#define MAILEROO_HTTP_H

#include "maileroo.h"

#include <curl/curl.h>

/* A response body collected by the write callback (malloc'd by us, not palloc). */
typedef struct MailerooHttpBuffer
{
	char	   *data;			/* NUL-terminated; NULL until something arrives */
	size_t		len;
	size_t		cap;
	bool		overflow;		/* body exceeded the cap and was truncated */
	char	   *retry_after;	/* value of a Retry-After header, malloc'd, or NULL */
	char		errbuf[CURL_ERROR_SIZE];	/* libcurl's CURLOPT_ERRORBUFFER */
} MailerooHttpBuffer;

/* How an attempt ended, and what to do next. */
typedef enum MailerooOutcome
{
	MR_OUTCOME_SENT,			/* 2xx with success:true */
	MR_OUTCOME_RETRY,			/* network error, timeout, 408, 429, 5xx */
	MR_OUTCOME_FAILED,			/* any other 4xx, success:false: never retried */
	MR_OUTCOME_UNKNOWN			/* 2xx with a malformed body: may have been
								 * accepted, so never retried automatically */
} MailerooOutcome;

typedef struct MailerooResult
{
	MailerooOutcome outcome;
	long		http_status;	/* 0 when no HTTP answer arrived */
	CURLcode	curl_code;		/* CURLE_OK when an HTTP answer arrived */
	char	   *message;		/* Maileroo's message, or a description; palloc'd */
	char	   *reference_id;	/* data.reference_id when present; palloc'd */
	char	   *body;			/* the response body (truncated); palloc'd or NULL */
	int			retry_after_ms; /* from Retry-After, or -1 */
} MailerooResult;

/*
 * Configure an easy handle for one API call: URL (api_url + path), method, JSON body (not copied: it must outlive the transfer), auth and
 * content headers (*headers receives the list; the caller frees it with
 * curl_slist_free_all), User-Agent, TLS verification, no redirects, the
 * timeouts from the settings, CURLOPT_NOSIGNAL, and the write/header
 * callbacks into buf.  When interruptible is true a progress callback aborts
 * the transfer on query cancel or termination.  api_url and api_key come
 * from a sending account (maileroo_account.h), already checked; the key is
 * copied into the header list only.
 * CURLOPT_ERRORBUFFER points at buf->errbuf, so buf must stay where it is
 * until the transfer ends.
 */
extern void maileroo_http_prepare(CURL *easy, const char *api_url,
								  const char *api_key, const char *method,
								  const char *path, const char *body,
								  struct curl_slist **headers,
								  MailerooHttpBuffer *buf, bool interruptible);

/*
 * Initialise libcurl for this process (curl_global_init), once; call it
 * before creating the first handle.  maileroo_http_call() does it itself.
 */
extern void maileroo_http_global_init(void);

/* Free what a buffer holds (safe on a zeroed buffer). */
extern void maileroo_http_buffer_reset(MailerooHttpBuffer *buf);

/*
 * Judge a finished transfer: the curl result, the HTTP status and the body.
 * Fills *result in CurrentMemoryContext; never raises for any body content.
 */
extern void maileroo_http_judge(CURLcode code, long http_status,
								const MailerooHttpBuffer *buf,
								MailerooResult *result);

/*
 * One synchronous, interruptible API call from a backend, through the
 * sending account named account (its key read for this call, for the
 * current user's mapping), on a curl easy
 * handle kept for the life of the backend (so that consecutive calls reuse
 * one keep-alive connection).  Fills *result as maileroo_http_judge() does.
 * Raises ERROR on query cancel, termination, statement_timeout, an unknown
 * account or a missing key; every other failure is reported in *result.
 */
extern void maileroo_http_call(const char *account, const char *method,
							   const char *path, const char *body,
							   MailerooResult *result);

/*
 * Raise the ERROR for a result whose outcome is not MR_OUTCOME_SENT, with
 * the SQLSTATE of its class (see the MR_SQLSTATE_* codes).  what names the
 * call in the message, e.g. "send".
 */
pg_noreturn extern void maileroo_http_raise(const MailerooResult *result,
											const char *what);

/*
 * SQLSTATEs of the errors Maileroo's answers turn into (class MR, which
 * PostgreSQL does not use).
 */
#define MR_SQLSTATE_NETWORK		MAKE_SQLSTATE('M','R','0','0','0')	/* no answer */
#define MR_SQLSTATE_UNKNOWN		MAKE_SQLSTATE('M','R','2','0','0')	/* 2xx, malformed */
#define MR_SQLSTATE_REJECTED	MAKE_SQLSTATE('M','R','4','0','0')	/* 4xx, success:false */
#define MR_SQLSTATE_AUTH		MAKE_SQLSTATE('M','R','4','0','1')	/* 401, 403 */
#define MR_SQLSTATE_RATE_LIMIT	MAKE_SQLSTATE('M','R','4','2','9')	/* 429 */
#define MR_SQLSTATE_SERVER		MAKE_SQLSTATE('M','R','5','0','0')	/* 5xx */

#endif							/* MAILEROO_HTTP_H */
