#!/usr/bin/perl
# t/75-schema.t: the module refuses to serve a database whose schema it
# cannot use (docs/DESIGN.md section 1: "the database schema is older than the
# module: 503, and a clear error-log line, nothing kept: Meta retries"):
#
#   1. a migrated database whose recorded schema version is below the
#      module's (those rows deleted from metacloud_schema_migrations: the real
#      metacloud_schema_version() with its real grant then reports less)
#      -> 503 within metacloud_db_timeout, an error-log line naming the
#      version found, the version needed and sql/migrate, nothing stored;
#      after `sql/migrate` (what the log line says to run) the same body is
#      re-sent like Meta does until 200, and stored once;
#   2. a database without the migrations at all (createdb; the
#      metacloud_module role exists cluster-wide, so the connection itself
#      succeeds) -> 503 and an error-log line pointing at sql/migrate; after
#      `sql/migrate` on that database -> 200, stored once.
#
# Run: make test T=t/75-schema.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use MCTest;

our $TODO;

my $t = MCTest->new(name => 'schema');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $TIMEOUT = 2;                        # metacloud_db_timeout, seconds
my $tf = $t->timeout_factor;
my $JSON = JSON::PP->new;
my $WAMID = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=';

# the version the module needs (MC_SCHEMA_VERSION), and the newest migration
my ($NEED) = MCTest::_read_file($t->root . '/src/core/mc_core.h')
             =~ /#define\s+MC_SCHEMA_VERSION\s+(\d+)/;
my ($LATEST) = sort { $b <=> $a }
               map { m{/0*(\d+)_[^/]*\.sql$} ? $1 : () }
               glob($t->root . '/sql/[0-9][0-9][0-9]_*.sql');

my $CONF = <<'EOF';
metacloud_db "%%DB%%";
metacloud_db_timeout 2s;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
    }
}
EOF

# ----------------------------------------------------------------------
# helpers

sub migrate {
    my ($db) = @_;
    local $ENV{PGDATABASE} = $db;
    my $out = `$ENV{MC_ROOT}/sql/migrate 2>&1`;
    my $rc = $? >> 8;
    return ($rc, $out);
}

# one POST: (status, decoded body or undef, seconds, raw body)
sub post_timed {
    my ($tt, $body) = @_;
    my $t0 = time;
    my ($st, $h, $b) = eval { $tt->post_signed($URI, $body) };
    my $dt = time - $t0;
    return ('ERR', undef, $dt, $@) unless defined $st;
    my $doc = eval { $JSON->decode($b) };
    return ($st, $doc, $dt, $b);
}

# re-sends like Meta until a 200 (bounded): (final status, doc, attempts,
# [statuses])
sub post_until_200 {
    my ($tt, $body, $secs) = @_;
    my $deadline = time + $secs * $tf;
    my @seen;
    while (1) {
        my ($st, $doc, $dt, $raw) = post_timed($tt, $body);
        push @seen, $st;
        return ($st, $doc, scalar @seen, \@seen) if $st eq '200';
        return ($st, $doc, scalar @seen, \@seen) if time > $deadline;
        sleep 0.25;
    }
}

sub log_since {
    my ($tt, $off) = @_;
    return substr($tt->error_log, $off);
}

my $body = $t->wire('meta_text');
like($body, qr/\Q$WAMID\E/, 'the meta_text fixture carries its wamid');

# ======================================================================
# 1. a schema one version behind the module

$t->sql(q{SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                            '102290129340398', 'tok')});

is($t->sql1('SELECT metacloud_schema_version()'), $LATEST,
   "the template is at schema version $LATEST (the newest migration)");
cmp_ok($LATEST, '>=', $NEED, "which the module's $NEED does not exceed");

my $BELOW = $t->sql1('SELECT max(version) FROM metacloud_schema_migrations'
                     . " WHERE version < $NEED");
$t->sql("DELETE FROM metacloud_schema_migrations WHERE version >= $NEED");
is($t->sql1('SELECT metacloud_schema_version()'), $BELOW,
   "version $NEED unrecorded: metacloud_schema_version() reports $BELOW");
is($t->sql1(q{SET ROLE metacloud_module; SELECT metacloud_schema_version()}),
   $BELOW, 'and the module role may still call it (grant kept)');

$t->write_conf($CONF);
$t->run;

my $off = length $t->error_log;
my ($st, $doc, $dt, $raw) = post_timed($t, $body);
is($st, 503, 'old schema: a signed POST gets 503') or diag($raw);
is($doc && $doc->{status}, 'error', 'old schema: {"status":"error"}');
ok(defined $doc && defined $doc->{error} && $doc->{error} =~ /database/,
   'old schema: the error names the database')
    or diag($raw);
cmp_ok($dt, '<', ($TIMEOUT + 1) * $tf,
       "old schema: answered within metacloud_db_timeout + 1s (${dt}s)");

my $log = log_since($t, $off);
like($log,
     qr/\[alert\].*metacloud: the database schema is version $BELOW, this module needs $NEED: run sql\/migrate/,
     'old schema: the error log names the version found, the one needed, '
     . 'and sql/migrate');

