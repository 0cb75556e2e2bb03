'use strict';
/*
 * Tests of the reference webhook receiver against a real PostgreSQL with
 * maileroo installed.  The connection comes from the PG* variables (a
 * superuser: the tests create their own database and a role that holds
 * nothing but EXECUTE on maileroo_ingest); without PGHOST they are skipped.
 * The last test runs the project's mock Maileroo API, which POSTs its
 * signed events to the receiver as Maileroo would.
 *
 *     PGHOST=... PGPORT=... PGUSER=postgres node --test test/
 */

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Client, Pool } = require('pg');
const { createReceiver, configFromEnv } = require('../server.js');

const DB = 'maileroo_receiver_test';
const ROLE = 'maileroo_receiver_test_hook';
const SECRET = 'whsec-receiver-test';
const MOCK = process.env.MAILEROO_MOCK_SCRIPT ||
	path.join(__dirname, '..', '..', '..', 'test', 'mock', 'maileroo_mock.py');
const skip = process.env.PGHOST ? false : 'PGHOST is not set: no PostgreSQL to test against';

const sign = (body, secret = SECRET) =>
	crypto.createHmac('sha256', secret).update(body).digest('hex');

function event(over = {}) {
	return {
		domain_id: 7, user_id: 3, event_id: crypto.randomBytes(12).toString('hex'),
		event_type: 'delivered', event_time: 1710545542,
		inserted_at: '2024-03-15T23:32:22.123Z',
		message_id: '<abc@mail.example>', message_reference_id: 'fedcba9876543210fedcba98',
		tags: { campaign: 'spring' }, event_data: { to: 'Jane <jane@example.org>' },
		...over,
	};
}

/* POST body (string or Buffer) to the receiver; resolves {status, headers, json}. */
function post(url, body, headers = {}) {
	return new Promise((resolve, reject) => {
		const req = http.request(url, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => {
				const text = Buffer.concat(chunks).toString();
				let json = null;
				try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
				resolve({ status: res.statusCode, headers: res.headers, json, text });
			});
		});
		req.on('error', reject);
		if (body !== undefined)
			req.write(body);
		req.end();
	});
}

const signed = (url, body, secret) => post(url, body, { 'X-Maileroo-Signature': sign(body, secret) });

async function adminQuery(database, sql, values) {
	const c = new Client({ database });
	await c.connect();
	try {
		// ALTER SYSTEM on a maileroo setting needs the library loaded.
		await c.query(`LOAD 'maileroo'`);
		return await c.query(sql, values);
	} finally {
		await c.end();
	}
}

const ACCOUNT = 'hooks';

/*
 * Configure the webhook secret: a sending account whose PUBLIC user mapping
 * holds it (kept out of the statement log).
 */
async function configureSecret(secret) {
	await adminQuery(DB, `CREATE SERVER ${ACCOUNT} FOREIGN DATA WRAPPER maileroo_fdw`);
	await adminQuery(DB, `SET log_statement = 'none';
		CREATE USER MAPPING FOR PUBLIC SERVER ${ACCOUNT} OPTIONS (webhook_secret '${secret}')`);
}

async function freePort() {
	return new Promise((resolve) => {
		const s = net.createServer().listen(0, '127.0.0.1', () => {
			const { port } = s.address();
			s.close(() => resolve(port));
		});
	});
}

