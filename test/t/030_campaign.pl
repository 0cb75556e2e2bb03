# Campaigns through POST /emails/bulk: up to 500 messages per request, a
# request failing as a whole retried as a whole with the same reference ids,
# a message refused alone failing alone, nothing lost in a crash in the
# middle of a 10,000-recipient campaign, and cancel stopping the rest.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP ();
use IPC::Run ();
use MailerooTest;
use MailerooOutbox;

my $conc = 4;
my $node = new_node('campaign', "maileroo.concurrency = $conc\nrestart_after_crash = on\n");
$node->start;
create_extension($node);

# The bulk requests the mock received: [{status, refs => [...], to => [...]}].
my $BULK = <<'PY';
import json, sys, urllib.request
reqs = json.load(urllib.request.urlopen(sys.argv[1] + "/_mock/requests"))
out = []
for r in reqs:
    j = r.get("json")
    if r.get("path", "").endswith("/emails/bulk") and isinstance(j, dict):
        ms = j.get("messages") or []
        out.append({"status": "hang" if r.get("status") is None else r["status"],
                    "refs": [m.get("reference_id") for m in ms],
                    "subject": j.get("subject")})
json.dump(out, sys.stdout)
PY

sub bulk_requests
{
	my ($out, $err);
	IPC::Run::run([ 'python3', '-c', $BULK, mock_url() ], '>', \$out, '2>', \$err)
	  or die "could not read the mock's requests: $err";
	return @{ JSON::PP::decode_json($out) };
}

# campaign(NAME, N, [EXTRA]): queue a campaign of N recipients u1..uN.
sub campaign
{
	my ($name, $n, $extra) = @_;
	$extra //= '';
	return $node->safe_psql('postgres',
		"SELECT queued FROM maileroo_send_campaign('shop\@example.com', '$name', template_id => 5,"
		  . " recipients => ARRAY(SELECT 'u' || i || '\@example.org' FROM generate_series(1, $n) i),"
		  . " recipient_data => ARRAY(SELECT jsonb_build_object('i', i) FROM generate_series(1, $n) i),"
		  . " name => '$name' $extra)");
}

sub counts
{
	my ($name) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE o.status = 'sent') || '/' || count(*)"
		  . "  FROM maileroo_outbox o JOIN maileroo_campaigns c ON c.id = o.campaign_id WHERE c.name = '$name'");
}

sub wait_campaign
{
	my ($name) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM maileroo_outbox o JOIN maileroo_campaigns c ON c.id = o.campaign_id"
		  . " WHERE c.name = '$name' AND o.status IN ('queued', 'sending', 'retrying')");
}

# { reference_id => times the mock answered 200 for it }
sub accepted_times
{
	my %n;
	for my $r (@_)
	{
		next unless $r->{status} eq '200';
		$n{$_}++ for @{ $r->{refs} };
	}
	return \%n;
}

sub refs_of
{
	my ($name, $where) = @_;
	$where //= 'true';
	return split /\n/, $node->safe_psql('postgres',
		"SELECT o.reference_id FROM maileroo_outbox o JOIN maileroo_campaigns c ON c.id = o.campaign_id"
		  . " WHERE c.name = '$name' AND $where ORDER BY 1");
}

# 700 recipients: two requests, 500 and 200 messages; the first bulk
# request is answered 500 and retried as a whole, then answered 200.
mock_reset();
mock_rule({ path => '/emails/bulk', status => 500, times => 1 });
is(campaign('retry', 700), 700, 'a campaign of 700 is queued');
ok(wait_campaign('retry'), 'the campaign is sent');
is(counts('retry'), '700/700', 'every message is sent');
my @reqs = grep { $_->{subject} eq 'retry' } bulk_requests();
is(scalar(@reqs), 3, 'three bulk requests: two, and the one answered 500 again');
my ($failed) = grep { $_->{status} eq '500' } @reqs;
my @sizes = sort { $a <=> $b } map { scalar @{ $_->{refs} } } grep { $_->{status} eq '200' } @reqs;
is("@sizes", '200 500', 'at most 500 messages per request (500 + 200)');
my ($again) = grep {
	$_->{status} eq '200' && join(',', sort @{ $_->{refs} }) eq join(',', sort @{ $failed->{refs} })
} @reqs;
ok($again, 'the failed request was sent again with the same reference ids');
my $times = accepted_times(@reqs);
my @ours = refs_of('retry');
is(scalar(grep { ($times->{$_} // 0) == 1 } @ours), 700, 'each message was accepted exactly once');
is($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT o.attempts::text, ',') FROM maileroo_outbox o WHERE o.reference_id IN ("
	  . join(',', map { "'$_'" } @{ $failed->{refs} }) . ")"),
	'2', 'the messages of the retried request took two attempts');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM maileroo_outbox o JOIN maileroo_campaigns c ON c.id = o.campaign_id"
	  . " WHERE c.name = 'retry' AND o.response->'data'->>'reference_id' = o.reference_id"),
	700, "each row keeps Maileroo's acceptance of its own reference id");

# A message refused alone fails alone; the rest of its request is sent.
mock_reset();
mock_rule({ path => '/emails/bulk', refuse => ['u3@example.org'] });
is(campaign('refuse', 10), 10, 'a campaign of 10 is queued');
ok(wait_campaign('refuse'), 'the campaign is done');
is(counts('refuse'), '9/10', 'nine are sent');
is($node->safe_psql('postgres',
	"SELECT o.status || ': ' || o.last_error FROM maileroo_outbox o JOIN maileroo_campaigns c ON c.id = o.campaign_id"
	  . " WHERE c.name = 'refuse' AND o.status <> 'sent'"),
	'failed: Maileroo accepted the bulk request without this message: its reference_id is missing from data.reference_ids',
	'the refused one failed, saying why');
is($node->safe_psql('postgres',
	"SELECT o.request->'to'->0->>'address' FROM maileroo_outbox o WHERE o.status = 'failed'"),
	'u3@example.org', 'and it is the refused recipient');
is(scalar(grep { $_->{subject} eq 'refuse' } bulk_requests()), 1, 'one request, not retried');

# A request refused as a whole (400) fails every message of it, at once.
mock_reset();
mock_rule({ path => '/emails/bulk', status => 400, message => 'The subject is not allowed.', times => 1 });
campaign('rejected', 3);
ok(wait_campaign('rejected'), 'the rejected campaign is done');
is($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT o.status || ' ' || o.attempts || ' ' || o.last_http_status || ' ' || o.last_error, ',')"
	  . "  FROM maileroo_outbox o JOIN maileroo_campaigns c ON c.id = o.campaign_id WHERE c.name = 'rejected'"),
	'failed 1 400 The subject is not allowed.', 'every message failed with the answer');

