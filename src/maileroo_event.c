/*-------------------------------------------------------------------------
 *
 * maileroo_event.c
 *		Turning Maileroo webhook JSON into typed maileroo_events rows.
 *
 * maileroo_parse_event(text) reads the body once, with PostgreSQL's own JSON
 * lexer and parser (common/jsonapi.h) driven by semantic actions, straight
 * into the typed columns: the envelope keys at depth 1, and event_data's own
 * keys (to, ip, user_agent, original_url, reason, reject_reason) at depth 2
 * while event_data is being read.  Only the values that are stored as jsonb
 * (tags, event_data, unknown top-level keys and optional values that cannot
 * be typed) are built during that same pass, as the JsonbValue trees jsonb_in
 * would build, and turned into jsonb by JsonbValueToJsonb(); nothing is
 * parsed twice.
 *
 * The lexer runs with need_escapes off: it still checks every token and
 * escape, but does not copy strings out character by character.  String
 * values and keys are taken from the input by position (the start recorded
 * when the field or element begins, the end from prev_token_terminator)
 * and de-escaped here only when they contain a backslash, with the same
 * checks jsonb applies (\u0000, lone surrogates).
 *
 * Duplicate keys: the last one wins, as in jsonb, for the typed columns as
 * well as for the jsonb values.
 *
 * Errors (all of SQLSTATE class 22, documented in the README):
 *	22P02	the body is not JSON (the lexer's detail in errdetail)
 *	22P05	a \u escape that text cannot hold (\u0000)
 *	22023	the body or an event is not an object, nesting deeper than
 *			MR_EVENT_MAX_DEPTH, a required field of the wrong type or empty
 *	22004	a required field missing or null
 *	22008	event_time outside the timestamptz range
 * An optional field that cannot be typed never raises: its column is NULL
 * and the raw value stays in event_data, or in extra for a top-level key.
 * Optional values are typed by the checks below, which never throw, rather
 * than by calling input functions under PG_TRY.
 *
 * Memory: each SQL function keeps a cache in fn_extra with a scratch
 * context that holds everything one event's parse allocates; it is reset
 * after each event, and only the result tuple is built in the caller's
 * context.  Memory therefore stays flat however many events one query or
 * one backend parses.
 *
 * maileroo_parse_events and maileroo_event_bodies split a batch (an array
 * of objects, or {"events": [...]}) with a light first pass that records
 * each element's text span; each element is then parsed on its own, which
 * is what lets maileroo_ingest keep a bad element apart from good ones.
 *
 * src/maileroo_event.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo.h"

#include <sys/socket.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/inet.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(maileroo_parse_event);
PG_FUNCTION_INFO_V1(maileroo_parse_event_jsonb);
PG_FUNCTION_INFO_V1(maileroo_parse_events);
PG_FUNCTION_INFO_V1(maileroo_event_bodies);

/* Deepest nesting accepted, well below the server's stack depth limit. */
#define MR_EVENT_MAX_DEPTH 200

/* Columns of maileroo_events, in table order. */
enum
{
	COL_EVENT_ID,
	COL_EVENT_TYPE,
	COL_EVENT_TIME,
	COL_INSERTED_AT,
	COL_DOMAIN_ID,
	COL_USER_ID,
	COL_MESSAGE_ID,
	COL_MESSAGE_REFERENCE_ID,
	COL_RECIPIENT,
	COL_IP,
	COL_USER_AGENT,
	COL_URL,
	COL_REASON,
	COL_SMTP_CODE,
	COL_SMTP_STATUS,
	COL_BOUNCE_CLASS,
	COL_TAGS,
	COL_EVENT_DATA,
	COL_EXTRA,
	COL_RECEIVED_AT,
	EVENT_NATTS
};

static const Oid event_col_types[EVENT_NATTS] = {
	TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT8OID,
	TEXTOID, TEXTOID, TEXTOID, INETOID, TEXTOID, TEXTOID, TEXTOID, INT4OID,
	TEXTOID, TEXTOID, JSONBOID, JSONBOID, JSONBOID, TIMESTAMPTZOID
};

/* Top-level keys the parser knows. */
typedef enum TopField
{
	TF_NONE,
	TF_EVENT_ID,
	TF_EVENT_TYPE,
	TF_EVENT_TIME,
	TF_INSERTED_AT,
	TF_DOMAIN_ID,
	TF_USER_ID,
	TF_MESSAGE_ID,
	TF_MESSAGE_REFERENCE_ID,
	TF_TAGS,
	TF_EVENT_DATA,
	TF_OTHER					/* unknown: kept in extra */
} TopField;

/* event_data keys that feed typed columns. */
typedef enum DataField
{
	DF_NONE = -1,
	DF_TO,
	DF_IP,
	DF_USER_AGENT,
	DF_ORIGINAL_URL,
	DF_REASON,
	DF_REJECT_REASON,
	DF_COUNT
} DataField;

/* State of a required field: the last occurrence decides. */
typedef enum ReqState
{
	REQ_MISSING,
	REQ_NULL,
	REQ_WRONG,					/* wrong JSON type: bad_type says which */
	REQ_EMPTY,					/* an empty string */
	REQ_BAD_TIME,				/* event_time: not a number */
	REQ_TIME_RANGE,				/* event_time: outside timestamptz */
	REQ_OK
} ReqState;

typedef struct RequiredField
{
	ReqState	state;
	const char *bad_type;
	const char *str;			/* the value read: len bytes, not terminated */
	int			len;
	TimestampTz time;			/* REQ_OK event_time */
} RequiredField;

/*
 * A string value: len bytes at p, which point into the body when there was
 * nothing to de-escape, so they are not NUL-terminated.  p is NULL when the
 * value is absent.
 */
typedef struct StrSpan
{
	const char *p;
	int			len;
} StrSpan;

/*
 * One key of extra, in input order (seq).  A key may appear more than once:
 * duplicates are resolved once, when the object is built (extra_finish).
 * value NULL marks a key that a later known field of that name took back.
 */
typedef struct ExtraPair
{
	const char *key;
	int			keylen;
	int			seq;
	JsonbValue *value;
} ExtraPair;

typedef struct EventParse
{
	JsonLexContext *lex;
	const char *val_start;		/* where the value being read starts */
	int			depth;			/* containers open */
	const char *key_hint;		/* where the next key's quote is looked for */
	TopField	field;			/* top-level key being read */
	const char *fname;			/* its name (fnamelen bytes, not terminated) */
	int			fnamelen;
	bool		capture;		/* building the current top-level container */
	struct BuildFrame *frames;	/* its containers still open, innermost last */
	int			nframes;
	int			frames_cap;
	DataField	dfield;			/* event_data key being read (depth 2) */
	bool		to_array;		/* event_data.to is an array being read */
	int			to_index;		/* its current element */

	RequiredField event_id;
	RequiredField event_type;
	RequiredField event_time;

	bool		have_inserted_at;
	TimestampTz inserted_at;
	bool		have_domain_id;
	int64		domain_id;
	bool		have_user_id;
	int64		user_id;
	StrSpan		message_id;
	StrSpan		message_reference_id;
	JsonbValue *tags;			/* an object, or NULL */
	JsonbValue *event_data;		/* an object, or NULL for '{}' */
	StrSpan		data[DF_COUNT]; /* event_data strings; "to": the address */

	ExtraPair  *extra;
	int			nextra;
	int			extra_cap;
} EventParse;

/* A container being built for jsonb, and the room in its pairs or elems. */
typedef struct BuildFrame
{
	JsonbValue *cont;			/* jbvObject or jbvArray */
	int			size;
} BuildFrame;

/* What a SQL function keeps across calls (fn_extra). */
typedef struct EventCache
{
	TupleDesc	tupdesc;		/* blessed maileroo_events row type */
	MemoryContext scratch;		/* one event's temporaries; reset per event */
	Datum		empty_object;	/* '{}'::jsonb */
} EventCache;

/* ----------------------------------------------------------------
 * Small typed-value checks.  None of them raises.
 * ---------------------------------------------------------------- */

static const char *
json_type_name(JsonTokenType tt)
{
	switch (tt)
	{
		case JSON_TOKEN_STRING:
			return "a string";
		case JSON_TOKEN_NUMBER:
			return "a number";
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			return "a boolean";
		case JSON_TOKEN_NULL:
			return "null";
		case JSON_TOKEN_OBJECT_START:
			return "an object";
		case JSON_TOKEN_ARRAY_START:
			return "an array";
		default:
			return "not a value";
	}
}

