/*-------------------------------------------------------------------------
 *
 * maileroo_request.c
 *		Validate the arguments of a send function and build the JSON body
 *		of Maileroo's POST /emails or POST /emails/template.
 *
 * One builder serves maileroo_send_now(), maileroo_send_template_now() and
 * the queued forms: the outbox stores the text built here and the delivery
 * worker sends it unchanged, so a retry sends exactly the same request
 * (with the same reference_id).
 *
 * Every problem is reported before anything leaves the database, as an
 * ERROR whose message names the argument: SQLSTATE 22004 for a required
 * argument that is NULL, 22023 for any other invalid value.
 *
 * The JSON fields, in the order written: from, to, cc, bcc, reply_to,
 * subject, html, plain | template_id, template_data, tracking, tags,
 * headers, attachments, scheduled_at, reference_id.  Arguments that are
 * NULL are left out, so that Maileroo's defaults apply (tracking).  to, cc
 * and bcc are arrays of {address, display_name} objects; from is one
 * object; reply_to is one object, or an array when several are given.
 *
 * src/maileroo_request.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo_request.h"
#include "maileroo_account.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/executor.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/formatting.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

/* Longest address Maileroo (and SMTP) accepts, in bytes, and its local part. */
#define MAILEROO_ADDRESS_MAX_BYTES	254
#define MAILEROO_LOCAL_PART_MAX_BYTES 64

/* Argument positions shared by both SQL signatures. */
enum
{
	ARG_SENDER = 0,
	ARG_RECIPIENTS,
	ARG_SUBJECT,
	ARG_HTML,					/* template_id for a template */
	ARG_PLAIN,					/* template_data for a template */
	ARG_CC,
	ARG_BCC,
	ARG_REPLY_TO,
	ARG_TAGS,
	ARG_HEADERS,
	ARG_ATTACHMENTS,
	ARG_TRACKING,
	ARG_SCHEDULED_AT,
	ARG_REFERENCE_ID,
	ARG_IGNORE_SUPPRESSIONS,
	ARG_ACCOUNT
};

/* Fields of the maileroo_attachment composite type, in its order. */
enum
{
	ATT_FILE_NAME = 1,
	ATT_CONTENT,
	ATT_CONTENT_TYPE,
	ATT_INLINE
};

static inline bool
arg_null(FunctionCallInfo fcinfo, int n)
{
	return n >= PG_NARGS() || PG_ARGISNULL(n);
}

/* ----------------------------------------------------------------
 * Addresses
 * ----------------------------------------------------------------
 */

/*
 * Why addr is not an address we send to, or NULL when it is one.  The check
 * is deliberately simple (what Maileroo itself accepts): one @, non-empty
 * local part, a domain with a dot, no whitespace, control characters or
 * characters that belong to the surrounding syntax.
 */
static const char *
address_problem(const char *addr)
{
	const char *at = strchr(addr, '@');
	const char *domain;
	const char *p;

	if (strlen(addr) > MAILEROO_ADDRESS_MAX_BYTES)
		return "An address may not be longer than 254 bytes.";
	if (at == NULL)
		return "An address needs an @.";
	if (strchr(at + 1, '@') != NULL)
		return "An address may contain only one @.";
	if (at == addr)
		return "The part before the @ is empty.";
	if (at - addr > MAILEROO_LOCAL_PART_MAX_BYTES)
		return "The part before the @ may not be longer than 64 bytes.";
	for (p = addr; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c <= 0x20 || c == 0x7f)
			return "An address may not contain whitespace or control characters.";
		if (strchr("<>()[],;:\"\\", c) != NULL)
			return psprintf("An address may not contain the character %c.", c);
	}
	domain = at + 1;
	if (*domain == '\0')
		return "The domain after the @ is empty.";
	if (strchr(domain, '.') == NULL)
		return "The domain after the @ needs a dot.";
	if (domain[0] == '.' || domain[strlen(domain) - 1] == '.' ||
		strstr(domain, "..") != NULL)
		return "The domain after the @ has an empty label.";
	return NULL;
}

/* Trim ASCII whitespace from both ends of s, in place; returns s. */
static char *
trim(char *s)
{
	char	   *end;

	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
					   end[-1] == '\r' || end[-1] == '\n'))
		end--;
	*end = '\0';
	return s;
}

/*
 * The first character of s that may not go into a mail header, or NULL:
 * C0 controls (CR, LF, tab, VT, FF, ...), DEL, and in UTF-8 the C1 controls
 * (U+0080 to U+009F, NEL among them) and the line and paragraph separators
 * U+2028 and U+2029, which some readers take for line breaks.  *len is set
 * to the character's length in bytes.
 */
