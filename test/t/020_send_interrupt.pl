# Synchronous sends against a Maileroo that never answers: statement_timeout,
# query cancel and termination interrupt them within about a second, and the
# backend stays usable.  A server whose certificate does not verify is
# refused.  The API key stays hidden from a non-superuser: not in SHOW,
# pg_settings, pg_stat_activity, an error or the server log.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use IPC::Run ();
use IO::Socket::INET;
use MailerooTest;

# A long timeout, so that only an interrupt can end a hung request early.
my $node = new_node('send_interrupt', "maileroo.timeout = '60s'\n");
$node->start;
create_extension($node);
$node->safe_psql('postgres', q{
	CREATE ROLE sender LOGIN;
	GRANT EXECUTE ON FUNCTION maileroo_send_now(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) TO sender;
	GRANT USAGE ON FOREIGN SERVER mock TO sender;
});

my $send = q{SELECT maileroo_send_now('shop@example.com', 'jane@example.org', 'Hi', plain => 'x')};

sub hang_next
{
	mock_post('/_mock/reset', '{}');
	mock_post('/_mock/rules', '{"path": "/api/v2/emails", "mode": "hang", "times": 1}');
}

# Run SQL in a psql of its own, in the background.
sub start_psql
{
	my ($sql, $user) = @_;
	my ($out, $err) = ('', '');
	# A file, not stdin: IPC::Run feeds stdin only while pumped.
	my $file = PostgreSQL::Test::Utils::tempdir() . '/bg.sql';
	PostgreSQL::Test::Utils::append_to_file($file, "$sql\n");
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=0',
			'-d', $node->connstr('postgres') . " user=" . ($user // 'postgres'),
			'-f', $file ],
		'>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err };
}

# Wait until a backend is inside a send, and return its pid.
sub sending_pid
{
	my $pid;
	for (1 .. 200)
	{
		$pid = $node->safe_psql('postgres',
			q{SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT maileroo_send_now%' AND state = 'active'});
		last if $pid ne '';
		select(undef, undef, undef, 0.05);
	}
	die "no backend is sending" if $pid eq '';
	return $pid;
}

# statement_timeout, then a normal send in the same session.
hang_next();
my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '1s';\n$send;\nRESET statement_timeout;\n$send;\nSELECT 'alive';",
	extra_params => [ '-v', 'ON_ERROR_STOP=0' ]);
my $elapsed = time - $t0;
like($err, qr/canceling statement due to statement timeout/, 'statement_timeout ends a hung send');
cmp_ok($elapsed, '<', 4, "within about a second of the timeout (${elapsed}s for the whole session)");
like($out, qr/^[0-9a-f]{24}\nalive$/m, 'the same backend sends normally afterwards');

# Query cancel from another session.
hang_next();
my $bg = start_psql("$send;\n$send;\nSELECT 'alive';");
my $pid = sending_pid();
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->{h}->finish;
$elapsed = time - $t0;
like(${ $bg->{err} }, qr/canceling statement due to user request/, 'pg_cancel_backend ends a hung send');
cmp_ok($elapsed, '<', 3, "within about a second (${elapsed}s)");
like(${ $bg->{out} }, qr/^[0-9a-f]{24}\nalive$/m, 'the cancelled backend sends normally afterwards');

# Termination.
hang_next();
$bg = start_psql($send);
$pid = sending_pid();
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$bg->{h}->finish;
$elapsed = time - $t0;
like(${ $bg->{err} }, qr/terminating connection due to administrator command/, 'pg_terminate_backend ends a hung send');
cmp_ok($elapsed, '<', 3, "within about a second (${elapsed}s)");

# TLS certificates are verified: a self-signed server is refused before any
# request (and so the key) is sent.
my $tls_dir = PostgreSQL::Test::Utils::tempdir();
my $tls_port = PostgreSQL::Test::Cluster::get_free_port();
my ($req_out, $req_err);
IPC::Run::run(
	[ 'openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
		'-subj', '/CN=127.0.0.1', '-keyout', "$tls_dir/key.pem", '-out', "$tls_dir/cert.pem" ],
	'>', \$req_out, '2>', \$req_err) or die "openssl req failed: $req_err";
my ($tls_out, $tls_err) = ('', '');
my $tls = IPC::Run::start(
	[ 'openssl', 's_server', '-quiet', '-accept', "127.0.0.1:$tls_port", '-cert', "$tls_dir/cert.pem",
		'-key', "$tls_dir/key.pem", '-www' ],
	'>', \$tls_out, '2>', \$tls_err);
my $tls_up = 0;
for (1 .. 100)
{
	if (IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $tls_port, Proto => 'tcp'))
	{
		$tls_up = 1;
		last;
	}
	select(undef, undef, undef, 0.05);
}
ok($tls_up, 'a TLS server with a self-signed certificate is up');
$node->safe_psql('postgres', "ALTER SERVER mock OPTIONS (SET api_url 'https://127.0.0.1:$tls_port/api/v2')");
($ret, $out, $err) = $node->psql('postgres', $send);
$node->safe_psql('postgres', "ALTER SERVER mock OPTIONS (SET api_url '" . mock_url() . "/api/v2')");
like($err, qr/could not reach Maileroo: SSL peer certificate or SSH remote key was not OK/,
	'its certificate is refused, with a message that says why');
