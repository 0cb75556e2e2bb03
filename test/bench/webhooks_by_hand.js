'use strict';
/*
 * webhooks_by_hand.js: the baseline of test/bench/webhooks.sh, the webhook
 * handler people write by hand: verify the signature in Node (HMAC-SHA256 of
 * the raw body, constant-time compare), then INSERT the body as jsonb into a
 * table keyed by event_id (ON CONFLICT DO NOTHING, for Maileroo's repeats).
 *
 * It runs inside the reference receiver's own HTTP code (body limit, pool,
 * answers), with that one call replaced, so that the two differ only in what
 * the database is asked to do.  Settings as for server.js, plus
 * WEBHOOK_SECRET and BY_HAND_TABLE.
 */

const crypto = require('node:crypto');
const path = require('node:path');

const receiverDir = path.join(__dirname, '..', '..', 'examples', 'webhook-receiver');
const { configFromEnv, createReceiver } = require(path.join(receiverDir, 'server.js'));

const secret = Buffer.from(process.env.WEBHOOK_SECRET || '', 'utf8');
const table = process.env.BY_HAND_TABLE || 'webhook_events_by_hand';

function signatureError() {
	const err = new Error('webhook signature does not match');
	err.code = '28000';
	return err;
}

async function store(client, body, signature) {
	const raw = Buffer.from(body, 'utf8');
	const want = crypto.createHmac('sha256', secret).update(raw).digest();
	const sig = String(signature || '').replace(/^sha256=/i, '');
	const got = /^[0-9a-fA-F]{64}$/.test(sig) ? Buffer.from(sig, 'hex') : Buffer.alloc(0);
	if (got.length !== want.length || !crypto.timingSafeEqual(got, want))
		throw signatureError();
	const res = await client.query({
		name: 'by_hand_insert',
		text: `INSERT INTO ${table} (event_id, body) VALUES ($1::jsonb ->> 'event_id', $1::jsonb)
		       ON CONFLICT (event_id) DO NOTHING`,
		values: [body],
	});
	return { stored: res.rowCount, rejected: 0 };
}

const config = configFromEnv();
const receiver = createReceiver(config, { store });
receiver.server.listen(config.port, config.host, () => {
	const { address, port } = receiver.server.address();
	console.log(`by-hand webhook receiver listening on http://${address}:${port}${config.path}`);
});
const stop = () => receiver.close().then(() => process.exit(0), () => process.exit(1));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
