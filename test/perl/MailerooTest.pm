# MailerooTest.pm: helpers shared by the TAP tests under test/t/.
#
# new_node() makes a PostgreSQL::Test::Cluster with maileroo preloaded and
# pointed at the mock Maileroo server that test/run started (its URL is in
# MAILEROO_MOCK_URL); mock_get/mock_post talk to the mock's control API.
package MailerooTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run ();

our @EXPORT = qw(new_node mock_url mock_get mock_post mock_delete);

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
	my $url = mock_url();
	$node->append_conf('postgresql.conf', <<"CONF");
shared_preload_libraries = 'maileroo'
maileroo.api_url = '$url/api/v2'
maileroo.api_key = 'test-key'
maileroo.timeout = '5s'
maileroo.connect_timeout = '2s'
CONF
	$node->append_conf('postgresql.conf', $extra) if defined $extra;
	return $node;
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