static const char *
header_unsafe(const char *s, int *len)
{
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	const unsigned char *p;

	for (p = (const unsigned char *) s; *p; p++)
	{
		*len = 1;
		if (*p < 0x20 || *p == 0x7f)
			return (const char *) p;
		if (!utf8 || *p < 0x80)
			continue;
		if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
		{
			*len = 2;
			return (const char *) p;
		}
		if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))
		{
			*len = 3;
			return (const char *) p;
		}
	}
	return NULL;
}

/* A copy of s for an error message, each header_unsafe character as '?'. */
static char *
printable(const char *s)
{
	StringInfoData out;
	const char *p = s;
	const char *bad;
	int			len;

	initStringInfo(&out);
	while ((bad = header_unsafe(p, &len)) != NULL)
	{
		appendBinaryStringInfo(&out, p, bad - p);
		appendStringInfoChar(&out, '?');
		p = bad + len;
	}
	appendStringInfoString(&out, p);
	return out.data;
}

/*
 * Raise 22023 when s holds a character that may not go into a mail header;
 * what names the field ("subject", "tags value of \"k\"", ...).
 */
static void
check_header_safe(const char *s, const char *what)
{
	int			len;
	const char *bad = header_unsafe(s, &len);

	if (bad != NULL)
	{
		unsigned	code = len == 1 ? (unsigned char) *bad :
			(unsigned) utf8_to_unicode((const unsigned char *) bad);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s contains a control character", what),
				 errdetail("Character U+%04X at position %d: a value that goes into a mail header may not contain line breaks or other control characters.",
						   code, pg_mbstrlen_with_len(s, bad - s) + 1)));
	}
}

/* Set while parsing a list that has several elements (for a hint). */
static bool parsing_list = false;

pg_noreturn static void bad_address(const char *argname, const char *item,
									const char *detail);

static void
bad_address(const char *argname, const char *item, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid address in %s: \"%s\"", argname, printable(item)),
			 errdetail_internal("%s", detail),
			 parsing_list && strchr(item, '@') == NULL ?
			 errhint("Addresses are separated by commas; a display name that contains a comma must be quoted, as in \"Doe, Jane\" <jane@example.com>.") : 0));
}

/*
 * Parse one address in one of the forms
 *		jane@example.com
 *		Jane Doe <jane@example.com>
 *		"Doe, Jane" <jane@example.com>
 *		<jane@example.com>
 * item is already trimmed and non-empty.
 */
static MailerooAddress *
parse_address(const char *argname, char *item)
{
	MailerooAddress *a = palloc0(sizeof(MailerooAddress));
	char	   *lt;
	const char *problem;

	if (item[0] == '"')
	{
		/* A quoted display name, with \" and \\ escapes. */
		StringInfoData name;
		char	   *p = item + 1;

		initStringInfo(&name);
		for (;;)
		{
			if (*p == '\0')
				bad_address(argname, item, "The quoted display name is not closed.");
			if (*p == '\\' && p[1] != '\0')
			{
				appendStringInfoChar(&name, p[1]);
				p += 2;
				continue;
			}
			if (*p == '"')
				break;
			appendStringInfoChar(&name, *p++);
		}
		p = trim(p + 1);
		if (*p != '<')
			bad_address(argname, item, "A quoted display name must be followed by <address>.");
		lt = p;
		a->display_name = trim(name.data);
	}
	else
	{
		lt = strchr(item, '<');
		if (lt != NULL)
		{
			char	   *name = pnstrdup(item, lt - item);

			name = trim(name);
			if (strchr(name, '"') != NULL || strchr(name, '>') != NULL)
				bad_address(argname, item, "The display name is malformed.");
			a->display_name = name;
		}
	}

	if (lt != NULL)
	{
		char	   *gt = strchr(lt, '>');

		if (gt == NULL)
			bad_address(argname, item, "The < before the address is not closed by >.");
		if (*trim(gt + 1) != '\0')
			bad_address(argname, item, "Nothing may follow the closing >.");
		a->address = trim(pnstrdup(lt + 1, gt - lt - 1));
		if (a->address[0] == '\0')
			bad_address(argname, item, "The address between < and > is empty.");
	}
	else
		a->address = item;

	if (a->display_name != NULL)
	{
		int			len;

		if (a->display_name[0] == '\0')
			a->display_name = NULL;
		else if (header_unsafe(a->display_name, &len) != NULL)
			bad_address(argname, item, "A display name may not contain line breaks or other control characters.");
	}

	problem = address_problem(a->address);
	if (problem != NULL)
		bad_address(argname, item, problem);
	return a;
}

