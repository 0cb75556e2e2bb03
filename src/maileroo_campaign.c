/*-------------------------------------------------------------------------
 *
 * maileroo_campaign.c
 *		Campaigns: maileroo_send_campaign queues one outbox row per recipient
 *		with the shared content stored once, for the delivery worker to send
 *		through Maileroo's POST /emails/bulk; maileroo_cancel_campaign and
 *		maileroo_campaign_requests.
 *
 * The shape of a bulk request, as the official SDKs (Node, PHP, Python,
 * .NET) build it: the shared fields subject, html and/or plain or
 * template_id, tracking, tags, headers and attachments, then "messages", an
 * array of at most 500 objects with the per-message fields from, to, cc,
 * bcc, reply_to, reference_id and template_data.  The answer carries one
 * reference id per message in data.reference_ids.
 *
 * Storage follows that split.  maileroo_campaigns.content holds the shared
 * fields once, as the JSON object a bulk request starts with; each
 * recipient's outbox row (endpoint '/emails/bulk', campaign_id set,
 * priority MAILEROO_CAMPAIGN_PRIORITY) holds its message object exactly as
 * it goes into "messages".  A bulk body is therefore the content without
 * its closing brace, ,"messages":[, the rows' requests joined by commas, and
 * ]} (maileroo_campaign_body).  Every recipient stays a message of its own:
 * its own reference_id, status, attempts and events.
 *
 * Queueing is set-based and runs in the caller's transaction.  Everything
 * is validated before anything is written: an invalid address among
 * 100,000 is an ERROR naming it and its position.  Duplicates (the same
 * address, compared case-insensitively) are queued once; suppressed
 * recipients are left out through one scan of the suppression index; both
 * are counted.  The rows are built here and inserted by one parameterised
 * INSERT ... SELECT FROM unnest(...) per MR_INSERT_CHUNK recipients, run as
 * the owner of the outbox like maileroo_send's (see maileroo_outbox.c).
 *
 * src/maileroo_campaign.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo.h"
#include "maileroo_account.h"
#include "maileroo_campaign.h"
#include "maileroo_request.h"

#include "access/htup_details.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

/* Recipients written per INSERT: bounds the memory a campaign holds. */
#define MR_INSERT_CHUNK		10000

/* Argument positions of maileroo_send_campaign. */
enum
{
	CARG_SENDER = 0,
	CARG_SUBJECT,
	CARG_RECIPIENTS,
	CARG_HTML,
	CARG_PLAIN,
	CARG_TEMPLATE_ID,
	CARG_TEMPLATE_DATA,
	CARG_RECIPIENT_DATA,
	CARG_NAME,
	CARG_REPLY_TO,
	CARG_TAGS,
	CARG_HEADERS,
	CARG_ATTACHMENTS,
	CARG_TRACKING,
	CARG_IGNORE_SUPPRESSIONS,
	CARG_ACCOUNT
};

/* One recipient while a campaign is built. */
typedef struct MrRecipient
{
	MailerooAddress *addr;
	char	   *lower;			/* lower-cased address, for comparisons */
	int			pos;			/* 0-based position in recipients */
	bool		skip;			/* duplicate or suppressed */
} MrRecipient;

/* The tables of the schema the calling function lives in, and the plans. */
typedef struct MrCampaignCache
{
	Oid			outbox;
	Oid			campaigns;
	SPIPlanPtr	insert_campaign;
	SPIPlanPtr	insert_rows;
	SPIPlanPtr	find_by_id;
	SPIPlanPtr	find_by_name;
	SPIPlanPtr	cancel;
	SPIPlanPtr	waiting;
} MrCampaignCache;

static MrCampaignCache mr_cc;

static SPIPlanPtr
mr_prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * Find maileroo_outbox and maileroo_campaigns next to the called function
 * and prepare the statements when they are new to this backend.  Returns
 * the owner of the outbox.  SPI must be connected.  Every statement names
 * its tables, types, functions and operators with their schema: they run as
 * the owner, under the caller's search_path.
 */