# Rows whose campaign was deleted fail, and block nothing else.
mock_reset();
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT maileroo_send_campaign('shop@example.com', 'orphan', plain => 'hi',
		recipients => ARRAY['o1@example.org', 'o2@example.org'], name => 'orphan');
	DELETE FROM maileroo_campaigns WHERE name = 'orphan';
	COMMIT;
});
my $single = ref_id(1);
$node->safe_psql('postgres',
	"SELECT maileroo_send('shop\@example.com', 'jane\@example.org', 'After', plain => 'hi', reference_id => '$single')");
is(wait_final($node, $single)->{status}, 'sent', 'ordinary mail is still sent');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM maileroo_outbox WHERE status = 'failed' AND last_error LIKE 'not sent: its campaign is missing%'"),
	'the messages of a deleted campaign fail, saying why');

# Immediate shutdown in the middle of a 10,000-recipient campaign: after the
# restart every message is sent, none is lost, none is stuck, and a message
# is sent twice only when it was in flight at the crash.
mock_reset();
mock_rule({ path => '/emails/bulk', delay => 0.3, times => 0 });
is(campaign('crash', 10000), 10000, 'a campaign of 10,000 is queued');
$node->poll_query_until('postgres',
	"SELECT count(*) >= 1000 FROM maileroo_outbox WHERE status = 'sent' AND campaign_id IS NOT NULL"
	  . " AND campaign_id = (SELECT id FROM maileroo_campaigns WHERE name = 'crash')")
  or die 'the campaign did not start';
my $sending = $node->safe_psql('postgres', "SELECT count(*) FROM maileroo_outbox WHERE status = 'sending'");
cmp_ok($sending, '<=', $conc * 500, "never more in flight than concurrency x 500 ($sending)");
$node->stop('immediate');
$node->start;
ok(wait_campaign('crash'), 'the campaign finishes after the restart');
is(counts('crash'), '10000/10000', 'every message is sent');
is($node->safe_psql('postgres', "SELECT count(*) FROM maileroo_outbox WHERE status = 'sending'"),
	0, 'none is stuck in sending');
@reqs = grep { $_->{subject} eq 'crash' } bulk_requests();
$times = accepted_times(@reqs);
@ours = refs_of('crash');
is(scalar(grep { ($times->{$_} // 0) >= 1 } @ours), 10000, 'the mock accepted every reference id');
my @dups = grep { $times->{$_} > 1 } @ours;
cmp_ok(scalar(@dups), '<=', $conc * 500, 'duplicates (' . scalar(@dups) . ') at most what was in flight');
if (@dups)
{
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM maileroo_outbox WHERE reference_id IN ("
		  . join(',', map { "'$_'" } @dups) . ") AND last_error LIKE 'delivery was interrupted%'"),
		scalar(@dups), 'every duplicate was in flight at the crash');
}
else
{
	pass('no duplicate');
}
cmp_ok(scalar(grep { scalar(@{ $_->{refs} }) > 500 } @reqs), '==', 0, 'no request carried more than 500');

# Cancel stops the rest: what is in flight finishes, nothing else goes out.
mock_reset();
mock_rule({ path => '/emails/bulk', delay => 1, times => 0 });
$node->safe_psql('postgres', 'ALTER SYSTEM SET maileroo.concurrency = 1');
$node->reload;
is(campaign('cancel', 3000), 3000, 'a campaign of 3,000 is queued');
$node->poll_query_until('postgres',
	"SELECT count(*) >= 500 FROM maileroo_outbox o JOIN maileroo_campaigns c ON c.id = o.campaign_id"
	  . " WHERE c.name = 'cancel' AND o.status = 'sent'")
  or die 'the campaign did not start';
my $cancelled = $node->safe_psql('postgres', "SELECT maileroo_cancel_campaign('cancel')");
cmp_ok($cancelled, '>=', 1000, "cancel stops the rest ($cancelled messages)");
ok(wait_campaign('cancel'), 'nothing is left waiting');
my $summary = $node->safe_psql('postgres',
	"SELECT messages, waiting, sent + cancelled FROM maileroo_campaign_summary WHERE name = 'cancel'");
is($summary, '3000|0|3000', 'every message is sent or cancelled');
is($node->safe_psql('postgres',
	"SELECT cancelled FROM maileroo_campaign_summary WHERE name = 'cancel'"), $cancelled,
	'the summary counts the cancelled');
$times = accepted_times(grep { $_->{subject} eq 'cancel' } bulk_requests());
my @cancelled_refs = refs_of('cancel', "o.status = 'cancelled'");
is(scalar(grep { exists $times->{$_} } @cancelled_refs), 0, 'no cancelled message reached Maileroo');

$node->stop('fast');
done_testing();
