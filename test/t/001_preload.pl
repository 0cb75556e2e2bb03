# The library preloads cleanly, its settings reload, the old secret
# settings are gone, and the extension can be created and dropped in a
# running server.
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

# No setting takes a key, a secret or the API URL any more, wherever it is
# set: they belong to sending accounts.
for my $stmt ("ALTER ROLE postgres SET maileroo.api_key = 'leak-me'",
	"ALTER SYSTEM SET maileroo.api_key = 'leak-me'",
	"ALTER DATABASE postgres SET maileroo.webhook_secret = 'leak-me'",
	"ALTER SYSTEM SET maileroo.api_url = 'http://127.0.0.1:9/leak-me'")
{
	my ($ret, $out, $err) = $node->psql('postgres', $stmt);
	isnt($ret, 0, "refused: $stmt");
	like($err, qr/invalid configuration parameter name|unrecognized configuration parameter/, 'as an unknown setting');
	unlike($err, qr/leak-me/, 'without echoing the value');
}

$node->safe_psql('postgres', 'DROP EXTENSION maileroo');
$node->stop('fast');
pass('server stops cleanly');

done_testing();