/*
 * Parse an address list: addresses separated by commas outside quotes and
 * angle brackets.  A NULL or blank text gives NIL; an empty element (two
 * commas in a row) is an error.
 */
static List *
parse_address_list(const char *argname, text *t, bool single)
{
	char	   *s = text_to_cstring(t);
	List	   *result = NIL;
	char	   *start = s;
	char	   *p;
	bool		in_quotes = false;
	bool		in_angle = false;

	if (*trim(s) == '\0')
		return NIL;
	parsing_list = (strchr(s, ',') != NULL);

	for (p = s;; p++)
	{
		if (((p - s) & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
		if (in_quotes)
		{
			if (*p == '\\' && p[1] != '\0')
				p++;
			else if (*p == '"')
				in_quotes = false;
			else if (*p == '\0')
				break;
			continue;
		}
		if (*p == '"')
			in_quotes = true;
		else if (*p == '<')
			in_angle = true;
		else if (*p == '>')
			in_angle = false;
		else if ((*p == ',' && !in_angle) || *p == '\0')
		{
			bool		last = (*p == '\0');
			char	   *item;

			*p = '\0';
			item = trim(start);
			if (*item == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid address in %s: empty element in the list", argname)));
			result = lappend(result, parse_address(argname, item));
			if (last)
				break;
			start = p + 1;
		}
	}
	if (in_quotes)
		bad_address(argname, trim(start), "The quoted display name is not closed.");

	if (single && list_length(result) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a single address", argname),
				 errdetail("%d addresses were given.", list_length(result))));
	return result;
}

static void
append_address(StringInfo buf, const MailerooAddress *a)
{
	appendStringInfoString(buf, "{\"address\":");
	escape_json(buf, a->address);
	if (a->display_name != NULL)
	{
		appendStringInfoString(buf, ",\"display_name\":");
		escape_json(buf, a->display_name);
	}
	appendStringInfoChar(buf, '}');
}

/* "key":[{...},...], or "key":{...} for one address when !always_array. */
static void
append_address_field(StringInfo buf, const char *key, List *list,
					 bool always_array)
{
	ListCell   *lc;
	bool		first = true;
	bool		array = always_array || list_length(list) > 1;

	if (list == NIL)
		return;
	appendStringInfo(buf, ",\"%s\":", key);
	if (array)
		appendStringInfoChar(buf, '[');
	foreach(lc, list)
	{
		CHECK_FOR_INTERRUPTS();
		if (!first)
			appendStringInfoChar(buf, ',');
		append_address(buf, (MailerooAddress *) lfirst(lc));
		first = false;
	}
	if (array)
		appendStringInfoChar(buf, ']');
}

/* ----------------------------------------------------------------
 * Suppressions
 * ----------------------------------------------------------------
 */

/* The prepared suppressions lookup, kept for the backend, and its table. */

/* See maileroo_request.h. */
void
maileroo_suppressed_mask(Oid nsp, Oid relid, const Datum *lower, int n,
						 bool *hit)
{
	Oid			indexid = get_relname_relid("maileroo_suppressions_address_key", nsp);
	Relation	heap;
	Relation	index;
	Snapshot	snap;
	TupleTableSlot *slot;
	IndexScanDesc scan;
	ScanKeyData key;
	int			k;

	if (!OidIsValid(indexid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("index maileroo_suppressions_address_key is missing"),
				 errhint("Reinstall the extension: ALTER EXTENSION maileroo UPDATE, or drop and create it.")));

	/*
	 * Probe the unique index on lower(address) directly, one descent per
	 * address through one scan: a send pays a few index descents, not an
	 * executor start, and a campaign no scan set-up per recipient.  The list
	 * is internal to the extension, so no privilege check applies.
	 */
	heap = table_open(relid, AccessShareLock);
	index = index_open(indexid, AccessShareLock);
	snap = RegisterSnapshot(ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot());
	slot = table_slot_create(heap, NULL);
	scan = mr_index_beginscan(heap, index, snap, 1, 0);
	for (k = 0; k < n; k++)
	{
		CHECK_FOR_INTERRUPTS();
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, lower[k]);
		key.sk_collation = index->rd_indcollation[0];
		index_rescan(scan, &key, 1, NULL, 0);
		hit[k] = index_getnext_slot(scan, ForwardScanDirection, slot);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
}

/*
 * Drop suppressed recipients from *to, *cc and *bcc, unless ignore is set.
 * The suppression list is the table maileroo_suppressions (column address)
 * in the schema of the calling function, that is the extension's schema;
 * when no such table exists nothing is dropped.  Addresses compare
 * case-insensitively, through the table's unique index on lower(address),
 * read directly so that a role allowed to send needs no privilege on it.
 * Dropped addresses are added
 * to req->dropped and reported in a NOTICE; when nobody is left,
 * req->all_suppressed is set.
 */
void
maileroo_request_filter_suppressed(FunctionCallInfo fcinfo,
								   MailerooRequest *req,
								   List **to, List **cc, List **bcc,
								   bool ignore)
{
	Oid			nsp;
	Oid			relid;
	List	  **lists[3];
	List	   *all = NIL;
	int			i;
	Datum	   *elems;
	int			nelems = 0;
	ListCell   *lc;
	bool	   *drop;
	int			ndropped = 0;

	if (ignore || fcinfo->flinfo == NULL)
		return;
	nsp = get_func_namespace(fcinfo->flinfo->fn_oid);
	if (!OidIsValid(nsp))
		return;
	relid = get_relname_relid("maileroo_suppressions", nsp);
	if (!OidIsValid(relid))
		return;

	lists[0] = to;
	lists[1] = cc;
	lists[2] = bcc;
	for (i = 0; i < 3; i++)
		all = list_concat(all, *lists[i]);
	if (all == NIL)
		return;

	elems = palloc(sizeof(Datum) * list_length(all));
	drop = palloc0(sizeof(bool) * list_length(all));
	foreach(lc, all)
	{
		MailerooAddress *a = (MailerooAddress *) lfirst(lc);

		CHECK_FOR_INTERRUPTS();
		elems[nelems++] = CStringGetTextDatum(str_tolower(a->address, strlen(a->address),
														 DEFAULT_COLLATION_OID));
	}

	{
		bool	   *hit = palloc(sizeof(bool) * nelems);
		int			k;

		maileroo_suppressed_mask(nsp, relid, elems, nelems, hit);
		for (k = 0; k < nelems; k++)
		{
			if (hit[k])
			{
				drop[k] = true;
				ndropped++;
			}
		}
	}

	if (ndropped == 0)
		return;

	/* all is to, cc and bcc in that order: drop[] follows the same order. */
	nelems = 0;
	for (i = 0; i < 3; i++)
	{
		List	   *kept = NIL;

		foreach(lc, *lists[i])
		{
			MailerooAddress *a = (MailerooAddress *) lfirst(lc);

			CHECK_FOR_INTERRUPTS();
			if (drop[nelems++])
			{
				req->dropped = lappend(req->dropped, a->address);
				ereport(NOTICE,
						(errmsg("not sending to suppressed address %s", a->address)));
			}
			else
				kept = lappend(kept, a);
		}
		*lists[i] = kept;
	}
	if (*to == NIL && *cc == NIL && *bcc == NIL)
		req->all_suppressed = true;
}

/* ----------------------------------------------------------------
 * String maps: tags and headers
 * ----------------------------------------------------------------
 */

/* Whether c may appear in an HTTP header name (RFC 9110 token). */
static bool
is_token_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/*
 * Append "key":{...} for a jsonb object of scalars, every value written as
 * a string (numbers as written, booleans as true/false).  An empty object
 * is left out.  is_header adds the checks an HTTP header needs.
 */
static void
append_string_map(StringInfo buf, const char *argname, Jsonb *jb,
				  bool is_header)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;
	char	   *key = NULL;

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", argname),
				 errdetail("Write it as '{\"name\": \"value\"}'.")));
	if (JB_ROOT_COUNT(jb) == 0)
		return;

	appendStringInfo(buf, ",\"%s\":{", argname);
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *value;

		CHECK_FOR_INTERRUPTS();
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			if (key[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s may not have an empty key", argname)));
			if (pg_mbstrlen(key) > MAILEROO_MAP_KEY_MAX_CHARS)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s key is longer than %d characters", argname,
								MAILEROO_MAP_KEY_MAX_CHARS),
						 errdetail("The key begins \"%.32s\".", key)));
			if (!is_header)
				check_header_safe(key, psprintf("%s key", argname));
			if (is_header)
			{
				const char *p;

				for (p = key; *p; p++)
					if (!is_token_char((unsigned char) *p))
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("headers key \"%s\" is not a valid header name", printable(key)),
								 errdetail("A header name may contain only letters, digits and !#$%%&'*+-.^_`|~.")));
			}
			continue;
		}
		if (tok != WJB_VALUE)
			continue;

		switch (v.type)
		{
			case jbvString:
				value = pnstrdup(v.val.string.val, v.val.string.len);
				break;
			case jbvNumeric:
				value = DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v.val.numeric)));
				break;
			case jbvBool:
				value = v.val.boolean ? "true" : "false";
				break;
			default:
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s value of \"%s\" must be a string, a number or a boolean",
								argname, key)));
				value = NULL;	/* keep the compiler quiet */
		}
		if (pg_mbstrlen(value) > MAILEROO_MAP_VALUE_MAX_CHARS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s value of \"%s\" is longer than %d characters",
							argname, key, MAILEROO_MAP_VALUE_MAX_CHARS)));
		check_header_safe(value, psprintf("%s value of \"%s\"", argname, key));

		if (!first)
			appendStringInfoChar(buf, ',');
		escape_json(buf, key);
		appendStringInfoChar(buf, ':');
		escape_json(buf, value);
		first = false;
	}
	appendStringInfoChar(buf, '}');
}

