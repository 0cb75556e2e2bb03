# MailerooOutbox.pm: helpers for the outbox and delivery worker TAP tests.
#
# mock_refs() reads what the mock Maileroo server received, keyed by the
# reference_id of each request; wait_final() waits until a message reaches
# a final state; ref_id(N) makes a recognisable reference_id.
package MailerooOutbox;

use strict;
use warnings;
use Exporter 'import';
use JSON::PP ();
use IPC::Run ();
use Test::More;
use MailerooTest;

our @EXPORT = qw(mock_reset mock_rule mock_requests mock_refs ref_id
  wait_final wait_all_final outbox_row);

sub mock_reset { mock_post('/_mock/reset', '{}'); }

# mock_rule(HASHREF | ARRAYREF): add rules.
sub mock_rule { mock_post('/_mock/rules', JSON::PP::encode_json($_[0])); }

# Every recorded API request, as a list of hashes.
sub mock_requests
{
	my $r = JSON::PP::decode_json(mock_get('/_mock/requests'));
	return ref $r eq 'HASH' ? @{ $r->{requests} } : @$r;
}

# { reference_id => [statuses the mock answered, in order] }.  The
# request list can be large: python3 boils it down first.
my $SUMMARY = <<'PY';
import json, sys, urllib.request
reqs = json.load(urllib.request.urlopen(sys.argv[1] + "/_mock/requests"))
by = {}
for r in reqs:
    j = r.get("json")
    if isinstance(j, dict) and isinstance(j.get("reference_id"), str):
        by.setdefault(j["reference_id"], []).append(
            "hang" if r.get("status") is None else r["status"])
json.dump(by, sys.stdout)
PY

sub mock_refs
{
	my ($out, $err);
	IPC::Run::run([ 'python3', '-c', $SUMMARY, mock_url() ], '>', \$out, '2>', \$err)
	  or die "could not read the mock's requests: $err";
	return JSON::PP::decode_json($out);
}

# A recognisable 24-hex-character reference_id.
sub ref_id { return sprintf('%024x', 0xabc000 + $_[0]); }

# Wait until the message is sent or failed; returns its row.
sub wait_final
{
	my ($node, $ref, $db) = @_;
	$node->poll_query_until($db // 'postgres',
		"SELECT status IN ('sent', 'failed') FROM maileroo_outbox WHERE reference_id = '$ref'")
	  or diag("message $ref did not reach a final state");
	return outbox_row($node, $ref, $db);
}

# Wait until nothing is left to deliver.
sub wait_all_final
{
	my ($node, $db) = @_;
	return $node->poll_query_until($db // 'postgres',
		"SELECT count(*) = 0 FROM maileroo_outbox WHERE status IN ('queued', 'sending', 'retrying')");
}

# The row as a hash (status, attempts, last_http_status, last_error, response).
sub outbox_row
{
	my ($node, $ref, $db) = @_;
	my $out = $node->safe_psql($db // 'postgres',
		"SELECT status, attempts, coalesce(last_http_status, 0), coalesce(last_error, ''),"
		  . " coalesce(response::text, '') FROM maileroo_outbox WHERE reference_id = '$ref'");
	my @f = split /\|/, $out, 5;
	return {
		status => $f[0],
		attempts => $f[1],
		http => $f[2],
		error => $f[3],
		response => $f[4] };
}

1;