/* Parse an optionally signed decimal integer that fits int64. */
static bool
parse_int64(const char *s, int64 *result)
{
	bool		neg = false;
	int64		v = 0;

	if (*s == '-')
	{
		neg = true;
		s++;
	}
	if (!isdigit((unsigned char) *s))
		return false;
	for (; isdigit((unsigned char) *s); s++)
	{
		/* accumulate negatively so that INT64_MIN fits */
		if (pg_mul_s64_overflow(v, 10, &v) ||
			pg_sub_s64_overflow(v, *s - '0', &v))
			return false;
	}
	if (*s != '\0')
		return false;
	if (!neg)
	{
		if (v == PG_INT64_MIN)
			return false;
		v = -v;
	}
	*result = v;
	return true;
}

/*
 * Parse Unix seconds written as a JSON number (integer, fraction, exponent)
 * into a timestamptz, exactly, rounding to the microsecond (half away from
 * zero).  Returns 1 on success, 0 when the text is not a number, -1 when
 * the time is outside the timestamptz range.
 */
static int
parse_unix_time(const char *s, TimestampTz *result)
{
	char		digbuf[64];
	char	   *dig = digbuf;
	int			ndig = 0;
	int			point;
	bool		neg = false;
	int			len = strlen(s);
	int			k;
	int64		secs = 0;
	int64		usecs = 0;
	int64		us;
	const char *p = s;
	long		exp10 = 0;

	if (len >= (int) sizeof(digbuf))
		dig = palloc(len + 1);

	if (*p == '-')
	{
		neg = true;
		p++;
	}
	if (!isdigit((unsigned char) *p))
		return 0;
	while (isdigit((unsigned char) *p))
		dig[ndig++] = *p++;
	point = ndig;
	if (*p == '.')
	{
		p++;
		if (!isdigit((unsigned char) *p))
			return 0;
		while (isdigit((unsigned char) *p))
			dig[ndig++] = *p++;
	}
	if (*p == 'e' || *p == 'E')
	{
		bool		eneg = false;

		p++;
		if (*p == '+' || *p == '-')
			eneg = (*p++ == '-');
		if (!isdigit((unsigned char) *p))
			return 0;
		while (isdigit((unsigned char) *p))
		{
			if (exp10 < 1000000)
				exp10 = exp10 * 10 + (*p - '0');
			p++;
		}
		if (eneg)
			exp10 = -exp10;
	}
	if (*p != '\0')
		return 0;

	/* drop leading zeros: the value is 0.dig * 10^point */
	k = 0;
	while (k < ndig && dig[k] == '0')
		k++;
	dig += k;
	ndig -= k;
	point -= k;
	if (ndig == 0)
		point = 0;
	else
		point += exp10;

	if (ndig > 0 && point > 13)
		return -1;				/* beyond any timestamptz */
	if (ndig > 0 && point >= -7)
	{
		/* integer seconds: digits [0, point) */
		for (k = 0; k < point; k++)
			secs = secs * 10 + (k < ndig ? dig[k] - '0' : 0);
		/* microseconds: digits [point, point + 6), then round */
		for (k = point; k < point + 6; k++)
			usecs = usecs * 10 + (k >= 0 && k < ndig ? dig[k] - '0' : 0);
		k = point + 6;
		if (k >= 0 && k < ndig && dig[k] >= '5')
			usecs++;
	}
	if (secs >= PG_INT64_MAX / USECS_PER_SEC - 1)
		return -1;
	us = secs * USECS_PER_SEC + usecs;
	if (neg)
		us = -us;
	if (pg_sub_s64_overflow(us, (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY, &us) ||
		!IS_VALID_TIMESTAMP(us))
		return -1;
	*result = us;
	return 1;
}

/* Read exactly n digits at *p into *v. */
static bool
read_digits(const char **p, int n, int *v)
{
	int			r = 0;

	while (n-- > 0)
	{
		if (!isdigit((unsigned char) **p))
			return false;
		r = r * 10 + (*(*p)++ - '0');
	}
	*v = r;
	return true;
}

/*
 * Parse an ISO 8601 / RFC 3339 date-time: YYYY-MM-DD, optionally followed
 * by T (or a space) HH:MM[:SS[.fraction]] and Z or an offset (+HH, +HH:MM,
 * +HHMM).  Without an offset the time is UTC.  Fractions are rounded to the
 * microsecond.
 */
static bool
parse_iso_time(const char *p, TimestampTz *result)
{
	int			y,
				mo,
				d,
				h = 0,
				mi = 0,
				sec = 0,
				oh = 0,
				om = 0;
	int64		frac = 0;
	int			offset_sign = 0;
	int64		ts;

	if (!read_digits(&p, 4, &y) || *p++ != '-' ||
		!read_digits(&p, 2, &mo) || *p++ != '-' ||
		!read_digits(&p, 2, &d))
		return false;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > day_tab[isleap(y)][mo - 1])
		return false;
	if (*p == 'T' || *p == 't' || *p == ' ')
	{
		p++;
		if (!read_digits(&p, 2, &h) || *p++ != ':' || !read_digits(&p, 2, &mi))
			return false;
		if (*p == ':')
		{
			p++;
			if (!read_digits(&p, 2, &sec))
				return false;
			if (*p == '.' || *p == ',')
			{
				int			n = 0;

				p++;
				if (!isdigit((unsigned char) *p))
					return false;
				for (; isdigit((unsigned char) *p); p++, n++)
				{
					if (n < 6)
						frac = frac * 10 + (*p - '0');
					else if (n == 6 && *p >= '5')
						frac++;
				}
				for (; n < 6; n++)
					frac *= 10;
			}
		}
		if (h > 23 || mi > 59 || sec > 59)
			return false;
		if (*p == 'Z' || *p == 'z')
			p++;
		else if (*p == '+' || *p == '-')
		{
			offset_sign = (*p++ == '+') ? 1 : -1;
			if (!read_digits(&p, 2, &oh))
				return false;
			if (*p == ':')
				p++;
			if (isdigit((unsigned char) *p) && !read_digits(&p, 2, &om))
				return false;
			if (oh > 15 || om > 59)
				return false;
		}
	}
	if (*p != '\0')
		return false;

	ts = (int64) (date2j(y, mo, d) - POSTGRES_EPOCH_JDATE) * USECS_PER_DAY +
		((int64) ((h * 60 + mi) * 60 + sec)) * USECS_PER_SEC + frac -
		(int64) offset_sign * (oh * 60 + om) * 60 * USECS_PER_SEC;
	if (!IS_VALID_TIMESTAMP(ts))
		return false;
	*result = ts;
	return true;
}

/*
 * An inet value for a single IPv4 or IPv6 address (no prefix length), or
 * NULL when the text is not one.  The same conversion as inet_in, minus
 * its error.
 */
static inet *
parse_ip(const char *s)
{
	inet	   *dst;
	int			bits;
	size_t		len = strlen(s);

	if (len == 0 || len > 64 || strchr(s, '/') != NULL)
		return NULL;
	dst = (inet *) palloc0(sizeof(inet));
	ip_family(dst) = strchr(s, ':') != NULL ? PGSQL_AF_INET6 : PGSQL_AF_INET;
	bits = pg_inet_net_pton(ip_family(dst), s, ip_addr(dst), -1);
	if (bits != ip_maxbits(dst))
		return NULL;
	ip_bits(dst) = bits;
	SET_INET_VARSIZE(dst);
	return dst;
}

/*
 * The address part of "Name <addr>" (len bytes at s), or the whole (trimmed)
 * text when there are no angle brackets.  NULL when nothing is left.
 */
static char *
address_part(const char *s, int len)
{
	const char *start = s;
	const char *end = s + len;
	const char *lt;

	while (start < end && isspace((unsigned char) *start))
		start++;
	while (end > start && isspace((unsigned char) end[-1]))
		end--;
	if (end > start && end[-1] == '>')
	{
		for (lt = end - 1; lt > start && *lt != '<'; lt--)
			;
		if (*lt == '<')
		{
			start = lt + 1;
			end--;
			while (start < end && isspace((unsigned char) *start))
				start++;
			while (end > start && isspace((unsigned char) end[-1]))
				end--;
		}
	}
	if (end <= start)
		return NULL;
	return pnstrdup(start, end - start);
}

/*
 * From a bounce or deferral reason: the leading 3-digit SMTP reply code
 * (0 when none) and the first enhanced status code x.y.z (NULL when none).
 */
