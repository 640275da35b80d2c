#!/usr/bin/perl
# t/70-pg-down.t: PostgreSQL unreachable or too slow (docs/DESIGN.md sections 1
# and 5: "503, nothing is lost: Meta retries"; a 200 only after the commit):
#
#   1. the cluster stopped before nginx ever connected: a signed POST gets
#      503 within metacloud_db_timeout (+1s slack), the error log names the
#      failure; after the cluster is back, the same body re-sent like Meta
#      (until 200, bounded) is stored once: one event, one message, one raw
#      request (the 503s stored nothing); a later redelivery is a duplicate;
#   2. the cluster restarted while nginx holds an idle pooled connection:
#      the next posts eventually get 200 (reconnect), and nothing is stored
#      twice; 2b. the same with the worker stopped (SIGSTOP) while the
#      server goes away, so that its FATAL and EOF arrive in one event: the
#      pool drops that connection at once and the next POST gets 200;
#   3. a query slower than metacloud_db_timeout (a superuser session holds
#      ACCESS EXCLUSIVE on meta_cloud_webhook_events): 503 within about the
#      timeout, a "timed out" log line; after the lock is released the
#      re-sent body is stored once (a commit that landed after the 503 makes
#      the retry a duplicate: one event either way, and the raw rows match).
#
# pg_stop / pg_start stop the whole shared test cluster: this suite must
# not run in parallel with other suites (prove -j).  An END block starts the
# cluster again and ends the lock session, even when the suite dies.
#
# Run: make test T=t/70-pg-down.t
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Handle;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use MCTest;

our $TODO;

my $t = MCTest->new(name => 'pgdown');
plan skip_all => 'module not built' unless $t->has_module;
plan skip_all => 'MC_PG_DIR unset (run via make test)' unless $ENV{MC_PG_DIR};

my $ROOT = $t->root;
my $URI = $MCTest::WEBHOOK_URI;
my $TIMEOUT = 2;                        # metacloud_db_timeout, seconds
my $tf = $t->timeout_factor;
my $BOUND = ($TIMEOUT + 1) * $tf;       # a bound, not a speed test
my $JSON = JSON::PP->new;
my $WAMID = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=';

my $lock_pid;                           # the psql session holding the lock
my $lock_fh;
my @stopped;                            # nginx workers under SIGSTOP

sub pg_running {
    my $rc = system("'$ROOT/scripts/pg-cluster' status '$ENV{MC_PG_DIR}' "
                    . '>/dev/null 2>&1');
    return $rc == 0;
}

# the shared cluster must be up when this suite ends, whatever happened;
# this END runs before MCTest's (defined later), so the database can still
# be dropped or kept by the teardown
END {
    local $?;
    kill 'CONT', @stopped if @stopped;
    if ($lock_pid) {
        kill 'TERM', $lock_pid;
        waitpid($lock_pid, 0);
        $lock_pid = undef;
    }
    unless (eval { pg_running() }) {
        eval { $t->pg_start } or diag("70-pg-down: cannot restart the "
                                      . "test cluster: $@");
    }
}

$t->write_conf(<<'EOF');
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

$t->sql(q{SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                            '102290129340398', 'tok')});

# ----------------------------------------------------------------------
# helpers

# meta_text with another wamid: a distinct delivery
sub body_with {
    my ($wamid) = @_;
    my $b = $t->wire('meta_text');
    $b =~ s/\Q$WAMID\E/$wamid/ or die "no wamid in meta_text";
    return $b;
}

# one POST: (status or 'ERR', decoded body, seconds, raw body or error)
sub post_timed {
    my ($body) = @_;
    my $t0 = time;
    my ($st, $h, $b) = eval { $t->post_signed($URI, $body, timeout => 30) };
    my $dt = time - $t0;
    return ('ERR', undef, $dt, $@) unless defined $st;
    my $doc = eval { $JSON->decode($b) };
    return ($st, $doc, $dt, $b);
}

