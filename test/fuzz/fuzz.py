#!/usr/bin/env python3
"""Fuzz the webhook parser with mutated Maileroo payloads.

    python3 test/fuzz/fuzz.py [--count N] [--seed S] [--batch B] [--dbname DB] [--quick]

Generates N bodies (default 100,000) from the example payloads in
test/fuzz/corpus/ by random mutations (character flips, truncation,
insertion of JSON tokens and escapes, deletion and duplication of spans,
deep nesting, huge and odd numbers, long strings, values of the wrong type
under the known keys) and feeds them, B at a time, through
maileroo_parse_event(text), maileroo_parse_event(jsonb),
maileroo_parse_events(text) and maileroo_event_bodies(text) in the database
psql reaches (PGHOST, PGPORT, PGUSER; the maileroo extension must exist).
Each call runs in its own subtransaction; errors are counted by SQLSTATE.

Every row maileroo_parse_event(text) returns for a body that is a JSON object
is checked against jsonb's own reading of the body: event_id, event_type,
message_id, message_reference_id, tags, event_data and every key of extra.

It fails (exit status 1) on a crash (the connection is lost), on any
internal error (XX000), on any error outside SQLSTATE class 22 and on any
row that disagrees with jsonb; the first
few offending bodies are written to test/fuzz/build/.  --quick runs 5,000
bodies and prints only what does not depend on the mutations drawn.
"""
import argparse
import glob
import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

TOKENS = ['{', '}', '[', ']', ',', ':', '"', '\\', '\\"', '\\\\', '\\u0000',
          '\\ud83d', '\\ude00', '\\ud83d\\ude00', '\\u00e9', '\\uZZZZ', '\\x',
          'null', 'true', 'false', '0', '-0', '1e999999', '-1e-999999',
          '99999999999999999999999', '1.5', '""', '{}', '[]', 'é', '😀',
          '\u2028', '\t', '\n', ' ', '<', '>', '@', 'event_id', '"event_id"',
          '"event_type"', '"event_time"', '"events"', '"to"', '"ip"', '"tags"']

VALUES = ['null', 'true', 'false', '0', '-1', '1.5', '1e308', '-1e308',
          '1e-400', '1e999999', '123456789012345678901234567890', '""', '"x"',
          '"1710545577"', '"1710545577.25"', '" 1 "', '"1e3"', '"abc"', '{}',
          '[]', '[1,2]', '{"a":null}', '"\\u0000"', '"\\ud83d\\ude00"',
          '"2024-03-15T23:32:57.401Z"', '"2024-13-45T99:99:99Z"',
          '"::ffff:1.2.3.4"', '"1.2.3.4/24"', '"999.1.1.1"', '"fe80::1%eth0"',
          '"Jane <jane@example.org>"', '["a@example.org","b@example.org"]',
          '"550 5.1.1 unknown"', '"452-4.2.2 full"', '"<id@example.com>"']

KEYS = ['event_id', 'event_type', 'event_time', 'inserted_at', 'domain_id',
        'user_id', 'message_id', 'message_reference_id', 'tags', 'event_data',
        'to', 'ip', 'user_agent', 'original_url', 'reason', 'reject_reason',
        'events', 'extra_key']


def load_corpus():
    bodies = []
    for path in sorted(glob.glob(os.path.join(HERE, 'corpus', '*.json'))):
        with open(path, encoding='utf-8') as f:
            bodies.append(f.read())
    return bodies


def rand_char(rng):
    r = rng.random()
    if r < 0.7:
        return chr(rng.randint(0x20, 0x7e))
    if r < 0.8:
        return rng.choice('\t\n\r\b\f')
    if r < 0.9:
        return chr(rng.randint(0x80, 0x7ff))
    return chr(rng.choice([0x2028, 0xfeff, 0x1f600, 0xe9, 0x10ffff - 2]))