static void
parse_smtp_reason(const char *reason, int *code, char **status)
{
	const char *p = reason;

	*code = 0;
	*status = NULL;

	while (isspace((unsigned char) *p))
		p++;
	if (p[0] >= '2' && p[0] <= '5' && isdigit((unsigned char) p[1]) &&
		isdigit((unsigned char) p[2]) && !isdigit((unsigned char) p[3]))
		*code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');

	for (p = reason; *p; p++)
	{
		const char *q;
		int			n1,
					n2;

		if (!(*p >= '2' && *p <= '5') || p[1] != '.')
			continue;
		if (p > reason && (isdigit((unsigned char) p[-1]) || p[-1] == '.'))
			continue;
		q = p + 2;
		for (n1 = 0; isdigit((unsigned char) q[n1]); n1++)
			;
		if (n1 < 1 || n1 > 3 || q[n1] != '.')
			continue;
		q += n1 + 1;
		for (n2 = 0; isdigit((unsigned char) q[n2]); n2++)
			;
		if (n2 < 1 || n2 > 3)
			continue;
		*status = pnstrdup(p, q + n2 - p);
		return;
	}
}

/* ----------------------------------------------------------------
 * The semantic actions.
 * ---------------------------------------------------------------- */

static inline bool
span_is(const char *p, int len, const char *word, int wlen)
{
	return len == wlen && memcmp(p, word, wlen) == 0;
}

/* Which top-level key f[0..len) is; keys are told apart by length first. */
static TopField
top_field(const char *f, int len)
{
	switch (len)
	{
		case 4:
			if (span_is(f, len, "tags", 4))
				return TF_TAGS;
			break;
		case 7:
			if (span_is(f, len, "user_id", 7))
				return TF_USER_ID;
			break;
		case 8:
			if (span_is(f, len, "event_id", 8))
				return TF_EVENT_ID;
			break;
		case 9:
			if (span_is(f, len, "domain_id", 9))
				return TF_DOMAIN_ID;
			break;
		case 10:
			if (span_is(f, len, "event_type", 10))
				return TF_EVENT_TYPE;
			if (span_is(f, len, "event_time", 10))
				return TF_EVENT_TIME;
			if (span_is(f, len, "event_data", 10))
				return TF_EVENT_DATA;
			if (span_is(f, len, "message_id", 10))
				return TF_MESSAGE_ID;
			break;
		case 11:
			if (span_is(f, len, "inserted_at", 11))
				return TF_INSERTED_AT;
			break;
		case 20:
			if (span_is(f, len, "message_reference_id", 20))
				return TF_MESSAGE_REFERENCE_ID;
			break;
	}
	return TF_OTHER;
}

/*
 * Append key f[0..len) with value v (NULL: the key is taken back) to extra.
 * Constant time: an earlier entry of the same key is not looked for here
 * but dropped by extra_finish, so a body of n unknown keys costs n log n.
 */
static void
extra_add(EventParse *ep, const char *f, int len, JsonbValue *v)
{
	if (ep->nextra == ep->extra_cap)
	{
		ep->extra_cap = ep->extra_cap == 0 ? 8 : ep->extra_cap * 2;
		if (ep->extra == NULL)
			ep->extra = palloc(ep->extra_cap * sizeof(ExtraPair));
		else
			ep->extra = repalloc_huge(ep->extra, ep->extra_cap * sizeof(ExtraPair));
	}
	ep->extra[ep->nextra].key = f;
	ep->extra[ep->nextra].keylen = len;
	ep->extra[ep->nextra].seq = ep->nextra;
	ep->extra[ep->nextra].value = v;
	ep->nextra++;
}

/* Set extra's key f[0..len) to v; a later duplicate replaces it. */
static inline void
extra_set(EventParse *ep, const char *f, int len, JsonbValue *v)
{
	extra_add(ep, f, len, v);
}

/* Drop key f[0..len) from extra, if there (a later duplicate replaces it). */
static inline void
extra_remove(EventParse *ep, const char *f, int len)
{
	extra_add(ep, f, len, NULL);
}

static void
string_too_long(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("webhook body holds a string too long for jsonb"),
			 errdetail("Strings stored as jsonb may hold at most %d bytes.",
					   JENTRY_OFFLENMASK)));
}

/*
 * A scalar as a JsonbValue, as jsonb_in makes it: for a string, the len
 * bytes at token; otherwise the lexer's NUL-terminated token.
 */
static JsonbValue *
scalar_value(const char *token, int len, JsonTokenType tt, JsonbValue *v)
{
	switch (tt)
	{
		case JSON_TOKEN_STRING:
			if (len > JENTRY_OFFLENMASK)
				string_too_long();
			v->type = jbvString;
			v->val.string.len = len;
			v->val.string.val = (char *) token;
			break;
		case JSON_TOKEN_NUMBER:
			v->type = jbvNumeric;
			v->val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																 CStringGetDatum((char *) token),
																 ObjectIdGetDatum(InvalidOid),
																 Int32GetDatum(-1)));
			break;
		case JSON_TOKEN_TRUE:
			v->type = jbvBool;
			v->val.boolean = true;
			break;
		case JSON_TOKEN_FALSE:
			v->type = jbvBool;
			v->val.boolean = false;
			break;
		default:
			v->type = jbvNull;
			break;
	}
	return v;
}

static void
check_depth(EventParse *ep)
{
	if (ep->depth >= MR_EVENT_MAX_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook body is nested too deeply"),
				 errdetail("Nesting deeper than %d levels is not accepted.",
						   MR_EVENT_MAX_DEPTH)));
}

static void
not_an_object(const char *what, bool array)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("webhook event is %s, not a JSON object", what),
			 array ? errhint("Use maileroo_parse_events for an array of events.") : 0));
}

/* Reset what a top-level key sets, before a (possibly repeated) key. */
static void
reset_field(EventParse *ep, TopField f)
{
	switch (f)
	{
		case TF_INSERTED_AT:
			ep->have_inserted_at = false;
			break;
		case TF_DOMAIN_ID:
			ep->have_domain_id = false;
			break;
		case TF_USER_ID:
			ep->have_user_id = false;
			break;
		case TF_MESSAGE_ID:
			ep->message_id.p = NULL;
			break;
		case TF_MESSAGE_REFERENCE_ID:
			ep->message_reference_id.p = NULL;
			break;
		case TF_TAGS:
			ep->tags = NULL;
			break;
		case TF_EVENT_DATA:
			ep->event_data = NULL;
			memset(ep->data, 0, sizeof(ep->data));
			break;
		default:
			return;
	}
	if (ep->nextra > 0)
		extra_remove(ep, ep->fname, ep->fnamelen);
}

/*
 * The lexer runs without de-escaping (its char-by-char copy is the most
 * expensive part of reading JSON); it still validates every escape's
 * syntax.  Strings are taken from the input by position and de-escaped
 * here only when they hold a backslash, with the checks jsonb applies.
 */
static void
unicode_error(const char *detail, int code)
{
	ereport(ERROR,
			(errcode(code),
			 errmsg("webhook body is not valid JSON"),
			 errdetail("%s", detail)));
}

