# Delivery that respects the account: the pace Maileroo accepts (429s),
# a circuit breaker for a refused key, priorities, and the operator's
# controls (pause, resume, retry) and status.
#
# Sizes are the smallest that still show each behaviour: 3,000 messages at
# 100/s and 300 at 10/s (about 30 s each), a 20,000-message backlog at
# 50/s that a transactional message overtakes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP ();
use Time::HiRes qw(time usleep);
use MailerooTest;
use MailerooOutbox;

# max_attempts 3: a 429 or a 401 that used up attempts would fail mail.
my $node = new_node('outbox_accounts', <<'CONF');
maileroo.concurrency = 16
maileroo.max_attempts = 3
CONF
$node->start;
create_extension($node, 'postgres');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub mock_key { mock_post('/_mock/limits', JSON::PP::encode_json($_[0])); }

sub mock_stats { return JSON::PP::decode_json(mock_get('/_mock/stats')); }

# queue(N, TAG[, PRIORITY]): N messages in one transaction (with the
# priority campaign mail gets, through the column's default).
sub queue
{
	my ($n, $tag, $prio) = @_;
	my ($pre, $post) = ('', '');
	($pre, $post) = ("ALTER TABLE maileroo_outbox ALTER priority SET DEFAULT $prio; ",
		"; ALTER TABLE maileroo_outbox ALTER priority SET DEFAULT 100") if defined $prio;
	sql("BEGIN; ${pre}SELECT count(maileroo_send('shop\@example.com', 'u' || i || '\@example.org', '$tag ' || i, plain => 'hi')) FROM generate_series(1, $n) i$post; COMMIT");
}

sub counts
{
	my ($tag) = @_;
	return sql("SELECT count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FILTER (WHERE status = 'failed') || '/' || count(*) FROM maileroo_outbox WHERE request->>'subject' LIKE '$tag %'");
}

sub wait_tag
{
	my ($tag) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM maileroo_outbox WHERE request->>'subject' LIKE '$tag %' AND status NOT IN ('sent', 'failed', 'cancelled')");
}