# a second delivery while the schema is still old: still 503
($st) = post_timed($t, $body);
is($st, 503, 'old schema: a second POST is 503 too');

is($t->sql1('SELECT count(*) FROM meta_cloud_webhook_requests'), 0,
   'old schema: no raw request stored');
is($t->sql1('SELECT count(*) FROM meta_cloud_webhook_events'), 0,
   'old schema: no event stored');
is($t->sql1('SELECT count(*) FROM meta_cloud_messages'), 0,
   'old schema: no message stored');

# the operator does what the log says
my ($mrc, $mout) = migrate($t->dbname);
is($mrc, 0, "sql/migrate brings the database back to version $LATEST")
    or diag($mout);
is($t->sql1('SELECT metacloud_schema_version()'), $LATEST,
   "version $LATEST again");

my ($fst, $fdoc, $n, $seen) = post_until_200($t, $body, 15);
is($fst, 200, "after sql/migrate: Meta's retry gets 200 "
              . "(attempts: @$seen)");
is($fdoc && $fdoc->{inserted}, 1, 'after sql/migrate: one event inserted');
is($fdoc && $fdoc->{duplicate}, 0, 'after sql/migrate: no duplicate');
is($fdoc && $fdoc->{unrouted}, 0, 'after sql/migrate: routed');
is($t->sql1('SELECT count(*) FROM meta_cloud_messages WHERE wamid = :\'v1\'',
            $WAMID), 1, 'after sql/migrate: the message stored once');
is($t->sql1('SELECT count(*) FROM meta_cloud_webhook_events'), 1,
   'after sql/migrate: one event');
is($t->sql1('SELECT count(*) FROM meta_cloud_webhook_requests'), 1,
   'after sql/migrate: one raw request (the 503s stored nothing)');

$t->stop;

# ======================================================================
# 2. a database without the migrations

my $empty = 'mct_schema_empty_' . $$;
my $t2 = MCTest->new(name => 'schema_empty', db => 0);
my $dropped = 0;

$t2->sql_in('postgres', qq{DROP DATABASE IF EXISTS "$empty";
                          CREATE DATABASE "$empty"});
is($t2->sql_in($empty, q{SELECT count(*) FROM pg_proc
                          WHERE proname = 'metacloud_schema_version'})->[0][0],
   0, 'empty database: no metacloud_schema_version()');
is($t2->sql_in('postgres', q{SELECT count(*) FROM pg_roles
                              WHERE rolname = 'metacloud_module'})->[0][0],
   1, 'the metacloud_module role exists cluster-wide');

(my $conf2 = $CONF) =~ s/%%DB%%/$t2->conninfo(db => $empty)/e;
$t2->write_conf($conf2);
$t2->run;

$off = length $t2->error_log;
($st, $doc, $dt, $raw) = post_timed($t2, $body);
is($st, 503, 'no migrations: a signed POST gets 503') or diag($raw);
is($doc && $doc->{status}, 'error', 'no migrations: {"status":"error"}');
cmp_ok($dt, '<', ($TIMEOUT + 1) * $tf,
       "no migrations: answered within metacloud_db_timeout + 1s (${dt}s)");
$log = log_since($t2, $off);
like($log, qr/\[(?:error|alert|crit|emerg)\][^\n]*metacloud: [^\n]*function metacloud_schema_version\(\) does not exist.*?run sql\/migrate/s,
     'no migrations: the error log says the function is missing and to '
     . 'run sql/migrate')
    or diag($log);
{
    # nginx writes one line per log entry; PQresultErrorMessage() carries
    # newlines (LINE 1 / caret / HINT) that the module flattens
    like($log, qr/^[^\n]*\[error\][^\n]*metacloud_schema_version\(\) does not exist[^\n]*run sql\/migrate[^\n]*$/m,
         'no migrations: error and hint on one log line');
}

($mrc, $mout) = migrate($empty);
is($mrc, 0, 'sql/migrate on the empty database') or diag($mout);
$t2->sql_in($empty, q{SELECT metacloud_add_phone_number('org-test',
                      '106540352242922', '102290129340398', 'tok')});

($fst, $fdoc, $n, $seen) = post_until_200($t2, $body, 15);
is($fst, 200, "migrated: Meta's retry gets 200 (attempts: @$seen)");
is($fdoc && $fdoc->{inserted}, 1, 'migrated: one event inserted');
is($t2->sql_in($empty, 'SELECT count(*) FROM meta_cloud_messages')->[0][0],
   1, 'migrated: the message stored once');
is($t2->sql_in($empty,
               'SELECT count(*) FROM meta_cloud_webhook_requests')->[0][0],
   1, 'migrated: one raw request');

$t2->stop;

unless (!Test::More->builder->is_passing || $ENV{MC_KEEP}) {
    $t2->sql_in('postgres', qq{DROP DATABASE IF EXISTS "$empty"});
    $dropped = 1;
}
diag("kept database $empty") unless $dropped;

done_testing;