static int
hex4(const char *p)
{
	int			v = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		char		c = p[i];

		v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/* The de-escaped text of a JSON string's contents s[0..len), NUL-terminated. */
static char *
json_unescape(const char *s, int len)
{
	StringInfoData buf;
	const char *end = s + len;

	initStringInfo(&buf);
	enlargeStringInfo(&buf, len);
	while (s < end)
	{
		const char *bs = memchr(s, '\\', end - s);

		if (bs == NULL)
		{
			appendBinaryStringInfo(&buf, s, end - s);
			break;
		}
		appendBinaryStringInfo(&buf, s, bs - s);
		s = bs + 1;
		switch (*s)
		{
			case 'b':
				appendStringInfoChar(&buf, '\b');
				break;
			case 'f':
				appendStringInfoChar(&buf, '\f');
				break;
			case 'n':
				appendStringInfoChar(&buf, '\n');
				break;
			case 'r':
				appendStringInfoChar(&buf, '\r');
				break;
			case 't':
				appendStringInfoChar(&buf, '\t');
				break;
			case 'u':
				{
					pg_wchar	ch = hex4(s + 1);
					char		cbuf[MAX_UNICODE_EQUIVALENT_STRING + 1];

					s += 4;
					if (is_utf16_surrogate_first(ch))
					{
						pg_wchar	lo;

						if (end - s < 7 || s[1] != '\\' || s[2] != 'u')
							unicode_error("Unicode low surrogate must follow a high surrogate.",
										  ERRCODE_INVALID_TEXT_REPRESENTATION);
						lo = hex4(s + 3);
						if (is_utf16_surrogate_first(lo))
							unicode_error("Unicode high surrogate must not follow a high surrogate.",
										  ERRCODE_INVALID_TEXT_REPRESENTATION);
						if (!is_utf16_surrogate_second(lo))
							unicode_error("Unicode low surrogate must follow a high surrogate.",
										  ERRCODE_INVALID_TEXT_REPRESENTATION);
						ch = surrogate_pair_to_codepoint(ch, lo);
						s += 6;
					}
					else if (is_utf16_surrogate_second(ch))
						unicode_error("Unicode low surrogate must follow a high surrogate.",
									  ERRCODE_INVALID_TEXT_REPRESENTATION);
					if (ch == 0)
						unicode_error("\\u0000 cannot be converted to text.",
									  ERRCODE_UNTRANSLATABLE_CHARACTER);
					pg_unicode_to_server(ch, (unsigned char *) cbuf);
					appendStringInfoString(&buf, cbuf);
				}
				break;
			default:
				/* '"', '\\' and '/' stand for themselves */
				appendStringInfoChar(&buf, *s);
				break;
		}
		s++;
	}
	return buf.data;
}

/*
 * A string token's contents, given its quotes at start and end[-1]: *len
 * bytes at the returned pointer, which points into the input when there is
 * nothing to de-escape (not NUL-terminated then), or to a de-escaped,
 * NUL-terminated copy.
 */
static inline const char *
string_span(const char *start, const char *end, int *len)
{
	*len = end - start - 2;
	if (memchr(start + 1, '\\', *len) != NULL)
	{
		char	   *s = json_unescape(start + 1, *len);

		*len = strlen(s);
		return s;
	}
	return start + 1;
}

/* The string scalar just read (the lexer has moved past it). */
static inline const char *
value_span(EventParse *ep, int *len)
{
	return string_span(ep->val_start, ep->lex->prev_token_terminator, len);
}

static inline bool
json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * The key of the field whose value is about to be read.  The lexer has
 * moved past the key and the colon, so the key ends at the last quote
 * before the colon.  It starts at the first quote after key_hint, which
 * points just past the '{' or ',' that precedes every key (set by
 * ev_object_start and ev_object_field_end, the last callbacks before each
 * key is read).  Should the hint not lead to a quote, the opening quote is
 * found by scanning back from the closing one: inside a JSON string every
 * '"' is escaped by an odd number of backslashes, so the first quote found
 * that is not is the opening one.
 */
static const char *
key_span(EventParse *ep, int *len)
{
	const char *close = ep->lex->prev_token_terminator - 1;	/* the colon */
	const char *p = ep->key_hint;

	do
		close--;
	while (*close != '"');

	ep->key_hint = NULL;
	if (p != NULL)
	{
		while (json_space(*p))
			p++;
		if (*p == '"' && p < close)
			return string_span(p, close + 1, len);
	}

	p = close;
	for (;;)
	{
		int			n = 0;

		p--;
		if (*p != '"')
			continue;
		while (p[-1 - n] == '\\')
			n++;
		if (n % 2 == 0)
			break;
	}
	return string_span(p, close + 1, len);
}

static DataField
data_field_span(const char *f, int len)
{
	switch (len)
	{
		case 2:
			if (span_is(f, len, "to", 2))
				return DF_TO;
			if (span_is(f, len, "ip", 2))
				return DF_IP;
			break;
		case 6:
			if (span_is(f, len, "reason", 6))
				return DF_REASON;
			break;
		case 10:
			if (span_is(f, len, "user_agent", 10))
				return DF_USER_AGENT;
			break;
		case 12:
			if (span_is(f, len, "original_url", 12))
				return DF_ORIGINAL_URL;
			break;
		case 13:
			if (span_is(f, len, "reject_reason", 13))
				return DF_REJECT_REASON;
			break;
	}
	return DF_NONE;
}

/* ----------------------------------------------------------------
 * Building jsonb values.
 *
 * tags, event_data and other containers are built as the JsonbValue tree
 * that JsonbValueToJsonb() takes (what pushJsonbValue builds, without its
 * general-purpose state machine): each open container is a frame, keys and
 * values are appended in place, and an object's pairs are sorted and its
 * duplicate keys dropped when it closes, the last value of a key winning,
 * as in jsonb.
 * ---------------------------------------------------------------- */

#define BUILD_INITIAL_SIZE 4
#define BUILD_SORT_INSERTION_MAX 16
/* as many members as jsonb takes and one allocation holds */
#define BUILD_MAX_MEMBERS ((int) Min(JB_CMASK, MaxAllocSize / sizeof(JsonbPair)))

static void
too_many_members(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("webhook body holds an object or array too large for jsonb")));
}

static void
build_begin(EventParse *ep, bool is_object)
{
	JsonbValue *c = palloc(sizeof(JsonbValue));
	BuildFrame *f;

	if (ep->nframes == ep->frames_cap)
	{
		ep->frames_cap = ep->frames_cap == 0 ? 8 : ep->frames_cap * 2;
		ep->frames = ep->frames == NULL ?
			palloc(ep->frames_cap * sizeof(BuildFrame)) :
			repalloc(ep->frames, ep->frames_cap * sizeof(BuildFrame));
	}
	f = &ep->frames[ep->nframes++];
	f->cont = c;
	f->size = BUILD_INITIAL_SIZE;
	if (is_object)
	{
		c->type = jbvObject;
		c->val.object.nPairs = 0;
		c->val.object.pairs = palloc(BUILD_INITIAL_SIZE * sizeof(JsonbPair));
	}
	else
	{
		c->type = jbvArray;
		c->val.array.nElems = 0;
		c->val.array.rawScalar = false;
		c->val.array.elems = palloc(BUILD_INITIAL_SIZE * sizeof(JsonbValue));
	}
}

/* Room for one more pair or element in frame f. */
static void
build_grow(BuildFrame *f)
{
	JsonbValue *c = f->cont;

	if (f->size > BUILD_MAX_MEMBERS / 2)
		too_many_members();
	f->size *= 2;
	if (c->type == jbvObject)
		c->val.object.pairs = repalloc(c->val.object.pairs, f->size * sizeof(JsonbPair));
	else
		c->val.array.elems = repalloc(c->val.array.elems, f->size * sizeof(JsonbValue));
}

/* A key of the innermost container, an object; its value comes next. */
static void
build_key(EventParse *ep, const char *key, int len)
{
	BuildFrame *f = &ep->frames[ep->nframes - 1];
	JsonbValue *c = f->cont;
	JsonbPair  *pair;

	if (len > JENTRY_OFFLENMASK)
		string_too_long();
	if (c->val.object.nPairs == f->size)
		build_grow(f);
	pair = &c->val.object.pairs[c->val.object.nPairs];
	pair->key.type = jbvString;
	pair->key.val.string.len = len;
	/* JsonbValue strings are never written through */
	pair->key.val.string.val = unconstify(char *, key);
	pair->value.type = jbvNull;
	pair->order = c->val.object.nPairs++;
}

/* Where the next value of the innermost container goes. */
static JsonbValue *
build_slot(EventParse *ep)
{
	BuildFrame *f = &ep->frames[ep->nframes - 1];
	JsonbValue *c = f->cont;

	if (c->type == jbvObject)
		return &c->val.object.pairs[c->val.object.nPairs - 1].value;
	if (c->val.array.nElems == f->size)
		build_grow(f);
	return &c->val.array.elems[c->val.array.nElems++];
}

/* jsonb's key order: shorter keys first, then bytewise; then input order. */
static int
pair_cmp(const void *a, const void *b)
{
	const JsonbPair *pa = a;
	const JsonbPair *pb = b;
	int			res;

	if (pa->key.val.string.len != pb->key.val.string.len)
		return pa->key.val.string.len > pb->key.val.string.len ? 1 : -1;
	res = memcmp(pa->key.val.string.val, pb->key.val.string.val,
				 pa->key.val.string.len);
	if (res != 0)
		return res;
	return pa->order > pb->order ? 1 : -1;
}

static inline bool
same_key(const JsonbPair *a, const JsonbPair *b)
{
	return a->key.val.string.len == b->key.val.string.len &&
		memcmp(a->key.val.string.val, b->key.val.string.val,
			   a->key.val.string.len) == 0;
}