# Each reference_id of TAG answered 200 exactly once by the mock.
sub delivered_once
{
	my ($tag) = @_;
	my $refs = mock_refs();
	my @ours = split /\n/, sql("SELECT reference_id FROM maileroo_outbox WHERE request->>'subject' LIKE '$tag %'");
	my @bad = grep { (scalar grep { $_ eq '200' } @{ $refs->{$_} // [] }) != 1 } @ours;
	return scalar(@bad);
}

# campaign(N, RATE, TAG): N messages against an account Maileroo limits
# to RATE/s (burst RATE, Retry-After: 1).
sub campaign
{
	my ($n, $rate, $tag) = @_;
	mock_reset();
	mock_key({ key => 'test-key', rate_limit => $rate, retry_after => 1 });
	my $t0 = time();
	queue($n, $tag);
	ok(wait_tag($tag), "$tag: the campaign drains");
	my $took = time() - $t0;
	my $stats = mock_stats();
	my $r429 = $stats->{by_status}{429} // 0;
	my $all = $stats->{requests};
	is(counts($tag), "$n/0/$n", "$tag: all $n delivered, none failed");
	cmp_ok($r429, '<=', 0.10 * $all, "$tag: $r429 of $all requests answered 429 (at most 10%)");
	my $allowed = ($n - $rate) / $rate;
	cmp_ok($took, '<=', 1.5 * $allowed + 5,
		sprintf("$tag: %.1f s, within 1.5 x the %.0f s the limit allows + 5 s", $took, $allowed));
	is(delivered_once($tag), 0, "$tag: each message accepted exactly once");
	return $r429;
}

my ($t0, $took);

# 1. Adaptive pacing against Maileroo's limit.
my $r429 = campaign(3000, 100, 'c100');
cmp_ok($r429, '>', 0, 'c100: the limit was reached (the test shows pacing)');
my $st = sql("SELECT state, pace IS NOT NULL, rate_limited_since_start > 0, waiting FROM maileroo_account_status() WHERE account = 'mock'");
is($st, 'sending|t|t|0', 'status: sending again, at a pace learnt from the 429s, nothing waiting');
campaign(300, 10, 'c10');
is(sql("SELECT max(attempts) FROM maileroo_outbox WHERE request->>'subject' LIKE 'c10 %'"), 1,
	'c10: a 429 costs a message no attempt');

# 1b. A configured ceiling below Maileroo's limit: no 429 at all, and
#     never faster than the ceiling allows.
sql("ALTER SERVER mock OPTIONS (ADD rate_limit '40', burst '10')");
mock_reset();
mock_key({ key => 'test-key', rate_limit => 50, retry_after => 1 });
$t0 = time();
queue(200, 'ceiling');
ok(wait_tag('ceiling'), 'ceiling: the campaign drains');
$took = time() - $t0;
is(counts('ceiling'), '200/0/200', 'ceiling: all 200 delivered');
is(mock_stats()->{by_status}{429} // 0, 0, 'ceiling: Maileroo answered no 429');
cmp_ok($took, '>=', (200 - 10) / 40 - 0.5, sprintf('ceiling: %.1f s, no faster than 40/s with a burst of 10', $took));
is(sql("SELECT rate_limit FROM maileroo_account_status() WHERE account = 'mock'"), 40,
	'status: the configured ceiling');
sql("ALTER SERVER mock OPTIONS (DROP rate_limit, DROP burst)");

# 2. Priorities: a transactional message behind a 20,000-message campaign
#    backlog on a 50/s account goes out within 2 s; the campaign keeps going.
mock_reset();
mock_key({ key => 'test-key', rate_limit => 50, retry_after => 1 });
queue(20000, 'bulk', 10);
sleep(3);
is(sql("SELECT waiting_by_priority ? '10' FROM maileroo_account_status() WHERE account = 'mock'"), 't',
	'status: the backlog shows under its priority');
$t0 = time();
my $ref = sql("SELECT maileroo_send('shop\@example.com', 'jane\@example.org', 'password reset', plain => 'hi')");
$node->poll_query_until('postgres', "SELECT status = 'sent' FROM maileroo_outbox WHERE reference_id = '$ref'");
$took = time() - $t0;
cmp_ok($took, '<=', 2, sprintf('priority: the transactional message went out %.2f s after it was queued', $took));
my $bulk_sent = "SELECT count(*) FROM maileroo_outbox WHERE request->>'subject' LIKE 'bulk %' AND status = 'sent'";
my $before = sql($bulk_sent);
sleep(2);
my $sent = sql($bulk_sent) - $before;
# 100 at 50/s; a loaded machine and a 429 pause in the window cost some.
cmp_ok($sent, '>=', 20, "priority: the campaign kept sending ($sent sent in 2 s at 50/s)");
is(sql("SELECT count(*) FROM maileroo_outbox WHERE request->>'subject' LIKE 'bulk %' AND status = 'failed'"), 0,
	'priority: none of the campaign failed');
sql("UPDATE maileroo_outbox SET status = 'cancelled' WHERE request->>'subject' LIKE 'bulk %' AND status IN ('queued', 'retrying')");
wait_tag('bulk');

# 3. Immediate shutdown during a rate-limited campaign loses nothing.
mock_reset();
mock_key({ key => 'test-key', rate_limit => 50, retry_after => 1 });
queue(400, 'crash');
sleep(3);
$node->stop('immediate');
$node->start;
ok(wait_tag('crash'), 'crash: the campaign drains after the restart');
is(counts('crash'), '400/0/400', 'crash: all 400 delivered, none failed');
my $refs = mock_refs();
my @lost = grep { !grep { $_ eq '200' } @{ $refs->{$_} // [] } }
  split /\n/, sql("SELECT reference_id FROM maileroo_outbox WHERE request->>'subject' LIKE 'crash %'");
is(scalar(@lost), 0, 'crash: the mock accepted every message');

# 4. A refused key (401 for every request): nothing fails, the status says
#    why, and sending resumes by itself once the key works again.
mock_reset();
mock_key({ key => 'test-key', revoked => JSON::PP::true });
queue(200, 'auth');
$node->poll_query_until('postgres',
	"SELECT state = 'circuit open' FROM maileroo_account_status() WHERE account = 'mock'")
  or diag('the circuit did not open');
sleep(3);
my $requests = mock_stats()->{requests};
cmp_ok($requests, '<=', 40, "auth: only probes once the key is refused ($requests requests for 200 messages)");
is(sql("SELECT count(*) FROM maileroo_outbox WHERE request->>'subject' LIKE 'auth %' AND status = 'failed'"), 0,
	'auth: nothing failed');
like(sql("SELECT state || ': ' || last_error || ' next probe ' || (next_probe_at IS NOT NULL) FROM maileroo_account_status() WHERE account = 'mock'"),
	qr/^circuit open: HTTP 401: Invalid or missing API key\. next probe true$/, 'auth: the status says why');
like(sql("SELECT last_error FROM maileroo_outbox WHERE request->>'subject' LIKE 'auth %' AND last_http_status = 401 LIMIT 1"),
	qr/API key/, 'auth: the waiting messages say why');
mock_key({ key => 'test-key', revoked => JSON::PP::false });
$t0 = time();
ok(wait_tag('auth'), 'auth: sending resumed by itself after the key was fixed');
note(sprintf('auth: drained %.1f s after the fix', time() - $t0));
is(counts('auth'), '200/0/200', 'auth: all 200 delivered');
is(delivered_once('auth'), 0, 'auth: each delivered once');
is(sql("SELECT max(attempts) FROM maileroo_outbox WHERE request->>'subject' LIKE 'auth %'"), 1,
	'auth: refused requests cost no attempt');
is(sql("SELECT state FROM maileroo_account_status() WHERE account = 'mock'"), 'sending',
	'auth: the status shows sending again');

# 5. Pause and resume.
mock_reset();
is(sql("SELECT maileroo_pause()"), 't', 'pause: all sending paused');
is(sql("SELECT maileroo_pause()"), 'f', 'pause: a second pause says it was paused already');
queue(5, 'paused');
sleep(2);
is(counts('paused'), '0/0/5', 'pause: nothing is sent while paused');
is(mock_stats()->{requests}, 0, 'pause: Maileroo saw no request');
is(sql("SELECT state || ' ' || paused || ' ' || waiting FROM maileroo_account_status() WHERE account = 'mock'"),
	'paused true 5', 'pause: the status shows the account paused with 5 waiting');
is(sql("SELECT maileroo_resume()"), 't', 'resume: true when it was paused');
ok(wait_tag('paused'), 'resume: the paused mail goes out');
is(counts('paused'), '5/0/5', 'resume: all 5 delivered');
is(sql("SELECT maileroo_resume()"), 'f', 'resume: false when nothing was paused');
sql("SELECT maileroo_pause('mock')");
queue(2, 'onepause');
sleep(2);
is(counts('onepause'), '0/0/2', 'pause: one account paused by name');
sql("SELECT maileroo_resume('mock')");
ok(wait_tag('onepause'), 'resume: by name');

# 6. Retry failed mail.
mock_reset();
mock_rule({ path => '/emails', status => 400, times => 3, message => 'The recipient is invalid.' });
queue(3, 'retry');
wait_tag('retry');
is(counts('retry'), '0/3/3', 'retry: three messages failed on a 400');
is(sql("SELECT maileroo_account_status.state FROM maileroo_account_status() WHERE account = 'mock'"), 'sending',
	'retry: a 400 fails the message, not the account');
my ($r1) = split /\n/, sql("SELECT reference_id FROM maileroo_outbox WHERE request->>'subject' LIKE 'retry %' ORDER BY reference_id");
is(sql("SELECT maileroo_retry('$r1')"), 't', 'retry: one failed message by reference_id');
is(wait_final($node, $r1)->{status}, 'sent', 'retry: it is sent');
is(outbox_row($node, $r1)->{attempts}, 1, 'retry: its attempts were reset');
is(sql("SELECT maileroo_retry('$r1')"), 'f', 'retry: a sent message is not retried');
is(sql("SELECT maileroo_retry_failed(since => now() - interval '1 hour', until => now() - interval '30 minutes')"), 0,
	'retry: a time range that matches nothing');
is(sql("SELECT maileroo_retry_failed(since => now() - interval '1 hour')"), 2, 'retry: the other two by time range');
ok(wait_tag('retry'), 'retry: they go out');
is(counts('retry'), '3/0/3', 'retry: all three delivered');
my ($ok, $out, $err) = $node->psql('postgres', "SELECT maileroo_retry_failed(status => 'sent')");
like($err, qr/status must be 'failed' or 'cancelled'/, 'retry: only failed or cancelled mail');

# Operator functions are not PUBLIC's.
sql("CREATE ROLE nobody LOGIN");
for my $f ('maileroo_pause(text)', 'maileroo_resume(text)', 'maileroo_retry(text)',
	'maileroo_retry_failed(timestamptz, timestamptz, text, text)', 'maileroo_account_status()')
{
	is(sql("SELECT has_function_privilege('nobody', '$f', 'EXECUTE')"), 'f', "$f is not executable by PUBLIC");
}

$node->stop('fast');
done_testing();
