#!/usr/bin/perl
# t/80-reload.t: `nginx -s reload` (SIGHUP) under traffic loses nothing.
#
# Clients (forked children) post N distinct signed bodies (the meta_text
# fixture with distinct wamids) while the parent reloads nginx several
# times.  Every response is recorded; then:
#   - every reload started new workers (pids changed), and the old workers
#     exited once their requests were done;
#   - every body answered 200 has its message, event and raw request in
#     the database (a 200 is a promise of durability);
#   - the non-200 answers are only 503s or connection errors, which Meta
#     retries (listed; expected: none);
#   - the messages stored are exactly the bodies answered 200 (plus, at
#     most, bodies answered 503 whose commit landed late: none expected);
#   - after stop: no nginx process of this suite is left, and no database
#     connection of the module role remains.
#
# Run: make test T=t/80-reload.t
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Handle;
use JSON::PP ();
use POSIX qw(WNOHANG _exit);
use Time::HiRes qw(time sleep);
use MCTest;

our $TODO;

my $t = MCTest->new(name => 'reload');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $tf = $t->timeout_factor;
my $N = $ENV{MC_RELOAD_N} || 300;       # bodies
my $CLIENTS = 3;                        # concurrent client processes
my $RELOADS = 4;
my $WORKERS = 2;
my $WAMID = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=';
my $JSON = JSON::PP->new;

# under valgrind a new worker's first connect alone may take seconds: the
# timeout scales as the harness's other bounds do (2s, 20s under valgrind)
(my $conf = <<'EOF') =~ s/%%DB_TIMEOUT%%/2 * $tf . 's'/e;
metacloud_db "%%DB%%";
metacloud_db_timeout %%DB_TIMEOUT%%;
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
$t->write_conf($conf, workers => $WORKERS);

$t->sql(q{SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                            '102290129340398', 'tok')});

# ----------------------------------------------------------------------
# the bodies

my $template = $t->wire('meta_text');
like($template, qr/\Q$WAMID\E/, 'meta_text carries its wamid');

my (@bodies, @wamids);
for my $i (0 .. $N - 1) {
    my $w = sprintf('wamid.RELOAD-%d-%04d', $$, $i);
    (my $b = $template) =~ s/\Q$WAMID\E/$w/;
    push @bodies, $b;
    push @wamids, $w;
}
my %seen_body;
$seen_body{$_}++ for @bodies;
is(scalar keys %seen_body, $N, "$N distinct bodies");

# ----------------------------------------------------------------------
# processes

# /proc/<pid>/stat: (ppid, start time) or () when gone or a zombie
sub proc_info {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return ();
    my $line = <$fh> // '';
    close $fh;
    $line =~ /^\d+ \(.*\) (\S) (\d+)((?: \S+){17}) (\d+)/s or return ();
    return () if $1 eq 'Z' || $1 eq 'X';
    return ($2, $4);
}

my %known;                              # pid => start time, every nginx
sub remember {
    for my $pid (@_) {
        my ($ppid, $start) = proc_info($pid);
        $known{$pid} = $start if defined $start;
    }
}

sub alive {
    my ($pid) = @_;
    my ($ppid, $start) = proc_info($pid);
    return defined $start && defined $known{$pid} && $start == $known{$pid};
}

# ----------------------------------------------------------------------
# run

$t->run;
remember($t->pid);

my @gen = ([$t->worker_pids]);
{
    my $until = time + 10 * $tf;        # see the reload loop below
    while (@{ $gen[0] } < $WORKERS && time < $until) {
        sleep 0.02;
        $gen[0] = [$t->worker_pids];
    }
}
is(scalar @{ $gen[0] }, $WORKERS, "$WORKERS workers");
remember(@{ $gen[0] });

# warm: every worker's pool gets used
is(scalar $t->post_signed($URI, $template), 200, 'a first POST: 200');

my $dir = $t->testdir;
my @kids;
for my $k (0 .. $CLIENTS - 1) {
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        # a client: its share of the bodies, one after another; one line a
        # response: index, status (or ERR), the response body or error
        open my $out, '>', "$dir/client.$k" or _exit(2);
        $out->autoflush(1);
        for (my $i = $k; $i < $N; $i += $CLIENTS) {
            my ($st, $h, $b) = eval {
                $t->post_signed($URI, $bodies[$i], timeout => 30)
            };
            unless (defined $st) {
                (my $e = $@) =~ s/\s+/ /g;
                print $out "$i\tERR\t$e\n";
                next;
            }
            $b //= '';
            $b =~ s/\s+/ /g;
            print $out "$i\t$st\t$b\n";
        }
        close $out;
        _exit(0);
    }
    push @kids, $pid;
}

sub answered {
    my $n = 0;
    for my $k (0 .. $CLIENTS - 1) {
        open my $fh, '<', "$dir/client.$k" or next;
        $n++ while <$fh>;
        close $fh;
    }
    return $n;
}

