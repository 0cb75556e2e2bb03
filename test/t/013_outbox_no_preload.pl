# Without shared_preload_libraries: queued mail still goes out, through a
# worker started on demand for the database that queued it, and
# maileroo_send says what is missing when no worker can be started.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MailerooTest;
use MailerooOutbox;

# One background worker slot, and nothing else using it.
my $node = new_node('outbox_no_preload', <<'CONF');
shared_preload_libraries = ''
max_worker_processes = 1
max_logical_replication_workers = 0
max_parallel_workers = 0
max_parallel_workers_per_gather = 0
CONF
$node->start;
mock_reset();

create_extension($node, 'postgres');
is($node->safe_psql('postgres', 'SELECT running FROM maileroo_worker_status()'),
	'f', 'no worker before any mail is queued');

my $send = "maileroo_send('shop\@example.com', 'jane\@example.org', 'Hello', plain => 'hi'";
$node->safe_psql('postgres', "SELECT $send, reference_id => '" . ref_id(1) . "')");
is(wait_final($node, ref_id(1))->{status}, 'sent', 'mail queued without preloading is sent');
is($node->safe_psql('postgres',
	'SELECT running, pid IS NOT NULL, in_flight IS NULL FROM maileroo_worker_status()'),
	't|t|t', 'maileroo_worker_status() finds the on-demand worker (no shared memory figures)');

# A second transaction reuses the running worker.
my $pid = $node->safe_psql('postgres', 'SELECT pid FROM maileroo_worker_status()');
$node->safe_psql('postgres', "SELECT $send, reference_id => '" . ref_id(2) . "')");
is(wait_final($node, ref_id(2))->{status}, 'sent', 'a second message is sent');
is($node->safe_psql('postgres', 'SELECT pid FROM maileroo_worker_status()'), $pid,
	'by the same worker');

# Another database: the only worker slot is taken, so maileroo_send warns,
# and the message stays queued.
$node->safe_psql('postgres', 'CREATE DATABASE other');
create_extension($node, 'other');
my ($ret, $out, $err) = $node->psql('other', "SELECT $send, reference_id => '" . ref_id(3) . "')");
is($ret, 0, 'maileroo_send succeeds without a worker');
like($err, qr/WARNING:  no delivery worker can be started for database "other"/, 'but warns that nothing can deliver');
like($err, qr/max_worker_processes/, 'and says what is missing');
is(outbox_row($node, ref_id(3), 'other')->{status}, 'queued', 'the message stays queued');

# Once the slot is free, the next transaction starts a worker that sends both.
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$node->poll_query_until('postgres', 'SELECT NOT running FROM maileroo_worker_status()');
$node->safe_psql('other', "SELECT $send, reference_id => '" . ref_id(4) . "')");
is(wait_final($node, ref_id(4), 'other')->{status}, 'sent', 'a later message starts a worker');
is(wait_final($node, ref_id(3), 'other')->{status}, 'sent', 'which sends the waiting one too');

# DROP DATABASE does not wait for that worker.
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE other');
is($ret, 0, 'DROP DATABASE is not blocked by an on-demand worker') or diag($err);

$node->stop('fast');
done_testing();
