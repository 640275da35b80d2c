#!/usr/bin/perl
# t/74-pg-slots.t: the pool's limits (docs/DESIGN.md section 5).
#
#   1. metacloud_db_queue 0: "no waiting for a busy connection", not "no
#      service": the first POST opens a connection and is served (200);
#      while the pool's one connection is busy (a superuser session holds
#      a lock the ingest needs), another POST gets 503 at once, and the
#      busy one gets its 200 once the lock goes;
#   2. fewer server slots than workers x metacloud_db_pool (the database's
#      CONNECTION LIMIT 1; two workers, metacloud_db_pool 1, a reuseport
#      listener so that each new client connection may land on either
#      worker): the worker refused logs one warn line naming
#      max_connections and metacloud_db_pool, and since idle connections
#      are released after metacloud_db_idle_timeout (1s here), both workers
#      serve 200s.  Before that directive, the worker that connected first
#      kept the only slot forever and the other answered 503 to everything.
#
# Run: make test T=t/74-pg-slots.t
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Handle;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use MCTest;

my $t = MCTest->new(name => 'queue0');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $tf = $t->timeout_factor;
my $WAMID = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=';

my ($lock_pid, $lock_fh, $child);

END {
    local $?;
    if ($lock_pid) {
        kill 'TERM', $lock_pid;
        waitpid($lock_pid, 0);
    }
    if ($child) {
        kill 'KILL', $child;
        waitpid($child, 0);
    }
}

# meta_text with another wamid: a distinct delivery
sub body_with {
    my ($tt, $wamid) = @_;
    my $b = $tt->wire('meta_text');
    $b =~ s/\Q$WAMID\E/$wamid/ or die "no wamid in meta_text";
    return $b;
}

sub register {
    my ($tt) = @_;
    $tt->sql(q{SELECT metacloud_add_phone_number('org-test',
        '106540352242922', '102290129340398', 'tok')});
}

# ----------------------------------------------------------------------
# 1. metacloud_db_queue 0

$t->write_conf(<<'EOF');
metacloud_db "%%DB%%";
metacloud_db_pool 1;
metacloud_db_queue 0;
metacloud_db_timeout 5s;
# no backlog query of the metrics: it would take the one connection being
# opened (slow under valgrind) and leave the first POST nothing to wait for
metacloud_metrics off;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
    }
}
EOF
$t->run;
register($t);

my ($st, $h, $b) = $t->post_signed($URI, body_with($t, 'wamid.Q0-FIRST'));
is($st, 200, 'queue 0: the first POST opens a connection and is served')
    or diag($b);
is(scalar $t->post_signed($URI, body_with($t, 'wamid.Q0-SECOND')), 200,
    'queue 0: the next POST is served on the idle connection');

$lock_pid = open($lock_fh, '|-', 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
                 '-d', $t->dbname);
ok($lock_pid, 'a superuser psql session') or BAIL_OUT("psql: $!");
$lock_fh->autoflush(1);
print $lock_fh "BEGIN;\n"
    . "LOCK TABLE meta_cloud_webhook_events IN ACCESS EXCLUSIVE MODE;\n";

sub wait_for {
    my ($sql, $secs) = @_;
    my $deadline = time + $secs * $tf;
    while (time < $deadline) {
        my $v = $t->sql1($sql);
        return $v if $v;
        sleep 0.05;
    }
    return 0;
}

ok(wait_for(q{SELECT count(*) FROM pg_locks l
    JOIN pg_class c ON c.oid = l.relation
    WHERE c.relname = 'meta_cloud_webhook_events'
      AND l.mode = 'AccessExclusiveLock' AND l.granted}, 10),
    'the lock is held');

# the busy one, from a child: its status is its exit code
$child = fork // die "fork: $!";
if ($child == 0) {
    my $s = eval { $t->post_signed($URI, body_with($t, 'wamid.Q0-BUSY'),
                                   timeout => 30) } // 0;
    POSIX::_exit($s == 200 ? 0 : 1);
}

ok(wait_for(q{SELECT count(*) FROM pg_stat_activity
    WHERE usename = 'metacloud_module' AND wait_event_type = 'Lock'}, 10),
    'queue 0: the first POST waits for the lock in PostgreSQL');

my $t0 = time;
($st, $h, $b) = $t->post_signed($URI, body_with($t, 'wamid.Q0-REFUSED'));
my $dt = time - $t0;
is($st, 503, 'queue 0, the connection busy: 503') or diag($b);
cmp_ok($dt, '<', 2 * $tf, sprintf('queue 0: refused without waiting '
    . '(%.3fs, metacloud_db_timeout is 5s)', $dt));

print $lock_fh "ROLLBACK;\n";
close $lock_fh;
$lock_pid = undef;

waitpid($child, 0);
is($? >> 8, 0, 'queue 0: the busy POST gets its 200 once the lock goes');
$child = undef;

is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
    WHERE wamid LIKE 'wamid.Q0-%'}), 3,
    'queue 0: three messages stored, not the refused one');

$t->stop;

# ----------------------------------------------------------------------
# 2. two workers, one slot: metacloud_db_idle_timeout

my $s = MCTest->new(name => 'slots');
$s->write_conf(<<'EOF', workers => 2);
metacloud_db "%%DB%%";
metacloud_db_pool 1;
metacloud_db_idle_timeout 1s;
metacloud_db_timeout 5s;
server {
    listen 127.0.0.1:%%PORT%% reuseport;
    add_header X-Worker $pid always;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
    }
}
EOF
my $db = $s->dbname;
$s->sql(qq{ALTER DATABASE "$db" CONNECTION LIMIT 1});
$s->run;
register($s);

my $body = body_with($s, 'wamid.SLOTS-ONE');
my (%ok, %refused);

# back to back: one worker holds the slot, the other is refused
for my $i (1 .. 60) {
    my ($st, $h) = $s->post_signed($URI, $body);
    my $w = $h->{'x-worker'} // '?';
    if ($st == 200) { $ok{$w}++ } else { $refused{$w}++ }
    last if %refused;
}
ok(scalar %refused, 'back to back: a worker finds no free slot (503)')
    or diag(explain({ ok => \%ok }));

my $log = $s->error_log;
my @warn = $log =~ /(\[warn\][^\n]*lack of slots[^\n]*)/g;
ok(@warn >= 1 && @warn <= 2, 'one warn line per refused worker ('
    . scalar(@warn) . ')') or diag($log);
like($warn[0] // '', qr/max_connections.*metacloud_db_pool \(1 here\)/,
    'the warn line names max_connections and metacloud_db_pool');
like($warn[0] // '', qr/too many connections for database/,
    'the warn line quotes PostgreSQL');

# paced beyond the idle timeout: the holder gives the slot back, and
# whichever worker a request lands on is served; both must serve some
%ok = ();
my @seen;
my $deadline = time + 40 * $tf;
while (time < $deadline && keys %ok < 2) {
    sleep 1.4;
    my ($st, $h) = $s->post_signed($URI, $body);
    my $w = $h->{'x-worker'} // '?';
    push @seen, "$w:$st";
    $ok{$w}++ if $st == 200;
}
is(scalar keys %ok, 2, 'both workers serve 200s once idle connections are '
    . 'released') or diag("worker:status @seen");

is($s->sql1(q{SELECT count(*) FROM meta_cloud_messages
    WHERE wamid = 'wamid.SLOTS-ONE'}), 1, 'stored once');

done_testing;