# reload while the clients run: the first after some traffic, then spread
my @reload_ok;
my @reload_at;
my ($locked_ok, $stalled, $waiting) = (0, -1, 0);

sub lock_held {
    return $t->sql1(q{SELECT count(*) FROM pg_locks l
        JOIN pg_class c ON c.oid = l.relation
        WHERE c.relname = 'meta_cloud_webhook_events'
          AND l.mode = 'AccessExclusiveLock' AND l.granted});
}
my $step = int($N / ($RELOADS + 1));
for my $r (1 .. $RELOADS) {
    my $deadline = time + 60 * $tf;
    sleep 0.01 while answered() < $r * $step && time < $deadline;
    push @reload_at, answered();
    my %before = %known;

    # the second reload while the old workers wait on the database: a lock
    # on the events table stalls every ingest for ~0.6s (under the 2s
    # metacloud_db_timeout); the old workers must finish those requests
    my ($lock_fh, $lock_pid);
    if ($r == 2) {
        $lock_pid = open($lock_fh, '|-', 'psql', '-X', '-q',
                         '-d', $t->dbname) or die "psql: $!";
        $lock_fh->autoflush(1);
        print $lock_fh "BEGIN;\nLOCK TABLE meta_cloud_webhook_events "
                     . "IN ACCESS EXCLUSIVE MODE;\n";
        my $until = time + 10;
        sleep 0.02 until lock_held() || time > $until;
        $locked_ok = lock_held();
        my $n0 = answered();
        sleep 0.3;
        $stalled = answered() - $n0;
        $waiting = $t->sql1(q{SELECT count(*) FROM pg_stat_activity
                              WHERE usename = 'metacloud_module'
                                AND datname = current_database()
                                AND wait_event_type = 'Lock'});
    }

    push @reload_ok, $t->reload ? 1 : 0;

    if ($lock_pid) {
        sleep 0.2;
        print $lock_fh "ROLLBACK;\n";
        close $lock_fh;
    }
    # the old workers may still be finishing their requests: the new
    # generation is the workers not seen before
    # (MCTest::reload counts /start worker process/, which the master's
    # "start worker processes" line matches too: it may return before the
    # last new worker is forked, so wait for them here)
    my @w;
    my $until = time + 10 * $tf;
    while (1) {
        @w = grep { !exists $before{$_} } $t->worker_pids;
        last if @w >= $WORKERS || time > $until;
        sleep 0.02;
    }
    remember(@w);
    push @gen, \@w;
}

for my $pid (@kids) {
    waitpid($pid, 0);
    is($? >> 8, 0, "client $pid ended normally");
}
my $after_clients = answered();

ok($locked_ok, 'reload 2: the events table was locked during it');
is($stalled, 0, 'reload 2: no answer while the lock was held (requests '
                . 'in flight in the old workers)');
cmp_ok($waiting, '>=', 1, "reload 2: $waiting module queries waited on "
                          . 'the lock during the reload');
is("@reload_ok", join(' ', (1) x $RELOADS),
   "$RELOADS reloads, each started new workers");
note("reloads after $N bodies' answers: @reload_at (of $N)");
cmp_ok($reload_at[0], '<', $N, 'the first reload came while clients ran');
cmp_ok($reload_at[-1], '<', $N, 'the last reload came while clients ran');

for my $g (1 .. $#gen) {
    my %old = map { $_ => 1 } @{ $gen[$g - 1] };
    is(scalar @{ $gen[$g] }, $WORKERS,
       "reload $g: $WORKERS new workers (@{ $gen[$g - 1] } -> "
       . "@{ $gen[$g] })");
}
my %allw;
$allw{$_}++ for map { @$_ } @gen;
is(scalar(grep { $allw{$_} > 1 } keys %allw), 0,
   'no worker pid in two generations');

# old workers finish their requests and exit (graceful shutdown)
my @old = map { @{ $gen[$_] } } 0 .. $#gen - 1;

my $deadline = time + 15 * $tf;
my @left;
while (1) {
    @left = grep { alive($_) } @old;
    last if !@left || time > $deadline;
    sleep 0.1;
}
is(scalar @left, 0, scalar(@old) . ' old workers exited')
    or diag("still running: @left");
is(join(' ', $t->worker_pids), join(' ', sort { $a <=> $b } @{ $gen[-1] }),
   'the workers now are the last generation, nothing else');
is(scalar(grep { alive($_) } $t->pid, @{ $gen[-1] }), 1 + $WORKERS,
   'the master and the last generation are alive (the process check works)');
unlike($t->error_log, qr/exited on signal|\[(?:alert|crit|emerg)\]/,
       'no worker crashed, no alert in the error log');

is(scalar $t->post_signed($URI, $template), 200,
   'after the reloads: a redelivery of the first body still 200');

# ----------------------------------------------------------------------
# the responses

