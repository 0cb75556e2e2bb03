/*-------------------------------------------------------------------------
 *
 * maileroo_http.c
 *		The Maileroo HTTP client: configuring a libcurl easy handle for one
 *		API call, judging the answer, and the synchronous call a backend
 *		makes for maileroo_send_now() and friends.
 *
 * Design notes:
 *
 * - maileroo_http_prepare() and maileroo_http_judge() are shared with the
 *   delivery worker, which drives its easy handles from a curl multi handle.
 *   A synchronous call (maileroo_http_call) uses one easy handle kept for
 *   the life of the backend, so that consecutive calls reuse the same
 *   keep-alive connection (and TLS session).  It is cleaned up at exit.
 *
 * - libcurl runs our callbacks in the middle of its own code, so they never
 *   raise an ERROR (a longjmp out of libcurl would leak or corrupt its
 *   state).  The response body is collected with malloc, capped at
 *   MAILEROO_HTTP_MAX_BODY; the progress callback only sets a flag and
 *   returns non-zero on query cancel or termination, after which the caller
 *   runs CHECK_FOR_INTERRUPTS().  libcurl calls it at least once a second
 *   even while the connection is silent, which bounds the time a cancel or
 *   statement_timeout waits.  CURLOPT_NOSIGNAL keeps libcurl away from
 *   signals; no signal handler is installed.
 *
 * - The URL and key come from the sending account (maileroo_account.c),
 *   read for each call.  The key is placed only in the Authorization header
 *   list handed to libcurl, and our copy is wiped once it is there.  CURLOPT_VERBOSE is never set and no message built here
 *   contains a header, so the key never reaches a log line or an error.
 *
 * - maileroo_http_judge() parses Maileroo's envelope
 *   {"success": bool, "message": text, "data": {...}} with PostgreSQL's JSON
 *   lexer, and never raises whatever the body holds: HTML from a proxy,
 *   truncated or deeply nested JSON, bytes that are not valid in the
 *   database encoding.
 *
 * src/maileroo_http.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_http.h"
#include "maileroo_account.h"

#include <time.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/memutils.h"

/* Largest response body kept; the rest is read and dropped. */
#define MAILEROO_HTTP_MAX_BODY		(1024 * 1024)

/* Bodies nested deeper than this are not parsed (the parser recurses). */
#define MAILEROO_HTTP_MAX_DEPTH		64

/* Characters of a non-JSON body quoted in a message. */
#define MAILEROO_HTTP_EXCERPT_CHARS 200

/* Longest Retry-After honoured, in seconds. */
#define MAILEROO_HTTP_MAX_RETRY_AFTER (24 * 3600)

#define MAILEROO_USER_AGENT "maileroo-postgresql/" MAILEROO_VERSION

static bool curl_initialized = false;
static CURL *backend_easy = NULL;

/* ----------------------------------------------------------------
 * libcurl callbacks: never raise, never palloc
 * ----------------------------------------------------------------
 */

/* Collect the response body into a MailerooHttpBuffer, up to the cap. */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	MailerooHttpBuffer *buf = (MailerooHttpBuffer *) userdata;
	size_t		n = size * nmemb;
	size_t		keep = n;

	if (buf->len + keep > MAILEROO_HTTP_MAX_BODY)
	{
		keep = MAILEROO_HTTP_MAX_BODY - buf->len;
		buf->overflow = true;
	}
	if (keep > 0)
	{
		if (buf->len + keep + 1 > buf->cap)
		{
			size_t		newcap = buf->cap ? buf->cap : 4096;
			char	   *p;

			while (newcap < buf->len + keep + 1)
				newcap *= 2;
			p = realloc(buf->data, newcap);
			if (p == NULL)
			{
				buf->overflow = true;
				return n;
			}
			buf->data = p;
			buf->cap = newcap;
		}
		memcpy(buf->data + buf->len, ptr, keep);
		buf->len += keep;
		buf->data[buf->len] = '\0';
	}
	return n;
}

