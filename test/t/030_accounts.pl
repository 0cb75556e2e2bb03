# Sending accounts on a running server: no key reaches a non-superuser or
# the server log (log_min_messages = debug5), preloaded or not, after the
# key is created and after it is rotated; two accounts send with their own
# keys (the mock records the Authorization header); a role without USAGE is
# refused; rotating the key in the middle of 2,000 queued messages loses
# and fails none; a key file that others can read is refused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP ();
use Fcntl qw(S_IMODE);
use MailerooTest;
use MailerooOutbox;

my $KEY1 = 'sk-acct-first-7f3a91';
my $KEY2 = 'sk-acct-second-2c5e08';
my $KEY3 = 'sk-acct-third-b41d77';
my $NEWS = 'sk-acct-news-90ae13';
my $FILE1 = 'sk-acct-file-one-5d2c';
my $FILE2 = 'sk-acct-file-two-e8b0';
my @ALL_KEYS = ($KEY1, $KEY2, $KEY3, $NEWS, $FILE1, $FILE2);

sub mock_keys { mock_post('/_mock/keys', JSON::PP::encode_json({ keys => [@_] })); }

# The Authorization header of every recorded request, by reference_id.
sub auth_by_ref
{
	my %auth;
	for my $r (mock_requests())
	{
		next unless ref $r->{json} eq 'HASH' && defined $r->{json}{reference_id};
		push @{ $auth{ $r->{json}{reference_id} } }, $r->{headers}{authorization} // '';
	}
	return \%auth;
}

# Everything a role can see in a fresh session, as text.
sub what_role_sees
{
	my ($node, $role) = @_;
	my $seen = '';
	for my $sql ('SHOW ALL', 'SELECT * FROM pg_settings',
		"SELECT current_setting('maileroo.api_key', true), current_setting('maileroo.webhook_secret', true)",
		'SHOW maileroo.api_key', 'SELECT * FROM pg_file_settings', 'SELECT * FROM pg_stat_activity',
		'SELECT * FROM maileroo_outbox', 'SELECT * FROM pg_user_mappings',
		'SELECT * FROM pg_foreign_server', 'SELECT umoptions FROM pg_user_mapping',
		'SELECT * FROM maileroo_worker_status()')
	{
		my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $role ]);
		$seen .= ($out // '') . ($err // '');
	}
	return $seen;
}

# No key in anything a non-superuser can read, nor in what a superuser
# reads from the settings, the outbox and pg_stat_activity.
sub no_key_visible
{
	my ($node, $when) = @_;
	my $seen = what_role_sees($node, 'app');
	like($seen, qr/maileroo_outbox|reference_id/, "$when: the non-superuser's queries ran");
	unlike($seen, qr/\Q$_\E/, "$when: a non-superuser sees no key ($_)") for @ALL_KEYS;
	my $su = $node->safe_psql('postgres', q{
		SELECT string_agg(name || '=' || coalesce(setting, ''), ' ') FROM pg_settings;
		SELECT string_agg(coalesce(setting, ''), ' ') FROM pg_file_settings;
		SELECT string_agg(coalesce(query, ''), ' ') FROM pg_stat_activity;
		SELECT string_agg(o::text, ' ') FROM maileroo_outbox o;
	});
	unlike($su, qr/\Q$_\E/, "$when: no key in settings, pg_stat_activity or the outbox ($_)")
	  for @ALL_KEYS[0 .. 2];
}

# A cluster, preloaded or not, with the account "shop" and the role "app".
sub setup_node
{
	my ($name, $preload) = @_;
	my $node = new_node($name, "log_min_messages = debug5\nmaileroo.concurrency = 16\n"
		  . ($preload ? '' : "shared_preload_libraries = ''\n"));
	$node->start;
	my $url = mock_url() . '/api/v2';
	$node->safe_psql('postgres', qq{
		CREATE EXTENSION maileroo;
		CREATE SERVER shop FOREIGN DATA WRAPPER maileroo_fdw
			OPTIONS (api_url '$url', domains 'shop.example');
		SET log_statement = 'none';
		CREATE USER MAPPING FOR PUBLIC SERVER shop OPTIONS (api_key '$KEY1');
		RESET log_statement;
		CREATE ROLE app LOGIN;
		GRANT EXECUTE ON FUNCTION
			maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text),
			maileroo_send_now(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text),
			maileroo_worker_status()
			TO app;
		GRANT SELECT ON maileroo_outbox TO app;
		GRANT USAGE ON FOREIGN SERVER shop TO app;
	});
	return $node;
}

