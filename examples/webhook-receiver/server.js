'use strict';
/*
 * server.js: a Maileroo webhook receiver that stores every event in
 * PostgreSQL through maileroo_ingest.
 *
 * Maileroo POSTs one JSON event per request and signs it: the header
 * X-Maileroo-Signature is the hex HMAC-SHA256 of the raw body under the
 * account's webhook secret.  The database checks that signature, so this
 * server never parses or re-serialises the body: it collects the bytes,
 * decodes them as UTF-8 (refusing a body that is not) and hands the text and
 * the header to
 *
 *     SELECT maileroo_ingest($1, $2)          -- or ($1, $2, account)
 *
 * on a pooled connection.  The answers are chosen for Maileroo's retries,
 * which repeat a non-2xx answer for hours:
 *
 *   200  stored, or a repeat already stored (ingest is idempotent on
 *        event_id), or an event that can never parse, which maileroo_ingest
 *        keeps in maileroo_rejected_events ({"stored": n, "rejected": n})
 *   400  the body is not JSON or not UTF-8 (SQLSTATE class 22): nothing is
 *        stored; a retry may bring it whole
 *   401  signature missing or wrong (SQLSTATE 28000): nothing is stored
 *   413  body over MAX_BODY_BYTES
 *   503  the database is unreachable, busy or restarting: Maileroo retries
 *   500  anything else (a configuration error such as a missing EXECUTE
 *        grant): Maileroo retries, and the log says what is wrong
 *
 * Configuration is by environment: PG* for the connection (libpq's names:
 * PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, ...), PORT and HOST to
 * listen on, WEBHOOK_PATH, MAX_BODY_BYTES, PG_POOL_MAX, MAILEROO_SCHEMA (the
 * extension's schema, when it is not on the role's search_path) and
 * MAILEROO_ACCOUNT (the sending account whose webhook secret applies).
 *
 * Node 18 or later; one dependency, pg.
 */

const http = require('node:http');
const { Pool } = require('pg');

const TRANSIENT_CLASSES = ['08', '53', '57', '58'];
const TRANSIENT_CODES = new Set(['40001', '40P01', '55P03', '55006']);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND',
	'EAI_AGAIN', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOENT']);

function intFromEnv(env, name, dflt, min) {
	const raw = env[name];
	if (raw === undefined || raw === '')
		return dflt;
	const n = Number(raw);
	if (!Number.isInteger(n) || n < min)
		throw new Error(`${name} must be an integer of at least ${min}, not "${raw}"`);
	return n;
}

/* The receiver's settings, from an environment (process.env by default). */
function configFromEnv(env = process.env) {
	return {
		host: env.HOST || '127.0.0.1',
		port: intFromEnv(env, 'PORT', 8080, 0),
		path: env.WEBHOOK_PATH || '/',
		maxBodyBytes: intFromEnv(env, 'MAX_BODY_BYTES', 1024 * 1024, 1),
		poolMax: intFromEnv(env, 'PG_POOL_MAX', 10, 1),
		statementTimeoutMs: intFromEnv(env, 'PG_STATEMENT_TIMEOUT_MS', 10000, 0),
		schema: env.MAILEROO_SCHEMA || null,
		account: env.MAILEROO_ACCOUNT || null,
	};
}