/* Sort an object's pairs as jsonb stores them, keeping a key's last value. */
static void
sort_pairs(JsonbValue *obj)
{
	JsonbPair  *pairs = obj->val.object.pairs;
	int			n = obj->val.object.nPairs;
	int			i,
				out;

	if (n <= BUILD_SORT_INSERTION_MAX)
	{
		for (i = 1; i < n; i++)
		{
			JsonbPair	tmp = pairs[i];
			int			j = i;

			while (j > 0 && pair_cmp(&pairs[j - 1], &tmp) > 0)
			{
				pairs[j] = pairs[j - 1];
				j--;
			}
			pairs[j] = tmp;
		}
	}
	else
		qsort(pairs, n, sizeof(JsonbPair), pair_cmp);

	/* equal keys now sit in input order: keep the last of each run */
	out = 0;
	for (i = 0; i < n; i++)
	{
		if (i + 1 < n && same_key(&pairs[i], &pairs[i + 1]))
			continue;
		pairs[out++] = pairs[i];
	}
	obj->val.object.nPairs = out;
}

/* The innermost container closes: it becomes its parent's value. */
static JsonbValue *
build_end(EventParse *ep)
{
	JsonbValue *c = ep->frames[--ep->nframes].cont;

	if (c->type == jbvObject && c->val.object.nPairs > 1)
		sort_pairs(c);
	if (ep->nframes > 0)
		*build_slot(ep) = *c;
	return c;
}

static JSON_ACTION_RESULT
ev_object_field_start(void *state, char *unused, bool isnull)
{
	EventParse *ep = (EventParse *) state;
	const char *key;
	int			len;

	CHECK_FOR_INTERRUPTS();
	ep->val_start = ep->lex->token_start;
	if (ep->depth != 1 && !ep->capture)
	{
		ep->key_hint = NULL;
		JSON_ACTION_RETURN;
	}
	key = key_span(ep, &len);
	if (ep->depth == 1)
	{
		ep->field = top_field(key, len);
		ep->fname = key;
		ep->fnamelen = len;
		reset_field(ep, ep->field);
	}
	else
	{
		if (ep->depth == 2 && ep->field == TF_EVENT_DATA)
		{
			ep->dfield = data_field_span(key, len);
			if (ep->dfield != DF_NONE)
				ep->data[ep->dfield].p = NULL;
		}
		build_key(ep, key, len);
	}
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
ev_object_field_end(void *state, char *fname, bool isnull)
{
	EventParse *ep = (EventParse *) state;

	/* the lexer's current token is the ',' before the next key, if any */
	ep->key_hint = ep->lex->token_terminator;
	if (ep->depth == 1)
		ep->field = TF_NONE;
	else if (ep->depth == 2)
		ep->dfield = DF_NONE;
	JSON_ACTION_RETURN;
}

/* A container opens: the root, a top-level value, or one inside it. */
static void
container_start(EventParse *ep, bool is_object)
{
	check_depth(ep);
	if (ep->depth == 0)
	{
		if (!is_object)
			not_an_object("an array", true);
	}
	else if (ep->depth == 1)
	{
		switch (ep->field)
		{
			case TF_EVENT_ID:
				ep->event_id.state = REQ_WRONG;
				ep->event_id.bad_type = is_object ? "an object" : "an array";
				ep->capture = false;
				break;
			case TF_EVENT_TYPE:
				ep->event_type.state = REQ_WRONG;
				ep->event_type.bad_type = is_object ? "an object" : "an array";
				ep->capture = false;
				break;
			case TF_EVENT_TIME:
				ep->event_time.state = REQ_WRONG;
				ep->event_time.bad_type = is_object ? "an object" : "an array";
				ep->capture = false;
				break;
			default:
				ep->capture = true;
				ep->nframes = 0;
				build_begin(ep, is_object);
				break;
		}
	}
	else if (ep->capture)
	{
		if (ep->depth == 2 && ep->field == TF_EVENT_DATA && ep->dfield == DF_TO &&
			!is_object)
		{
			ep->to_array = true;
			ep->to_index = 0;
		}
		build_begin(ep, is_object);
	}
	ep->depth++;
}

/* A container closes; a finished top-level value is stored. */
static void
container_end(EventParse *ep, bool is_object)
{
	JsonbValue *res;

	ep->depth--;
	if (ep->depth == 0 || !ep->capture)
		return;
	res = build_end(ep);
	if (ep->depth == 2 && ep->to_array && ep->field == TF_EVENT_DATA)
		ep->to_array = false;
	if (ep->depth > 1)
		return;

	/* a whole top-level value */
	ep->capture = false;
	if (ep->field == TF_TAGS && is_object)
		ep->tags = res;
	else if (ep->field == TF_EVENT_DATA && is_object)
		ep->event_data = res;
	else
		extra_set(ep, ep->fname, ep->fnamelen, res);
}

static JSON_ACTION_RESULT
ev_object_start(void *state)
{
	EventParse *ep = (EventParse *) state;

	container_start(ep, true);
	/* the lexer's current token is this object's '{' */
	ep->key_hint = ep->lex->token_terminator;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
ev_object_end(void *state)
{
	container_end((EventParse *) state, true);
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
ev_array_start(void *state)
{
	container_start((EventParse *) state, false);
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
ev_array_end(void *state)
{
	container_end((EventParse *) state, false);
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
ev_array_element_start(void *state, bool isnull)
{
	EventParse *ep = (EventParse *) state;

	CHECK_FOR_INTERRUPTS();
	ep->val_start = ep->lex->token_start;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
ev_array_element_end(void *state, bool isnull)
{
	EventParse *ep = (EventParse *) state;

	if (ep->to_array && ep->depth == 3)
		ep->to_index++;
	JSON_ACTION_RETURN;
}

/* A required string field's scalar value. */
static void
required_string(RequiredField *rf, const char *token, int len, JsonTokenType tt)
{
	if (tt == JSON_TOKEN_STRING)
	{
		rf->state = len == 0 ? REQ_EMPTY : REQ_OK;
		rf->str = token;
		rf->len = len;
	}
	else if (tt == JSON_TOKEN_NULL)
		rf->state = REQ_NULL;
	else
	{
		rf->state = REQ_WRONG;
		rf->bad_type = json_type_name(tt);
	}
}

/*
 * A NUL-terminated copy of s[0..len), in buf when it fits (the values parsed
 * from text here are short), else palloc'd.
 */
static const char *
terminated(const char *s, int len, char *buf, int bufsize)
{
	if (len >= bufsize)
		return pnstrdup(s, len);
	memcpy(buf, s, len);
	buf[len] = '\0';
	return buf;
}

/*
 * A top-level scalar value: for a string, the len bytes at token (not
 * NUL-terminated); otherwise the lexer's NUL-terminated token.
 */
static void
top_scalar(EventParse *ep, const char *token, int len, JsonTokenType tt)
{
	bool		keep = false;	/* keep the raw value in extra */
	char		buf[64];

	switch (ep->field)
	{
		case TF_EVENT_ID:
			required_string(&ep->event_id, token, len, tt);
			break;
		case TF_EVENT_TYPE:
			required_string(&ep->event_type, token, len, tt);
			break;
		case TF_EVENT_TIME:
			if (tt == JSON_TOKEN_NUMBER || tt == JSON_TOKEN_STRING)
			{
				const char *s = token;
				int			r;

				if (tt == JSON_TOKEN_STRING)
				{
					/* a numeric string, surrounding spaces allowed */
					const char *e = token + len;

					while (s < e && isspace((unsigned char) *s))
						s++;
					while (e > s && isspace((unsigned char) e[-1]))
						e--;
					s = pnstrdup(s, e - s);
				}
				r = parse_unix_time(s, &ep->event_time.time);
				ep->event_time.state = r > 0 ? REQ_OK : r == 0 ? REQ_BAD_TIME : REQ_TIME_RANGE;
				ep->event_time.str = token;
				ep->event_time.len = len;
			}
			else if (tt == JSON_TOKEN_NULL)
				ep->event_time.state = REQ_NULL;
			else
			{
				ep->event_time.state = REQ_WRONG;
				ep->event_time.bad_type = json_type_name(tt);
			}
			break;
		case TF_INSERTED_AT:
			if (tt == JSON_TOKEN_STRING)
			{
				ep->have_inserted_at =
					parse_iso_time(terminated(token, len, buf, sizeof(buf)),
								   &ep->inserted_at);
				keep = !ep->have_inserted_at;
			}
			else
				keep = tt != JSON_TOKEN_NULL;
			break;
		case TF_DOMAIN_ID:
			if (tt == JSON_TOKEN_NUMBER || tt == JSON_TOKEN_STRING)
				ep->have_domain_id =
					parse_int64(tt == JSON_TOKEN_STRING ?
								terminated(token, len, buf, sizeof(buf)) : token,
								&ep->domain_id);
			keep = !ep->have_domain_id && tt != JSON_TOKEN_NULL;
			break;
		case TF_USER_ID:
			if (tt == JSON_TOKEN_NUMBER || tt == JSON_TOKEN_STRING)
				ep->have_user_id =
					parse_int64(tt == JSON_TOKEN_STRING ?
								terminated(token, len, buf, sizeof(buf)) : token,
								&ep->user_id);
			keep = !ep->have_user_id && tt != JSON_TOKEN_NULL;
			break;
		case TF_MESSAGE_ID:
			if (tt == JSON_TOKEN_STRING)
			{
				ep->message_id.p = token;
				ep->message_id.len = len;
			}
			else
				keep = tt != JSON_TOKEN_NULL;
			break;
		case TF_MESSAGE_REFERENCE_ID:
			if (tt == JSON_TOKEN_STRING)
			{
				ep->message_reference_id.p = token;
				ep->message_reference_id.len = len;
			}
			else
				keep = tt != JSON_TOKEN_NULL;
			break;
		case TF_TAGS:
		case TF_EVENT_DATA:
			keep = tt != JSON_TOKEN_NULL;
			break;
		default:
			keep = true;
			break;
	}
	if (keep)
		extra_set(ep, ep->fname, ep->fnamelen,
				  scalar_value(token, len, tt, palloc(sizeof(JsonbValue))));
}

static JSON_ACTION_RESULT
ev_scalar(void *state, char *token, JsonTokenType tt)
{
	EventParse *ep = (EventParse *) state;
	JsonbValue	v;
	const char *str = NULL;
	int			len = 0;

	if (ep->depth == 0)
		not_an_object(json_type_name(tt), false);
	if (ep->depth >= 2 && !ep->capture)
		JSON_ACTION_RETURN;
	if (tt == JSON_TOKEN_STRING)
		str = value_span(ep, &len);
	if (ep->depth == 1)
	{
		if (tt == JSON_TOKEN_STRING)
			top_scalar(ep, str, len, tt);
		else
			top_scalar(ep, token, strlen(token), tt);
		JSON_ACTION_RETURN;
	}
	if (tt == JSON_TOKEN_STRING)
	{
		if (ep->field == TF_EVENT_DATA)
		{
			StrSpan    *d = NULL;

			if (ep->depth == 2 && ep->dfield != DF_NONE)
				d = &ep->data[ep->dfield];
			else if (ep->depth == 3 && ep->to_array && ep->to_index == 0)
				d = &ep->data[DF_TO];
			if (d != NULL)
			{
				d->p = str;
				d->len = len;
			}
		}
		if (len > JENTRY_OFFLENMASK)
			string_too_long();
		v.type = jbvString;
		v.val.string.len = len;
		v.val.string.val = unconstify(char *, str);
	}
	else
		scalar_value(token, 0, tt, &v);
	*build_slot(ep) = v;
	JSON_ACTION_RETURN;
}

/* Names the top-level key being read in the CONTEXT of an error. */
static void
event_error_context(void *arg)
{
	EventParse *ep = (EventParse *) arg;

	if (ep->depth >= 1 && ep->field != TF_NONE && ep->fname != NULL)
		errcontext("webhook event field \"%.*s\"", ep->fnamelen, ep->fname);
}

/* Report a JSON syntax error from the lexer. */
static void
json_syntax_error(JsonParseErrorType err, JsonLexContext *lex)
{
	int			code = ERRCODE_INVALID_TEXT_REPRESENTATION;

	mr_json_raise_untranslatable(err, lex);
	if (mr_json_untranslatable(err))
		code = ERRCODE_UNTRANSLATABLE_CHARACTER;
	ereport(ERROR,
			(errcode(code),
			 errmsg("webhook body is not valid JSON"),
			 errdetail("%s", mr_json_errdetail(err, lex))));
}

/* An empty or all-blank body gets a message of its own. */
static void
check_not_blank(const char *body, int len)
{
	int			i;

	for (i = 0; i < len; i++)
		if (!isspace((unsigned char) body[i]))
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("webhook body is empty")));
}

/* At most 100 characters of a value of len bytes, for a message. */
static char *
clip(const char *s, int len)
{
	return pnstrdup(s, pg_mbcliplen(s, len, 100));
}

static void
required_error(RequiredField *rf, const char *name)
{
	switch (rf->state)
	{
		case REQ_OK:
			return;
		case REQ_MISSING:
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("webhook event has no \"%s\"", name)));
			break;
		case REQ_NULL:
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("webhook event field \"%s\" is null", name)));
			break;
		case REQ_EMPTY:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("webhook event field \"%s\" is empty", name)));
			break;
		case REQ_WRONG:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("webhook event field \"%s\" is %s, not a %s", name,
							rf->bad_type,
							strcmp(name, "event_time") == 0 ? "number" : "string")));
			break;
		case REQ_BAD_TIME:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("webhook event field \"%s\" is not a number of seconds", name),
					 errdetail("The value is \"%s\".", clip(rf->str, rf->len))));
			break;
		case REQ_TIME_RANGE:
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_FIELD_OVERFLOW),
					 errmsg("webhook event field \"%s\" is out of range", name),
					 errdetail("The value is \"%s\".", clip(rf->str, rf->len))));
			break;
	}
}