$tls->kill_kill;

# The key, as a role allowed to send.
my $as_sender = sub {
	my ($sql) = @_;
	my ($r, $o, $e) = $node->psql('postgres', $sql, extra_params => [ '-U', 'sender' ]);
	return ($o // '') . ($e // '');
};
# (by SQLSTATE: the message's wording differs between PostgreSQL versions)
like($as_sender->("\\set VERBOSITY sqlstate\nSHOW maileroo.api_key"), qr/ERROR:  42704/,
	'no setting holds the key');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE name ~ 'api_key|api_url|secret'},
		extra_params => [ '-U', 'sender' ]), '0', 'pg_settings lists none');
like($as_sender->('SELECT setting FROM pg_file_settings'), qr/permission denied/,
	'pg_file_settings is not readable');
like($as_sender->('SELECT umoptions FROM pg_user_mapping'), qr/permission denied/,
	'the user mappings are not readable');
unlike($as_sender->('SELECT * FROM pg_user_mappings'), qr/test-key/,
	'nor their options through pg_user_mappings');
like($as_sender->("ALTER SERVER mock OPTIONS (SET api_url 'http://127.0.0.1:9/api/v2')"), qr/must be owner of foreign server/,
	'a sender cannot point the account elsewhere');

# While a send is in flight, pg_stat_activity shows the statement only.
hang_next();
$bg = start_psql($send, 'sender');
$pid = sending_pid();
my $activity = $node->safe_psql('postgres',
	"SELECT query FROM pg_stat_activity WHERE pid = $pid", extra_params => [ '-U', 'sender' ]);
unlike($activity, qr/test-key/, 'pg_stat_activity does not show the key');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->{h}->finish;

# Errors of every kind carry no key.
mock_post('/_mock/reset', '{}');
mock_post('/_mock/rules', '[{"path": "/api/v2/emails", "status": 401}, {"path": "/api/v2/emails", "mode": "nonjson"}, {"path": "/api/v2/emails", "mode": "drop", "times": 2}]');
my $errors = '';
$errors .= $as_sender->("\\set VERBOSITY verbose\n$send") for 1 .. 3;
like($errors, qr/MR401.*MR500.*MR000/s, 'the failures were reported');
unlike($errors, qr/test-key/, 'no error shows the key');

$node->stop('fast');
my $log = slurp_file($node->logfile);
unlike($log, qr/test-key/, 'the server log never shows the key');
unlike($log, qr/Authorization/i, 'nor an Authorization header');

done_testing();
