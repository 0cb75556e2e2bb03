/*-------------------------------------------------------------------------
 *
 * compat.h
 *		Every PostgreSQL version difference the extension meets, in one place.
 *
 * The code is written against the PostgreSQL 15 API; this header maps the
 * few calls that changed between 13 and 18 onto one spelling, so that no
 * other file needs a PG_VERSION_NUM guard.
 *
 * src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MAILEROO_COMPAT_H
#define MAILEROO_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 130000 || PG_VERSION_NUM >= 190000
#error "maileroo supports PostgreSQL 13 to 18"
#endif

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"

#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * GUC prefix reservation: PostgreSQL 15 renamed EmitWarningsOnPlaceholders
 * and made it also refuse later placeholders in the prefix.
 */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
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
 * HMAC-SHA256: PostgreSQL 14 added common/hmac.h.  On 13 the same result
 * is computed from the SHA-256 primitives of common/sha2.h (RFC 2104).
 * mr_hmac_sha256() writes 32 bytes to dest and returns false on failure.
 */
#if PG_VERSION_NUM >= 140000
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
#else
#include "common/sha2.h"
static inline bool
mr_hmac_sha256(const uint8 *key, size_t keylen, const uint8 *data,
			   size_t len, uint8 *dest)
{
	uint8		k[PG_SHA256_BLOCK_LENGTH];
	uint8		pad[PG_SHA256_BLOCK_LENGTH];
	uint8		inner[PG_SHA256_DIGEST_LENGTH];
	pg_sha256_ctx ctx;
	int			i;

	memset(k, 0, sizeof(k));
	if (keylen > PG_SHA256_BLOCK_LENGTH)
	{
		pg_sha256_init(&ctx);
		pg_sha256_update(&ctx, key, keylen);
		pg_sha256_final(&ctx, k);
	}
	else
		memcpy(k, key, keylen);

	for (i = 0; i < PG_SHA256_BLOCK_LENGTH; i++)
		pad[i] = k[i] ^ 0x36;
	pg_sha256_init(&ctx);
	pg_sha256_update(&ctx, pad, sizeof(pad));
	pg_sha256_update(&ctx, data, len);
	pg_sha256_final(&ctx, inner);

	for (i = 0; i < PG_SHA256_BLOCK_LENGTH; i++)
		pad[i] = k[i] ^ 0x5c;
	pg_sha256_init(&ctx);
	pg_sha256_update(&ctx, pad, sizeof(pad));
	pg_sha256_update(&ctx, inner, sizeof(inner));
	pg_sha256_final(&ctx, dest);
	return true;
}
#endif

/*
 * Shared memory must be requested from shmem_request_hook from PostgreSQL
 * 15 on; before that, directly from _PG_init.
 */
#if PG_VERSION_NUM >= 150000
#define MR_HAVE_SHMEM_REQUEST_HOOK 1
#endif

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