/* ----------------------------------------------------------------
 * Attachments
 * ----------------------------------------------------------------
 */

/*
 * Raise 54000 when a request would be bytes long, more than Maileroo takes;
 * what names the part that made it so.
 */
static void
request_size_check(int64 bytes, const char *what)
{
	if (bytes > MAILEROO_REQUEST_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("message is larger than the %d MB a request to Maileroo may be",
						MAILEROO_REQUEST_MAX_BYTES / (1024 * 1024)),
				 errdetail("With %s the request takes at least " INT64_FORMAT " bytes; the limit is %d bytes, attachments counted as base64.",
						   what, bytes, MAILEROO_REQUEST_MAX_BYTES),
				 errhint("Link large files from the message rather than attaching them.")));
}

static void
append_attachments(StringInfo buf, ArrayType *arr)
{
	Oid			elemtype = ARR_ELEMTYPE(arr);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign,
					  &elems, &nulls, &n);
	if (n == 0)
		return;

	appendStringInfoString(buf, ",\"attachments\":[");
	for (i = 0; i < n; i++)
	{
		HeapTupleHeader th;
		bool		isnull;
		Datum		d;
		char	   *file_name;
		char	   *content_type = "application/octet-stream";
		bool		inline_ = false;
		bytea	   *content;
		int			srclen;
		int			enclen;
		char	   *enc;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("attachment %d is NULL", i + 1)));
		th = DatumGetHeapTupleHeader(elems[i]);

		d = GetAttributeByNum(th, ATT_FILE_NAME, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("file_name of attachment %d is NULL", i + 1)));
		file_name = TextDatumGetCString(d);
		if (*trim(pstrdup(file_name)) == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("file_name of attachment %d is empty", i + 1)));
		check_header_safe(file_name, psprintf("file_name of attachment %d", i + 1));

		d = GetAttributeByNum(th, ATT_CONTENT, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("content of attachment %d (%s) is NULL", i + 1, file_name)));
		content = DatumGetByteaPP(d);
		srclen = VARSIZE_ANY_EXHDR(content);
		if (srclen == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("content of attachment %d (%s) is empty", i + 1, file_name)));

		d = GetAttributeByNum(th, ATT_CONTENT_TYPE, &isnull);
		if (!isnull)
		{
			content_type = TextDatumGetCString(d);
			if (strchr(content_type, '/') == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("content_type of attachment %d (%s) is not a media type", i + 1, file_name),
						 errdetail("A media type looks like text/plain or application/pdf.")));
			check_header_safe(content_type,
							  psprintf("content_type of attachment %d (%s)", i + 1, file_name));
		}
		d = GetAttributeByNum(th, ATT_INLINE, &isnull);
		if (!isnull)
			inline_ = DatumGetBool(d);

		/* Checked before encoding: base64 of 512 MiB or more overflows int. */
		request_size_check((int64) buf->len + ((int64) srclen + 2) / 3 * 4,
						   psprintf("attachment %d (%s)", i + 1, file_name));
		enclen = pg_b64_enc_len(srclen);
		enc = palloc(enclen + 1);
		enclen = mr_b64_encode(VARDATA_ANY(content), srclen, enc, enclen);
		if (enclen < 0)
			elog(ERROR, "could not encode attachment %d", i + 1);
		enc[enclen] = '\0';

		if (i > 0)
			appendStringInfoChar(buf, ',');
		appendStringInfoString(buf, "{\"file_name\":");
		escape_json(buf, file_name);
		appendStringInfoString(buf, ",\"content_type\":");
		escape_json(buf, content_type);
		appendStringInfoString(buf, ",\"content\":\"");
		appendBinaryStringInfo(buf, enc, enclen);
		appendStringInfo(buf, "\",\"inline\":%s}", inline_ ? "true" : "false");
		pfree(enc);
	}
	appendStringInfoChar(buf, ']');
}