function quoteIdent(name) {
	return '"' + name.replace(/"/g, '""') + '"';
}

/*
 * The default store: one call of maileroo_ingest on a pooled client.  Its
 * WARNINGs (one per event kept in maileroo_rejected_events) are counted and
 * logged.  Returns {stored, rejected}; throws pg's error unchanged.
 */
function ingestStore(config) {
	const fn = (config.schema ? quoteIdent(config.schema) + '.' : '') + 'maileroo_ingest';
	const text = config.account
		? `SELECT ${fn}($1, $2, $3) AS stored`
		: `SELECT ${fn}($1, $2) AS stored`;
	return async (client, body, signature) => {
		const rejected = [];
		const onNotice = (msg) => {
			if (msg.severity !== 'WARNING')
				return;
			if (/^webhook event rejected/.test(msg.message))
				rejected.push(msg);
			console.error(`maileroo-webhook: ${msg.message}${msg.detail ? ' ' + msg.detail : ''}`);
		};
		client.on('notice', onNotice);
		try {
			const values = config.account ? [body, signature, config.account] : [body, signature];
			const res = await client.query({ name: 'maileroo_ingest', text, values });
			return { stored: Number(res.rows[0].stored), rejected: rejected.length };
		} finally {
			client.removeListener('notice', onNotice);
		}
	};
}

/* HTTP status and public message for an error from the database or pg. */
function classify(err) {
	const code = typeof err.code === 'string' ? err.code : '';
	if (code === '28000')
		return [401, 'webhook signature is missing or does not match'];
	if (code.startsWith('22'))
		return [400, 'webhook body is not a JSON event'];
	if (TRANSIENT_CODES.has(code) || TRANSIENT_CLASSES.includes(code.slice(0, 2)) ||
		NETWORK_CODES.has(code) || code === '' )
		return [503, 'database unavailable, try again later'];
	return [500, 'webhook could not be stored'];
}

function reply(res, status, doc, extraHeaders = {}) {
	const body = JSON.stringify(doc);
	res.writeHead(status, {
		'Content-Type': 'application/json',
		'Content-Length': Buffer.byteLength(body),
		...extraHeaders,
	});
	res.end(body);
}

/*
 * Collect the request body up to limit bytes.  Resolves to a Buffer, or to
 * null after answering 413 itself (and closing the connection, so that an
 * oversized upload is not read to its end).
 */
function readBody(req, res, limit) {
	return new Promise((resolve, reject) => {
		const declared = req.headers['content-length'];
		const tooLarge = () => {
			res.on('finish', () => req.destroy());
			reply(res, 413, { error: `webhook body is larger than ${limit} bytes` },
				{ Connection: 'close' });
			resolve(null);
		};
		if (declared !== undefined && Number(declared) > limit)
			return tooLarge();
		const chunks = [];
		let size = 0;
		let done = false;
		req.on('data', (chunk) => {
			if (done)
				return;
			size += chunk.length;
			if (size > limit) {
				done = true;
				req.pause();
				return tooLarge();
			}
			chunks.push(chunk);
		});
		req.on('end', () => {
			if (!done) {
				done = true;
				resolve(Buffer.concat(chunks, size));
			}
		});
		req.on('error', (err) => {
			if (!done) {
				done = true;
				reject(err);
			}
		});
	});
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/*
 * Build the receiver: an http.Server (not yet listening) and its pg.Pool.
 * options.store(client, bodyText, signature) replaces the call of
 * maileroo_ingest (the benchmark's hand-written baseline uses that);
 * options.pool replaces the pool.  close() stops both.
 */
function createReceiver(config = configFromEnv(), options = {}) {
	const pool = options.pool || new Pool({
		max: config.poolMax,
		connectionTimeoutMillis: 5000,
		idleTimeoutMillis: 30000,
		statement_timeout: config.statementTimeoutMs || undefined,
		application_name: 'maileroo-webhook-receiver',
	});
	// An idle client whose server went away must not take the process down.
	pool.on('error', (err) => console.error(`maileroo-webhook: idle connection lost: ${err.message}`));
	const store = options.store || ingestStore(config);

	async function handle(req, res) {
		const path = req.url.split('?', 1)[0];
		if (req.method === 'GET' && path === '/healthz')
			return reply(res, 200, { ok: true });
		if (path !== config.path)
			return reply(res, 404, { error: 'not found' });
		if (req.method !== 'POST')
			return reply(res, 405, { error: 'use POST' }, { Allow: 'POST' });

		const raw = await readBody(req, res, config.maxBodyBytes);
		if (raw === null)
			return;
		let text;
		try {
			text = utf8.decode(raw);
		} catch (e) {
			return reply(res, 400, { error: 'webhook body is not UTF-8' });
		}
		const signature = req.headers['x-maileroo-signature'] ?? null;

		let client;
		try {
			client = await pool.connect();
		} catch (err) {
			console.error(`maileroo-webhook: cannot connect to the database: ${err.message}`);
			return reply(res, 503, { error: 'database unavailable, try again later' },
				{ 'Retry-After': '30' });
		}
		let broken;
		try {
			const result = await store(client, text, signature);
			return reply(res, 200, result);
		} catch (err) {
			const [status, message] = classify(err);
			// A client whose connection failed is discarded, not reused.
			if (status === 503)
				broken = err;
			console.error(`maileroo-webhook: ${status} ${err.code || ''} ${err.message}`);
			return reply(res, status, { error: message },
				status === 503 ? { 'Retry-After': '30' } : {});
		} finally {
			client.release(broken);
		}
	}

	const server = http.createServer((req, res) => {
		handle(req, res).catch((err) => {
			console.error(`maileroo-webhook: ${err.stack || err}`);
			if (!res.headersSent)
				reply(res, 500, { error: 'webhook could not be stored' });
			else
				res.destroy();
		});
	});

	async function close() {
		await new Promise((resolve) => server.close(() => resolve()));
		await pool.end();
	}

	return { server, pool, close };
}

module.exports = { configFromEnv, createReceiver, classify, readBody, reply };

if (require.main === module) {
	let config;
	try {
		config = configFromEnv();
	} catch (e) {
		console.error(`maileroo-webhook: ${e.message}`);
		process.exit(2);
	}
	const receiver = createReceiver(config);
	receiver.server.listen(config.port, config.host, () => {
		const { address, port } = receiver.server.address();
		console.log(`maileroo webhook receiver listening on http://${address}:${port}${config.path}`);
	});
	const stop = () => {
		receiver.server.closeIdleConnections?.();
		receiver.close().then(() => process.exit(0), () => process.exit(1));
	};
	process.on('SIGTERM', stop);
	process.on('SIGINT', stop);
}
