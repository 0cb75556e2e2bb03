# maileroo on a Citus cluster: a coordinator and two workers on 127.0.0.1.
# CREATE EXTENSION on the coordinator reaches the workers, which run no
# delivery worker and refuse to queue mail; maileroo_distribute() spreads
# the events over the workers by message; ingest counts new events right
# and stays idempotent; the analytics give the numbers a single node gives
# for the same events; bounces suppress the next send; the coordinator's
# worker delivers; DROP EXTENSION leaves nothing behind.
#
# Runs when test/run unpacked Citus into the server tree (see
# mr_citus_archive in test/lib.sh), and is skipped, saying why, otherwise.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MailerooTest;
use MailerooOutbox;
use JSON::PP ();

my $pkglibdir = `pg_config --pkglibdir`;
chomp $pkglibdir;
if (!-f "$pkglibdir/citus.so")
{
	plan skip_all => 'Citus is not installed in this server tree: '
	  . ($ENV{MAILEROO_CITUS_MISSING} || "no citus.so in $pkglibdir");
}

my $conf = <<'CONF';
shared_preload_libraries = 'citus,maileroo'
listen_addresses = '127.0.0.1'
TimeZone = 'UTC'
max_connections = 40
citus.shard_count = 4
CONF
my $coord = new_node('citus_coordinator', $conf);
my @workers = map { new_node("citus_worker$_", $conf) } (1, 2);
my $single = new_node('single_node', "TimeZone = 'UTC'\n");
$_->start for ($coord, @workers, $single);
mock_reset();

$_->safe_psql('postgres', 'CREATE EXTENSION citus') for ($coord, @workers);
$coord->safe_psql('postgres',
	"SELECT citus_set_coordinator_host('127.0.0.1', " . $coord->port . ')');
$coord->safe_psql('postgres', "SELECT citus_add_node('127.0.0.1', " . $_->port . ')')
  for @workers;

# CREATE EXTENSION on the coordinator reaches the workers.
$coord->safe_psql('postgres', 'CREATE EXTENSION maileroo');
$single->safe_psql('postgres', 'CREATE EXTENSION maileroo');
for my $w (@workers)
{
	is($w->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'maileroo'"),
		1, $w->name . ': CREATE EXTENSION maileroo was propagated');
}

# Workers run no delivery worker, and refuse to queue mail.
my $no_worker =
  "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'maileroo delivery worker'";
for my $w (@workers)
{
	ok($w->poll_query_until('postgres', $no_worker),
		$w->name . ': no delivery worker runs on a worker node');
	like(slurp_file($w->logfile),
		qr/delivery worker leaves database "postgres", which is on a Citus worker node/,
		$w->name . ': the worker said why it left');
	my ($ret, $out, $err) = $w->psql('postgres',
		"SELECT maileroo_send('shop\@example.com', 'a\@example.org', 'Hi', plain => 'x')");
	like($err, qr/mail cannot be queued on a Citus worker node/,
		$w->name . ': maileroo_send is refused on a worker node');
}
$coord->poll_query_until('postgres', 'SELECT running FROM maileroo_worker_status()')
  or die 'no delivery worker on the coordinator';
pass('the coordinator runs the delivery worker');

# maileroo_distribute(): only on the coordinator.
my ($ret, $out, $err) = $workers[0]->psql('postgres', 'SELECT maileroo_distribute()');
like($err, qr/must be called on the Citus coordinator/, 'maileroo_distribute() is refused on a worker');
($ret, $out, $err) = $single->psql('postgres', 'SELECT maileroo_distribute()');
like($err, qr/citus is not installed in this database/, 'and where citus is not installed');

my $placement = $coord->safe_psql('postgres',
	q{SELECT string_agg(relation::text || ': ' || placement, E'\n' ORDER BY relation::text)
	    FROM maileroo_distribute()});
like($placement, qr/^maileroo_events: distributed on message_reference_id$/m,
	'the events are distributed on message_reference_id');