/* ----------------------------------------------------------------
 * Reference ids and times
 * ----------------------------------------------------------------
 */

/*
 * Random bytes for new reference ids, taken from pg_strong_random() for
 * REFERENCE_ID_BATCH ids at a time: OpenSSL makes a system call (its fork
 * check) on every request for random bytes, which a session sending
 * thousands of mails a second would otherwise pay for each one.  Every id
 * is still 12 bytes of pg_strong_random() output, used once and wiped.
 * Backends do not fork, and the postmaster never fills the buffer, so no
 * two processes share it.
 */
#define REFERENCE_ID_BATCH 32

static uint8 reference_random[REFERENCE_ID_BATCH * MAILEROO_REFERENCE_ID_BYTES];
static int	reference_random_next = REFERENCE_ID_BATCH;

/* See maileroo_request.h. */
char *
maileroo_new_reference_id(void)
{
	static const char hex[] = "0123456789abcdef";
	char	   *out = palloc(MAILEROO_REFERENCE_ID_CHARS + 1);
	uint8	   *bytes;
	int			i;

	if (reference_random_next == REFERENCE_ID_BATCH)
	{
		if (!pg_strong_random(reference_random, sizeof(reference_random)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random reference_id")));
		reference_random_next = 0;
	}
	bytes = reference_random + reference_random_next++ * MAILEROO_REFERENCE_ID_BYTES;
	for (i = 0; i < MAILEROO_REFERENCE_ID_BYTES; i++)
	{
		out[2 * i] = hex[bytes[i] >> 4];
		out[2 * i + 1] = hex[bytes[i] & 0x0f];
	}
	out[MAILEROO_REFERENCE_ID_CHARS] = '\0';
	memset(bytes, 0, MAILEROO_REFERENCE_ID_BYTES);
	return out;
}

/* See maileroo_request.h. */
char *
maileroo_check_reference_id(const char *s)
{
	char	   *out;
	int			i;

	if (strlen(s) != MAILEROO_REFERENCE_ID_CHARS ||
		strspn(s, "0123456789abcdefABCDEF") != MAILEROO_REFERENCE_ID_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid reference_id: \"%s\"", s),
				 errdetail("A reference_id is exactly %d hexadecimal characters.",
						   MAILEROO_REFERENCE_ID_CHARS),
				 errhint("maileroo_reference_id() makes a new one.")));
	out = pstrdup(s);
	for (i = 0; out[i]; i++)
		out[i] = pg_ascii_tolower((unsigned char) out[i]);
	return out;
}