static Oid
mr_campaign_lookup(FunctionCallInfo fcinfo)
{
	Oid			nsp = get_func_namespace(fcinfo->flinfo->fn_oid);
	Oid			outbox = get_relname_relid("maileroo_outbox", nsp);
	Oid			campaigns = get_relname_relid("maileroo_campaigns", nsp);

	if (!OidIsValid(outbox) || !OidIsValid(campaigns))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s is missing from schema \"%s\"",
						OidIsValid(outbox) ? "maileroo_campaigns" : "maileroo_outbox",
						get_namespace_name(nsp)),
				 errhint("Recreate the extension with DROP EXTENSION maileroo; CREATE EXTENSION maileroo.")));

	if (outbox != mr_cc.outbox || campaigns != mr_cc.campaigns)
	{
		const char *schema = get_namespace_name(nsp);
		const char *qo = quote_qualified_identifier(schema, "maileroo_outbox");
		const char *qc = quote_qualified_identifier(schema, "maileroo_campaigns");
		Oid			ins_c_args[7] = {TEXTOID, TEXTOID, NAMEOID, INT4OID, INT4OID, INT4OID, TEXTOID};
		Oid			ins_r_args[5] = {TEXTARRAYOID, JSONARRAYOID, NAMEOID, INT8OID, TEXTOID};
		Oid			id_args[1] = {INT8OID};
		Oid			name_args[1] = {TEXTOID};
		Oid			cancel_args[2] = {INT8OID, NAMEOID};
		MrCampaignCache c;

		memset(&c, 0, sizeof(c));
		c.insert_campaign = mr_prepare_kept(psprintf(
													 "INSERT INTO %s (name, content, queued_by, messages, suppressed, duplicates, account)"
													 " VALUES ($1, $2::pg_catalog.json, $3, $4, $5, $6, $7)"
													 " ON CONFLICT (name) DO NOTHING RETURNING id", qc),
											7, ins_c_args);
		c.insert_rows = mr_prepare_kept(psprintf(
												 "INSERT INTO %s (reference_id, endpoint, request, status, queued_by, campaign_id, priority, account)"
												 " SELECT u.r, '/emails/bulk', u.q, 'queued', $3, $4, %d, $5"
												 "   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS u(r, q)",
												 qo, MAILEROO_CAMPAIGN_PRIORITY),
										5, ins_r_args);
		c.find_by_id = mr_prepare_kept(psprintf(
												"SELECT id, name, queued_by, content::pg_catalog.text FROM %s"
												" WHERE id OPERATOR(pg_catalog.=) $1", qc),
									   1, id_args);
		c.find_by_name = mr_prepare_kept(psprintf(
												  "SELECT id, name, queued_by, content::pg_catalog.text FROM %s"
												  " WHERE name OPERATOR(pg_catalog.=) $1", qc),
										 1, name_args);
		c.cancel = mr_prepare_kept(psprintf(
											"UPDATE %s SET status = 'cancelled', lease_until = NULL,"
											" last_error = 'cancelled by '::pg_catalog.text OPERATOR(pg_catalog.||) $2::pg_catalog.text"
											" WHERE campaign_id OPERATOR(pg_catalog.=) $1"
											" AND (status::pg_catalog.text OPERATOR(pg_catalog.=) 'queued'::pg_catalog.text"
											"   OR status::pg_catalog.text OPERATOR(pg_catalog.=) 'retrying'::pg_catalog.text)",
											qo),
								   2, cancel_args);
		c.waiting = mr_prepare_kept(psprintf(
											 "SELECT reference_id, request::pg_catalog.text FROM %s"
											 " WHERE campaign_id OPERATOR(pg_catalog.=) $1"
											 " AND (status::pg_catalog.text OPERATOR(pg_catalog.=) 'queued'::pg_catalog.text"
											 "   OR status::pg_catalog.text OPERATOR(pg_catalog.=) 'retrying'::pg_catalog.text)"
											 " ORDER BY ctid", qo),
									1, id_args);

		if (mr_cc.insert_campaign)
		{
			SPI_freeplan(mr_cc.insert_campaign);
			SPI_freeplan(mr_cc.insert_rows);
			SPI_freeplan(mr_cc.find_by_id);
			SPI_freeplan(mr_cc.find_by_name);
			SPI_freeplan(mr_cc.cancel);
			SPI_freeplan(mr_cc.waiting);
		}
		c.outbox = outbox;
		c.campaigns = campaigns;
		mr_cc = c;
	}
	return maileroo_relation_owner(outbox);
}

