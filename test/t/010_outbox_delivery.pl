# The outbox and its delivery worker: mail goes out after commit and only
# after commit, exactly once in a burst, follows settings reloads, and the
# worker never blocks DROP EXTENSION, DROP DATABASE or shutdown.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use MailerooTest;
use MailerooOutbox;
use JSON::PP ();

my $node = new_node('outbox_delivery', "maileroo.concurrency = 16\n");
$node->start;
mock_reset();

create_extension($node, 'postgres');
$node->poll_query_until('postgres', 'SELECT running FROM maileroo_worker_status()')
  or die 'worker not running';
pass('the preloaded worker serves maileroo.database_name');

my $send = "maileroo_send('Shop <shop\@example.com>', 'jane\@example.org', 'Hello', plain => 'hi'";

# Commit: sent promptly (woken at commit: its safety poll is 10 s).
my $t0 = time;
$node->safe_psql('postgres', "SELECT $send, reference_id => '" . ref_id(1) . "')");
my $row = wait_final($node, ref_id(1));
my $latency = time - $t0;
is($row->{status}, 'sent', 'a committed message is sent');
is($row->{attempts}, 1, 'in one attempt');
is($row->{http}, 200, 'with the HTTP status recorded');
like($row->{response}, qr/"success": true/, "and Maileroo's answer");
cmp_ok($latency, '<', 3, "woken at commit, not by a poll (${latency}s)");
is_deeply(mock_refs()->{ ref_id(1) }, [200], 'the mock received it once');

# Rollback: nothing sent, nothing left.
$node->safe_psql('postgres',
	"BEGIN; SELECT $send, reference_id => '" . ref_id(2) . "'); ROLLBACK;");
# A savepoint rolled back takes its message with it; the rest goes.
$node->safe_psql('postgres', "BEGIN; SELECT $send, reference_id => '" . ref_id(3)
	  . "'); SAVEPOINT s; SELECT $send, reference_id => '" . ref_id(4)
	  . "'); ROLLBACK TO s; COMMIT;");
wait_final($node, ref_id(3));
usleep(300_000);
my $refs = mock_refs();
ok(!exists $refs->{ ref_id(2) }, 'a rolled-back message is never sent');
ok(!exists $refs->{ ref_id(4) }, 'a message rolled back to a savepoint is never sent');
is_deeply($refs->{ ref_id(3) }, [200], 'the rest of that transaction is sent');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM maileroo_outbox WHERE reference_id IN ('" . ref_id(2) . "', '" . ref_id(4) . "')"),
	0, 'and leaves no row');

# A reference_id already queued is refused.
my ($ret, $out, $err) = $node->psql('postgres', "SELECT $send, reference_id => '" . ref_id(1) . "')");
like($err, qr/reference_id "${\ ref_id(1)}" cannot be used/, 'a duplicate reference_id is refused');

# Roles: each sees and cancels only what it queued.
$node->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE eve LOGIN;
	GRANT EXECUTE ON FUNCTION maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) TO alice, bob;
	GRANT USAGE ON FOREIGN SERVER mock TO alice, bob;
	GRANT EXECUTE ON FUNCTION maileroo_cancel(text) TO alice, bob;
	GRANT SELECT ON maileroo_outbox TO alice, bob;
});
$node->safe_psql('postgres', "SET ROLE alice; SELECT $send, reference_id => '" . ref_id(10) . "')");
$node->safe_psql('postgres', "SET ROLE bob; SELECT $send, reference_id => '" . ref_id(11) . "')");
wait_final($node, ref_id(10));
wait_final($node, ref_id(11));
is($node->safe_psql('postgres', 'SET ROLE alice; SELECT string_agg(reference_id || queued_by, \',\') FROM maileroo_outbox'),
	ref_id(10) . 'alice', 'alice sees only her message, queued_by alice');
is($node->safe_psql('postgres', 'SET ROLE bob; SELECT count(*) FROM maileroo_outbox'),
	1, 'bob sees only his');
is($node->safe_psql('postgres', 'SELECT count(*) FROM maileroo_outbox'),
	4, 'the owner sees every row');
($ret, $out, $err) = $node->psql('postgres', "SET ROLE eve; SELECT $send)");
like($err, qr/permission denied for function maileroo_send/, 'a role without EXECUTE cannot queue');
($ret, $out, $err) = $node->psql('postgres', "SET ROLE eve; SELECT count(*) FROM maileroo_outbox");
like($err, qr/permission denied for table maileroo_outbox/, 'nor read the outbox');
($ret, $out, $err) = $node->psql('postgres', "SET ROLE alice; UPDATE maileroo_outbox SET status = 'queued'");
like($err, qr/permission denied/, 'a role cannot change its rows directly');

# Cancel before it is sent (in the queueing transaction, so it cannot be
# sent first); another role cannot cancel it.
is($node->safe_psql('postgres', "SET ROLE alice; BEGIN; SELECT $send, reference_id => '" . ref_id(12)
	  . "'); SET ROLE bob; SELECT maileroo_cancel('" . ref_id(12) . "'); SET ROLE alice; SELECT maileroo_cancel('"
	  . ref_id(12) . "'); COMMIT;"),
	ref_id(12) . "\nf\nt", "bob cannot cancel alice's message, alice can");