/* A timestamp as RFC 3339 in UTC, to the second: 2025-01-31T09:30:00Z. */
static char *
rfc3339_utc(TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts) ||
		timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("scheduled_at is out of range")));
	return psprintf("%04d-%02d-%02dT%02d:%02d:%02dZ",
					tm.tm_year, tm.tm_mon, tm.tm_mday,
					tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ----------------------------------------------------------------
 * The builder
 * ----------------------------------------------------------------
 */

static char *
required_text(FunctionCallInfo fcinfo, int n, const char *argname)
{
	if (arg_null(fcinfo, n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", argname)));
	return TextDatumGetCString(PG_GETARG_DATUM(n));
}

/* See maileroo_request.h. */
MailerooRequest *
maileroo_request_from_args(FunctionCallInfo fcinfo, bool is_template)
{
	MailerooRequest *req = palloc0(sizeof(MailerooRequest));
	StringInfoData buf;
	StringInfoData tail;
	List	   *from;
	List	   *to;
	List	   *cc = NIL;
	List	   *bcc = NIL;
	List	   *reply_to = NIL;
	char	   *subject;
	char	   *html = NULL;
	char	   *plain = NULL;
	int64		template_id = 0;
	Jsonb	   *template_data = NULL;
	bool		ignore_suppressions = false;

	req->path = is_template ? "/emails/template" : "/emails";
	req->scheduled_at = DT_NOBEGIN;

	/* Addresses. */
	(void) required_text(fcinfo, ARG_SENDER, "sender");
	from = parse_address_list("sender", PG_GETARG_TEXT_PP(ARG_SENDER), true);
	if (from == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sender is empty")));
	(void) required_text(fcinfo, ARG_RECIPIENTS, "recipients");
	to = parse_address_list("recipients", PG_GETARG_TEXT_PP(ARG_RECIPIENTS), false);
	if (to == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("recipients is empty"),
				 errdetail("A message needs at least one recipient.")));
	if (!arg_null(fcinfo, ARG_CC))
		cc = parse_address_list("cc", PG_GETARG_TEXT_PP(ARG_CC), false);
	if (!arg_null(fcinfo, ARG_BCC))
		bcc = parse_address_list("bcc", PG_GETARG_TEXT_PP(ARG_BCC), false);
	if (!arg_null(fcinfo, ARG_REPLY_TO))
		reply_to = parse_address_list("reply_to", PG_GETARG_TEXT_PP(ARG_REPLY_TO), false);

	/* Subject. */
	subject = required_text(fcinfo, ARG_SUBJECT, "subject");
	maileroo_check_subject(subject);

	/* Content. */
	if (is_template)
	{
		if (arg_null(fcinfo, ARG_HTML))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("template_id must not be NULL")));
		template_id = PG_GETARG_INT64(ARG_HTML);
		if (template_id <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("template_id must be positive")));
		if (!arg_null(fcinfo, ARG_PLAIN))
		{
			template_data = PG_GETARG_JSONB_P(ARG_PLAIN);
			if (!JB_ROOT_IS_OBJECT(template_data) || JB_ROOT_IS_SCALAR(template_data))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("template_data must be a JSON object")));
		}
	}
	else
	{
		if (!arg_null(fcinfo, ARG_HTML))
			html = TextDatumGetCString(PG_GETARG_DATUM(ARG_HTML));
		if (!arg_null(fcinfo, ARG_PLAIN))
			plain = TextDatumGetCString(PG_GETARG_DATUM(ARG_PLAIN));
		if (html != NULL && html[0] == '\0')
			html = NULL;
		if (plain != NULL && plain[0] == '\0')
			plain = NULL;
		if (html != NULL)
			request_size_check(strlen(html), "html");
		if (plain != NULL)
			request_size_check(strlen(plain), "plain");
		if (html == NULL && plain == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("html or plain is required"),
					 errdetail("Both are NULL or empty."),
					 errhint("Use maileroo_send_template_now() to send a Maileroo template.")));
	}

	/* Reference id and schedule. */
	if (!arg_null(fcinfo, ARG_REFERENCE_ID))
	{
		char	   *given = TextDatumGetCString(PG_GETARG_DATUM(ARG_REFERENCE_ID));

		req->reference_id = maileroo_check_reference_id(given);
	}
	else
		req->reference_id = maileroo_new_reference_id();

	if (!arg_null(fcinfo, ARG_SCHEDULED_AT))
	{
		TimestampTz ts = PG_GETARG_TIMESTAMPTZ(ARG_SCHEDULED_AT);
		TimestampTz now = GetCurrentTimestamp();

		if (ts <= now)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("scheduled_at is in the past"),
					 errhint("Leave scheduled_at NULL to send at once.")));
		if (ts > now + (int64) MAILEROO_SCHEDULE_MAX_DAYS * USECS_PER_DAY)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("scheduled_at is more than %d days ahead",
							MAILEROO_SCHEDULE_MAX_DAYS)));
		req->scheduled_at = ts;
	}

	/*
	 * The optional fields after the content are built (and so validated)
	 * before the suppression list is read, so that an invalid argument is
	 * reported without a NOTICE about suppressed recipients first.
	 */
	initStringInfo(&tail);
	if (!arg_null(fcinfo, ARG_TRACKING))
		appendStringInfo(&tail, ",\"tracking\":%s",
						 PG_GETARG_BOOL(ARG_TRACKING) ? "true" : "false");
	if (!arg_null(fcinfo, ARG_TAGS))
		append_string_map(&tail, "tags", PG_GETARG_JSONB_P(ARG_TAGS), false);
	if (!arg_null(fcinfo, ARG_HEADERS))
		append_string_map(&tail, "headers", PG_GETARG_JSONB_P(ARG_HEADERS), true);
	if (!arg_null(fcinfo, ARG_ATTACHMENTS))
		append_attachments(&tail, PG_GETARG_ARRAYTYPE_P(ARG_ATTACHMENTS));
	if (req->scheduled_at != DT_NOBEGIN)
	{
		appendStringInfoString(&tail, ",\"scheduled_at\":");
		escape_json(&tail, rfc3339_utc(req->scheduled_at));
	}
	appendStringInfo(&tail, ",\"reference_id\":\"%s\"}", req->reference_id);

	/* The account, before anything is looked up or queued. */
	{
		const char *addr = ((MailerooAddress *) linitial(from))->address;
		char	   *domain = pstrdup(strrchr(addr, '@') + 1);
		char	   *p;

		for (p = domain; *p; p++)
			*p = pg_ascii_tolower((unsigned char) *p);
		req->account = maileroo_account_choose(arg_null(fcinfo, ARG_ACCOUNT) ? NULL :
											   TextDatumGetCString(PG_GETARG_DATUM(ARG_ACCOUNT)),
											   domain, GetUserId());
	}

	if (!arg_null(fcinfo, ARG_IGNORE_SUPPRESSIONS))
		ignore_suppressions = PG_GETARG_BOOL(ARG_IGNORE_SUPPRESSIONS);
	maileroo_request_filter_suppressed(fcinfo, req, &to, &cc, &bcc,
									   ignore_suppressions);

	/* The body, in the documented field order. */
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"from\":");
	append_address(&buf, (MailerooAddress *) linitial(from));
	append_address_field(&buf, "to", to, true);
	append_address_field(&buf, "cc", cc, true);
	append_address_field(&buf, "bcc", bcc, true);
	append_address_field(&buf, "reply_to", reply_to, false);
	appendStringInfoString(&buf, ",\"subject\":");
	escape_json(&buf, subject);
	if (is_template)
	{
		appendStringInfo(&buf, ",\"template_id\":" INT64_FORMAT, template_id);
		if (template_data != NULL)
		{
			appendStringInfoString(&buf, ",\"template_data\":");
			(void) JsonbToCString(&buf, &template_data->root, VARSIZE(template_data));
		}
	}
	else
	{
		if (html != NULL)
		{
			appendStringInfoString(&buf, ",\"html\":");
			escape_json(&buf, html);
		}
		if (plain != NULL)
		{
			appendStringInfoString(&buf, ",\"plain\":");
			escape_json(&buf, plain);
		}
	}
	request_size_check((int64) buf.len + tail.len, "everything together");
	appendBinaryStringInfo(&buf, tail.data, tail.len);
	pfree(tail.data);

	req->body = buf.data;
	return req;
}