/* Sort extra's keys the way jsonb does (length, then bytes), then by seq. */
static int
extra_cmp(const void *a, const void *b)
{
	const ExtraPair *pa = a;
	const ExtraPair *pb = b;
	int			c;

	if (pa->keylen != pb->keylen)
		return pa->keylen > pb->keylen ? 1 : -1;
	c = memcmp(pa->key, pb->key, pa->keylen);
	if (c != 0)
		return c;
	return pa->seq > pb->seq ? 1 : (pa->seq < pb->seq ? -1 : 0);
}

/*
 * Sort extra and keep the last entry of each key (jsonb's rule), dropping
 * keys whose last entry took them back.  Returns the number of keys left.
 */
static int
extra_finish(EventParse *ep)
{
	int			i,
				out = 0;

	if (ep->nextra > 1)
		qsort(ep->extra, ep->nextra, sizeof(ExtraPair), extra_cmp);
	for (i = 0; i < ep->nextra; i++)
	{
		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		if (i + 1 < ep->nextra &&
			ep->extra[i].keylen == ep->extra[i + 1].keylen &&
			memcmp(ep->extra[i].key, ep->extra[i + 1].key, ep->extra[i].keylen) == 0)
			continue;
		if (ep->extra[i].value != NULL)
			ep->extra[out++] = ep->extra[i];
	}
	ep->nextra = out;
	return out;
}

/* extra as jsonb; extra_finish has run and left at least one key. */
static Datum
extra_jsonb(EventParse *ep)
{
	JsonbValue	obj;
	int			i;

	obj.type = jbvObject;
	obj.val.object.nPairs = ep->nextra;
	obj.val.object.pairs = palloc(sizeof(JsonbPair) * ep->nextra);
	for (i = 0; i < ep->nextra; i++)
	{
		JsonbPair  *pair = &obj.val.object.pairs[i];

		pair->key.type = jbvString;
		pair->key.val.string.len = ep->extra[i].keylen;
		pair->key.val.string.val = (char *) ep->extra[i].key;
		pair->value = *ep->extra[i].value;
		pair->order = i;
	}
	return JsonbPGetDatum(JsonbValueToJsonb(&obj));
}

static inline Datum
text_datum(const char *s)
{
	return PointerGetDatum(cstring_to_text(s));
}

static inline Datum
span_datum(const char *p, int len)
{
	return PointerGetDatum(cstring_to_text_with_len(p, len));
}

/*
 * Parse one webhook event from body[0..len) into a maileroo_events tuple,
 * allocated in CurrentMemoryContext; temporaries go to cache->scratch,
 * which is reset before returning.  Raises the class-22 errors above.
 */