# re-sends like Meta until a 200 (bounded): (last status, last doc,
# [statuses], [docs of the 200s])
sub post_until_200 {
    my ($body, $secs) = @_;
    my $deadline = time + $secs * $tf;
    my @seen;
    while (1) {
        my ($st, $doc, $dt, $raw) = post_timed($body);
        push @seen, $st;
        return ($st, $doc, \@seen) if $st eq '200' || time > $deadline;
        sleep 0.25;
    }
}

sub counts {
    my ($wamid, $body) = @_;
    my $r = $t->sql(q{
        SELECT (SELECT count(*) FROM meta_cloud_messages WHERE wamid = :'v1'),
               (SELECT count(*) FROM meta_cloud_webhook_events
                 WHERE "webhookId" = 'msg:' || :'v1'),
               (SELECT count(*) FROM meta_cloud_webhook_requests
                 WHERE sha256 = sha256(convert_to(:'v2', 'UTF8')))},
        $wamid, $body);
    return @{ $r->[0] };
}

sub log_since {
    my ($off) = @_;
    return substr($t->error_log, $off);
}

# the columns counts() relies on
my $cols = $t->sql1(q{SELECT string_agg(table_name || '.' || column_name, ','
                                        ORDER BY table_name)
    FROM information_schema.columns
    WHERE (table_name, column_name) IN
          (('meta_cloud_webhook_events', 'webhookId'),
           ('meta_cloud_webhook_requests', 'sha256'))});
is($cols, 'meta_cloud_webhook_events.webhookId,meta_cloud_webhook_requests.sha256',
   'the schema has the columns this suite counts by')
    or BAIL_OUT('schema changed: fix counts()');

# ======================================================================
# 1. the cluster down from the start

$t->pg_stop;
ok(!pg_running(), 'cluster stopped');

$t->run;

my $body1 = body_with($WAMID);
my $off = length $t->error_log;
my ($st, $doc, $dt, $raw) = post_timed($body1);
is($st, 503, 'cluster down: 503') or diag($raw);
is($doc && $doc->{status}, 'error', 'cluster down: {"status":"error"}');
cmp_ok($dt, '<', $BOUND,
       sprintf('cluster down: answered in %.3fs (< timeout + 1s)', $dt));
my $log = log_since($off);
like($log, qr/\[error\][^\n]*metacloud: could not connect to PostgreSQL: [^\n]*\S/,
     'cluster down: the error log names the failure')
    or diag($log);

# a second delivery during the back-off: 503 as well, as fast
($st, $doc, $dt) = post_timed($body1);
is($st, 503, 'cluster down: the next POST is 503 too');
cmp_ok($dt, '<', $BOUND, sprintf('  in %.3fs', $dt));

$t->pg_start;
ok(pg_running(), 'cluster started again');

my ($fst, $fdoc, $seen) = post_until_200($body1, 20);
is($fst, 200, "cluster back: the re-sent body gets 200 (attempts: @$seen)");
is($fdoc && $fdoc->{inserted}, 1, 'cluster back: inserted 1');
is($fdoc && $fdoc->{duplicate}, 0, 'cluster back: duplicate 0');
is_deeply([counts($WAMID, $body1)], [1, 1, 1],
          'cluster back: one message, one event, one raw request '
          . '(the 503s stored nothing)');

# Meta redelivers a body it got a 200 for: a duplicate, a second raw row
($st, $doc) = post_timed($body1);
is($st, 200, 'redelivery: 200');
is($doc && $doc->{duplicate}, 1, 'redelivery: duplicate 1');
is($doc && $doc->{inserted}, 0, 'redelivery: inserted 0');
is_deeply([counts($WAMID, $body1)], [1, 1, 2],
          'redelivery: still one message and one event, two raw requests');

# ======================================================================
# 2. PostgreSQL restarted under an idle pooled connection

