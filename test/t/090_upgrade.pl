# Upgrading from every released version gives the same objects as a fresh
# install.  Released install scripts live in test/upgrade/ (see its README);
# test/run installs them beside the current build.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MailerooTest;

my $top = $ENV{MAILEROO_TOP} or die "MAILEROO_TOP is not set";
my @released = sort map { m{maileroo--([0-9.]+)\.sql$} ? $1 : () }
  glob("$top/test/upgrade/maileroo--*.sql");

my $node = new_node('upgrade');
$node->start;

# Every member object of the extension, described with its definition, so
# that two installs can be compared as text.
my $catalog = <<'SQL';
WITH members AS (
	SELECT d.classid, d.objid, d.objsubid
	  FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
	 WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'maileroo'
	   AND d.deptype = 'e'
)
SELECT pg_describe_object(classid, objid, objsubid) || ': ' ||
	CASE classid
	WHEN 'pg_proc'::regclass THEN pg_get_functiondef(objid) || coalesce(' ACL ' || (SELECT proacl::text FROM pg_proc WHERE oid = objid), '')
	WHEN 'pg_class'::regclass THEN (
		SELECT c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' ' ||
			coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ||
				CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END ||
				coalesce(' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid), ''), ', ' ORDER BY a.attnum)
				FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
				WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') ||
			coalesce(' VIEW ' || pg_get_viewdef(c.oid), '') ||
			coalesce(' PARTITION ' || pg_get_expr(c.relpartbound, c.oid), '') ||
			coalesce((SELECT ' INDEXES ' || string_agg(pg_get_indexdef(i.indexrelid), '; ' ORDER BY 1)
				FROM pg_index i WHERE i.indrelid = c.oid), '') ||
			coalesce((SELECT ' CONSTRAINTS ' || string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname)
				FROM pg_constraint WHERE conrelid = c.oid), '') ||
			coalesce((SELECT ' TRIGGERS ' || string_agg(pg_get_triggerdef(oid), '; ' ORDER BY tgname)
				FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal), '') ||
			coalesce((SELECT ' POLICIES ' || string_agg(polname || ' ' || polcmd::text || ' ' ||
					coalesce(pg_get_expr(polqual, polrelid), '') || ' ' ||
					coalesce(pg_get_expr(polwithcheck, polrelid), ''), '; ' ORDER BY polname)
				FROM pg_policy WHERE polrelid = c.oid), '') ||
			CASE WHEN c.relrowsecurity THEN ' RLS' ELSE '' END
		FROM pg_class c WHERE c.oid = objid)
	WHEN 'pg_type'::regclass THEN format_type(objid, NULL)
	WHEN 'pg_foreign_data_wrapper'::regclass THEN (
		SELECT 'HANDLER ' || fdwhandler::regproc::text || ' VALIDATOR ' || fdwvalidator::regproc::text ||
			coalesce(' OPTIONS ' || fdwoptions::text, '') || coalesce(' ACL ' || fdwacl::text, '')
		  FROM pg_foreign_data_wrapper WHERE oid = objid)
	ELSE ''
	END ||
	coalesce(' COMMENT ' || obj_description(objid, classid::regclass::name), '')
  FROM members
 ORDER BY 1;
SQL

sub describe
{
	my ($db) = @_;
	return $node->safe_psql($db, $catalog);
}

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION maileroo');
my $fresh = describe('fresh');
ok(length($fresh) > 1000, 'the catalog description of a fresh install is substantial');

# The comparison notices a change: a drifted function body or a lost index.
$node->safe_psql('postgres', 'CREATE DATABASE drifted');
$node->safe_psql('drifted', 'CREATE EXTENSION maileroo');
$node->safe_psql('drifted', 'DROP INDEX maileroo_events_tags_idx');
isnt(describe('drifted'), $fresh, 'a dropped index is told apart from a fresh install');

foreach my $version (@released)
{
	my $db = "from_" . ($version =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION maileroo VERSION '$version'");
	$node->safe_psql($db, 'ALTER EXTENSION maileroo UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'maileroo'"),
		$node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'maileroo'"),
		"$version updates to the current version");
	is(describe($db), $fresh, "$version updated has the objects of a fresh install");
}
note(@released ? "released versions checked: @released" : 'no released version yet');

$node->stop('fast');
done_testing();