static HeapTuple
parse_event_body(EventCache *cache, char *body, int len)
{
	MemoryContext callcxt = CurrentMemoryContext;
	EventParse	ep;
	JsonSemAction sem;
	JsonParseErrorType err;
	ErrorContextCallback errcb;
	Datum		values[EVENT_NATTS];
	bool		nulls[EVENT_NATTS];
	HeapTuple	tuple;
	text	   *t;
	char	   *s;
	const StrSpan *reason;
	int			smtp_code;
	char	   *smtp_status;
	char		ipbuf[72];

	MemoryContextSwitchTo(cache->scratch);

	check_not_blank(body, len);

	memset(&ep, 0, sizeof(ep));
	ep.field = TF_NONE;
	ep.dfield = DF_NONE;
	ep.lex = mr_json_lexer_make(body, len, false);

	memset(&sem, 0, sizeof(sem));
	sem.semstate = &ep;
	sem.object_start = ev_object_start;
	sem.object_end = ev_object_end;
	sem.array_start = ev_array_start;
	sem.array_end = ev_array_end;
	sem.object_field_start = ev_object_field_start;
	sem.object_field_end = ev_object_field_end;
	sem.array_element_start = ev_array_element_start;
	sem.array_element_end = ev_array_element_end;
	sem.scalar = ev_scalar;

	errcb.callback = event_error_context;
	errcb.arg = &ep;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	err = pg_parse_json(ep.lex, &sem);
	error_context_stack = errcb.previous;
	if (err != JSON_SUCCESS)
		json_syntax_error(err, ep.lex);

	required_error(&ep.event_id, "event_id");
	required_error(&ep.event_type, "event_type");
	required_error(&ep.event_time, "event_time");

	memset(nulls, true, sizeof(nulls));
	values[COL_EVENT_ID] = span_datum(ep.event_id.str, ep.event_id.len);
	/* the span may point into the caller's body: lower-case the copy */
	t = cstring_to_text_with_len(ep.event_type.str, ep.event_type.len);
	for (s = VARDATA(t); s < VARDATA(t) + ep.event_type.len; s++)
		*s = pg_ascii_tolower((unsigned char) *s);
	values[COL_EVENT_TYPE] = PointerGetDatum(t);
	values[COL_EVENT_TIME] = TimestampTzGetDatum(ep.event_time.time);
	nulls[COL_EVENT_ID] = nulls[COL_EVENT_TYPE] = nulls[COL_EVENT_TIME] = false;

	if (ep.have_inserted_at)
	{
		values[COL_INSERTED_AT] = TimestampTzGetDatum(ep.inserted_at);
		nulls[COL_INSERTED_AT] = false;
	}
	if (ep.have_domain_id)
	{
		values[COL_DOMAIN_ID] = Int64GetDatum(ep.domain_id);
		nulls[COL_DOMAIN_ID] = false;
	}
	if (ep.have_user_id)
	{
		values[COL_USER_ID] = Int64GetDatum(ep.user_id);
		nulls[COL_USER_ID] = false;
	}
	if (ep.message_id.p != NULL)
	{
		const char *m = ep.message_id.p;
		int			mlen = ep.message_id.len;

		if (mlen >= 2 && m[0] == '<' && m[mlen - 1] == '>')
			values[COL_MESSAGE_ID] = span_datum(m + 1, mlen - 2);
		else
			values[COL_MESSAGE_ID] = span_datum(m, mlen);
		nulls[COL_MESSAGE_ID] = false;
	}
	if (ep.message_reference_id.p != NULL)
	{
		values[COL_MESSAGE_REFERENCE_ID] = span_datum(ep.message_reference_id.p,
													  ep.message_reference_id.len);
		nulls[COL_MESSAGE_REFERENCE_ID] = false;
	}
	if (ep.data[DF_TO].p != NULL &&
		(s = address_part(ep.data[DF_TO].p, ep.data[DF_TO].len)) != NULL)
	{
		values[COL_RECIPIENT] = text_datum(s);
		nulls[COL_RECIPIENT] = false;
	}
	/* an address is at most 64 bytes long; longer text is no address */
	if (ep.data[DF_IP].p != NULL && ep.data[DF_IP].len <= 64)
	{
		inet	   *ip = parse_ip(terminated(ep.data[DF_IP].p, ep.data[DF_IP].len,
											 ipbuf, sizeof(ipbuf)));

		if (ip != NULL)
		{
			values[COL_IP] = InetPGetDatum(ip);
			nulls[COL_IP] = false;
		}
	}
	if (ep.data[DF_USER_AGENT].p != NULL)
	{
		values[COL_USER_AGENT] = span_datum(ep.data[DF_USER_AGENT].p,
											ep.data[DF_USER_AGENT].len);
		nulls[COL_USER_AGENT] = false;
	}
	if (ep.data[DF_ORIGINAL_URL].p != NULL)
	{
		values[COL_URL] = span_datum(ep.data[DF_ORIGINAL_URL].p,
									 ep.data[DF_ORIGINAL_URL].len);
		nulls[COL_URL] = false;
	}
	reason = ep.data[DF_REASON].p != NULL ? &ep.data[DF_REASON] : &ep.data[DF_REJECT_REASON];
	if (reason->p != NULL)
	{
		const char *bounce = NULL;

		values[COL_REASON] = span_datum(reason->p, reason->len);
		nulls[COL_REASON] = false;
		parse_smtp_reason(pnstrdup(reason->p, reason->len), &smtp_code, &smtp_status);
		if (smtp_code != 0)
		{
			values[COL_SMTP_CODE] = Int32GetDatum(smtp_code);
			nulls[COL_SMTP_CODE] = false;
		}
		if (smtp_status != NULL)
		{
			values[COL_SMTP_STATUS] = text_datum(smtp_status);
			nulls[COL_SMTP_STATUS] = false;
		}
		if (smtp_status != NULL ? smtp_status[0] == '5' : smtp_code / 100 == 5)
			bounce = "hard";
		else if (smtp_status != NULL ? smtp_status[0] == '4' : smtp_code / 100 == 4)
			bounce = "soft";
		if (bounce != NULL)
		{
			values[COL_BOUNCE_CLASS] = text_datum(bounce);
			nulls[COL_BOUNCE_CLASS] = false;
		}
	}
	if (ep.tags != NULL)
	{
		values[COL_TAGS] = JsonbPGetDatum(JsonbValueToJsonb(ep.tags));
		nulls[COL_TAGS] = false;
	}
	values[COL_EVENT_DATA] = ep.event_data != NULL ?
		JsonbPGetDatum(JsonbValueToJsonb(ep.event_data)) : cache->empty_object;
	nulls[COL_EVENT_DATA] = false;
	if (ep.nextra > 0 && extra_finish(&ep) > 0)
	{
		values[COL_EXTRA] = extra_jsonb(&ep);
		nulls[COL_EXTRA] = false;
	}
	values[COL_RECEIVED_AT] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	nulls[COL_RECEIVED_AT] = false;

	MemoryContextSwitchTo(callcxt);
	tuple = heap_form_tuple(cache->tupdesc, values, nulls);
	MemoryContextReset(cache->scratch);
	return tuple;
}

/*
 * The per-function cache: the result row type (checked against the shape
 * this file writes), the scratch context and '{}'::jsonb.
 */
static EventCache *
event_cache(FunctionCallInfo fcinfo)
{
	EventCache *cache = (EventCache *) fcinfo->flinfo->fn_extra;
	MemoryContext old;
	TupleDesc	tupdesc;
	int			i;

	if (cache != NULL)
		return cache;

	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (tupdesc->natts != EVENT_NATTS)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table maileroo_events does not have the columns maileroo expects"),
				 errhint("Recreate the extension, or undo the change to the table.")));
	for (i = 0; i < EVENT_NATTS; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped || att->atttypid != event_col_types[i])
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table maileroo_events does not have the columns maileroo expects"),
					 errhint("Recreate the extension, or undo the change to the table.")));
	}
	cache = palloc0(sizeof(EventCache));
	cache->tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
	cache->empty_object = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	/* a keeper block large enough that a typical event needs no malloc */
	cache->scratch = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt,
										   "maileroo event parse",
										   0, 64 * 1024, ALLOCSET_DEFAULT_MAXSIZE);
	fcinfo->flinfo->fn_extra = cache;
	MemoryContextSwitchTo(old);
	return cache;
}

/*
 * maileroo_parse_event(body text) RETURNS maileroo_events
 */
Datum
maileroo_parse_event(PG_FUNCTION_ARGS)
{
	text	   *body = PG_GETARG_TEXT_PP(0);
	EventCache *cache = event_cache(fcinfo);
	HeapTuple	tuple;

	tuple = parse_event_body(cache, VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body));
	PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}

/*
 * maileroo_parse_event(body jsonb) RETURNS maileroo_events: the jsonb is
 * written out as text and read by the same parser.
 */
Datum
maileroo_parse_event_jsonb(PG_FUNCTION_ARGS)
{
	Jsonb	   *jb = PG_GETARG_JSONB_P(0);
	EventCache *cache = event_cache(fcinfo);
	StringInfoData buf;
	HeapTuple	tuple;

	initStringInfo(&buf);
	JsonbToCString(&buf, &jb->root, VARSIZE(jb));
	tuple = parse_event_body(cache, buf.data, buf.len);
	pfree(buf.data);
	PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}

