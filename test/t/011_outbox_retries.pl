# How each kind of answer from Maileroo ends: sent, retried (with backoff,
# honouring Retry-After) or failed at once, with the attempts, the HTTP
# status and the error recorded.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MailerooTest;
use MailerooOutbox;

my $node = new_node('outbox_retries', <<'CONF');
maileroo.max_attempts = 3
maileroo.timeout = '1s'
maileroo.concurrency = 4
CONF
$node->start;
create_extension($node, 'postgres');

my $n = 100;

# try(RULES, EXPECTED_STATUS, ATTEMPTS, HTTP, ERROR_RE, NAME): send one
# message with the rules in place and check how it ends.
sub try
{
	my ($rules, $status, $attempts, $http, $error_re, $name) = @_;
	my $ref = ref_id(++$n);
	mock_reset();
	mock_rule($rules) if $rules;
	$node->safe_psql('postgres',
		"SELECT maileroo_send('shop\@example.com', 'jane\@example.org', '$name', plain => 'hi', reference_id => '$ref')");
	my $row = wait_final($node, $ref);
	is($row->{status}, $status, "$name: $status");
	is($row->{attempts}, $attempts, "$name: $attempts attempt(s)");
	is($row->{http}, $http, "$name: last HTTP status $http");
	like($row->{error}, $error_re, "$name: last error") if defined $error_re;
	my $seen = mock_refs()->{$ref} // [];
	is(scalar(@$seen), $attempts, "$name: the mock saw $attempts request(s) with the same reference_id");
	return $row;
}

try(undef, 'sent', 1, 200, qr/^$/, 'success');
try({ path => '/emails', status => 500, times => 0 },
	'failed', 3, 500, qr/./, '500 every time');
try({ path => '/emails', status => 503, times => 1 },
	'sent', 2, 200, qr/./, '503 then success');
try({ path => '/emails', mode => 'nonjson', status => 502, times => 1 },
	'sent', 2, 200, qr/./, 'a proxy error page then success');
try({ path => '/emails', status => 408, times => 1 },
	'sent', 2, 200, qr/./, '408 then success');
try({ path => '/emails', delay => 2, times => 1 },
	'sent', 2, 200, qr/time/i, 'a timeout then success');
try({ path => '/emails', mode => 'hang', times => 1 },
	'sent', 2, 200, qr/time/i, 'a hung connection then success');

# A connection dropped without an answer: libcurl itself sends the request
# again at once when the dropped connection was a reused keep-alive one
# (same body, so the same reference_id); otherwise the worker retries.
{
	my $ref = ref_id(++$n);
	mock_reset();
	mock_rule({ path => '/emails', mode => 'drop', times => 1 });
	$node->safe_psql('postgres',
		"SELECT maileroo_send('shop\@example.com', 'jane\@example.org', 'drop', plain => 'hi', reference_id => '$ref')");
	my $row = wait_final($node, $ref);
	is($row->{status}, 'sent', 'a dropped connection then success: sent');
	ok($row->{attempts} == 1 || $row->{attempts} == 2, "a dropped connection: $row->{attempts} attempt(s)");
	is_deeply(mock_refs()->{$ref}, [0, 200], 'a dropped connection: the mock saw the same reference_id twice');
}
try({ path => '/emails', mode => 'malformed', times => 1 },
	'failed', 1, 200, qr/outcome unknown, not retried/, 'a malformed 2xx');
try({ path => '/emails', mode => 'success_false', times => 1 },
	'failed', 1, 200, qr/./, 'a 2xx with success:false');
try({ path => '/emails', status => 400, times => 1 },
	'failed', 1, 400, qr/./, '400');
try({ path => '/emails', status => 401, times => 1 },
	'failed', 1, 401, qr/./, '401');

# 429 with Retry-After: the retry waits at least that long.
my $ref = ref_id(++$n);
mock_reset();
mock_rule({ path => '/emails', status => 429, retry_after => 2, times => 1 });
$node->safe_psql('postgres',
	"SELECT maileroo_send('shop\@example.com', 'jane\@example.org', 'rate limited', plain => 'hi', reference_id => '$ref')");
my $row = wait_final($node, $ref);
is($row->{status}, 'sent', '429 with Retry-After then success: sent');
is($row->{attempts}, 2, '429: 2 attempts');
my @times = map { $_->{time} } grep { ref $_->{json} eq 'HASH' && ($_->{json}{reference_id} // '') eq $ref } mock_requests();
is(scalar(@times), 2, '429: the mock saw 2 requests');
cmp_ok($times[1] - $times[0], '>=', 1.9, sprintf('429: the retry honoured Retry-After: 2 (%.2f s later)', $times[1] - $times[0]));

# The worker reports the last error.
like($node->safe_psql('postgres', 'SELECT last_error FROM maileroo_worker_status()'),
	qr/./, 'maileroo_worker_status() shows the last error');

# A message due later is not sent before its time, then on time.
$ref = ref_id(++$n);
mock_reset();
mock_rule({ path => '/emails', status => 503, retry_after => 3, times => 1 });
$node->safe_psql('postgres',
	"SELECT maileroo_send('shop\@example.com', 'jane\@example.org', 'later', plain => 'hi', reference_id => '$ref')");
$node->poll_query_until('postgres', "SELECT status = 'retrying' FROM maileroo_outbox WHERE reference_id = '$ref'");
my $due = $node->safe_psql('postgres',
	"SELECT round(extract(epoch FROM next_attempt_at - now()))::int FROM maileroo_outbox WHERE reference_id = '$ref'");
cmp_ok($due, '>=', 2, "retry scheduled after Retry-After ($due s)");
sleep(1);
is(outbox_row($node, $ref)->{status}, 'retrying', 'not sent before it is due');
is(wait_final($node, $ref)->{status}, 'sent', 'sent once due');

$node->stop('fast');
done_testing();