/* See maileroo_campaign.h. */
char *
maileroo_campaign_body(const char *content, char **messages, int n)
{
	StringInfoData buf;
	int			len = strlen(content);
	int			i;

	/* content is a JSON object we wrote: it ends with its closing brace. */
	while (len > 0 && content[len - 1] != '}')
		len--;
	if (len == 0)
		elog(ERROR, "campaign content is not a JSON object");

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, content, len - 1);
	appendStringInfoString(&buf, ",\"messages\":[");
	for (i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfoString(&buf, messages[i]);
	}
	appendStringInfoString(&buf, "]}");
	return buf.data;
}

static inline bool
carg_null(FunctionCallInfo fcinfo, int n)
{
	return n >= PG_NARGS() || PG_ARGISNULL(n);
}

static int
mr_recipient_cmp(const void *a, const void *b)
{
	const MrRecipient *ra = *(MrRecipient *const *) a;
	const MrRecipient *rb = *(MrRecipient *const *) b;
	int			c = strcmp(ra->lower, rb->lower);

	if (c != 0)
		return c;
	return (ra->pos > rb->pos) - (ra->pos < rb->pos);
}

/* A text[] or json[] Datum of n C strings (n >= 1). */
static Datum
mr_cstring_array(char **vals, int n, Oid elemtype)
{
	Datum	   *d = palloc(sizeof(Datum) * n);
	int			i;

	for (i = 0; i < n; i++)
		d[i] = CStringGetTextDatum(vals[i]);
	return PointerGetDatum(construct_array(d, n, elemtype, -1, false, TYPALIGN_INT));
}

/*
 * The shared fields of a campaign as the JSON object its bulk requests
 * start with.  Validates them; raises ERROR naming the argument.
 */
static char *
mr_campaign_content(FunctionCallInfo fcinfo, bool *is_template)
{
	StringInfoData buf;
	char	   *subject;
	char	   *html = NULL;
	char	   *plain = NULL;

	if (carg_null(fcinfo, CARG_SUBJECT))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("subject must not be NULL")));
	subject = TextDatumGetCString(PG_GETARG_DATUM(CARG_SUBJECT));
	maileroo_check_subject(subject);

	if (!carg_null(fcinfo, CARG_HTML))
		html = TextDatumGetCString(PG_GETARG_DATUM(CARG_HTML));
	if (!carg_null(fcinfo, CARG_PLAIN))
		plain = TextDatumGetCString(PG_GETARG_DATUM(CARG_PLAIN));
	if (html != NULL && html[0] == '\0')
		html = NULL;
	if (plain != NULL && plain[0] == '\0')
		plain = NULL;
	*is_template = !carg_null(fcinfo, CARG_TEMPLATE_ID);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"subject\":");
	escape_json(&buf, subject);
	if (*is_template)
	{
		int64		template_id = PG_GETARG_INT64(CARG_TEMPLATE_ID);

		if (html != NULL || plain != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("template_id cannot be combined with html or plain"),
					 errdetail("A campaign sends either its own content or a Maileroo template.")));
		if (template_id <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("template_id must be positive")));
		appendStringInfo(&buf, ",\"template_id\":" INT64_FORMAT, template_id);
	}
	else
	{
		if (html == NULL && plain == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("html, plain or template_id is required"),
					 errdetail("All three are NULL or empty.")));
		if (!carg_null(fcinfo, CARG_TEMPLATE_DATA) || !carg_null(fcinfo, CARG_RECIPIENT_DATA))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s needs template_id",
							carg_null(fcinfo, CARG_TEMPLATE_DATA) ? "recipient_data" : "template_data"),
					 errdetail("Template data fills a Maileroo template; html and plain are sent as they are.")));
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
	if (!carg_null(fcinfo, CARG_TRACKING))
		appendStringInfo(&buf, ",\"tracking\":%s",
						 PG_GETARG_BOOL(CARG_TRACKING) ? "true" : "false");
	if (!carg_null(fcinfo, CARG_TAGS))
		maileroo_append_string_map(&buf, "tags", PG_GETARG_JSONB_P(CARG_TAGS), false);
	if (!carg_null(fcinfo, CARG_HEADERS))
		maileroo_append_string_map(&buf, "headers", PG_GETARG_JSONB_P(CARG_HEADERS), true);
	if (!carg_null(fcinfo, CARG_ATTACHMENTS))
		maileroo_append_attachments(&buf, PG_GETARG_ARRAYTYPE_P(CARG_ATTACHMENTS));
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* The object template_data must be, or ERROR naming it. */
static Jsonb *
mr_object_arg(Datum d, const char *argname)
{
	Jsonb	   *jb = DatumGetJsonbP(d);

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", argname)));
	return jb;
}

