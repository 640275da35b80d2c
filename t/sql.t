#!/usr/bin/perl
# t/sql.t: the SQL tests under prove (t/sql/run.sh does the same in sh).
# A scratch database on the server of the PG* environment is migrated with
# sql/migrate, then every t/sql/*.sql runs with psql -X -v ON_ERROR_STOP=1.
use strict;
use warnings;
use Test::More;
use File::Basename qw(dirname basename);
use Cwd qw(abs_path);

my $root  = abs_path(dirname(__FILE__) . '/..');
my $maint = $ENV{PGMAINTDB} || 'postgres';
my $db    = "metacloud_test_$$";
my $psql  = 'psql -X -q -v ON_ERROR_STOP=1';
sub shq { my $s = shift; $s =~ s/'/'\\''/g; return "'$s'" }
sub run { my $out = `$_[0] 2>&1`; return ($? == 0, $out) }

my ($ok, $out) = run("$psql -d " . shq($maint) . ' -c ' . shq(qq{CREATE DATABASE "$db"}));
plan skip_all => "no PostgreSQL to test against (PG* environment): $out" unless $ok;
my $created = 1;
END { run("$psql -d " . shq($maint) . ' -c ' . shq(qq{DROP DATABASE IF EXISTS "$db"})) if $created }

my $migrate = "PGDATABASE=$db " . shq("$root/sql/migrate");
($ok, $out) = run($migrate);
ok($ok, 'sql/migrate') or diag($out);
my ($latest) = sort { $b <=> $a }
               map { m{/0*(\d+)_[^/]*\.sql$} ? $1 : () }
               glob("$root/sql/[0-9][0-9][0-9]_*.sql");
($ok, $out) = run($migrate);
ok($ok && $out =~ /^nothing to apply \(schema version $latest\)$/m,
   'sql/migrate again applies nothing') or diag($out);

for my $file (sort glob("$root/t/sql/*.sql")) {
    ($ok, $out) = run("$psql -o /dev/null -d $db -f " . shq($file));
    ok($ok, 't/sql/' . basename($file)) or diag($out);
}
done_testing();
