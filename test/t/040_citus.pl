# maileroo on a Citus cluster: a coordinator and two workers on 127.0.0.1.
# CREATE EXTENSION on the coordinator reaches the workers, which run no
# delivery worker and refuse to queue mail; maileroo_distribute() runs on
# the coordinator only; the coordinator's worker delivers; DROP EXTENSION
# leaves nothing behind.
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
create_extension($_) for ($coord, $single);
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

# The coordinator's worker delivers.
$coord->safe_psql('postgres',
	"SELECT maileroo_send('shop\@example.com', 'user1\@example.org', 'Again', plain => 'x', reference_id => '"
	  . ref_id(901) . "')");
is(wait_final($coord, ref_id(901))->{status}, 'sent', 'the coordinator delivers');
is_deeply(mock_refs()->{ ref_id(901) }, [200], 'the mock received it once');

# DROP EXTENSION leaves nothing behind.
$coord->safe_psql('postgres', 'DROP EXTENSION maileroo CASCADE');
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
create_extension($coord);
is($workers[0]->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'maileroo'"),
	1, 'and it can be created again');

$_->stop for ($coord, @workers, $single);
done_testing();