sub send_sql
{
	my ($fn, $from, $ref, $extra) = @_;
	return "SELECT $fn('$from', 'jane\@example.org', 'Hello', plain => 'hi', reference_id => '$ref'"
	  . (defined $extra ? ", $extra" : '') . ')';
}

my $n = 0;
for my $preload (1, 0)
{
	my $what = $preload ? 'preloaded' : 'not preloaded';
	mock_reset();
	mock_keys(@ALL_KEYS);
	my $node = setup_node($preload ? 'acct_preload' : 'acct_no_preload', $preload);

	# Created: queued and synchronous mail go out with the key.
	my ($q1, $s1) = (ref_id(++$n), ref_id(++$n));
	$node->safe_psql('postgres', send_sql('maileroo_send', 'orders@shop.example', $q1),
		extra_params => [ '-U', 'app' ]);
	$node->safe_psql('postgres', send_sql('maileroo_send_now', 'orders@shop.example', $s1),
		extra_params => [ '-U', 'app' ]);
	is(wait_final($node, $q1)->{status}, 'sent', "$what: queued mail is sent");
	my $auth = auth_by_ref();
	is_deeply([ $auth->{$q1}[0], $auth->{$s1}[0] ], [ "Bearer $KEY1", "Bearer $KEY1" ],
		"$what: both went out with the account's key");
	no_key_visible($node, "$what, after creation");

	# Rotated in the mapping: the next requests use the new key.
	$node->safe_psql('postgres', "SET log_statement = 'none';\n"
		  . "ALTER USER MAPPING FOR PUBLIC SERVER shop OPTIONS (SET api_key '$KEY2');");
	my ($q2, $s2) = (ref_id(++$n), ref_id(++$n));
	$node->safe_psql('postgres', send_sql('maileroo_send', 'orders@shop.example', $q2),
		extra_params => [ '-U', 'app' ]);
	$node->safe_psql('postgres', send_sql('maileroo_send_now', 'orders@shop.example', $s2),
		extra_params => [ '-U', 'app' ]);
	is(wait_final($node, $q2)->{status}, 'sent', "$what: queued mail is sent after rotation");
	$auth = auth_by_ref();
	is_deeply([ $auth->{$q2}[0], $auth->{$s2}[0] ], [ "Bearer $KEY2", "Bearer $KEY2" ],
		"$what: with the rotated key, without a restart");
	no_key_visible($node, "$what, after rotation");

	# Errors of every kind carry no key.
	mock_rule([ { path => '/api/v2/emails', status => 401 }, { path => '/api/v2/emails', mode => 'nonjson' } ]);
	my $errors = '';
	for (1 .. 2)
	{
		my ($ret, $out, $err) = $node->psql('postgres',
			"\\set VERBOSITY verbose\n" . send_sql('maileroo_send_now', 'orders@shop.example', ref_id(++$n)),
			extra_params => [ '-U', 'app' ]);
		$errors .= $err;
	}
	like($errors, qr/MR401.*MR500/s, "$what: the failures were reported");
	unlike($errors, qr/\Q$KEY2\E|\Q$KEY1\E/, "$what: no error shows the key");
	mock_delete('/_mock/rules');

	if ($preload)
	{
		# Two accounts for two sender domains, each with its own key.
		$node->safe_psql('postgres', qq{
			CREATE SERVER news FOREIGN DATA WRAPPER maileroo_fdw
				OPTIONS (api_url '${\ mock_url()}/api/v2', domains 'news.example');
			SET log_statement = 'none';
			CREATE USER MAPPING FOR PUBLIC SERVER news OPTIONS (api_key '$NEWS');
			RESET log_statement;
			GRANT USAGE ON FOREIGN SERVER news TO app;
		});
		mock_delete('/_mock/requests');
		$node->safe_psql('postgres', q{
			SELECT count(maileroo_send(CASE WHEN i % 2 = 0 THEN 'orders@shop.example' ELSE 'hello@news.example' END,
				'r' || i || '@example.org', 'Two accounts', plain => 'hi')) FROM generate_series(1, 40) i},
			extra_params => [ '-U', 'app' ]);
		wait_all_final($node);
		is($node->safe_psql('postgres',
			"SELECT string_agg(account || ':' || status || ':' || n, ',' ORDER BY account)"
			  . " FROM (SELECT account, status, count(*) n FROM maileroo_outbox"
			  . " WHERE request->>'subject' = 'Two accounts' GROUP BY 1, 2) s"),
			'news:sent:20,shop:sent:20', 'the outbox records each message\'s account; all sent');
		my %pairs;
		for my $r (mock_requests())
		{
			my ($domain) = ($r->{json}{from}{address} // '') =~ /\@(.*)$/;
			$pairs{"$domain $r->{headers}{authorization}"}++;
		}
		is_deeply(\%pairs, { "shop.example Bearer $KEY2" => 20, "news.example Bearer $NEWS" => 20 },
			'each domain went out with its own account\'s key');

		# A role without USAGE is refused when it queues, and nothing is queued.
		$node->safe_psql('postgres', q{
			CREATE ROLE stranger LOGIN;
			GRANT EXECUTE ON FUNCTION maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) TO stranger;
		});
		my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM maileroo_outbox');
		my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n"
			  . send_sql('maileroo_send', 'orders@shop.example', ref_id(++$n)),
			extra_params => [ '-U', 'stranger' ]);
		like($err, qr/42501: permission denied for sending account "shop"/, 'a role without USAGE is refused');
		like($err, qr/GRANT USAGE ON FOREIGN SERVER shop TO stranger/, 'and told what grant it lacks');
		is($node->safe_psql('postgres', 'SELECT count(*) FROM maileroo_outbox'), $before, 'nothing was queued');

		# An account whose key is gone: its mail waits without using attempts.
		$node->safe_psql('postgres', 'DROP USER MAPPING FOR PUBLIC SERVER news');
		my $waiting = ref_id(++$n);
		$node->safe_psql('postgres', send_sql('maileroo_send', 'hello@news.example', $waiting),
			extra_params => [ '-U', 'app' ]);
		$node->poll_query_until('postgres',
			"SELECT status = 'retrying' AND attempts = 0 AND last_error LIKE 'sending account \"news\" has no api_key%'"
			  . " FROM maileroo_outbox WHERE reference_id = '$waiting'")
		  or diag('the message did not wait for its key');
		pass('a message whose account has no key waits, with no attempt used');
		$node->safe_psql('postgres', "SET log_statement = 'none';\n"
			  . "CREATE USER MAPPING FOR PUBLIC SERVER news OPTIONS (api_key '$NEWS');");
		my $row = wait_final($node, $waiting);
		is("$row->{status} $row->{attempts}", 'sent 1', 'and is sent once the key is back, on its first attempt');

		# Rotation in the middle of a burst of 2,000: nothing lost or failed.
		# The mock answers a little slowly so that the burst takes a while,
		# and accepts both keys, as Maileroo does while a rotation is under way.
		mock_reset();
		mock_keys($KEY2, $KEY3);
		mock_rule({ path => '/api/v2/emails', times => 0, delay => 0.02 });
		$node->safe_psql('postgres', q{
			SELECT count(maileroo_send('orders@shop.example', 'r' || i || '@example.org', 'Burst', plain => 'hi'))
			  FROM generate_series(1, 2000) i}, extra_params => [ '-U', 'app' ]);
		$node->poll_query_until('postgres',
			"SELECT count(*) >= 300 FROM maileroo_outbox WHERE request->>'subject' = 'Burst' AND status = 'sent'")
		  or diag('the burst did not start');
		$node->safe_psql('postgres', "SET log_statement = 'none';\n"
			  . "ALTER USER MAPPING FOR PUBLIC SERVER shop OPTIONS (SET api_key '$KEY3');");
		my $sent_at_rotation = $node->safe_psql('postgres',
			"SELECT count(*) FROM maileroo_outbox WHERE request->>'subject' = 'Burst' AND status = 'sent'");
		ok($sent_at_rotation < 2000, "the key was rotated mid-burst ($sent_at_rotation of 2000 sent)");
		$node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM maileroo_outbox WHERE status IN ('queued', 'sending', 'retrying')")
		  or diag('the burst did not finish');
		is($node->safe_psql('postgres',
			"SELECT string_agg(status || ':' || n, ',') FROM (SELECT status, count(*) n FROM maileroo_outbox"
			  . " WHERE request->>'subject' = 'Burst' GROUP BY 1) s"),
			'sent:2000', 'all 2,000 were sent, none failed');
		is($node->safe_psql('postgres',
			"SELECT max(attempts) FROM maileroo_outbox WHERE request->>'subject' = 'Burst'"),
			'1', 'each on its first attempt');
		$auth = auth_by_ref();
		my %by_key;
		my $requests = 0;
		for my $ref (keys %$auth)
		{
			$requests += scalar @{ $auth->{$ref} };
			$by_key{$_}++ for @{ $auth->{$ref} };
		}
		is($requests, 2000, 'one request per message');
		ok(($by_key{"Bearer $KEY3"} // 0) > 0, 'the new key was used for the rest of the burst ('
			  . ($by_key{"Bearer $KEY3"} // 0) . ')');
		cmp_ok($by_key{"Bearer $KEY2"} // 0, '<=', $sent_at_rotation + 64,
			'the old key only for what was sent or in flight at the rotation');
		# The old key revoked at Maileroo: mail still goes out.
		mock_keys($KEY3);
		my $after = ref_id(++$n);
		$node->safe_psql('postgres', send_sql('maileroo_send', 'orders@shop.example', $after),
			extra_params => [ '-U', 'app' ]);
		is(wait_final($node, $after)->{status}, 'sent', 'after the old key is revoked, mail still goes out');

		# The key in a file: rotation by rewriting it; refused once others can read it.
		my $dir = PostgreSQL::Test::Utils::tempdir();
		my $file = "$dir/files.key";
		my $write_key = sub {
			my ($key, $mode) = @_;
			my $tmp = "$file.tmp";
			open my $fh, '>', $tmp or die "cannot write $tmp: $!";
			print $fh "$key\n";
			close $fh;
			chmod $mode, $tmp;
			rename $tmp, $file or die "cannot rename: $!";
		};
		$write_key->($FILE1, 0600);
		mock_keys($KEY3, $FILE1, $FILE2);
		$node->safe_psql('postgres', qq{
			CREATE SERVER files FOREIGN DATA WRAPPER maileroo_fdw
				OPTIONS (api_url '${\ mock_url()}/api/v2', domains 'files.example', api_key_file '$file');
			GRANT USAGE ON FOREIGN SERVER files TO app;
		});
		my ($f1, $f2) = (ref_id(++$n), ref_id(++$n));
		$node->safe_psql('postgres', send_sql('maileroo_send_now', 'a@files.example', $f1),
			extra_params => [ '-U', 'app' ]);
		$write_key->($FILE2, 0400);
		$node->safe_psql('postgres', send_sql('maileroo_send_now', 'a@files.example', $f2),
			extra_params => [ '-U', 'app' ]);
		$auth = auth_by_ref();
		is_deeply([ $auth->{$f1}[0], $auth->{$f2}[0] ], [ "Bearer $FILE1", "Bearer $FILE2" ],
			'a key file is read for every request: rewriting it rotates the key');

		chmod 0644, $file;
		($ret, $out, $err) = $node->psql('postgres',
			send_sql('maileroo_send_now', 'a@files.example', ref_id(++$n)), extra_params => [ '-U', 'app' ]);
		like($err, qr/api_key_file "\Q$file\E" is accessible to other users/,
			'a key file others can read is refused');
		like($err, qr/Its mode is 0644/, 'with its mode');
		unlike($err, qr/\Q$FILE2\E/, 'without the key');
		my $queued = ref_id(++$n);
		$node->safe_psql('postgres', send_sql('maileroo_send', 'a@files.example', $queued),
			extra_params => [ '-U', 'app' ]);
		$node->poll_query_until('postgres',
			"SELECT status = 'retrying' AND attempts = 0 AND last_error LIKE '%is accessible to other users%'"
			  . " FROM maileroo_outbox WHERE reference_id = '$queued'")
		  or diag('the worker sent with a readable key file');
		pass('the worker does not send with it either: the message waits');
		($ret, $out, $err) = $node->psql('postgres',
			"ALTER SERVER files OPTIONS (SET api_key_file '$file')");
		like($err, qr/is accessible to other users/, 'and naming such a file is refused');
		chmod 0600, $file;
		is(wait_final($node, $queued)->{status}, 'sent', 'once its mode is fixed, the waiting message is sent');
		is(S_IMODE((stat $file)[2]), 0600, 'the file was left as the test set it');
	}

	$node->stop('fast');
	my $log = slurp_file($node->logfile);
	like($log, qr/DEBUG/, "$what: the server log is at a debug level");
	unlike($log, qr/\Q$_\E/, "$what: the server log never shows a key ($_)") for @ALL_KEYS;
	unlike($log, qr/Authorization/i, "$what: nor an Authorization header");
}

done_testing();