my $body2 = body_with('wamid.PGDOWN-RESTART-A');
($st, $doc) = post_timed($body2);
is($st, 200, 'before the restart: 200 (a pooled connection is now idle)');

my $backends = $t->sql1(q{SELECT count(*) FROM pg_stat_activity
                          WHERE usename = 'metacloud_module'
                            AND datname = current_database()});
cmp_ok($backends, '>=', 1, "nginx holds $backends idle connection(s)");

$off = length $t->error_log;
$t->pg_stop;
$t->pg_start;

my $body3 = body_with('wamid.PGDOWN-RESTART-B');
($fst, $fdoc, $seen) = post_until_200($body3, 20);
is($fst, 200, "after the restart: a new delivery eventually gets 200 "
              . "(attempts: @$seen)");
my @non200 = grep { $_ ne '200' } @$seen;
is(scalar(grep { $_ ne '503' } @non200), 0,
   'after the restart: the failures were 503s (Meta retries them)')
    or diag("statuses: @$seen");
note("after the restart: "
     . (log_since($off) =~ /idle PostgreSQL connection lost/
        ? 'the pool noticed the lost idle connection'
        : 'the pool did not notice the lost idle connection'));
is($fdoc && $fdoc->{inserted}, 1, 'after the restart: inserted 1');
is_deeply([counts('wamid.PGDOWN-RESTART-B', $body3)],
          [1, 1, 1],
          'after the restart: one message, one event, one raw request '
          . '(a query on a dead connection commits nothing)');

# and the one before the restart was not stored again
is_deeply([counts('wamid.PGDOWN-RESTART-A', $body2)], [1, 1, 1],
          'the delivery before the restart: still stored once');

# a few more posts: all 200 now
my @more;
for my $i (1 .. 5) {
    my $b = body_with("wamid.PGDOWN-RESTART-C$i");
    my ($s) = post_timed($b);
    push @more, $s;
}
is("@more", '200 200 200 200 200', 'after the restart: the next posts: 200');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
              WHERE wamid LIKE 'wamid.PGDOWN-RESTART-C%'}), 5,
   '  stored once each');

# ----------------------------------------------------------------------
# 2b. the same, the worker busy while the server goes away: the server's
# FATAL message and the end of the stream are both in the socket when the
# worker looks (SIGSTOP / SIGCONT make that certain; in production a busy
# worker or a slow event loop does it).  The pool must notice the dead idle
# connection and open a new one: the next POST is answered 200 at once.

my @w = $t->worker_pids;
is(scalar @w, 1, 'one worker');
@stopped = @w;
kill 'STOP', @w;
$off = length $t->error_log;
$t->pg_stop;
$t->pg_start;
kill 'CONT', @w;
@stopped = ();
sleep 0.3;                              # the worker sees FATAL + EOF

my $body5 = body_with('wamid.PGDOWN-STALE');
($st, $doc, $dt, $raw) = post_timed($body5);
is($st, 200, "stale idle connection: the first POST gets 200") or diag($raw);
cmp_ok($dt, '<', $BOUND,
       sprintf('stale idle connection: answered within the bound (%.3fs)',
               $dt));
{
    cmp_ok($dt, '<', $TIMEOUT / 2,
           sprintf('stale idle connection: no wait for the timeout (%.3fs)',
                   $dt));
    like(log_since($off),
         qr/\[warn\][^\n]*metacloud: idle PostgreSQL connection lost/,
         'stale idle connection: the lost connection is logged');
}
if ($st eq '200') {
    ($fst, $seen) = ($st, []);
} else {
    ($fst, $fdoc, $seen) = post_until_200($body5, 20);
}
is($fst, 200, "stale idle connection: 200, at once or on Meta's retry "
              . "(attempts: $st @$seen)");
is_deeply([counts('wamid.PGDOWN-STALE', $body5)], [1, 1, 1],
          'stale idle connection: one message, one event, one raw request');

# ======================================================================
# 3. a query slower than metacloud_db_timeout: a lock held elsewhere