/* Remember a Retry-After header; forget it when a new response starts. */
static size_t
header_cb(char *ptr, size_t size, size_t nitems, void *userdata)
{
	MailerooHttpBuffer *buf = (MailerooHttpBuffer *) userdata;
	size_t		n = size * nitems;
	static const char name[] = "retry-after:";

	if (n >= 5 && pg_strncasecmp(ptr, "HTTP/", 5) == 0)
	{
		free(buf->retry_after);
		buf->retry_after = NULL;
	}
	else if (n > sizeof(name) - 1 &&
			 pg_strncasecmp(ptr, name, sizeof(name) - 1) == 0)
	{
		const char *v = ptr + sizeof(name) - 1;
		const char *end = ptr + n;
		char	   *copy;

		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
						   end[-1] == ' ' || end[-1] == '\t'))
			end--;
		copy = malloc(end - v + 1);
		if (copy != NULL)
		{
			memcpy(copy, v, end - v);
			copy[end - v] = '\0';
			free(buf->retry_after);
			buf->retry_after = copy;
		}
	}
	return n;
}

/*
 * Abort the transfer when the backend is asked to cancel or die, but only
 * when CHECK_FOR_INTERRUPTS() will then act on it: with interrupts held off
 * the request runs to its own end.
 */
static int
progress_cb(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			curl_off_t ultotal, curl_off_t ulnow)
{
	if (!InterruptPending)
		return 0;
	if (ProcDiePending && InterruptHoldoffCount == 0 && CritSectionCount == 0)
		return 1;
	if (QueryCancelPending && INTERRUPTS_CAN_BE_PROCESSED())
		return 1;
	return 0;
}

/* ----------------------------------------------------------------
 * Preparing a request
 * ----------------------------------------------------------------
 */

/* Initialise libcurl once per process (not thread-safe: call it early). */
void
maileroo_http_global_init(void)
{
	if (!curl_initialized)
	{
		CURLcode	rc = curl_global_init(CURL_GLOBAL_ALL);

		if (rc != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not initialize libcurl"),
					 errdetail_internal("%s", curl_easy_strerror(rc))));
		curl_initialized = true;
	}
}

/* curl_slist_append that frees the list and raises on failure. */
static struct curl_slist *
slist_append(struct curl_slist *list, const char *s)
{
	struct curl_slist *l = curl_slist_append(list, s);

	if (l == NULL)
	{
		curl_slist_free_all(list);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	return l;
}

/*
 * See maileroo_http.h.  Every option a previous call may have set on the
 * handle is set again, so a handle can be reused without curl_easy_reset().
 */
void
maileroo_http_prepare(CURL *easy, const char *api_url, const char *api_key,
					  const char *method, const char *path,
					  const char *body, struct curl_slist **headers,
					  MailerooHttpBuffer *buf, bool interruptible)
{
	struct curl_slist *list = NULL;
	char	   *url;
	char	   *auth;

	url = psprintf("%s%s", api_url, path);
	auth = psprintf("Authorization: Bearer %s", api_key);
	list = slist_append(list, auth);
	/* Do not leave a copy of the key in palloc'd memory. */
	explicit_bzero(auth, strlen(auth));
	pfree(auth);
	list = slist_append(list, "Accept: application/json");
	if (body != NULL)
		list = slist_append(list, "Content-Type: application/json");
	/* No "Expect: 100-continue" round trip for large bodies. */
	list = slist_append(list, "Expect:");

	buf->errbuf[0] = '\0';

	curl_easy_setopt(easy, CURLOPT_URL, url);
	pfree(url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, MAILEROO_USER_AGENT);

	if (strcmp(method, "POST") == 0)
	{
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, NULL);
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
						 (curl_off_t) (body ? strlen(body) : 0));
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body ? body : "");
	}
	else
	{
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST,
						 strcmp(method, "GET") == 0 ? NULL : method);
	}

	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_VERBOSE, 0L);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) maileroo_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
					 (long) maileroo_connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, buf->errbuf);

	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, buf);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, buf);

	if (interruptible)
	{
		curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, progress_cb);
		curl_easy_setopt(easy, CURLOPT_XFERINFODATA, NULL);
		curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
	}
	else
	{
		curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, NULL);
		curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 1L);
	}

	*headers = list;
}