/* ----------------------------------------------------------------
 * Pieces shared with the campaign builder (maileroo_campaign.c)
 * ----------------------------------------------------------------
 */

/* See maileroo_request.h. */
void
maileroo_check_subject(const char *subject)
{
	if (*trim(pstrdup(subject)) == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("subject is empty")));
	if (pg_mbstrlen(subject) > MAILEROO_SUBJECT_MAX_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("subject is longer than %d characters", MAILEROO_SUBJECT_MAX_CHARS),
				 errdetail("It has %d characters.", pg_mbstrlen(subject))));
	check_header_safe(subject, "subject");
}

/* See maileroo_request.h. */
MailerooAddress *
maileroo_parse_one_address(const char *argname, text *t)
{
	List	   *l = parse_address_list(argname, t, true);

	if (l == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is empty", argname)));
	return (MailerooAddress *) linitial(l);
}

/* See maileroo_request.h. */
List *
maileroo_parse_address_list(const char *argname, text *t)
{
	return parse_address_list(argname, t, false);
}

/* See maileroo_request.h. */
void
maileroo_append_address(StringInfo buf, const MailerooAddress *a)
{
	append_address(buf, a);
}

/* See maileroo_request.h. */
void
maileroo_append_address_field(StringInfo buf, const char *key, List *list,
							  bool always_array)
{
	append_address_field(buf, key, list, always_array);
}

/* See maileroo_request.h. */
void
maileroo_append_string_map(StringInfo buf, const char *argname, Jsonb *jb,
						   bool is_header)
{
	append_string_map(buf, argname, jb, is_header);
}

/* See maileroo_request.h. */
void
maileroo_append_attachments(StringInfo buf, ArrayType *arr)
{
	append_attachments(buf, arr);
}