# the pool's connection is idle and initialised: the lock stalls the ingest
# itself, not the connect
($st) = post_timed(body_with('wamid.PGDOWN-WARM'));
is($st, 200, 'warm-up before the lock: 200');

$lock_pid = open($lock_fh, '|-', 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
                 '-d', $t->dbname);
ok($lock_pid, 'a superuser psql session') or BAIL_OUT("psql: $!");
$lock_fh->autoflush(1);
print $lock_fh "BEGIN;\n"
    . "LOCK TABLE meta_cloud_webhook_events IN ACCESS EXCLUSIVE MODE;\n";

my $locked = 0;
my $deadline = time + 10 * $tf;
while (time < $deadline) {
    $locked = $t->sql1(q{SELECT count(*) FROM pg_locks l
        JOIN pg_class c ON c.oid = l.relation
        WHERE c.relname = 'meta_cloud_webhook_events'
          AND l.mode = 'AccessExclusiveLock' AND l.granted
          AND l.pid <> pg_backend_pid()});
    last if $locked;
    sleep 0.05;
}
is($locked, 1, 'the lock is held (ACCESS EXCLUSIVE on the events table)');

my $body4 = body_with('wamid.PGDOWN-LOCKED');
$off = length $t->error_log;
($st, $doc, $dt, $raw) = post_timed($body4);
is($st, 503, 'locked: 503') or diag($raw);
is($doc && $doc->{status}, 'error', 'locked: {"status":"error"}');
cmp_ok($dt, '>=', $TIMEOUT * 0.9,
       sprintf('locked: not before the timeout (%.3fs)', $dt));
cmp_ok($dt, '<', $BOUND,
       sprintf('locked: within about metacloud_db_timeout (%.3fs)', $dt));
$log = log_since($off);
# either nginx's timer fires first ("query timed out") or the server's
# statement_timeout (set to metacloud_db_timeout at connect) ends the
# statement first: both within the bound, both logged
like($log, qr/\[error\][^\n]*metacloud: PostgreSQL(?: query timed out \(2000 ms\)|: ERROR:\s+canceling statement due to statement timeout)/,
     'locked: the error log says the query timed out')
    or diag($log);

# the session was closed by nginx; the server ends the statement by its
# statement_timeout: nothing of this attempt stays once the lock goes
print $lock_fh "ROLLBACK;\n";
close $lock_fh;
my $lock_rc = $?;
$lock_pid = undef;
is($lock_rc, 0, 'the lock session ended cleanly');

($fst, $fdoc, $seen) = post_until_200($body4, 20);
is($fst, 200, "lock released: the re-sent body gets 200 (attempts: @$seen)");
my ($nmsg, $nev, $nraw) = counts('wamid.PGDOWN-LOCKED', $body4);
is($nmsg, 1, 'lock released: one message');
is($nev, 1, 'lock released: one event');
# a 503'd attempt that still committed makes the 200 a duplicate, and
# leaves one more raw row
my $late = ($fdoc && $fdoc->{duplicate}) ? 1 : 0;
is(($fdoc->{inserted} // 0) + ($fdoc->{duplicate} // 0), 1,
   'lock released: the 200 reports the event as new or as a duplicate');
is($nraw, 1 + $late, "lock released: raw requests = the 200 + "
                     . "$late late commit(s)");
diag('a commit landed after the 503: the retry was a duplicate') if $late;

is($t->sql1(q{SELECT count(*) FROM pg_stat_activity
              WHERE usename = 'metacloud_module' AND state = 'active'
                AND datname = current_database()}), 0,
   'no module statement left running on the server');

# ======================================================================
# the end: nginx stops cleanly, nothing stored twice anywhere

ok($t->stop, 'nginx stops');
is($t->sql1(q{SELECT count(*) FROM (SELECT wamid FROM meta_cloud_messages
              GROUP BY wamid HAVING count(*) > 1) d}), 0,
   'no wamid stored twice');

done_testing;