like($placement, qr/^maileroo_outbox: local to the coordinator$/m, 'the outbox stays on the coordinator');
is($coord->safe_psql('postgres',
		q{SELECT count(*) FROM pg_dist_partition
		   WHERE logicalrelid = ANY (ARRAY['maileroo_events', 'maileroo_events_delivered']::regclass[])
		     AND column_to_column_name(logicalrelid, partkey) = 'message_reference_id'}),
	2, 'parent and partitions are hash-distributed on message_reference_id');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_partition
	WHERE logicalrelid = 'maileroo_outbox'::regclass}), 0, 'the outbox is not a Citus table');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM maileroo_distribute()'),
	$coord->safe_psql('postgres', 'SELECT count(*) FROM maileroo_distribute()'),
	'maileroo_distribute() may be called again');

# Mail: twenty messages through the outbox on both installs, so that the
# views have the same outbox to join; forty messages' worth of events.
my $base = 1764547200;    # 2025-12-01 00:00 UTC
sub mref { return sprintf('%024x', 0xc17000 + $_[0]); }
my $sends = join(";\n",
	map {
		"SELECT maileroo_send('Shop <shop\@example.com>', 'user$_\@example.org', 'Hello $_', plain => 'hi',"
		  . " tags => '{\"campaign\": \"c" . ($_ % 3) . "\"}', reference_id => '" . mref($_) . "')"
	} 1 .. 20);
$_->safe_psql('postgres', $sends) for ($coord, $single);

