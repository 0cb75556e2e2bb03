/*-------------------------------------------------------------------------
 *
 * maileroo_send.c
 *		SQL functions that talk to Maileroo synchronously:
 *		maileroo_send_now(), maileroo_send_template_now(),
 *		maileroo_scheduled(), maileroo_cancel_scheduled(), and
 *		maileroo_reference_id().
 *
 * Each call builds its request with maileroo_request.c, makes one
 * interruptible HTTP call on the backend's kept connection
 * (maileroo_http_call) and turns Maileroo's answer into a result or an
 * ERROR (maileroo_http_raise; SQLSTATE class MR, see the README).  The work
 * of a call is done in a memory context of its own, deleted before return.
 *
 * src/maileroo_send.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_http.h"
#include "maileroo_account.h"
#include "maileroo_request.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* Maileroo's bound on per_page for GET /emails/scheduled. */
#define MAILEROO_SCHEDULED_MAX_PER_PAGE 100

/* Every recipient of a synchronous send is suppressed. */
#define MR_SQLSTATE_SUPPRESSED	MAKE_SQLSTATE('M','R','4','1','0')

PG_FUNCTION_INFO_V1(maileroo_send_now);
PG_FUNCTION_INFO_V1(maileroo_send_template_now);
PG_FUNCTION_INFO_V1(maileroo_reference_id);
PG_FUNCTION_INFO_V1(maileroo_scheduled);
PG_FUNCTION_INFO_V1(maileroo_cancel_scheduled);

/* The short-lived memory context of one call. */
#define call_context(name) \
	AllocSetContextCreate(CurrentMemoryContext, (name), ALLOCSET_DEFAULT_SIZES)

/* Build, send and judge one message; returns the accepted reference_id. */
static Datum
send_now(FunctionCallInfo fcinfo, bool is_template)
{
	MemoryContext cxt = call_context("maileroo send");
	MemoryContext old = MemoryContextSwitchTo(cxt);
	MailerooRequest *req;
	MailerooResult res;
	text	   *ref;

	req = maileroo_request_from_args(fcinfo, is_template);
	if (req->all_suppressed)
		ereport(ERROR,
				(errcode(MR_SQLSTATE_SUPPRESSED),
				 errmsg("every recipient is suppressed"),
				 errdetail("Nothing was sent."),
				 errhint("Pass ignore_suppressions => true to send anyway.")));

	maileroo_http_call(req->account, "POST", req->path, req->body, &res);
	if (res.outcome != MR_OUTCOME_SENT)
		maileroo_http_raise(&res, "send");

	MemoryContextSwitchTo(old);
	ref = cstring_to_text(res.reference_id && res.reference_id[0] ?
						  res.reference_id : req->reference_id);
	MemoryContextDelete(cxt);
	PG_RETURN_TEXT_P(ref);
}

/* maileroo_send_now(sender, recipients, subject, html, plain, ...) */
Datum
maileroo_send_now(PG_FUNCTION_ARGS)
{
	return send_now(fcinfo, false);
}

/* maileroo_send_template_now(sender, recipients, subject, template_id, ...) */
Datum
maileroo_send_template_now(PG_FUNCTION_ARGS)
{
	return send_now(fcinfo, true);
}

/* maileroo_reference_id(): a new 24-character lowercase hex id. */
Datum
maileroo_reference_id(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(maileroo_new_reference_id()));
}

/*
 * maileroo_cancel_scheduled(reference_id, account): true, or false when
 * Maileroo does not know the message; NULL for a NULL reference_id.
 */
Datum
maileroo_cancel_scheduled(PG_FUNCTION_ARGS)
{
	MemoryContext cxt;
	MemoryContext old;
	char	   *ref;
	char	   *account;
	MailerooResult res;
	bool		cancelled;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	cxt = call_context("maileroo cancel");
	old = MemoryContextSwitchTo(cxt);
	ref = maileroo_check_reference_id(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	account = maileroo_account_choose(PG_ARGISNULL(1) ? NULL :
									  text_to_cstring(PG_GETARG_TEXT_PP(1)),
									  NULL, GetUserId());

	maileroo_http_call(account, "DELETE", psprintf("/emails/scheduled/%s", ref), NULL, &res);
	if (res.outcome == MR_OUTCOME_SENT)
		cancelled = true;
	else if (res.http_status == 404)
		cancelled = false;
	else
		maileroo_http_raise(&res, "cancel");

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	PG_RETURN_BOOL(cancelled);
}

/* ----------------------------------------------------------------
 * maileroo_scheduled()
 * ----------------------------------------------------------------
 */

/* Percent-encode s for a URL query (RFC 3986 unreserved characters kept). */
static char *
url_encode(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~')
			appendStringInfoChar(&buf, c);
		else
			appendStringInfo(&buf, "%%%02X", c);
	}
	return buf.data;
}

