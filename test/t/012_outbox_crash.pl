# Crash safety: after an immediate shutdown or a killed worker in the middle
# of a burst, every queued message is still delivered, none is lost, none
# stays in 'sending', and a message is sent twice only when its outcome was
# unknown at the crash (at least once, same reference_id).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use MailerooTest;
use MailerooOutbox;

my $conc = 16;
my $node = new_node('outbox_crash', "maileroo.concurrency = $conc\nrestart_after_crash = on\n");
$node->start;
create_extension($node, 'postgres');

# burst(N, TAG): queue N messages in one transaction.
sub burst
{
	my ($n, $tag) = @_;
	$node->safe_psql('postgres',
		"SELECT count(maileroo_send('shop\@example.com', 'u' || i || '\@example.org', '$tag ' || i, plain => 'hi')) FROM generate_series(1, $n) i");
}

# check(TAG, N): the outcome after a crash in the middle of a burst.
sub check
{
	my ($tag, $n) = @_;
	ok(wait_all_final($node), "$tag: the outbox drains after the restart");
	is($node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FROM maileroo_outbox WHERE request->>'subject' LIKE '$tag %'"),
		"$n/$n", "$tag: every message is sent");
	is($node->safe_psql('postgres', "SELECT count(*) FROM maileroo_outbox WHERE status = 'sending'"),
		0, "$tag: none is stuck in sending");

	my $refs = mock_refs();
	my %ours = map { $_ => 1 } split /\n/, $node->safe_psql('postgres',
		"SELECT reference_id FROM maileroo_outbox WHERE request->>'subject' LIKE '$tag %'");
	my @accepted = grep { my $r = $_; grep { $_ eq '200' } @{ $refs->{$r} // [] } } keys %ours;
	is(scalar(@accepted), $n, "$tag: the mock accepted every reference_id");
	my @dups = grep { (grep { $_ eq '200' } @{ $refs->{$_} // [] }) > 1 } keys %ours;
	cmp_ok(scalar(@dups), '<=', $conc, "$tag: duplicates (" . scalar(@dups) . ") at most the requests in flight");
	if (@dups)
	{
		my $list = join(',', map { "'$_'" } @dups);
		is($node->safe_psql('postgres',
			"SELECT count(*) FROM maileroo_outbox WHERE reference_id IN ($list) AND last_error LIKE 'delivery was interrupted%'"),
			scalar(@dups), "$tag: every duplicate was in flight at the crash");
	}
	else
	{
		pass("$tag: no duplicate");
	}
}

# Immediate shutdown in the middle of a burst of slowed answers.
mock_reset();
mock_rule({ path => '/emails', delay => 0.02, times => 0 });
burst(1500, 'Immediate');
$node->poll_query_until('postgres',
	"SELECT count(*) >= 200 FROM maileroo_outbox WHERE status = 'sent'") or die;
my $sending = $node->safe_psql('postgres', "SELECT count(*) FROM maileroo_outbox WHERE status = 'sending'");
cmp_ok($sending, '<=', $conc, "never more rows in sending than maileroo.concurrency ($sending)");
$node->stop('immediate');
$node->start;
check('Immediate', 1500);

# The worker killed with SIGKILL in the middle of a burst: the postmaster
# restarts every process, the worker comes back and finishes.
mock_reset();
mock_rule({ path => '/emails', delay => 0.02, times => 0 });
burst(1500, 'Killed');
$node->poll_query_until('postgres',
	"SELECT count(*) >= 200 FROM maileroo_outbox WHERE status = 'sent' AND request->>'subject' LIKE 'Killed %'") or die;
my $pid = $node->safe_psql('postgres', 'SELECT pid FROM maileroo_worker_status()');
ok($pid > 0, "the worker's pid is known ($pid)");
kill 'KILL', $pid;
usleep(500_000);
$node->poll_query_until('postgres', 'SELECT running FROM maileroo_worker_status()')
  or diag('worker not back after SIGKILL');
isnt($node->safe_psql('postgres', 'SELECT pid FROM maileroo_worker_status()'), $pid,
	'a new worker took over');
check('Killed', 1500);

# SIGTERM to the worker alone (pg_terminate_backend): it puts what it had in
# flight back in the queue and is restarted.
mock_reset();
mock_rule({ path => '/emails', delay => 0.02, times => 0 });
burst(600, 'Terminated');
$node->poll_query_until('postgres',
	"SELECT count(*) >= 100 FROM maileroo_outbox WHERE status = 'sent' AND request->>'subject' LIKE 'Terminated %'") or die;
$pid = $node->safe_psql('postgres', 'SELECT pid FROM maileroo_worker_status()');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
check('Terminated', 600);

# A fast shutdown while a request hangs: the server does not wait for the
# answer, and the message goes out after the restart.
mock_reset();
mock_rule({ path => '/emails', mode => 'hang', times => 0 });
my $ref = ref_id(500);
$node->safe_psql('postgres',
	"SELECT maileroo_send('shop\@example.com', 'jane\@example.org', 'Hang', plain => 'hi', reference_id => '$ref')");
$node->poll_query_until('postgres', "SELECT status = 'sending' FROM maileroo_outbox WHERE reference_id = '$ref'")
  or diag('not in flight');
my $t0 = time;
$node->stop('fast');
my $took = time - $t0;
cmp_ok($took, '<', 3, "a fast shutdown does not wait for a hung request (${took}s)");
mock_delete('/_mock/rules');
$node->start;
my $row = wait_final($node, $ref);
is($row->{status}, 'sent', 'the interrupted message is sent after the restart');
like($row->{error}, qr/^delivery was interrupted/, 'and says it was interrupted');

$node->stop('fast');
done_testing();