is($node->safe_psql('postgres', "SET ROLE alice; SELECT maileroo_cancel('" . ref_id(10) . "')"),
	'f', 'a message already sent cannot be cancelled');
usleep(500_000);
is(outbox_row($node, ref_id(12))->{status}, 'cancelled', 'the cancelled message stays cancelled');
ok(!exists mock_refs()->{ ref_id(12) }, 'and is never sent');

# Status.
is($node->safe_psql('postgres',
	'SELECT running, database, queued, sending, sent, failed, cancelled, in_flight FROM maileroo_worker_status()'),
	't|postgres|0|0|4|0|1|0', 'maileroo_worker_status() reports the worker and the queue');

# A burst of 10,000 in one transaction: each delivered exactly once.
mock_reset();
$t0 = time;
$node->safe_psql('postgres',
	"SELECT count(maileroo_send('shop\@example.com', 'user' || i || '\@example.org', 'Burst ' || i, plain => 'hi')) FROM generate_series(1, 10000) i");
ok(wait_all_final($node), 'the burst is delivered');
my $elapsed = time - $t0;
is($node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE status = 'sent' AND attempts = 1) FROM maileroo_outbox WHERE request->>'subject' LIKE 'Burst %'"),
	10000, 'all 10,000 sent in one attempt each');
$refs = mock_refs();
my $once = grep { @{ $refs->{$_} } == 1 && $refs->{$_}[0] == 200 } keys %$refs;
is(scalar(keys %$refs), 10000, 'the mock saw 10,000 distinct messages');
is($once, 10000, 'each exactly once');
my $stats = JSON::PP::decode_json(mock_get('/_mock/stats'));
cmp_ok($stats->{connections}, '<=', 16, "over at most maileroo.concurrency connections ($stats->{connections})");
note(sprintf('burst: 10000 messages in %.1f s', $elapsed));

# Settings reload: concurrency 2 makes 6 slow answers take three rounds
# (at least 3 s); at 16 they take one (two would be 2 s: a round of margin
# for a loaded machine).
mock_reset();
mock_rule({ path => '/emails', delay => 1.0, times => 0 });
$node->append_conf('postgresql.conf', "maileroo.concurrency = 2\n");
$node->reload;
usleep(300_000);
$t0 = time;
$node->safe_psql('postgres',
	"SELECT count(maileroo_send('shop\@example.com', 'r\@example.org', 'Reload ' || i, plain => 'hi')) FROM generate_series(1, 6) i");
wait_all_final($node);
$elapsed = time - $t0;
cmp_ok($elapsed, '>=', 3.0, "after a reload to concurrency 2, 6 answers of 1 s take 3 rounds (${elapsed}s)");
$node->append_conf('postgresql.conf', "maileroo.concurrency = 16\n");
$node->reload;
usleep(300_000);
$t0 = time;
$node->safe_psql('postgres',
	"SELECT count(maileroo_send('shop\@example.com', 'r\@example.org', 'Reload ' || i, plain => 'hi')) FROM generate_series(1, 6) i");
wait_all_final($node);
$elapsed = time - $t0;
cmp_ok($elapsed, '<', 2.0, "back at 16 they take one round (${elapsed}s)");
mock_delete('/_mock/rules');

# Another database: a worker is started on demand, and DROP DATABASE does
# not wait for it.
$node->safe_psql('postgres', 'CREATE DATABASE other');
create_extension($node, 'other');
$node->safe_psql('other', "SELECT $send, reference_id => '" . ref_id(20) . "')");
is(wait_final($node, ref_id(20), 'other')->{status}, 'sent', 'mail queued in another database is sent by an on-demand worker');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'maileroo delivery worker'"),
	2, 'one worker per database');
$t0 = time;
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE other');
is($ret, 0, 'DROP DATABASE is not blocked by its worker') or diag($err);
cmp_ok(time - $t0, '<', 4, 'and does not wait long');

# DROP EXTENSION while the worker is idle, then CREATE again: it follows.
$t0 = time;
$node->safe_psql('postgres', 'SET lock_timeout = 3000; DROP EXTENSION maileroo CASCADE');
cmp_ok(time - $t0, '<', 3, 'DROP EXTENSION does not wait for the worker');
create_extension($node, 'postgres', 'mail');
$node->safe_psql('postgres', "SELECT mail.$send, reference_id => '" . ref_id(21) . "')");
$node->poll_query_until('postgres', "SELECT status = 'sent' FROM mail.maileroo_outbox WHERE reference_id = '" . ref_id(21) . "'")
  or diag('not sent after re-creating the extension');
pass('the worker follows the extension into a new schema');

# Clean shutdown and restart.
$node->stop('fast');
pass('the server stops cleanly');
$node->start;
$node->poll_query_until('postgres', 'SELECT running FROM mail.maileroo_worker_status()')
  or diag('worker not back');
pass('the worker starts with the server');
$node->stop('fast');

done_testing();
