#!/usr/bin/perl
# t/93-purge.t: `CALL metacloud_purge(...)` while nginx ingests.
#
# 3,000 messages delivered 100 days ago (their raw requests and events old
# enough to go) are purged in batches of 100 while four clients post
# statuses for those very messages: each status updates a message row that
# the purge's ON DELETE SET NULL also writes, the tightest contention the
# ingest path can meet.  The ingest sessions run with deadlock_timeout
# 100ms and the cluster's log_lock_waits on, so PostgreSQL logs every lock
# wait of the ingest longer than 100 ms.  Shown: every delivery 200 (no
# 503), no such log line, everything old purged, every message kept with
# its new statuses.  (The same purge as one transaction of 3,000 rows
# makes this suite fail: the ingest then logs waits of 100 ms and more.)
# A batch's row locks last as long as the batch takes to write and
# commit, which depends on the disk: 100 rows, not 200, because batches of
# 200 made waits of up to 178 ms on a disk with a 10 ms fsync, batches of
# 100 at most 42 ms.
#
# Run: make test T=t/93-purge.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);
use MCTest;

my $t = MCTest->new(name => 'purge');
plan skip_all => 'module not built' unless $t->has_module;

my $JSON = JSON::PP->new->canonical;
my $PHONE = '106540352242922';
my $WABA = '102290129340398';
my $N = 3000;
my $CLIENTS = 4;
my $db = $t->dbname;

$t->sql(qq{SELECT metacloud_add_phone_number('org-purge', '$PHONE',
                                             '$WABA', 'tok')});
$t->old_deliveries(n => $N, phone => $PHONE, waba => $WABA, prefix => 'OLD');
$t->sql(qq{ALTER ROLE metacloud_module IN DATABASE "$db"
          SET deadlock_timeout = '100ms'});

is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages}), $N,
   "$N old messages");

$t->write_conf($MCTest::WEBHOOK_CONF, workers => 2);
$t->run;

sub status_body {
    my ($wamid, $status) = @_;
    return $JSON->encode({
        object => 'whatsapp_business_account',
        entry => [{ id => $WABA, changes => [{ field => 'messages',
            value => { messaging_product => 'whatsapp',
                       metadata => { display_phone_number => '15550783881',
                                     phone_number_id => $PHONE },
                       statuses => [{ id => $wamid, status => $status,
                                      timestamp => '1749416400',
                                      recipient_id => '5511900000000' }] }
        }] }] });
}

my $pglog = "$ENV{MC_PG_DIR}/postgres.log";
my $log_off = -s $pglog;
my $stop = $t->testdir . '/stop';

# the clients: each walks its own slice of the old messages, sent then
# delivered then read, until told to stop; writes one status code a line
my @kids;
for my $k (0 .. $CLIENTS - 1) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open my $out, '>', $t->testdir . "/client$k" or POSIX::_exit(1);
        $out->autoflush(1);
        OUTER: for my $status (qw(sent delivered read)) {
            for (my $i = 1 + $k; $i <= $N; $i += $CLIENTS) {
                last OUTER if -e $stop;
                my ($st) = eval { $t->deliver(status_body("wamid.OLD$i",
                                                          $status)) };
                print $out ($st // 'ERR'), " $i $status\n";
            }
        }
        close $out;
        POSIX::_exit(0);        # no END blocks: nginx belongs to the parent
    }
    push @kids, $pid;
}

sleep 1;        # the clients are running

my $t0 = time;
my $call = q{CALL metacloud_purge('30 days', '90 days', '7 days', 100)};
my $purge = `psql -X -q -At -v ON_ERROR_STOP=1 -d $db -c "$call" 2>&1`;
my $purge_rc = $?;
my $purge_s = time - $t0;
sleep 0.5;

open my $fh, '>', $stop or die;
close $fh;
waitpid $_, 0 for @kids;

is($purge_rc, 0, 'CALL metacloud_purge() under ingest') or diag($purge);
my $res = eval { $JSON->decode($purge) } || {};
is($res->{raw}, $N, "$N raw requests purged") or diag($purge);
is($res->{events}, $N, "$N events purged");
diag(sprintf('purge: %.2f s', $purge_s));

my (%codes, $posted, %ok);
for my $k (0 .. $CLIENTS - 1) {
    open my $in, '<', $t->testdir . "/client$k" or next;
    while (<$in>) {
        my ($st, $i, $s) = split;
        $codes{$st}++;
        $posted++;
        $ok{"$i $s"} = 1 if $st eq '200';
    }
}
cmp_ok($posted, '>', 100, "the clients posted during the purge ($posted)");
is_deeply([sort keys %codes], ['200'], 'every delivery answered 200')
    or diag(join ', ', map { "$_: $codes{$_}" } sort keys %codes);

my $log = '';
if (open my $lf, '<', $pglog) {
    seek $lf, $log_off, 0;
    local $/;
    $log = <$lf> // '';
}
my @waits = grep { /metacloud_module\@\Q$db\E .*still waiting/ }
            split /\n/, $log;
is(scalar @waits, 0, 'no lock wait of the ingest over 100 ms')
    or diag(join "\n", @waits[0 .. ($#waits > 9 ? 9 : $#waits)]);

is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages}), $N,
   'every message kept');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_requests
               WHERE "receivedAt" < now() - interval '30 days'}), 0,
   'no old raw request left');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_message_statuses}),
   scalar(keys %ok), 'one status row per delivered status');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_requests}),
   scalar(keys %ok), 'the new raw requests kept');

$t->sql(qq{ALTER ROLE metacloud_module IN DATABASE "$db"
                 RESET deadlock_timeout});
$t->stop;
done_testing;
