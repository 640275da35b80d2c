#!/usr/bin/perl
# t/86-media-cluster.t: media jobs shared through PostgreSQL.
#
#   1. two nginx instances (two workers each) on one database: 60 media,
#      half announced by webhooks to one, half to the other, a third
#      written while media was off (swept): every file stored once, and
#      the fake counts exactly one GET of each file
#   2. a reload while downloads run: the old worker finishes and records
#      its jobs, the new ones take the rest: every file once, one attempt
#   3. kill -9 of the worker in the middle of a download: the lease
#      expires, the row is claimed again and the file stored once
#
# Run: make test T=t/86-media-cluster.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use MCTest;
use MCMedia;

my $t = MCTest->new(name => 'media_cluster');
plan skip_all => 'module not built' unless $t->has_module;
plan skip_all => 'node is not installed' if system('node -v >/dev/null 2>&1');

my $tf = $t->timeout_factor;
my $URI = $MCTest::WEBHOOK_URI;
my $PHONE = '1065400086';
my $ORG = 'org-cluster';
my $TOKEN = 'EAAG-cluster-token-0123456789';
my $dir = $t->testdir;

my ($meta, $store) = MCMedia::setup($t, org => $ORG, phone => $PHONE,
                                    token => $TOKEN);

sub conf {
    my ($db, $timeout) = @_;
    return <<"EOF";
metacloud_db "$db";
metacloud_db_timeout 10s;
metacloud_media on;
metacloud_media_path $store;
metacloud_graph_url @{[ $meta->graph_url ]};
metacloud_media_timeout $timeout;
$MCMedia::SERVER
EOF
}

sub status_counts {
    my ($like) = @_;
    my %c = map { $_->[0] => $_->[1] } @{ $t->sql(
        q{SELECT status, count(*) FROM meta_cloud_media
           WHERE "mediaId" LIKE :'v1' GROUP BY status}, $like) };
    return \%c;
}

sub all_downloaded {
    my ($like, $n, $secs) = @_;
    return MCMedia::wait_until($secs * $tf, sub {
        (status_counts($like)->{DOWNLOADED} // 0) == $n });
}

sub files_equal {
    my ($like) = @_;
    my $bad = 0;
    for my $r (@{ $t->sql(q{SELECT "mediaId", "storageKey" FROM
                             meta_cloud_media WHERE "mediaId" LIKE :'v1'},
                          $like) }) {
        my $f = "$store/$r->[1]";
        my $b = -f $f ? do { open my $h, '<:raw', $f; local $/; <$h> } : '';
        $bad++ unless $b eq $meta->bytes($r->[0]);
    }
    return $bad;
}

sub gets {
    my ($prefix, $kind) = @_;
    my $c = $meta->counts;
    my %n;
    for (keys %$c) {
        $n{$1} = $c->{$_} if /^$kind:($prefix\d+)$/;
    }
    return \%n;
}

# ======================================================================
# 1. two instances, one database

my $t2 = MCTest->new(name => 'media_cluster2', db => 0);
$t->write_conf(conf($t->conninfo, '10s'), workers => 2);
$t2->write_conf(conf($t->conninfo, '10s'), workers => 2);
$t->run;
$t2->run;

my @ids = map { sprintf '861%03d', $_ } 1 .. 60;
# a little slowness lets the claims of both machines overlap
$meta->add([ map { { id => $_, size => 30_000, token => $TOKEN,
                     slow => 300_000 } } @ids ]);

# 20 written while media was off (only the sweeps find them)
$t->sql(q{INSERT INTO meta_cloud_media ("mediaId", "type", "mimeType",
                                        "organizationId", "phoneNumberId")
          SELECT id, 'IMAGE', 'image/jpeg', :'v1', :'v2'
            FROM unnest(string_to_array(:'v3', ',')) id},
        $ORG, $PHONE, join(',', @ids[40 .. 59]));

my $posted = 0;
for my $i (0 .. 9) {
    my $inst = $i % 2 ? $t2 : $t;
    my @batch = map { { id => $_ } } @ids[4 * $i .. 4 * $i + 3];
    my ($st) = $inst->post_signed($URI, MCMedia::webhook($PHONE, @batch));
    $posted++ if $st == 200;
}
is($posted, 10, 'ten webhooks, alternately to either instance: 200');

ok(all_downloaded('861%', 60, 60), 'all 60 DOWNLOADED')
    or diag explain status_counts('861%');
my $files = gets('861', 'file');
is(scalar(keys %$files), 60, 'every file fetched');
is(scalar(grep { $_ != 1 } values %$files), 0,
   'each file fetched exactly once by the two instances')
    or diag explain { map { $_ => $files->{$_} } grep { $files->{$_} != 1 }
                      keys %$files };
is(scalar(grep { $_ != 1 } values %{ gets('861', 'lookup') }), 0,
   'each looked up once');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_media
               WHERE "mediaId" LIKE '861%' AND "downloadAttempts" <> 1}), 0,
   'one attempt each');