/* See maileroo_http.h. */
void
maileroo_http_buffer_reset(MailerooHttpBuffer *buf)
{
	free(buf->data);
	free(buf->retry_after);
	buf->data = NULL;
	buf->len = 0;
	buf->cap = 0;
	buf->overflow = false;
	buf->retry_after = NULL;
	buf->errbuf[0] = '\0';
}

/* ----------------------------------------------------------------
 * Judging an answer
 * ----------------------------------------------------------------
 */

typedef enum EnvelopeField
{
	EF_NONE,
	EF_SUCCESS,
	EF_MESSAGE,
	EF_DATA,
	EF_REFERENCE_ID
} EnvelopeField;

typedef struct EnvelopeState
{
	int			depth;
	bool		top_is_object;
	bool		data_is_object;
	EnvelopeField top_field;	/* field of the top-level object being read */
	EnvelopeField data_field;	/* field of the data object being read */
	int			success;		/* -1 absent or not a boolean, else 0/1 */
	char	   *message;
	char	   *reference_id;
} EnvelopeState;

static JSON_ACTION_RESULT
env_object_start(void *state)
{
	EnvelopeState *s = (EnvelopeState *) state;

	s->depth++;
	if (s->depth == 1)
		s->top_is_object = true;
	else if (s->depth == 2 && s->top_field == EF_DATA)
		s->data_is_object = true;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
env_struct_end(void *state)
{
	EnvelopeState *s = (EnvelopeState *) state;

	s->depth--;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
env_array_start(void *state)
{
	EnvelopeState *s = (EnvelopeState *) state;

	s->depth++;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
env_field_start(void *state, char *fname, bool isnull)
{
	EnvelopeState *s = (EnvelopeState *) state;

	if (s->depth == 1)
	{
		s->data_field = EF_NONE;
		if (strcmp(fname, "success") == 0)
			s->top_field = EF_SUCCESS;
		else if (strcmp(fname, "message") == 0)
			s->top_field = EF_MESSAGE;
		else if (strcmp(fname, "data") == 0)
		{
			s->top_field = EF_DATA;
			s->data_is_object = false;
		}
		else
			s->top_field = EF_NONE;
	}
	else if (s->depth == 2 && s->top_field == EF_DATA && s->data_is_object)
		s->data_field = strcmp(fname, "reference_id") == 0 ?
			EF_REFERENCE_ID : EF_NONE;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
env_scalar(void *state, char *token, JsonTokenType tokentype)
{
	EnvelopeState *s = (EnvelopeState *) state;

	if (s->depth == 1)
	{
		if (s->top_field == EF_SUCCESS)
		{
			if (tokentype == JSON_TOKEN_TRUE)
				s->success = 1;
			else if (tokentype == JSON_TOKEN_FALSE)
				s->success = 0;
			else
				s->success = -1;
		}
		else if (s->top_field == EF_MESSAGE && tokentype == JSON_TOKEN_STRING)
			s->message = token;
	}
	else if (s->depth == 2 && s->top_field == EF_DATA && s->data_is_object &&
			 s->data_field == EF_REFERENCE_ID && tokentype == JSON_TOKEN_STRING)
		s->reference_id = token;
	JSON_ACTION_RETURN;
}

/*
 * Deepest nesting of a JSON text, counting brackets outside strings; stops
 * counting past limit.  Used to keep the recursive parser from reaching
 * check_stack_depth(), which would raise.
 */
static int
json_depth(const char *s, size_t len, int limit)
{
	int			depth = 0;
	int			maxdepth = 0;
	bool		in_string = false;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > maxdepth)
				maxdepth = depth;
			if (maxdepth > limit)
				break;
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return maxdepth;
}

/*
 * A palloc'd copy of len bytes safe to put in a message or a text column:
 * valid in the database encoding, no NUL, control characters as spaces.
 * Invalid bytes become '?'.
 */
static char *
sanitize(const char *s, size_t len)
{
	char	   *out = palloc(len + 1);
	size_t		i = 0;
	size_t		o = 0;
	int			encoding = GetDatabaseEncoding();

	while (i < len)
	{
		unsigned char c = (unsigned char) s[i];

		if (c < 0x80)
		{
			out[o++] = (c == '\0') ? '?' :
				(c < 0x20 && c != '\n' && c != '\t') || c == 0x7f ? ' ' : (char) c;
			i++;
		}
		else
		{
			int			l = pg_encoding_mblen(encoding, s + i);

			if (l > 0 && i + l <= len &&
				pg_verify_mbstr(encoding, s + i, l, true))
			{
				memcpy(out + o, s + i, l);
				o += l;
				i += l;
			}
			else
			{
				out[o++] = '?';
				i++;
			}
		}
	}
	out[o] = '\0';
	return out;
}

/* A one-line excerpt of a body, at most MAILEROO_HTTP_EXCERPT_CHARS characters. */
static char *
excerpt(const char *body, size_t len)
{
	char	   *clean = sanitize(body, len);
	StringInfoData out;
	const char *p = clean;
	int			chars = 0;
	bool		space = false;

	initStringInfo(&out);
	while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
		p++;
	while (*p && chars < MAILEROO_HTTP_EXCERPT_CHARS)
	{
		int			l = pg_mblen(p);

		if (*p == ' ' || *p == '\n' || *p == '\t')
		{
			space = true;
			p++;
			continue;
		}
		if (space)
		{
			appendStringInfoChar(&out, ' ');
			chars++;
			space = false;
		}
		appendBinaryStringInfo(&out, p, l);
		p += l;
		chars++;
	}
	if (*p)
		appendStringInfoString(&out, "...");
	pfree(clean);
	return out.data;
}

/* Retry-After as milliseconds: delta-seconds or an HTTP date; -1 if unusable. */
static int
parse_retry_after(const char *v)
{
	long		secs;

	if (v == NULL || *v == '\0')
		return -1;
	if (strspn(v, "0123456789") == strlen(v))
	{
		if (strlen(v) > 6)
			secs = MAILEROO_HTTP_MAX_RETRY_AFTER;
		else
			secs = atol(v);
	}
	else
	{
		time_t		when = curl_getdate(v, NULL);

		if (when == (time_t) -1)
			return -1;
		secs = (long) (when - time(NULL));
		if (secs < 0)
			secs = 0;
	}
	if (secs > MAILEROO_HTTP_MAX_RETRY_AFTER)
		secs = MAILEROO_HTTP_MAX_RETRY_AFTER;
	return (int) (secs * 1000);
}

/*
 * Parse an envelope.  Returns true when the body is JSON whose top level is
 * an object; fills *env.  Never raises.
 */
static bool
parse_envelope(const char *data, size_t len, EnvelopeState *env)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	JsonParseErrorType err;
	char	   *copy;

	memset(env, 0, sizeof(*env));
	env->success = -1;

	if (data == NULL || len == 0)
		return false;
	if (json_depth(data, len, MAILEROO_HTTP_MAX_DEPTH) > MAILEROO_HTTP_MAX_DEPTH)
		return false;
	/* The lexer assumes valid encoding: check it first. */
	if (!pg_verify_mbstr(GetDatabaseEncoding(), data, (int) len, true))
		return false;

	copy = pnstrdup(data, len);
	memset(&sem, 0, sizeof(sem));
	sem.semstate = env;
	sem.object_start = env_object_start;
	sem.object_end = env_struct_end;
	sem.array_start = env_array_start;
	sem.array_end = env_struct_end;
	sem.object_field_start = env_field_start;
	sem.scalar = env_scalar;

	lex = mr_json_lexer_make(copy, (int) strlen(copy), true);
	err = pg_parse_json(lex, &sem);
	mr_json_lexer_free(lex);

	if (err != JSON_SUCCESS || !env->top_is_object)
	{
		env->success = -1;
		env->message = NULL;
		env->reference_id = NULL;
		return false;
	}
	return true;
}

/* See maileroo_http.h. */
void
maileroo_http_judge(CURLcode code, long http_status,
					const MailerooHttpBuffer *buf, MailerooResult *result)
{
	EnvelopeState env;
	bool		is_json;
	const char *data = buf ? buf->data : NULL;
	size_t		len = buf ? buf->len : 0;

	memset(result, 0, sizeof(*result));
	result->http_status = http_status;
	result->curl_code = code;
	result->retry_after_ms = -1;

	if (code != CURLE_OK)
	{
		const char *detail = (buf && buf->errbuf[0]) ? buf->errbuf :
			curl_easy_strerror(code);

		result->http_status = 0;
		result->message = sanitize(detail, strlen(detail));
		switch (code)
		{
				/* Configuration problems no retry can fix. */
			case CURLE_UNSUPPORTED_PROTOCOL:
			case CURLE_URL_MALFORMAT:
			case CURLE_BAD_FUNCTION_ARGUMENT:
			case CURLE_FAILED_INIT:
			case CURLE_ABORTED_BY_CALLBACK:
				result->outcome = MR_OUTCOME_FAILED;
				break;
			default:
				result->outcome = MR_OUTCOME_RETRY;
				break;
		}
		return;
	}

	is_json = parse_envelope(data, len, &env);
	if (data != NULL && len > 0)
		result->body = sanitize(data, len);
	if (buf)
		result->retry_after_ms = parse_retry_after(buf->retry_after);
	if (env.reference_id)
		result->reference_id = sanitize(env.reference_id, strlen(env.reference_id));

	if (is_json && env.message)
		result->message = sanitize(env.message, strlen(env.message));
	else if (is_json)
		result->message = pstrdup("the response has no message");
	else if (data == NULL || len == 0)
		result->message = pstrdup("the response is empty");
	else
		result->message = psprintf("the response is not a JSON object: %s",
								   excerpt(data, len));

	if (http_status >= 200 && http_status < 300)
	{
		if (is_json && env.success == 1)
			result->outcome = MR_OUTCOME_SENT;
		else if (is_json && env.success == 0)
			result->outcome = MR_OUTCOME_FAILED;
		else
		{
			result->outcome = MR_OUTCOME_UNKNOWN;
			if (is_json)
				result->message = pstrdup("the response has no boolean \"success\"");
		}
	}
	else if (http_status == 408 || http_status == 429 || http_status >= 500)
		result->outcome = MR_OUTCOME_RETRY;
	else
		result->outcome = MR_OUTCOME_FAILED;
}

/* ----------------------------------------------------------------
 * The synchronous call of a backend
 * ----------------------------------------------------------------
 */

static void
cleanup_backend_easy(int code, Datum arg)
{
	if (backend_easy != NULL)
	{
		curl_easy_cleanup(backend_easy);
		backend_easy = NULL;
	}
}

/* The easy handle kept for this backend's synchronous calls. */
static CURL *
get_backend_easy(void)
{
	if (backend_easy == NULL)
	{
		maileroo_http_global_init();
		backend_easy = curl_easy_init();
		if (backend_easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
		on_proc_exit(cleanup_backend_easy, (Datum) 0);
	}
	return backend_easy;
}

/*
 * See maileroo_http.h.  Query cancel and termination abort the transfer
 * and are then raised by CHECK_FOR_INTERRUPTS(); nothing malloc'd survives
 * an ERROR.
 */
void
maileroo_http_call(const char *account, const char *method, const char *path,
				   const char *body, MailerooResult *result)
{
	CURL	   *easy = get_backend_easy();
	struct curl_slist *volatile headers = NULL;
	MailerooAccount *volatile acct;
	MailerooHttpBuffer buf;

	memset(&buf, 0, sizeof(buf));
	/* The key is read now, for this call: a rotated key is used at once. */
	acct = maileroo_account_get(account, GetUserId(), MR_ACCOUNT_KEY, false);

	PG_TRY();
	{
		struct curl_slist *h = NULL;
		CURLcode	code;
		long		status = 0;

		maileroo_http_prepare(easy, acct->api_url, acct->api_key, method, path,
							  body, &h, &buf, true);
		headers = h;
		maileroo_account_wipe(acct);

		code = curl_easy_perform(easy);
		if (code == CURLE_OK)
			curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);

		if (code == CURLE_ABORTED_BY_CALLBACK)
			CHECK_FOR_INTERRUPTS();

		maileroo_http_judge(code, status, &buf, result);
	}
	PG_FINALLY();
	{
		/* Nothing of this call may stay attached to the kept handle. */
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, NULL);
		curl_easy_setopt(easy, CURLOPT_WRITEDATA, NULL);
		curl_easy_setopt(easy, CURLOPT_HEADERDATA, NULL);
		curl_slist_free_all(headers);
		maileroo_http_buffer_reset(&buf);
		maileroo_account_wipe(acct);
	}
	PG_END_TRY();
}

/* See maileroo_http.h. */
void
maileroo_http_raise(const MailerooResult *result, const char *what)
{
	const char *msg = result->message ? result->message : "no message";
	long		status = result->http_status;
	bool		is_send = strcmp(what, "send") == 0;

	if (status == 0)
		ereport(ERROR,
				(errcode(MR_SQLSTATE_NETWORK),
				 errmsg("could not reach Maileroo: %s",
						curl_easy_strerror(result->curl_code)),
				 errdetail_internal("%s", msg),
				 is_send ? errhint("The send may be retried with the same reference_id.") : 0));
	if (result->outcome == MR_OUTCOME_UNKNOWN)
		ereport(ERROR,
				(errcode(MR_SQLSTATE_UNKNOWN),
				 errmsg("Maileroo's answer to the %s was not understood: %s", what, msg),
				 errdetail("HTTP status %ld.", status),
				 errhint("Maileroo may have accepted it; check before retrying.")));
	if (status == 401 || status == 403)
		ereport(ERROR,
				(errcode(MR_SQLSTATE_AUTH),
				 errmsg("Maileroo refused the credentials: %s", msg),
				 errdetail("HTTP status %ld.", status),
				 errhint("Check the api_key of the sending account.")));
	if (status == 429)
	{
		if (result->retry_after_ms >= 0)
			ereport(ERROR,
					(errcode(MR_SQLSTATE_RATE_LIMIT),
					 errmsg("Maileroo rate limit reached: %s", msg),
					 errdetail("HTTP status 429; Retry-After is %d seconds.",
							   result->retry_after_ms / 1000)));
		ereport(ERROR,
				(errcode(MR_SQLSTATE_RATE_LIMIT),
				 errmsg("Maileroo rate limit reached: %s", msg),
				 errdetail("HTTP status 429.")));
	}
	if (status == 408)
		ereport(ERROR,
				(errcode(MR_SQLSTATE_NETWORK),
				 errmsg("Maileroo timed out waiting for the %s: %s", what, msg),
				 errdetail("HTTP status 408.")));
	if (status >= 500)
		ereport(ERROR,
				(errcode(MR_SQLSTATE_SERVER),
				 errmsg("Maileroo failed to process the %s: %s", what, msg),
				 errdetail("HTTP status %ld.", status),
				 is_send ? errhint("The send may be retried with the same reference_id.") : 0));
	ereport(ERROR,
			(errcode(MR_SQLSTATE_REJECTED),
			 errmsg("Maileroo rejected the %s: %s", what, msg),
			 errdetail("HTTP status %ld.", status)));
}