def nest(rng, depth):
    kind = rng.random()
    if kind < 0.5:
        return '[' * depth + '1' + ']' * depth
    if kind < 0.8:
        return '{"a":' * depth + 'null' + '}' * depth
    return '[' * depth  # unclosed


def mutate_once(rng, s):
    n = len(s)
    op = rng.randrange(11)
    pos = rng.randint(0, n)
    if op == 0 and n:  # flip characters
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(s))
            s = s[:i] + rand_char(rng) + s[i + 1:]
        return s
    if op == 1:  # truncate
        return s[:pos]
    if op == 2:  # insert a token
        return s[:pos] + rng.choice(TOKENS) + s[pos:]
    if op == 3 and n:  # delete a span
        end = min(n, pos + rng.randint(1, 40))
        return s[:pos] + s[end:]
    if op == 4 and n:  # duplicate a span
        end = min(n, pos + rng.randint(1, 80))
        return s[:end] + s[pos:end] + s[end:]
    if op == 5:  # replace a known key's value
        key = rng.choice(KEYS)
        i = s.find('"%s"' % key)
        if i >= 0:
            j = s.find(':', i)
            if j >= 0:
                k = j + 1
                # skip the old scalar value, roughly
                while k < n and s[k] not in ',}':
                    k += 1
                return s[:j + 1] + ' ' + rng.choice(VALUES) + s[k:]
        return s[:pos] + rng.choice(VALUES) + s[pos:]
    if op == 6:  # deep nesting somewhere
        depth = rng.choice([2, 50, 199, 200, 201, 500, 5000, 20000])
        i = s.find('"event_data"')
        if i >= 0 and rng.random() < 0.7:
            j = s.find(':', i) + 1
            return s[:j] + nest(rng, depth) + ',"x":' + s[j:]
        return s[:pos] + nest(rng, depth) + s[pos:]
    if op == 7:  # a long string
        length = rng.choice([100, 1000, 5000, 20000, 100000] if rng.random() < 0.1 else [100, 1000, 5000])
        fill = rng.choice(['a', 'é', '\\"', '\\\\', '\\u00e9', '😀'])
        text = fill * (length // len(fill))
        key = rng.choice(['user_agent', 'event_id', 'reason', 'x'])
        i = s.find('{')
        if i >= 0:
            return s[:i + 1] + '"%s": "%s",' % (key, text) + s[i + 1:]
        return s
    if op == 8:  # duplicate keys
        key = rng.choice(KEYS)
        i = s.find('{')
        if i >= 0:
            return s[:i + 1] + '"%s": %s,' % (key, rng.choice(VALUES)) + s[i + 1:]
        return s
    if op == 9:  # wrap: array, events wrapper, or scalar
        r = rng.random()
        if r < 0.4:
            return '[' + s + ',' + s + ']'
        if r < 0.7:
            return '{"events": [' + s + ']}'
        return rng.choice(VALUES)
    # op 10: whitespace and line breaks
    return s[:pos] + rng.choice([' ', '\n', '\r\n', '\t', '\u00a0']) + s[pos:]


def generate(rng, corpus, count):
    for _ in range(count):
        s = rng.choice(corpus)
        for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
            s = mutate_once(rng, s)
        yield s.replace('\x00', '')


def copy_escape(s):
    return (s.replace('\\', '\\\\').replace('\n', '\\n')
            .replace('\r', '\\r').replace('\t', '\\t'))


SETUP = """
SET client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS fuzz_body (id int, body text);
CREATE TEMP TABLE IF NOT EXISTS fuzz_result (fn text, sqlstate text, n bigint,
	PRIMARY KEY (fn, sqlstate));
CREATE TEMP TABLE IF NOT EXISTS fuzz_bad (id int, fn text, sqlstate text, message text, body text);
TRUNCATE fuzz_body;
-- What the row parsed from an object must hold, read off jsonb's own parse of
-- the same body: NULL when it agrees, else the first column that does not.
CREATE OR REPLACE FUNCTION pg_temp.fuzz_disagrees(e maileroo_events, j jsonb)
RETURNS text LANGUAGE sql AS $$
SELECT CASE
	WHEN e.event_id IS DISTINCT FROM j->>'event_id' THEN 'event_id'
	WHEN e.event_type IS DISTINCT FROM lower(j->>'event_type' COLLATE "C") THEN 'event_type'
	WHEN e.message_id IS DISTINCT FROM CASE WHEN jsonb_typeof(j->'message_id') = 'string' THEN
			CASE WHEN j->>'message_id' LIKE '<%>' THEN substr(j->>'message_id', 2, length(j->>'message_id') - 2)
				 ELSE j->>'message_id' END END THEN 'message_id'
	WHEN e.message_reference_id IS DISTINCT FROM CASE WHEN jsonb_typeof(j->'message_reference_id') = 'string'
			THEN j->>'message_reference_id' END THEN 'message_reference_id'
	WHEN e.tags IS DISTINCT FROM CASE WHEN jsonb_typeof(j->'tags') = 'object' THEN j->'tags' END THEN 'tags'
	WHEN e.event_data IS DISTINCT FROM CASE WHEN jsonb_typeof(j->'event_data') = 'object'
			THEN j->'event_data' ELSE '{}' END THEN 'event_data'
	WHEN EXISTS (SELECT 1 FROM jsonb_each(coalesce(e.extra, '{}')) x
				 WHERE j->x.key IS DISTINCT FROM x.value) THEN 'extra (a value)'
	WHEN EXISTS (SELECT 1 FROM jsonb_object_keys(j) k
				 WHERE k NOT IN ('event_id', 'event_type', 'event_time', 'inserted_at', 'domain_id',
								 'user_id', 'message_id', 'message_reference_id', 'tags', 'event_data')
				   AND NOT coalesce(e.extra, '{}') ? k) THEN 'extra (a key)'
END
$$;
"""

RUN = r"""
DO $fuzz$
DECLARE
	r record;
	st text;
	msg text;
	f text;
	j jsonb;
	ev maileroo_events;
	field text;
	cnt int;
	seen text[] := '{}';
BEGIN
	FOR r IN SELECT id, body FROM fuzz_body ORDER BY id LOOP
		BEGIN
			j := r.body::jsonb;
		EXCEPTION WHEN data_exception OR program_limit_exceeded
			OR statement_too_complex THEN
			j := NULL;
		END;
		FOREACH f IN ARRAY ARRAY['parse_event', 'parse_event_jsonb', 'parse_events', 'event_bodies'] LOOP
			st := 'ok';
			BEGIN
				IF f = 'parse_event' THEN
					ev := maileroo_parse_event(r.body);
					-- every row parsed must agree with jsonb's reading
					field := CASE WHEN jsonb_typeof(j) = 'object'
								  THEN pg_temp.fuzz_disagrees(ev, j) END;
					IF field IS NOT NULL THEN
						st := 'mismatch';
						INSERT INTO fuzz_bad VALUES (r.id, f, st, field, r.body);
					END IF;
				ELSIF f = 'parse_event_jsonb' THEN
					IF j IS NULL THEN
						st := 'not jsonb';
					ELSE
						PERFORM maileroo_parse_event(j);
					END IF;
				ELSIF f = 'parse_events' THEN
					SELECT count(*) INTO cnt FROM maileroo_parse_events(r.body);
				ELSE
					SELECT count(*) INTO cnt FROM maileroo_event_bodies(r.body);
				END IF;
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
				IF left(st, 2) <> '22' THEN
					INSERT INTO fuzz_bad VALUES (r.id, f, st, msg, r.body);
				END IF;
			END;
			seen := seen || (f || '|' || st);
		END LOOP;
	END LOOP;
	INSERT INTO fuzz_result
	SELECT split_part(x, '|', 1), split_part(x, '|', 2), count(*)
	FROM unnest(seen) x GROUP BY 1, 2
	ON CONFLICT ON CONSTRAINT fuzz_result_pkey DO UPDATE SET n = fuzz_result.n + excluded.n;
END
$fuzz$;
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--count', type=int, default=100000)
    ap.add_argument('--seed', type=int, default=20240315)
    ap.add_argument('--batch', type=int, default=5000)
    ap.add_argument('--dbname', default=os.environ.get('PGDATABASE', 'postgres'))
    ap.add_argument('--psql', default='psql')
    ap.add_argument('--quick', action='store_true')
    args = ap.parse_args()
    if args.quick:
        args.count = 5000

    rng = random.Random(args.seed)
    corpus = load_corpus()
    if not corpus:
        sys.exit('no corpus under %s' % os.path.join(HERE, 'corpus'))

    # One psql session for the whole run: a crash shows as a lost connection.
    proc = subprocess.Popen([args.psql, '-X', '-q', '-v', 'ON_ERROR_STOP=1',
                             '-d', args.dbname],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, encoding='utf-8')
    out = []
    try:
        proc.stdin.write(SETUP)
        proc.stdin.write('TRUNCATE fuzz_result, fuzz_bad;\n')
        done = 0
        bodies = generate(rng, corpus, args.count)
        while done < args.count:
            n = min(args.batch, args.count - done)
            proc.stdin.write('TRUNCATE fuzz_body;\nCOPY fuzz_body FROM STDIN;\n')
            for i in range(n):
                proc.stdin.write('%d\t%s\n' % (done + i, copy_escape(next(bodies))))
            proc.stdin.write('\\.\n')
            proc.stdin.write(RUN)
            done += n
        proc.stdin.write("\\pset format unaligned\n\\pset tuples_only on\n"
                         "SELECT 'RESULT', fn, sqlstate, n FROM fuzz_result ORDER BY 2, 3;\n"
                         "SELECT 'BAD', id, fn, sqlstate, message FROM fuzz_bad ORDER BY 2 LIMIT 20;\n"
                         "SELECT 'BADBODY', id, replace(body, E'\\n', ' ') FROM fuzz_bad ORDER BY 2 LIMIT 5;\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass
    output = proc.stdout.read()
    rc = proc.wait()

    results = {}
    bad = []
    for line in output.splitlines():
        parts = line.split('|')
        if parts[0] == 'RESULT' and len(parts) == 4:
            results.setdefault(parts[1], {})[parts[2]] = int(parts[3])
        elif parts[0] in ('BAD', 'BADBODY'):
            bad.append(line)
        elif line.strip():
            out.append(line)

    crashed = rc != 0 or not results
    internal = sum(c.get('XX000', 0) for c in results.values())
    mismatch = sum(c.get('mismatch', 0) for c in results.values())
    outside = sum(n for c in results.values() for st, n in c.items()
                  if st not in ('ok', 'not jsonb', 'mismatch') and not st.startswith('22'))
    calls = sum(n for c in results.values() for n in c.values())

    if bad:
        os.makedirs(os.path.join(HERE, 'build'), exist_ok=True)
        with open(os.path.join(HERE, 'build', 'bad.txt'), 'w', encoding='utf-8') as f:
            f.write('\n'.join(bad) + '\n')

    if args.quick:
        print('fuzz: %d bodies, %d calls' % (args.count, calls if not crashed else 0))
    else:
        print('fuzz: %d bodies (seed %d), %d calls' % (args.count, args.seed, calls))
        for fn in sorted(results):
            summary = ', '.join('%s %d' % (st, n) for st, n in sorted(results[fn].items()))
            print('  %-18s %s' % (fn, summary))
    print('crashes: %d' % (1 if crashed else 0))
    print('internal errors (XX000): %d' % internal)
    print('errors outside class 22: %d' % outside)
    print('rows that disagree with jsonb: %d' % mismatch)
    if crashed:
        print('\n'.join(out[-20:]))
    for line in bad[:10]:
        print(line[:300])
    sys.exit(1 if crashed or internal or outside or mismatch else 0)


if __name__ == '__main__':
    main()