/* Deconstruct a one-dimensional array argument; ERROR naming it otherwise. */
static int
mr_array_arg(FunctionCallInfo fcinfo, int argno, const char *argname,
			 Oid elemtype, Datum **elems, bool **nulls, int *lbound)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(argno);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			n;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", argname)));
	*lbound = ARR_NDIM(arr) == 1 ? ARR_LBOUND(arr)[0] : 1;
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign, elems, nulls, &n);
	return n;
}

PG_FUNCTION_INFO_V1(maileroo_send_campaign);

/*
 * maileroo_send_campaign(sender, subject, recipients text[], html, plain,
 * template_id, template_data, recipient_data jsonb[], name, reply_to, tags,
 * headers, attachments, tracking, ignore_suppressions, account): validate,
 * choose the sending account (named, else by the sender's domain; USAGE
 * required), create
 * the campaign and queue one message per distinct, unsuppressed recipient.
 * Returns (campaign_id, queued, suppressed, duplicates).  Raises ERROR
 * (22004 for a required NULL, 22023 for an invalid value, 23505 for a name
 * in use) before anything is written.
 */
Datum
maileroo_send_campaign(PG_FUNCTION_ARGS)
{
	MemoryContext work;
	MemoryContext chunk_cxt;
	MemoryContext old;
	MailerooAddress *from;
	List	   *reply_to = NIL;
	char	   *content;
	bool		is_template;
	Jsonb	   *shared_data = NULL;
	char	   *shared_data_text = NULL;
	Datum	   *rcpt;
	bool	   *rcpt_nulls;
	int			n;
	int			lbound;
	Datum	   *rdata = NULL;
	bool	   *rdata_nulls = NULL;
	int			rdata_lbound = 1;
	MrRecipient *recips;
	MrRecipient **sorted;
	int			i;
	int			nsuppressed = 0;
	int			nduplicates = 0;
	int			nqueued;
	char	   *name = NULL;
	char	   *account;
	NameData	queued_by;
	Oid			owner;
	int64		campaign_id;
	StringInfoData head;
	StringInfoData tail;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	work = AllocSetContextCreate(CurrentMemoryContext, "maileroo campaign",
								 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(work);

	/* The shared parts. */
	if (carg_null(fcinfo, CARG_SENDER))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sender must not be NULL")));
	from = maileroo_parse_one_address("sender", PG_GETARG_TEXT_PP(CARG_SENDER));
	if (!carg_null(fcinfo, CARG_REPLY_TO))
		reply_to = maileroo_parse_address_list("reply_to", PG_GETARG_TEXT_PP(CARG_REPLY_TO));
	content = mr_campaign_content(fcinfo, &is_template);
	if (!carg_null(fcinfo, CARG_TEMPLATE_DATA))
	{
		StringInfoData sd;

		shared_data = mr_object_arg(PG_GETARG_DATUM(CARG_TEMPLATE_DATA), "template_data");
		initStringInfo(&sd);
		(void) JsonbToCString(&sd, &shared_data->root, VARSIZE(shared_data));
		shared_data_text = sd.data;
	}
	/* The account: named, or the one serving the sender's domain. */
	{
		char	   *domain = pstrdup(strrchr(from->address, '@') + 1);
		char	   *p;

		for (p = domain; *p; p++)
			*p = pg_ascii_tolower((unsigned char) *p);
		account = maileroo_account_choose(carg_null(fcinfo, CARG_ACCOUNT) ? NULL :
										  TextDatumGetCString(PG_GETARG_DATUM(CARG_ACCOUNT)),
										  domain, GetUserId());
	}
	if (!carg_null(fcinfo, CARG_NAME))
	{
		name = TextDatumGetCString(PG_GETARG_DATUM(CARG_NAME));
		if (name[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("name is empty"),
					 errhint("Leave name NULL for a campaign known by its id alone.")));
	}

	/* The recipients, each parsed and checked, in order. */
	if (carg_null(fcinfo, CARG_RECIPIENTS))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("recipients must not be NULL")));
	n = mr_array_arg(fcinfo, CARG_RECIPIENTS, "recipients", TEXTOID,
					 &rcpt, &rcpt_nulls, &lbound);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("recipients is empty"),
				 errdetail("A campaign needs at least one recipient.")));
	if (!carg_null(fcinfo, CARG_RECIPIENT_DATA))
	{
		int			nd = mr_array_arg(fcinfo, CARG_RECIPIENT_DATA, "recipient_data",
									  JSONBOID, &rdata, &rdata_nulls, &rdata_lbound);

		if (nd != n)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("recipient_data has %d elements but recipients has %d", nd, n),
					 errdetail("recipient_data[i] is the template data of recipients[i]."),
					 errhint("Build both arrays in one query, for example array_agg(email ORDER BY id) and array_agg(data ORDER BY id).")));
	}

	recips = palloc(sizeof(MrRecipient) * n);
	sorted = palloc(sizeof(MrRecipient *) * n);
	for (i = 0; i < n; i++)
	{
		char		argname[64];
		MrRecipient *r = &recips[i];

		CHECK_FOR_INTERRUPTS();
		snprintf(argname, sizeof(argname), "recipients[%d]", lbound + i);
		if (rcpt_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s is NULL", argname)));
		r->addr = maileroo_parse_one_address(argname, DatumGetTextPP(rcpt[i]));
		r->lower = str_tolower(r->addr->address, strlen(r->addr->address),
							   DEFAULT_COLLATION_OID);
		r->pos = i;
		r->skip = false;
		if (rdata != NULL && !rdata_nulls[i])
		{
			Jsonb	   *jb = DatumGetJsonbP(rdata[i]);

			if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("recipient_data[%d] must be a JSON object or NULL",
								rdata_lbound + i),
						 errdetail("It belongs to %s.", r->addr->address)));
		}
		sorted[i] = r;
	}

	/* Duplicates: the first occurrence of an address is kept. */
	qsort(sorted, n, sizeof(MrRecipient *), mr_recipient_cmp);
	for (i = 1; i < n; i++)
	{
		if (strcmp(sorted[i]->lower, sorted[i - 1]->lower) == 0)
		{
			sorted[i]->skip = true;
			nduplicates++;
		}
	}

	/* Suppressions, one index probe per distinct address, in index order. */
	if (carg_null(fcinfo, CARG_IGNORE_SUPPRESSIONS) ||
		!PG_GETARG_BOOL(CARG_IGNORE_SUPPRESSIONS))
	{
		Oid			nsp = get_func_namespace(fcinfo->flinfo->fn_oid);
		Oid			supp = get_relname_relid("maileroo_suppressions", nsp);

		if (OidIsValid(supp))
		{
			Datum	   *keys = palloc(sizeof(Datum) * (n - nduplicates));
			MrRecipient **who = palloc(sizeof(MrRecipient *) * (n - nduplicates));
			bool	   *hit = palloc(sizeof(bool) * (n - nduplicates));
			int			k = 0;

			for (i = 0; i < n; i++)
				if (!sorted[i]->skip)
				{
					who[k] = sorted[i];
					keys[k++] = CStringGetTextDatum(sorted[i]->lower);
				}
			maileroo_suppressed_mask(nsp, supp, keys, k, hit);
			for (i = 0; i < k; i++)
				if (hit[i])
				{
					who[i]->skip = true;
					nsuppressed++;
				}
		}
	}
	nqueued = n - nduplicates - nsuppressed;

	/* The campaign. */
	namestrcpy(&queued_by, GetUserNameFromId(GetUserId(), false));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	owner = mr_campaign_lookup(fcinfo);
	{
		Datum		args[7];
		char		anulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
		bool		isnull;

		args[0] = name ? CStringGetTextDatum(name) : (Datum) 0;
		anulls[0] = name ? ' ' : 'n';
		args[1] = CStringGetTextDatum(content);
		args[2] = NameGetDatum(&queued_by);
		args[3] = Int32GetDatum(nqueued);
		args[4] = Int32GetDatum(nsuppressed);
		args[5] = Int32GetDatum(nduplicates);
		args[6] = CStringGetTextDatum(account);
		if (maileroo_run_as_owner(mr_cc.insert_campaign, owner, args, anulls,
								  SPI_OK_INSERT_RETURNING) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("a campaign named \"%s\" already exists", name),
					 errhint("Choose another name, or leave name NULL.")));
		campaign_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
	}

	/* The message objects share everything but to, reference_id and data. */
	initStringInfo(&head);
	appendStringInfoString(&head, "{\"from\":");
	maileroo_append_address(&head, from);
	appendStringInfoString(&head, ",\"to\":[");
	initStringInfo(&tail);
	appendStringInfoChar(&tail, ']');
	maileroo_append_address_field(&tail, "reply_to", reply_to, false);
	appendStringInfoString(&tail, ",\"reference_id\":\"");

	/* The rows, MR_INSERT_CHUNK at a time, in the order of recipients. */
	chunk_cxt = AllocSetContextCreate(work, "maileroo campaign chunk",
									  ALLOCSET_DEFAULT_SIZES);
	{
		char	  **refs = palloc(sizeof(char *) * Min(n, MR_INSERT_CHUNK));
		char	  **reqs = palloc(sizeof(char *) * Min(n, MR_INSERT_CHUNK));
		int			nrows = 0;

		for (i = 0; i <= n; i++)
		{
			MrRecipient *r = i < n ? &recips[i] : NULL;

			if (r != NULL && !r->skip)
			{
				StringInfoData m;
				char	   *ref;
				MemoryContext o = MemoryContextSwitchTo(chunk_cxt);

				CHECK_FOR_INTERRUPTS();
				ref = maileroo_new_reference_id();
				initStringInfo(&m);
				appendBinaryStringInfo(&m, head.data, head.len);
				maileroo_append_address(&m, r->addr);
				appendBinaryStringInfo(&m, tail.data, tail.len);
				appendBinaryStringInfo(&m, ref, MAILEROO_REFERENCE_ID_CHARS);
				appendStringInfoChar(&m, '"');
				if (is_template)
				{
					bool		own = rdata != NULL && !rdata_nulls[i];

					if (own && shared_data != NULL)
					{
						Jsonb	   *merged;

						merged = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
																	JsonbPGetDatum(shared_data),
																	rdata[i]));
						appendStringInfoString(&m, ",\"template_data\":");
						(void) JsonbToCString(&m, &merged->root, VARSIZE(merged));
					}
					else if (own)
					{
						Jsonb	   *jb = DatumGetJsonbP(rdata[i]);

						appendStringInfoString(&m, ",\"template_data\":");
						(void) JsonbToCString(&m, &jb->root, VARSIZE(jb));
					}
					else if (shared_data_text != NULL)
					{
						appendStringInfoString(&m, ",\"template_data\":");
						appendStringInfoString(&m, shared_data_text);
					}
				}
				appendStringInfoChar(&m, '}');
				MemoryContextSwitchTo(o);
				refs[nrows] = ref;
				reqs[nrows] = m.data;
				nrows++;
			}
			if (nrows > 0 && (nrows == MR_INSERT_CHUNK || i == n))
			{
				Datum		args[5];
				MemoryContext o = MemoryContextSwitchTo(chunk_cxt);

				args[0] = mr_cstring_array(refs, nrows, TEXTOID);
				args[1] = mr_cstring_array(reqs, nrows, JSONOID);
				args[2] = NameGetDatum(&queued_by);
				args[3] = Int64GetDatum(campaign_id);
				args[4] = CStringGetTextDatum(account);
				MemoryContextSwitchTo(o);
				(void) maileroo_run_as_owner(mr_cc.insert_rows, owner, args, NULL,
											 SPI_OK_INSERT);
				if (SPI_processed != (uint64) nrows)
					elog(ERROR, "queued " UINT64_FORMAT " of %d campaign messages",
						 SPI_processed, nrows);
				MemoryContextReset(chunk_cxt);
				nrows = 0;
			}
		}
	}
	SPI_finish();

	if (nsuppressed > 0 || nduplicates > 0)
		ereport(NOTICE,
				(errmsg("campaign %lld: %d messages queued; %d suppressed and %d repeated recipients left out",
						(long long) campaign_id, nqueued, nsuppressed, nduplicates)));
	if (nqueued > 0)
		maileroo_outbox_wake_at_commit();

	MemoryContextSwitchTo(old);
	MemoryContextDelete(work);

	values[0] = Int64GetDatum(campaign_id);
	values[1] = Int32GetDatum(nqueued);
	values[2] = Int32GetDatum(nsuppressed);
	values[3] = Int32GetDatum(nduplicates);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}

