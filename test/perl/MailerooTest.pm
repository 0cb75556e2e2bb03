# MailerooTest.pm: helpers shared by the TAP tests under test/t/.
#
# new_node() makes a PostgreSQL::Test::Cluster with maileroo preloaded;
# create_extension() installs the extension in a database with a sending
# account "mock" pointed at the mock Maileroo server that test/run started
# (its URL is in MAILEROO_MOCK_URL), key 'test-key' in the PUBLIC user
# mapping; mock_get/mock_post talk to the mock's control API.
package MailerooTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run ();

our @EXPORT = qw(new_node create_extension account_sql mock_url mock_get mock_post mock_delete);

sub mock_url
{
	my $url = $ENV{MAILEROO_MOCK_URL}
	  or die "MAILEROO_MOCK_URL is not set: run the suite through test/run";
	return $url;
}

# new_node(NAME, EXTRA_CONF): an initialised, not yet started node.
sub new_node
{
	my ($name, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', <<"CONF");
shared_preload_libraries = 'maileroo'
maileroo.timeout = '5s'
maileroo.connect_timeout = '2s'
CONF
	$node->append_conf('postgresql.conf', $extra) if defined $extra;
	return $node;
}

# account_sql(NAME, KEY, SERVER_OPTIONS): SQL that creates the sending
# account NAME (default "mock") on the mock, its key (default 'test-key')
# in the PUBLIC user mapping; SERVER_OPTIONS (e.g. "domains 'a.example'")
# are added to api_url.
sub account_sql
{
	my ($name, $key, $options) = @_;
	$name //= 'mock';
	$key //= 'test-key';
	my $url = mock_url() . '/api/v2';
	my $opts = "api_url '$url'" . (defined $options ? ", $options" : '');
	# The way the README says to keep a key out of the statement log.
	return "CREATE SERVER $name FOREIGN DATA WRAPPER maileroo_fdw OPTIONS ($opts);\n"
	  . "SET log_statement = 'none';\n"
	  . "CREATE USER MAPPING FOR PUBLIC SERVER $name OPTIONS (api_key '$key');\n"
	  . "RESET log_statement;\n";
}

# create_extension(NODE, DB, SCHEMA): CREATE EXTENSION maileroo in DB
# (default postgres), in SCHEMA when given, with the account "mock".
sub create_extension
{
	my ($node, $db, $schema) = @_;
	$db //= 'postgres';
	my $sql = defined $schema
	  ? "CREATE SCHEMA $schema; CREATE EXTENSION maileroo SCHEMA $schema;\n"
	  : "CREATE EXTENSION maileroo;\n";
	$node->safe_psql($db, $sql . account_sql());
	return;
}

sub _curl
{
	my @cmd = ('curl', '-sS', '--max-time', '30', @_);
	my ($out, $err);
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err)
	  or die "curl @_ failed: $err";
	return $out;
}

# mock_get(PATH): the mock's answer to GET PATH, as text.
sub mock_get { return _curl(mock_url() . $_[0]); }

# mock_post(PATH, JSON_TEXT)
sub mock_post
{
	return _curl('-X', 'POST', '-H', 'Content-Type: application/json',
		'--data-binary', $_[1], mock_url() . $_[0]);
}

sub mock_delete { return _curl('-X', 'DELETE', mock_url() . $_[0]); }

1;