async function start(env = {}) {
	const config = configFromEnv({ PORT: '0', ...env });
	const receiver = createReceiver(config, {
		pool: env.pool || new Pool({ database: DB, user: ROLE, max: 4, connectionTimeoutMillis: 3000 }),
	});
	await new Promise((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
	const { port } = receiver.server.address();
	receiver.url = `http://127.0.0.1:${port}${config.path}`;
	return receiver;
}

test('webhook receiver', { skip }, async (t) => {
	await adminQuery('postgres', `DROP DATABASE IF EXISTS ${DB}`);
	await adminQuery('postgres', `DROP ROLE IF EXISTS ${ROLE}`);
	await adminQuery('postgres', `CREATE DATABASE ${DB}`);
	await adminQuery('postgres', `CREATE ROLE ${ROLE} LOGIN`);
	await adminQuery(DB, `CREATE EXTENSION maileroo;
		GRANT USAGE ON SCHEMA public TO ${ROLE};
		GRANT EXECUTE ON FUNCTION maileroo_ingest TO ${ROLE}`);
	await configureSecret(SECRET);
	const db = new Pool({ database: DB, max: 2 });
	const count = async (sql, values) => Number((await db.query(sql, values)).rows[0].n);

	const r = await start({ WEBHOOK_PATH: '/maileroo', MAX_BODY_BYTES: '4096' });
	t.after(async () => {
		await r.close();
		await db.end();
	});

	await t.test('a signed event is stored, typed, and answered 200', async () => {
		const ev = event();
		const res = await signed(r.url, JSON.stringify(ev));
		assert.equal(res.status, 200);
		assert.deepEqual(res.json, { stored: 1, rejected: 0 });
		const row = (await db.query(`SELECT event_type, recipient, message_id, tags, domain_id
			FROM maileroo_events WHERE event_id = $1`, [ev.event_id])).rows;
		assert.deepEqual(row, [{ event_type: 'delivered', recipient: 'jane@example.org',
			message_id: 'abc@mail.example', tags: { campaign: 'spring' }, domain_id: '7' }]);
	});

	await t.test('a repeated delivery is acknowledged and stored once', async () => {
		const body = JSON.stringify(event({ event_type: 'opened', event_data: { ip: '203.0.113.9', user_agent: 'UA' } }));
		const first = await signed(r.url, body);
		const again = await signed(r.url, body);
		assert.deepEqual([first.status, first.json.stored, again.status, again.json.stored], [200, 1, 200, 0]);
		assert.equal(await count(`SELECT count(*) AS n FROM maileroo_events WHERE event_id = $1`,
			[JSON.parse(body).event_id]), 1);
	});

	await t.test('the raw bytes are verified, never re-serialised JSON', async () => {
		// Key order, spacing, escapes and non-ASCII text that JSON.stringify
		// would write differently: the signature covers these exact bytes.
		const id = crypto.randomBytes(8).toString('hex');
		const body = `{ "event_type":"clicked" ,"event_id": "${id}",\n\t"event_time": 1710545577.25,` +
			`"event_data": {"original_url": "https://example.com/caf\\u00e9?q=\u00fcber", "ip": "2001:db8::1",` +
			` "user_agent": "Z\u00fcrich \u{1F600}"}, "tags": null }`;
		const res = await signed(r.url, Buffer.from(body, 'utf8'));
		assert.equal(res.status, 200);
		assert.equal(res.json.stored, 1);
		const row = (await db.query(`SELECT url, user_agent, host(ip) AS ip, event_time
			FROM maileroo_events WHERE event_id = $1`, [id])).rows[0];
		assert.deepEqual([row.url, row.user_agent, row.ip, row.event_time.getTime()],
			['https://example.com/caf\u00e9?q=\u00fcber', 'Z\u00fcrich \u{1F600}', '2001:db8::1', 1710545577250]);
	});

	await t.test('a wrong or missing signature is 401 and stores nothing', async () => {
		const ev = event();
		const body = JSON.stringify(ev);
		const wrong = await signed(r.url, body, 'not-the-secret');
		const missing = await post(r.url, body);
		const tampered = await post(r.url, body.replace('jane', 'mallory'),
			{ 'X-Maileroo-Signature': sign(body) });
		assert.deepEqual([wrong.status, missing.status, tampered.status], [401, 401, 401]);
		assert.match(wrong.json.error, /signature/);
		assert.equal(await count(`SELECT count(*) AS n FROM maileroo_events WHERE event_id = $1`, [ev.event_id]), 0);
		// The accepted header forms: sha256= prefix and upper-case hex.
		const ok = await post(r.url, body, { 'X-Maileroo-Signature': 'sha256=' + sign(body).toUpperCase() });
		assert.equal(ok.status, 200);
	});

	await t.test('an event that can never parse is kept and acknowledged', async () => {
		const body = JSON.stringify({ event_id: 'no-type-' + crypto.randomBytes(4).toString('hex'), event_time: 1 });
		const res = await signed(r.url, body);
		assert.equal(res.status, 200);
		assert.deepEqual(res.json, { stored: 0, rejected: 1 });
		const kept = (await db.query(`SELECT sqlstate, error FROM maileroo_rejected_events WHERE body = $1`, [body])).rows;
		assert.equal(kept.length, 1);
		assert.match(kept[0].sqlstate, /^22/);
		assert.match(kept[0].error, /event_type/);
	});

	await t.test('a body that is not JSON or not UTF-8 is 400', async () => {
		const notJson = await signed(r.url, '{"event_id": "x", "event_type": "deliv');
		assert.equal(notJson.status, 400);
		const latin1 = Buffer.from('{"event_id":"caf\xe9"}', 'latin1');
		const notUtf8 = await post(r.url, latin1, { 'X-Maileroo-Signature': sign(latin1) });
		assert.equal(notUtf8.status, 400);
		assert.match(notUtf8.json.error, /UTF-8/);
		const empty = await signed(r.url, '');
		assert.equal(empty.status, 400);
	});

	await t.test('a body over MAX_BODY_BYTES is 413, declared or streamed', async () => {
		const big = JSON.stringify(event({ event_data: { to: 'a@example.org', pad: 'x'.repeat(5000) } }));
		const declared = await signed(r.url, big);
		assert.equal(declared.status, 413);
		// Chunked, without Content-Length: refused once the limit is passed.
		const chunked = await new Promise((resolve, reject) => {
			const req = http.request(r.url, { method: 'POST', headers: { 'X-Maileroo-Signature': sign(big) } }, (res) => {
				res.resume();
				res.on('end', () => resolve(res.statusCode));
			});
			req.on('error', reject);
			req.write(big.slice(0, 3000));
			setTimeout(() => { req.write(big.slice(3000)); req.end(); }, 50);
		});
		assert.equal(chunked, 413);
		assert.equal(await count(`SELECT count(*) AS n FROM maileroo_events WHERE event_data ? 'pad'`), 0);
	});

	await t.test('other paths and methods', async () => {
		assert.equal((await post(r.url.replace('/maileroo', '/other'), '{}')).status, 404);
		const get = await new Promise((resolve) => http.get(r.url, (res) => { res.resume(); resolve(res); }));
		assert.equal(get.statusCode, 405);
		assert.equal(get.headers.allow, 'POST');
		const health = await new Promise((resolve) =>
			http.get(r.url.replace('/maileroo', '/healthz'), (res) => { res.resume(); resolve(res.statusCode); }));
		assert.equal(health, 200);
	});

	await t.test('32 concurrent deliveries share the pool and are all stored', async () => {
		const events = Array.from({ length: 32 }, () => event({ event_type: 'clicked',
			event_data: { ip: '198.51.100.7', original_url: 'https://example.com/x', user_agent: 'UA' } }));
		const answers = await Promise.all(events.map((ev) => signed(r.url, JSON.stringify(ev))));
		assert.deepEqual(answers.map((a) => a.status), Array(32).fill(200));
		assert.equal(await count(`SELECT count(*) AS n FROM maileroo_events WHERE event_id = ANY($1)`,
			[events.map((e) => e.event_id)]), 32);
		assert.ok(r.pool.totalCount <= 4);
	});

	await t.test('a database that cannot be reached is 503 with Retry-After', async () => {
		const down = await start({ pool: new Pool({ host: '127.0.0.1', port: await freePort(),
			database: DB, user: ROLE, connectionTimeoutMillis: 2000 }) });
		try {
			const res = await signed(down.url, JSON.stringify(event()));
			assert.equal(res.status, 503);
			assert.equal(res.headers['retry-after'], '30');
		} finally {
			await down.close();
		}
	});

	await t.test('a role without EXECUTE gets 500 (Maileroo retries), not a 2xx', async () => {
		await adminQuery(DB, `REVOKE EXECUTE ON FUNCTION maileroo_ingest FROM ${ROLE}`);
		try {
			const res = await signed(r.url, JSON.stringify(event()));
			assert.equal(res.status, 500);
		} finally {
			await adminQuery(DB, `GRANT EXECUTE ON FUNCTION maileroo_ingest TO ${ROLE}`);
		}
	});

	await t.test('MAILEROO_ACCOUNT checks the signature against that account', async () => {
		const named = await start({ MAILEROO_ACCOUNT: ACCOUNT });
		try {
			const ev = event();
			const res = await signed(named.url, JSON.stringify(ev));
			assert.deepEqual([res.status, res.json.stored], [200, 1]);
			const bad = await signed(named.url, JSON.stringify(event()), 'other');
			assert.equal(bad.status, 401);
		} finally {
			await named.close();
		}
	});

	await t.test('the mock Maileroo API delivers its signed events to the receiver', async (tt) => {
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'maileroo-receiver-'));
		const portFile = path.join(dir, 'port');
		const mock = spawn('python3', [MOCK, '--port', '0', '--port-file', portFile,
			'--webhook-url', r.url, '--webhook-secret', SECRET, '--webhook-backoff', '0.2'],
		{ stdio: 'ignore' });
		tt.after(() => { mock.kill('SIGTERM'); fs.rmSync(dir, { recursive: true, force: true }); });
		let port;
		for (let i = 0; i < 100 && !port; i++) {
			await new Promise((res) => setTimeout(res, 100));
			if (fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').endsWith('\n'))
				port = Number(fs.readFileSync(portFile, 'utf8'));
		}
		assert.ok(port, 'the mock started');
		const ref = crypto.randomBytes(12).toString('hex');
		const send = await post(`http://127.0.0.1:${port}/api/v2/emails`, JSON.stringify({
			from: { address: 'shop@acme.test' }, subject: 'Hi', plain: 'Hello',
			to: [{ address: 'ada@example.org' }, { address: 'bounce.kim@example.net' }],
			reference_id: ref, tags: { campaign: 'welcome' },
		}), { Authorization: 'Bearer test-key' });
		assert.equal(send.status, 200);
		let rows = [];
		for (let i = 0; i < 100 && rows.length < 5; i++) {
			await new Promise((res) => setTimeout(res, 100));
			rows = (await db.query(`SELECT event_type, recipient, bounce_class FROM maileroo_events
				WHERE message_reference_id = $1 ORDER BY event_type, event_time`, [ref])).rows;
		}
		assert.deepEqual(rows.map((x) => [x.event_type, x.recipient, x.bounce_class]), [
			['clicked', null, null], ['delivered', 'ada@example.org', null],
			['failed', 'bounce.kim@example.net', 'hard'], ['opened', null, null], ['opened', null, null]]);
		const st = await (await fetch(`http://127.0.0.1:${port}/_mock/webhook`)).json();
		assert.deepEqual([st.delivered, st.gave_up, st.attempts], [5, 0, 5]);
	});
});