/*
 * Look a campaign up by id (argument type int8) or name (text) as the
 * outbox owner, and check that the caller may act on it: the role that
 * queued it, a role with the owner's privileges, or a superuser.  Returns
 * its id; fills *content (palloc'd in SPI's context) when wanted.
 * Raises 42704 when there is no such campaign and 42501 when the caller
 * may not act on it.
 */
static int64
mr_find_campaign(FunctionCallInfo fcinfo, Oid owner, bool by_id, char **content)
{
	Datum		arg = PG_GETARG_DATUM(0);
	Oid			caller = GetUserId();
	bool		isnull;
	int64		id;
	char	   *queued_by;
	char	   *label;
	TupleDesc	desc;
	HeapTuple	tup;

	label = by_id ? psprintf(INT64_FORMAT, DatumGetInt64(arg))
		: psprintf("\"%s\"", TextDatumGetCString(arg));
	if (maileroo_run_as_owner(by_id ? mr_cc.find_by_id : mr_cc.find_by_name,
							  owner, &arg, NULL, SPI_OK_SELECT) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("campaign %s does not exist", label)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	queued_by = SPI_getvalue(tup, desc, 3);
	if (!superuser_arg(caller) && !has_privs_of_role(caller, owner) &&
		strcmp(queued_by, GetUserNameFromId(caller, false)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for campaign %s", label),
				 errdetail("Campaign %s was queued by role \"%s\".", label, queued_by)));
	if (content != NULL)
		*content = SPI_getvalue(tup, desc, 4);
	return id;
}

/*
 * maileroo_cancel_campaign(campaign_id bigint | name text): cancel every
 * message of the campaign that is queued or waiting for a retry.  Messages
 * being sent at that moment finish; what was sent stays sent.  Returns the
 * number of messages cancelled.
 */
static Datum
mr_cancel_campaign(FunctionCallInfo fcinfo, bool by_id)
{
	Oid			owner;
	int64		id;
	NameData	who;
	Datum		args[2];
	uint64		n;

	namestrcpy(&who, GetUserNameFromId(GetUserId(), false));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	owner = mr_campaign_lookup(fcinfo);
	id = mr_find_campaign(fcinfo, owner, by_id, NULL);
	args[0] = Int64GetDatum(id);
	args[1] = NameGetDatum(&who);
	n = maileroo_run_as_owner(mr_cc.cancel, owner, args, NULL, SPI_OK_UPDATE);
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}

PG_FUNCTION_INFO_V1(maileroo_cancel_campaign);
PG_FUNCTION_INFO_V1(maileroo_cancel_campaign_named);

Datum
maileroo_cancel_campaign(PG_FUNCTION_ARGS)
{
	return mr_cancel_campaign(fcinfo, true);
}

Datum
maileroo_cancel_campaign_named(PG_FUNCTION_ARGS)
{
	return mr_cancel_campaign(fcinfo, false);
}

/*
 * maileroo_campaign_requests(campaign_id bigint | name text): the bulk
 * requests that would carry the campaign's waiting messages (queued or
 * retrying), MAILEROO_BULK_MAX per request in the order they were queued:
 * (request, messages, reference_ids, body).  For reviewing a campaign
 * before it goes out; the worker builds its requests with the same code.
 */
static Datum
mr_campaign_requests(FunctionCallInfo fcinfo, bool by_id)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Tuplestorestate *store;
	TupleDesc	tupdesc;
	MemoryContext per_query;
	MemoryContext old;
	Oid			owner;
	int64		id;
	char	   *content;
	Datum		arg;
	uint64		nrows;
	uint64		start;
	int			reqno = 0;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	per_query = rsinfo->econtext->ecxt_per_query_memory;
	old = MemoryContextSwitchTo(per_query);
	tupdesc = CreateTupleDescCopy(tupdesc);
	store = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	owner = mr_campaign_lookup(fcinfo);
	id = mr_find_campaign(fcinfo, owner, by_id, &content);
	arg = Int64GetDatum(id);
	nrows = maileroo_run_as_owner(mr_cc.waiting, owner, &arg, NULL, SPI_OK_SELECT);

	for (start = 0; start < nrows; start += MAILEROO_BULK_MAX)
	{
		int			k = (int) Min((uint64) MAILEROO_BULK_MAX, nrows - start);
		char	  **refs = palloc(sizeof(char *) * k);
		char	  **msgs = palloc(sizeof(char *) * k);
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};
		int			j;

		CHECK_FOR_INTERRUPTS();
		for (j = 0; j < k; j++)
		{
			HeapTuple	tup = SPI_tuptable->vals[start + j];

			refs[j] = SPI_getvalue(tup, SPI_tuptable->tupdesc, 1);
			msgs[j] = SPI_getvalue(tup, SPI_tuptable->tupdesc, 2);
		}
		old = MemoryContextSwitchTo(per_query);
		values[0] = Int32GetDatum(++reqno);
		values[1] = Int32GetDatum(k);
		values[2] = mr_cstring_array(refs, k, TEXTOID);
		values[3] = CStringGetTextDatum(maileroo_campaign_body(content, msgs, k));
		tuplestore_putvalues(store, tupdesc, values, nulls);
		MemoryContextSwitchTo(old);
		for (j = 0; j < k; j++)
		{
			pfree(refs[j]);
			pfree(msgs[j]);
		}
		pfree(refs);
		pfree(msgs);
	}
	SPI_finish();

	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = tupdesc;
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(maileroo_campaign_requests);
PG_FUNCTION_INFO_V1(maileroo_campaign_requests_named);

Datum
maileroo_campaign_requests(PG_FUNCTION_ARGS)
{
	return mr_campaign_requests(fcinfo, true);
}

Datum
maileroo_campaign_requests_named(PG_FUNCTION_ARGS)
{
	return mr_campaign_requests(fcinfo, false);
}