/* The string value of key in an object container, or NULL. */
static char *
get_string(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(obj, key, strlen(key), &v) == NULL ||
		v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* An address as text: a string as is, {address, display_name} formatted. */
static char *
address_text(JsonbValue *v)
{
	char	   *addr;
	char	   *name;

	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		return NULL;
	addr = get_string(v->val.binary.data, "address");
	name = get_string(v->val.binary.data, "display_name");
	if (addr == NULL)
		return NULL;
	if (name == NULL || name[0] == '\0')
		return addr;
	return psprintf("%s <%s>", name, addr);
}

/* Recipients as a text[]: an array of strings or objects, or one of them. */
static Datum
recipients_array(JsonbValue *v, bool *isnull)
{
	ArrayBuildState *astate = NULL;

	*isnull = false;
	if (v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
		JsonbValue	e;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		{
			char	   *s;

			if (tok != WJB_ELEM)
				continue;
			s = address_text(&e);
			if (s != NULL)
				astate = accumArrayResult(astate, CStringGetTextDatum(s), false,
										  TEXTOID, CurrentMemoryContext);
		}
		if (astate == NULL)
			return PointerGetDatum(construct_empty_array(TEXTOID));
		return makeArrayResult(astate, CurrentMemoryContext);
	}
	else
	{
		char	   *s = address_text(v);
		Datum		d;

		if (s == NULL)
		{
			*isnull = true;
			return (Datum) 0;
		}
		d = CStringGetTextDatum(s);
		return PointerGetDatum(construct_array(&d, 1, TEXTOID, -1, false, TYPALIGN_INT));
	}
}

/*
 * An RFC 3339 timestamp ("2025-01-31T09:30:00Z", with optional fraction and
 * offset, or a space for T); false when s is not one.  Never raises.
 */
static bool
parse_rfc3339(const char *s, TimestampTz *result)
{
	struct pg_tm tm;
	int			n = 0;
	fsec_t		fsec = 0;
	int			tz = 0;
	const char *p;
	Timestamp	ts;

	memset(&tm, 0, sizeof(tm));
	if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
			   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 || n == 0)
		return false;
	p = s + n;
	if (*p == '.')
	{
		int			scale = 100000;

		for (p++; *p >= '0' && *p <= '9'; p++)
		{
			fsec += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':')
	{
		int			h,
					m;

		if (sscanf(p + 1, "%2d:%2d", &h, &m) != 2)
			return false;
		/* PostgreSQL's tz is seconds west of UTC. */
		tz = (h * 3600 + m * 60) * (*p == '+' ? -1 : 1);
		p += 6;
	}
	else
		return false;
	if (*p != '\0')
		return false;
	if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
		tm.tm_mday > day_tab[isleap(tm.tm_year)][tm.tm_mon - 1] ||
		tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return false;
	if (tm2timestamp(&tm, fsec, &tz, &ts) != 0)
		return false;
	*result = ts;
	return true;
}

/* A jsonb Datum for a value, or NULL for an absent or null one. */
static Datum
jsonb_or_null(JsonbContainer *obj, const char *key, bool *isnull)
{
	JsonbValue	v;

	*isnull = true;
	if (getKeyJsonValueFromContainer(obj, key, strlen(key), &v) == NULL ||
		v.type == jbvNull)
		return (Datum) 0;
	*isnull = false;
	return JsonbPGetDatum(JsonbValueToJsonb(&v));
}

/*
 * maileroo_scheduled(page, per_page, domain, account): one row per scheduled
 * message on that page of Maileroo's list, asked through account (else the
 * account serving domain, else the only account).  Fields Maileroo leaves out, or sends in
 * a shape not understood, come back NULL.
 */
Datum
maileroo_scheduled(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	tupdesc;
	Tuplestorestate *tupstore;
	MemoryContext per_query;
	MemoryContext cxt;
	MemoryContext old;
	int32		page = PG_ARGISNULL(0) ? 1 : PG_GETARG_INT32(0);
	int32		per_page = PG_ARGISNULL(1) ? 10 : PG_GETARG_INT32(1);
	StringInfoData path;
	char	   *account;
	MailerooResult res;
	Jsonb	   *jb;
	JsonbValue	data;
	JsonbValue	results;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("maileroo_scheduled() must be called in a context that accepts a set")));
	if (page < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("page must be at least 1")));
	if (per_page < 1 || per_page > MAILEROO_SCHEDULED_MAX_PER_PAGE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("per_page must be between 1 and %d",
						MAILEROO_SCHEDULED_MAX_PER_PAGE)));

	per_query = rsinfo->econtext->ecxt_per_query_memory;
	old = MemoryContextSwitchTo(per_query);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = CreateTupleDescCopy(tupdesc);
	tupstore = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tupstore;
	rsinfo->setDesc = tupdesc;
	MemoryContextSwitchTo(old);

	cxt = call_context("maileroo scheduled");
	old = MemoryContextSwitchTo(cxt);

	initStringInfo(&path);
	appendStringInfo(&path, "/emails/scheduled?page=%d&per_page=%d", page, per_page);
	if (!PG_ARGISNULL(2))
		appendStringInfo(&path, "&domain=%s",
						 url_encode(text_to_cstring(PG_GETARG_TEXT_PP(2))));

	account = maileroo_account_choose(PG_ARGISNULL(3) ? NULL :
									  text_to_cstring(PG_GETARG_TEXT_PP(3)),
									  PG_ARGISNULL(2) ? NULL :
									  text_to_cstring(PG_GETARG_TEXT_PP(2)),
									  GetUserId());
	maileroo_http_call(account, "GET", path.data, NULL, &res);
	if (res.outcome != MR_OUTCOME_SENT)
		maileroo_http_raise(&res, "listing of scheduled mail");

	/* The judge parsed this body as JSON already, so this cannot fail. */
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(res.body)));
	if (getKeyJsonValueFromContainer(&jb->root, "data", 4, &data) != NULL &&
		data.type == jbvBinary && JsonContainerIsObject(data.val.binary.data) &&
		getKeyJsonValueFromContainer(data.val.binary.data, "results", 7, &results) != NULL &&
		results.type == jbvBinary && JsonContainerIsArray(results.val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(results.val.binary.data);
		JsonbValue	e;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		{
			JsonbContainer *item;
			Datum		values[7];
			bool		nulls[7];
			char	   *s;
			JsonbValue	v;
			TimestampTz ts;

			if (tok != WJB_ELEM || e.type != jbvBinary ||
				!JsonContainerIsObject(e.val.binary.data))
				continue;
			item = e.val.binary.data;
			memset(nulls, 0, sizeof(nulls));

			s = get_string(item, "reference_id");
			nulls[0] = (s == NULL);
			values[0] = s ? CStringGetTextDatum(s) : (Datum) 0;

			s = NULL;
			if (getKeyJsonValueFromContainer(item, "from", 4, &v) != NULL)
				s = address_text(&v);
			nulls[1] = (s == NULL);
			values[1] = s ? CStringGetTextDatum(s) : (Datum) 0;

			if (getKeyJsonValueFromContainer(item, "recipients", 10, &v) != NULL ||
				getKeyJsonValueFromContainer(item, "to", 2, &v) != NULL)
				values[2] = recipients_array(&v, &nulls[2]);
			else
				nulls[2] = true;

			s = get_string(item, "subject");
			nulls[3] = (s == NULL);
			values[3] = s ? CStringGetTextDatum(s) : (Datum) 0;

			s = get_string(item, "scheduled_at");
			nulls[4] = (s == NULL || !parse_rfc3339(s, &ts));
			values[4] = nulls[4] ? (Datum) 0 : TimestampTzGetDatum(ts);

			values[5] = jsonb_or_null(item, "tags", &nulls[5]);
			values[6] = jsonb_or_null(item, "headers", &nulls[6]);

			tuplestore_putvalues(tupstore, tupdesc, values, nulls);
		}
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return (Datum) 0;
}