is(files_equal('861%'), 0, 'bytes equal on disk');
my @stored = glob("$store/$ORG/*/*/*/861*");
is(scalar @stored, 60, 'sixty files');
$t2->stop;

# ======================================================================
# 2. a reload in the middle of downloads

my @rl = map { sprintf '862%03d', $_ } 1 .. 12;
# 2 s each: the worker holds 4 at a time
$meta->add([ map { { id => $_, size => 40_000, token => $TOKEN,
                     slow => 20_000 } } @rl ]);
my ($st) = $t->post_signed($URI, MCMedia::webhook($PHONE,
                                                  map { { id => $_ } } @rl));
is($st, 200, 'twelve slow media: 200');
ok(MCMedia::wait_until(10 * $tf, sub {
        (status_counts('862%')->{DOWNLOADING} // 0) >= 4 }),
   'downloads running');
my @old = $t->worker_pids;
ok($t->reload, 'reload in the middle of downloads');

ok(all_downloaded('862%', 12, 60), 'all 12 DOWNLOADED after the reload')
    or diag explain status_counts('862%');
$files = gets('862', 'file');
is(scalar(grep { $_ != 1 } values %$files), 0,
   'none fetched twice: the old workers finished theirs');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_media
               WHERE "mediaId" LIKE '862%' AND "downloadAttempts" <> 1}), 0,
   'one attempt each: nothing lost to an expired lease');
is(files_equal('862%'), 0, 'bytes equal');
ok(MCMedia::wait_until(30 * $tf, sub { !grep { kill 0, $_ } @old }),
   'the old workers exited');

# ======================================================================
# 3. kill -9 of the worker during a download

$t->stop;
$t->write_conf(conf($t->conninfo, '4s'), workers => 1);
$t->run;

# 3 s at 10 kB/s: within the 4 s timeout; the lease is 2 x 4 + 10 s
$meta->add(id => '863001', size => 30_000, token => $TOKEN, slow => 10_000);
($st) = $t->post_signed($URI, MCMedia::webhook($PHONE, { id => '863001' }));
is($st, 200, 'a slow media: 200');
ok(MCMedia::wait_until(10 * $tf, sub {
        (gets('863', 'file')->{'863001'} // 0) >= 1 }),
   'its download started');
sleep 0.5;
my @w = $t->worker_pids;
is(kill('KILL', @w), scalar @w, 'kill -9 of the worker');
my $row = $t->sql(q{SELECT status, "leaseUntil" > now() FROM meta_cloud_media
                     WHERE "mediaId" = '863001'})->[0];
is_deeply($row, ['DOWNLOADING', 't'], 'the row stays DOWNLOADING, leased');

ok(all_downloaded('863%', 1, 40), 'after the lease: claimed again, stored');
is($t->sql1(q{SELECT "downloadAttempts" FROM meta_cloud_media
               WHERE "mediaId" = '863001'}), 2, 'two attempts');
is(gets('863', 'file')->{'863001'}, 2, 'two GETs');
is(files_equal('863%'), 0, 'bytes equal');
is(scalar(() = glob("$store/$ORG/*/*/*/863001.*")), 1, 'stored once');

$t->stop;
done_testing();