my (%status, @non200, %ok200);
for my $k (0 .. $CLIENTS - 1) {
    open my $fh, '<', "$dir/client.$k" or die "client.$k: $!";
    while (my $line = <$fh>) {
        chomp $line;
        my ($i, $st, $b) = split /\t/, $line, 3;
        $status{$i} = $st;
        if ($st eq '200') {
            my $doc = eval { $JSON->decode($b) };
            $ok200{$i} = $doc;
        } else {
            push @non200, "$wamids[$i]: $st $b";
        }
    }
    close $fh;
}

is(scalar keys %status, $N, "every body got an answer ($after_clients lines)");
my @bad = grep { $status{$_} ne '200' && $status{$_} ne '503'
                 && $status{$_} ne 'ERR' } keys %status;
is(scalar @bad, 0, 'the non-200 answers are only 503s or connection errors '
                   . '(Meta retries them)')
    or diag(join "\n", map { "$wamids[$_]: $status{$_}" } sort @bad);
is(scalar @non200, 0, 'no request failed across the reloads')
    or diag("non-200 answers:\n" . join("\n", @non200));

my @bad200 = grep { !$ok200{$_}
                    || ($ok200{$_}{status} // '') ne 'ok'
                    || ($ok200{$_}{inserted} // -1) != 1
                    || ($ok200{$_}{duplicate} // -1) != 0 } keys %ok200;
is(scalar @bad200, 0, 'every 200 says {"status":"ok"}, inserted 1, '
                      . 'duplicate 0')
    or diag(join "\n", map { "$wamids[$_]" } sort @bad200);

# ----------------------------------------------------------------------
# the database

my $rows = $t->sql(q{SELECT m.wamid, count(*) OVER (PARTITION BY m.wamid),
                            (SELECT count(*) FROM meta_cloud_webhook_events e
                              WHERE e."webhookId" = 'msg:' || m.wamid)
                     FROM meta_cloud_messages m
                     WHERE m.wamid LIKE 'wamid.RELOAD-%'});
my %stored;
my @twice;
my @noevent;
for my $r (@$rows) {
    $stored{ $r->[0] }++;
    push @twice, $r->[0] if $r->[1] > 1;
    push @noevent, $r->[0] if $r->[2] != 1;
}
my %index = map { $wamids[$_] => $_ } 0 .. $#wamids;

my @missing = grep { !$stored{ $wamids[$_] } } sort { $a <=> $b } keys %ok200;
is(scalar @missing, 0, 'every body answered 200 has its message')
    or diag('missing: ' . join(' ', map { $wamids[$_] } @missing));
is(scalar @twice, 0, 'no message stored twice') or diag("@twice");
is(scalar @noevent, 0, 'every stored message has exactly one event')
    or diag("@noevent");

my @unknown = grep { !exists $index{$_} } keys %stored;
is(scalar @unknown, 0, 'nothing stored that was not sent') or diag("@unknown");

my @late = grep { exists $index{$_} && ($status{ $index{$_} } // '') ne '200' }
           keys %stored;
is(scalar @late, 0, 'no body answered non-200 was stored (no late commit)')
    or diag("stored after a non-200: @late");

is(scalar(keys %stored), scalar(keys %ok200),
   'messages stored = distinct bodies answered 200 (' . scalar(keys %ok200)
   . ')');

# the raw requests: one per 200 (+ the warm-up and the redelivery)
my %sha200 = map { sha256_hex($bodies[$_]) => 1 } keys %ok200;
my $raw = $t->sql(q{SELECT encode(sha256, 'hex'), count(*)
                    FROM meta_cloud_webhook_requests GROUP BY 1});
my %rawn = map { $_->[0] => $_->[1] } @$raw;
my @rawbad = grep { ($rawn{$_} // 0) != 1 } keys %sha200;
is(scalar @rawbad, 0, 'every body answered 200 has exactly one raw request');
is($rawn{ sha256_hex($template) }, 2,
   'the warm-up body: two raw requests (first POST and the redelivery)');
my $rawtotal = 0;
$rawtotal += $_ for values %rawn;
is($rawtotal, scalar(keys %ok200) + 2, 'no other raw request');

# ----------------------------------------------------------------------
# stop: nothing left behind

my $db = $t->dbname;
ok($t->stop, 'nginx stops (QUIT, no kill)');
my @leftover = grep { alive($_) } keys %known;
is(scalar @leftover, 0, 'no nginx process of this suite left after stop ('
                        . scalar(keys %known) . ' known)')
    or diag("left: @leftover");

my $conns;
$deadline = time + 10 * $tf;
while (1) {
    $conns = $t->sql1(q{SELECT count(*) FROM pg_stat_activity
                        WHERE usename = 'metacloud_module'
                          AND datname = current_database()});
    last if !$conns || time > $deadline;
    sleep 0.1;
}
is($conns, 0, 'no database connection of the module left after stop');

done_testing;