/* ----------------------------------------------------------------
 * Batches: splitting a body into one text span per event.
 * ---------------------------------------------------------------- */

typedef struct Span
{
	int			start;
	int			end;
} Span;

typedef struct SplitState
{
	JsonLexContext *lex;
	int			depth;
	bool		root_array;
	bool		in_events;		/* reading the root's "events" value */
	bool		events_array;	/* the last "events" value is an array */
	bool		has_envelope;	/* the root has event_id or event_type */
	int			elem_start;
	Span	   *spans;
	int			nspans;
	int			cap;
} SplitState;

static void
split_add(SplitState *ss, int start, int end)
{
	if (ss->nspans == ss->cap)
	{
		ss->cap = ss->cap == 0 ? 16 : ss->cap * 2;
		ss->spans = ss->spans == NULL ? palloc(ss->cap * sizeof(Span)) :
			repalloc(ss->spans, ss->cap * sizeof(Span));
	}
	ss->spans[ss->nspans].start = start;
	ss->spans[ss->nspans].end = end;
	ss->nspans++;
}

/* True when an array element at the current depth is one event. */
static inline bool
split_is_event_level(SplitState *ss)
{
	return (ss->root_array && ss->depth == 1) ||
		(ss->in_events && ss->depth == 2);
}

static JSON_ACTION_RESULT
sp_object_start(void *state)
{
	SplitState *ss = (SplitState *) state;

	if (ss->depth >= MR_EVENT_MAX_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook body is nested too deeply"),
				 errdetail("Nesting deeper than %d levels is not accepted.",
						   MR_EVENT_MAX_DEPTH)));
	ss->depth++;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
sp_array_start(void *state)
{
	SplitState *ss = (SplitState *) state;

	if (ss->depth >= MR_EVENT_MAX_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook body is nested too deeply"),
				 errdetail("Nesting deeper than %d levels is not accepted.",
						   MR_EVENT_MAX_DEPTH)));
	if (ss->depth == 0)
		ss->root_array = true;
	else if (ss->depth == 1 && ss->in_events)
	{
		/* the last "events" key wins */
		ss->events_array = true;
		ss->nspans = 0;
	}
	ss->depth++;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
sp_end(void *state)
{
	((SplitState *) state)->depth--;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
sp_object_field_start(void *state, char *fname, bool isnull)
{
	SplitState *ss = (SplitState *) state;

	CHECK_FOR_INTERRUPTS();
	if (ss->depth == 1 && !ss->root_array)
	{
		ss->in_events = strcmp(fname, "events") == 0;
		if (ss->in_events)
			ss->events_array = false;
		if (strcmp(fname, "event_id") == 0 || strcmp(fname, "event_type") == 0)
			ss->has_envelope = true;
	}
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
sp_object_field_end(void *state, char *fname, bool isnull)
{
	SplitState *ss = (SplitState *) state;

	if (ss->depth == 1)
		ss->in_events = false;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
sp_array_element_start(void *state, bool isnull)
{
	SplitState *ss = (SplitState *) state;

	CHECK_FOR_INTERRUPTS();
	if (split_is_event_level(ss))
		ss->elem_start = ss->lex->token_start - ss->lex->input;
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
sp_array_element_end(void *state, bool isnull)
{
	SplitState *ss = (SplitState *) state;

	if (split_is_event_level(ss))
		split_add(ss, ss->elem_start, ss->lex->prev_token_terminator - ss->lex->input);
	JSON_ACTION_RETURN;
}

static JSON_ACTION_RESULT
sp_scalar(void *state, char *token, JsonTokenType tt)
{
	SplitState *ss = (SplitState *) state;

	if (ss->depth == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook body is %s, not a JSON object or array", json_type_name(tt))));
	JSON_ACTION_RETURN;
}

/*
 * Split body[0..len) into the text spans of its events: the elements of a
 * root array, the elements of {"events": [...]} (a root object with an
 * "events" array and neither event_id nor event_type), or else the whole
 * body.  Spans are palloc'd in CurrentMemoryContext.  Raises the class-22
 * errors for a body that is not JSON, a scalar, or nested too deeply.
 */
static Span *
split_events(char *body, int len, int *nspans)
{
	SplitState	ss;
	JsonSemAction sem;
	JsonParseErrorType err;

	check_not_blank(body, len);
	memset(&ss, 0, sizeof(ss));
	ss.lex = mr_json_lexer_make(body, len, true);

	memset(&sem, 0, sizeof(sem));
	sem.semstate = &ss;
	sem.object_start = sp_object_start;
	sem.object_end = sp_end;
	sem.array_start = sp_array_start;
	sem.array_end = sp_end;
	sem.object_field_start = sp_object_field_start;
	sem.object_field_end = sp_object_field_end;
	sem.array_element_start = sp_array_element_start;
	sem.array_element_end = sp_array_element_end;
	sem.scalar = sp_scalar;

	err = pg_parse_json(ss.lex, &sem);
	if (err != JSON_SUCCESS)
		json_syntax_error(err, ss.lex);

	if (!ss.root_array && !(ss.events_array && !ss.has_envelope))
	{
		/* a single event: the whole body */
		ss.nspans = 0;
		split_add(&ss, 0, len);
	}
	*nspans = ss.nspans;
	return ss.spans;
}

/* Names the batch element being parsed in the CONTEXT of an error. */
static void
batch_error_context(void *arg)
{
	int		   *pos = (int *) arg;

	errcontext("webhook event %d of %d in the batch", pos[0], pos[1]);
}

/* Set up a materialize-mode SRF; returns the tuplestore. */
static Tuplestorestate *
materialize_srf(FunctionCallInfo fcinfo, TupleDesc tupdesc)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	Tuplestorestate *ts;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	ts = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = ts;
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(old);
	return ts;
}

/*
 * maileroo_parse_events(body text) RETURNS SETOF maileroo_events
 */
Datum
maileroo_parse_events(PG_FUNCTION_ARGS)
{
	text	   *body = PG_GETARG_TEXT_PP(0);
	char	   *data = VARDATA_ANY(body);
	EventCache *cache = event_cache(fcinfo);
	Tuplestorestate *ts = materialize_srf(fcinfo, cache->tupdesc);
	MemoryContext tmp;
	MemoryContext old;
	Span	   *spans;
	int			nspans;
	int			pos[2];
	int			i;
	ErrorContextCallback errcb;

	tmp = AllocSetContextCreate(CurrentMemoryContext, "maileroo batch",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(tmp);
	spans = split_events(data, VARSIZE_ANY_EXHDR(body), &nspans);
	pos[1] = nspans;
	errcb.callback = batch_error_context;
	errcb.arg = pos;
	errcb.previous = error_context_stack;
	error_context_stack = nspans > 1 ? &errcb : errcb.previous;
	for (i = 0; i < nspans; i++)
	{
		HeapTuple	tuple;

		CHECK_FOR_INTERRUPTS();
		pos[0] = i + 1;
		tuple = parse_event_body(cache, data + spans[i].start,
								 spans[i].end - spans[i].start);
		tuplestore_puttuple(ts, tuple);
		heap_freetuple(tuple);
	}
	error_context_stack = errcb.previous;
	MemoryContextSwitchTo(old);
	MemoryContextDelete(tmp);
	return (Datum) 0;
}

/*
 * maileroo_event_bodies(body text) RETURNS SETOF text: the text of each
 * event in a body, as maileroo_parse_events splits it.
 */
Datum
maileroo_event_bodies(PG_FUNCTION_ARGS)
{
	text	   *body = PG_GETARG_TEXT_PP(0);
	char	   *data = VARDATA_ANY(body);
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	MemoryContext tmp;
	MemoryContext old;
	Span	   *spans;
	int			nspans;
	int			i;

	tupdesc = CreateTemplateTupleDesc(1);
	TupleDescInitEntry(tupdesc, 1, "body", TEXTOID, -1, 0);
	ts = materialize_srf(fcinfo, tupdesc);

	tmp = AllocSetContextCreate(CurrentMemoryContext, "maileroo batch",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(tmp);
	spans = split_events(data, VARSIZE_ANY_EXHDR(body), &nspans);
	for (i = 0; i < nspans; i++)
	{
		Datum		value = PointerGetDatum(cstring_to_text_with_len(data + spans[i].start,
																	  spans[i].end - spans[i].start));
		bool		isnull = false;

		CHECK_FOR_INTERRUPTS();
		tuplestore_putvalues(ts, tupdesc, &value, &isnull);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(tmp);
	return (Datum) 0;
}
