/*-------------------------------------------------------------------------
 *
 * compat.h
 *		Every PostgreSQL version difference the extension meets, in one place.
 *
 * The code is written against the PostgreSQL 15 API; this header maps the
 * few calls that changed between 15 and 18 onto one spelling, so that no
 * other file needs a PG_VERSION_NUM guard.  15, 17 and 18 are built and
 * tested (test/matrix); 16 has no Debian package, and its branches here
 * follow its sources: every 16 difference below is one that 17 shares.
 *
 * src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILEROO_COMPAT_H
#define MAILEROO_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000 || PG_VERSION_NUM >= 190000
#error "maileroo supports PostgreSQL 15 to 18"
#endif

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"

#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * Functions that do not return: PostgreSQL 18 replaced the trailing
 * pg_attribute_noreturn() with a leading pg_noreturn.  Declarations are
 * written "pg_noreturn extern void f(...);", which GCC and Clang also
 * accept for the attribute form.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/*
 * JSON semantic actions return an error code from PostgreSQL 16 on; before
 * that they return nothing and report errors themselves.  Callbacks are
 * written as returning JSON_ACTION_RESULT and end with JSON_ACTION_RETURN.
 */
#if PG_VERSION_NUM >= 160000
#define JSON_ACTION_RESULT JsonParseErrorType
#define JSON_ACTION_RETURN return JSON_SUCCESS
#else
#define JSON_ACTION_RESULT void
#define JSON_ACTION_RETURN return
#endif

/*
 * A JSON lexer over a counted string.  PostgreSQL 17 lets the caller own
 * the context and requires freeJsonLexContext; earlier versions palloc it.
 * mr_json_lexer_make() returns a context in CurrentMemoryContext either way
 * and mr_json_lexer_free() releases what can be released.
 */
#if PG_VERSION_NUM >= 170000
static inline JsonLexContext *
mr_json_lexer_make(char *json, int len, bool need_escapes)
{
	return makeJsonLexContextCstringLen(NULL, json, len, GetDatabaseEncoding(),
										need_escapes);
}
#define mr_json_lexer_free(lex) freeJsonLexContext(lex)
#else
static inline JsonLexContext *
mr_json_lexer_make(char *json, int len, bool need_escapes)
{
	return makeJsonLexContextCstringLen(json, len, GetDatabaseEncoding(),
										need_escapes);
}
#define mr_json_lexer_free(lex) pfree(lex)
#endif

/*
 * A \u escape that the database encoding cannot hold.  Up to PostgreSQL 15
 * the backend's lexer converts escapes with pg_unicode_to_server(), which
 * raises its own error: 22P05 naming the character and the encoding, or
 * 0A000 where no conversion from UTF-8 exists (SQL_ASCII).  From 16 on the
 * lexer returns JSON_UNICODE_UNTRANSLATABLE instead, with token_terminator
 * just past the escape's last hex digit.  mr_json_raise_untranslatable()
 * decodes that code point and converts it again, so that the error raised
 * is the one 15 raises; it returns only when there is nothing to raise.
 * mr_json_untranslatable() is true for the codes that are to be reported
 * as untranslatable characters (22P05) otherwise.
 */
#if PG_VERSION_NUM >= 160000
static inline pg_wchar
mr_json_hex4(const char *p)
{
	pg_wchar	v = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		char		c = p[i];

		v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

static inline void
mr_json_raise_untranslatable(JsonParseErrorType err, JsonLexContext *lex)
{
	const char *end = lex->token_terminator;
	pg_wchar	ch;
	char		cbuf[MAX_UNICODE_EQUIVALENT_STRING + 1];

	if (err != JSON_UNICODE_UNTRANSLATABLE || end == NULL ||
		end - lex->input < 6 || end[-6] != '\\' || end[-5] != 'u')
		return;
	ch = mr_json_hex4(end - 4);
	if (is_utf16_surrogate_second(ch))
	{
		if (end - lex->input < 12 || end[-12] != '\\' || end[-11] != 'u')
			return;
		ch = surrogate_pair_to_codepoint(mr_json_hex4(end - 10), ch);
	}
	pg_unicode_to_server(ch, (unsigned char *) cbuf);
}

#define mr_json_untranslatable(err) \
	((err) == JSON_UNICODE_CODE_POINT_ZERO || \
	 (err) == JSON_UNICODE_HIGH_ESCAPE || \
	 (err) == JSON_UNICODE_UNTRANSLATABLE)
#else
#define mr_json_raise_untranslatable(err, lex) ((void) 0)
#define mr_json_untranslatable(err) \
	((err) == JSON_UNICODE_CODE_POINT_ZERO || \
	 (err) == JSON_UNICODE_HIGH_ESCAPE)
#endif

/* json_errdetail() returns a const string from PostgreSQL 17 on. */
#define mr_json_errdetail(err, lex) ((const char *) json_errdetail((err), (lex)))

/*
 * Base64: PostgreSQL 18 takes the source as uint8; the output is the same.
 */
#if PG_VERSION_NUM >= 180000
#define mr_b64_encode(src, len, dst, dstlen) \
	pg_b64_encode((const uint8 *) (src), (len), (dst), (dstlen))
#define mr_b64_decode(src, len, dst, dstlen) \
	pg_b64_decode((src), (len), (uint8 *) (dst), (dstlen))
#else
#define mr_b64_encode(src, len, dst, dstlen) \
	pg_b64_encode((const char *) (src), (len), (dst), (dstlen))
#define mr_b64_decode(src, len, dst, dstlen) \
	pg_b64_decode((src), (len), (char *) (dst), (dstlen))
#endif

/*
 * HMAC-SHA256 with common/hmac.h.  mr_hmac_sha256() writes 32 bytes to dest
 * and returns false on failure.
 */
#include "common/hmac.h"
#include "common/sha2.h"
static inline bool
mr_hmac_sha256(const uint8 *key, size_t keylen, const uint8 *data,
			   size_t len, uint8 *dest)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
	bool		ok;

	if (ctx == NULL)
		return false;
	ok = pg_hmac_init(ctx, key, keylen) == 0 &&
		pg_hmac_update(ctx, data, len) == 0 &&
		pg_hmac_final(ctx, dest, PG_SHA256_DIGEST_LENGTH) == 0;
	pg_hmac_free(ctx);
	return ok;
}

/* PostgreSQL 18 added an instrumentation argument to index_beginscan. */
#if PG_VERSION_NUM >= 180000
#define mr_index_beginscan(heap, index, snap, nkeys, norderbys) \
	index_beginscan((heap), (index), (snap), NULL, (nkeys), (norderbys))
#else
#define mr_index_beginscan(heap, index, snap, nkeys, norderbys) \
	index_beginscan((heap), (index), (snap), (nkeys), (norderbys))
#endif

/* PostgreSQL 18 wants the module's name and version in its magic block. */
#if PG_VERSION_NUM >= 180000
#define MR_MODULE_MAGIC PG_MODULE_MAGIC_EXT(.name = "maileroo", .version = MAILEROO_VERSION)
#else
#define MR_MODULE_MAGIC PG_MODULE_MAGIC
#endif

/* USAGE on a foreign server (object_aclcheck since 16). */
#if PG_VERSION_NUM >= 160000
#define mr_server_aclcheck(srvid, roleid, mode) \
	object_aclcheck(ForeignServerRelationId, (srvid), (roleid), (mode))
#else
#define mr_server_aclcheck(srvid, roleid, mode) \
	pg_foreign_server_aclcheck((srvid), (roleid), (mode))
#endif

#endif							/* MAILEROO_COMPAT_H */
