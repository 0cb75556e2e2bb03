# The library preloads cleanly, its settings reload, and the extension can
# be created and dropped in a running server.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MailerooTest;

my $node = new_node('preload');
$node->start;

is($node->safe_psql('postgres', 'SHOW maileroo.concurrency'), '16',
	'default concurrency');

$node->append_conf('postgresql.conf', "maileroo.concurrency = 32\n");
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('maileroo.concurrency') = '32'")
  or die "reload not seen";
pass('concurrency follows a reload');

$node->safe_psql('postgres', 'CREATE EXTENSION maileroo');
is($node->safe_psql('postgres', 'SELECT maileroo_version()'),
	$node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'maileroo'"),
	'library and extension versions agree');

# A secret placed in a role setting is refused when it is made.
my ($ret, $out, $err) = $node->psql('postgres',
	"ALTER ROLE postgres SET maileroo.api_key = 'leak-me'");
isnt($ret, 0, 'a per-role api_key is refused');
like($err, qr/cannot be set per database, per role or per function/, 'with a reason');
unlike($err, qr/leak-me/, 'without echoing the value');

# ALTER SYSTEM is the supported way.
$node->safe_psql('postgres', "ALTER SYSTEM SET maileroo.api_key = 'from-alter-system'");
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('maileroo.api_key') = 'from-alter-system'")
  or die "ALTER SYSTEM value not seen";
pass('ALTER SYSTEM sets the api_key');

$node->safe_psql('postgres', 'DROP EXTENSION maileroo');
$node->stop('fast');
pass('server stops cleanly');

done_testing();