my @events;
for my $i (1 .. 40)
{
	my $t = $base + ($i % 3) * 86400 + $i * 60;
	my $to = "user$i\@example.org";
	my $tags = { campaign => 'c' . ($i % 3) };
	my $ev = sub {
		my ($type, $dt, $data, $suffix) = @_;
		push @events, {
			event_id => "ev-$i-$type" . ($suffix // ''),
			event_type => $type,
			event_time => $t + $dt,
			message_id => "<m$i\@mail.example.com>",
			message_reference_id => mref($i),
			tags => $tags,
			event_data => $data,
		};
	};
	$ev->('accepted', 0, {});
	$ev->('delivered', 5, { to => $to }) if $i % 5;
	$ev->('opened', 60, { ip => '192.0.2.1', user_agent => 'UA' }) if $i % 3 == 0;
	$ev->('opened', 600, { ip => '192.0.2.2', user_agent => 'UA' }, '-2') if $i % 6 == 0;
	$ev->('clicked', 700, { original_url => 'https://example.com/' }) if $i % 4 == 0;
	$ev->('deferred', 2, { to => $to, reason => '451 4.7.1 try later' }) if $i % 7 == 0;
	$ev->('failed', 9, { to => "bounce$i\@example.org", reason => '550 5.1.1 user unknown' })
	  if $i % 10 == 0;
	$ev->('complained', 900, { to => 'complain@example.org' }) if $i == 9;
}
my $json = JSON::PP->new->canonical;
my $body = $json->encode(\@events);
my $n = scalar @events;

is($coord->safe_psql('postgres', "SELECT maileroo_ingest(\$b\$$body\$b\$)"),
	$n, "maileroo_ingest counts $n new events on Citus");
is($single->safe_psql('postgres', "SELECT maileroo_ingest(\$b\$$body\$b\$)"),
	$n, 'and on a single node');
is($coord->safe_psql('postgres', "SELECT maileroo_ingest(\$b\$$body\$b\$)"),
	0, 'the same body again: no new event');
my @mixed = (@events[0 .. 9], {
		event_id => 'ev-late', event_type => 'opened', event_time => $base + 3600,
		message_reference_id => mref(1), event_data => {}, tags => { campaign => 'c1' } });
my $mixed = $json->encode(\@mixed);
is($coord->safe_psql('postgres', "SELECT maileroo_ingest(\$b\$$mixed\$b\$)"),
	1, 'ten repeats and one new event: one');
$single->safe_psql('postgres', "SELECT maileroo_ingest(\$b\$$mixed\$b\$)");
is($coord->safe_psql('postgres', 'SELECT count(*) FROM maileroo_events'),
	$n + 1, 'every event is stored once');

# The events live on the workers, spread over both.
my $per_node = $coord->safe_psql('postgres',
	q{SELECT string_agg(nodeport || '=' || n, ',' ORDER BY nodeport)
	    FROM (SELECT nodeport, sum(result::bigint) AS n
	            FROM run_command_on_placements('maileroo_events', 'SELECT count(*) FROM %s')
	           GROUP BY nodeport) s});
my %on = map { split /=/ } split /,/, $per_node;
my $sum = 0;
$sum += $_ for values %on;
is($sum, $n + 1, 'the shards hold every event');
ok(($on{ $workers[0]->port } // 0) > 0 && ($on{ $workers[1]->port } // 0) > 0,
	"both workers hold events ($per_node)");
is($on{ $coord->port } // 0, 0, 'the coordinator holds none');

# The analytics views: the numbers a single node gives.
wait_all_final($_) for ($coord, $single);
my %queries = (
	daily => 'SELECT * FROM maileroo_daily_stats ORDER BY day',
	status => q{SELECT reference_id, recipients, subject, tags, status, delivered_at, first_opened_at,
					   opens, clicks, deferrals, failed_at, failure_reason, bounce_class,
					   rejected_at, complained_at, last_event_type, last_event_at
				  FROM maileroo_message_status ORDER BY reference_id},
	one_status => "SELECT opens, clicks, last_event_type FROM maileroo_message_status WHERE reference_id = '"
	  . mref(6) . "'",
	by_tag => q{SELECT * FROM maileroo_stats_by_tag('campaign', '2000-01-01', '2100-01-01') ORDER BY 1},
);
for my $q (sort keys %queries)
{
	my ($cret, $cout, $cerr) = $coord->psql('postgres', $queries{$q});
	is($cerr, '', "$q: Citus plans it");
	my $want = $single->safe_psql('postgres', $queries{$q});
	isnt($want, '', "$q: the single node has an answer");
	is($cout, $want, "$q: the same answer as a single node");
}

# Suppressions fed by a bounce and a complaint are honoured by the next send.
for my $addr ('bounce10@example.org', 'complain@example.org')
{
	is($coord->safe_psql('postgres', "SELECT maileroo_is_suppressed('$addr')"),
		't', "$addr is suppressed");
}
$coord->safe_psql('postgres',
	"SELECT maileroo_send('shop\@example.com', 'Bounce10\@example.org', 'Again', plain => 'x', reference_id => '"
	  . ref_id(900) . "')");
is($coord->safe_psql('postgres', "SELECT status FROM maileroo_outbox WHERE reference_id = '" . ref_id(900) . "'"),
	'suppressed', 'the next send to a bounced address is not mailed');

# The coordinator's worker delivers.
$coord->safe_psql('postgres',
	"SELECT maileroo_send('shop\@example.com', 'user1\@example.org', 'Again', plain => 'x', reference_id => '"
	  . ref_id(901) . "')");
is(wait_final($coord, ref_id(901))->{status}, 'sent', 'the coordinator delivers');
is_deeply(mock_refs()->{ ref_id(901) }, [200], 'the mock received it once');
ok(!exists mock_refs()->{ ref_id(900) }, 'and not the suppressed one');

# DROP EXTENSION, with the events distributed, leaves nothing behind.
$coord->safe_psql('postgres', 'DROP EXTENSION maileroo');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_dist_partition}), 0,
	'DROP EXTENSION removes the distributed tables');
for my $node ($coord, @workers)
{
	is($node->safe_psql('postgres',
			"SET citus.show_shards_for_app_name_prefixes = '*';"
			  . " SELECT count(*) FROM pg_class WHERE relname LIKE 'maileroo%'"),
		0, $node->name . ': no table or shard is left');
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'maileroo'"),
		0, $node->name . ': the extension is gone');
}
$coord->safe_psql('postgres', 'CREATE EXTENSION maileroo');
is($workers[0]->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'maileroo'"),
	1, 'and it can be created again');

$_->stop for ($coord, @workers, $single);
done_testing();
