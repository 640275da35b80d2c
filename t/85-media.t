#!/usr/bin/perl
# t/85-media.t: media downloads by nginx, local storage.
# mc-valgrind: this suite runs a second time under valgrind in `make test`
#
#   1. nginx -t refuses bad media configurations, naming the directive
#   2. webhooks with images, audio and documents: every file DOWNLOADED
#      within seconds, the rows' storage columns, bytes equal on disk, the
#      webhook's own URL used while fresh (no lookup), storageUrl
#   3. every failure in the rows: an unknown media id EXPIRED at once; a
#      5xx retried with back-off then stored; FAILED after the last attempt;
#      over the size limit FAILED at once; a wrong SHA-256 and a truncated
#      body retried; each failure logged once, never with the token
#   4. the sweep: a row written while media was off is downloaded; a
#      stale temporary file of a killed worker removed at start
#   5. a stalled Graph API does not touch the webhook answers
#
# Run: make test T=t/85-media.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use MCTest;
use MCMedia;

my $t = MCTest->new(name => 'media');
plan skip_all => 'module not built' unless $t->has_module;
plan skip_all => 'node is not installed' if system('node -v >/dev/null 2>&1');

my $tf = $t->timeout_factor;
my $URI = $MCTest::WEBHOOK_URI;
my $PHONE = '1065400085';
my $ORG = 'org-media';
my $TOKEN = 'EAAG-media-token-0123456789abcdef';
my $dir = $t->testdir;

my ($meta, $store) = MCMedia::setup($t, org => $ORG, phone => $PHONE,
                                    token => $TOKEN);

# the metrics of the downloads, on a port of their own
my $SPORT = MCTest::_free_port();

sub scrape {
    my (undef, undef, $text) = $t->http_get('/status', port => $SPORT);
    return $text // '';
}

sub conf {
    my (%o) = @_;
    my $media = $o{media} // <<"EOF";
metacloud_media on;
metacloud_media_path $store;
metacloud_graph_url @{[ $meta->graph_url ]};
metacloud_media_timeout 3s;
metacloud_media_retries 2;
metacloud_media_max_size 1m;
metacloud_media_url_prefix https://cdn.example.com/media/;
EOF
    return <<"EOF";
metacloud_db "%%DB%%";
metacloud_db_timeout 10s;
$media
$MCMedia::SERVER
server {
    listen 127.0.0.1:$SPORT;
    location = /status { metacloud_status; }
}
EOF
}

sub media_row {
    my ($id) = @_;
    my $r = $t->sql(q{SELECT status, "storageProvider", "storageKey",
                             "storageBucket", "storageUrl", "sizeBytes",
                             "mimeType", "downloadAttempts", "downloadError",
                             "nextAttemptAt" IS NOT NULL, "leaseUntil"
                        FROM meta_cloud_media WHERE "mediaId" = :'v1'}, $id);
    my @c = qw(status provider key bucket url size mime attempts error
               next_at lease);
    return undef unless @$r;
    my %h;
    @h{@c} = @{ $r->[0] };
    return \%h;
}

# the row once its status is $want, after at least $tries attempts (a
# new row is PENDING too, before its first attempt)
sub wait_status {
    my ($id, $want, $secs, $tries) = @_;
    my $row;
    MCMedia::wait_until($secs * $tf, sub {
        $row = media_row($id);
        $row && $row->{status} =~ /^(?:$want)$/
            && $row->{attempts} >= ($tries // 0);
    });
    return $row || {};
}

sub post {
    my ($body) = @_;
    my ($st, undef, $b) = $t->post_signed($URI, $body);
    return $st;
}

sub file_of {
    my ($key) = @_;
    my $f = "$store/$key";
    return undef unless defined $key && -f $f;
    open my $fh, '<:raw', $f or return undef;
    local $/;
    return scalar <$fh>;
}

# ======================================================================
# 1. nginx -t

my %bad = (
    'no storage' => ["metacloud_media on;\n",
                     qr/needs exactly one of "metacloud_media_path" and "metacloud_media_s3"/],
    'both storages' => ["metacloud_media on; metacloud_media_path $store;\n"
                        . "metacloud_media_s3 endpoint=http://127.0.0.1:9 "
                        . "bucket=b region=r credentials=$dir/nope;\n",
                        qr/metacloud_media_s3.*nope/],
    'path not a directory' => ["metacloud_media on; metacloud_media_path $dir/none;\n",
                               qr/"metacloud_media_path" "[^"]*none" is not a directory/],
    'unknown thread pool' => ["metacloud_media on; metacloud_media_path $store;\n"
                              . "metacloud_media_thread_pool nope;\n",
                              qr/unknown thread pool "nope"/],
    'bad timeout' => ["metacloud_media_timeout soon;\n",
                      qr/"metacloud_media_timeout" directive invalid value/],
    'zero concurrency' => ["metacloud_media_concurrency 0;\n",
                           qr/"metacloud_media_concurrency" must be between 1 and 1024/],
    'bad max size' => ["metacloud_media_max_size lots;\n",
                       qr/"metacloud_media_max_size" directive invalid value/],
    'bad graph url' => ["metacloud_media on; metacloud_media_path $store;\n"
                        . "metacloud_graph_url ftp://x;\n",
                        qr/"metacloud_graph_url" must be an http/],
    'bad s3 parameter' => ["metacloud_media_s3 endpoint=http://h bucket=b "
                           . "colour=red;\n",
                           qr/invalid parameter "colour=red" of "metacloud_media_s3"/],
    's3 without credentials' => ["metacloud_media_s3 endpoint=http://h "
                                 . "bucket=b region=r;\n",
                                 qr/"metacloud_media_s3" directive needs endpoint=, bucket=, region= and credentials=/],
    'bad flag' => ["metacloud_media maybe;\n",
                   qr/invalid value "maybe" in "metacloud_media" directive/],
);
for my $name (sort keys %bad) {
    my ($rc, $out) = $t->nginx_t(conf(media => $bad{$name}[0]));
    isnt($rc, 0, "nginx -t refuses: $name");
    like($out, $bad{$name}[1], "$name: the message") or diag($out);
}
my ($rc, $out) = $t->nginx_t(conf());
is($rc, 0, 'nginx -t accepts the suite configuration') or diag($out);
($rc, $out) = $t->nginx_t(conf(media => "metacloud_media_path /nonexistent;\n"));
is($rc, 0, 'media off: its other directives are not checked') or diag($out);

# ======================================================================
# 2. downloads

# temporary files of a worker killed long ago go when the first worker
# starts; a recent one (another machine's attempt) stays
mkdir "$store/.tmp";
chmod 0777, "$store/.tmp";
for my $f ('8500.old', '8500.young') {
    open my $fh, '>', "$store/.tmp/$f" or die;
    print $fh 'partial';
    close $fh;
}
utime(time - 3600, time - 3600, "$store/.tmp/8500.old");

$t->write_conf(conf(), workers => 2);
$t->run;

ok(MCMedia::wait_until(5 * $tf, sub { !-e "$store/.tmp/8500.old" }),
   'a stale temporary file removed at start');
ok(-e "$store/.tmp/8500.young", 'a recent one kept');
unlink "$store/.tmp/8500.young";

my @ok = map { $meta->add(id => "85$_", size => 20_000 + $_, token => $TOKEN,
                          mime => $_ == 3 ? 'audio/ogg; codecs=opus'
                                          : 'image/jpeg') } 1 .. 3;
my $doc = $meta->add(id => '854', size => 7000, token => $TOKEN,
                     mime => 'application/pdf');

my $t0 = time;
is(post(MCMedia::webhook($PHONE,
    { id => '851', mime => 'image/jpeg', sha256 => $ok[0]{sha256_b64},
      url => $ok[0]{url} },
    { id => '852', mime => 'image/jpeg', sha256 => $ok[1]{sha256_b64} },
    { id => '853', type => 'audio', mime => 'audio/ogg; codecs=opus',
      sha256 => $ok[2]{sha256_b64} },
    { id => '854', type => 'document' })), 200, 'the webhook: 200');

for my $m (@ok, $doc) {
    my $id = $m->{id};
    my $row = wait_status($id, 'DOWNLOADED', 15);
    is($row->{status}, 'DOWNLOADED', "$id: DOWNLOADED") or diag explain $row;
    is($row->{provider}, 'local', "$id: provider local");
    like($row->{key}, qr{^$ORG/\d{4}/\d\d/\d\d/$id\.(?:jpg|ogg|pdf)$},
         "$id: key <org>/<yyyy>/<mm>/<dd>/<id>.<ext>");
    is($row->{size}, $m->{size}, "$id: sizeBytes");
    is($row->{url}, "https://cdn.example.com/media/$row->{key}",
       "$id: storageUrl = prefix + key");
    is($row->{attempts}, 1, "$id: one attempt");
    is($row->{error}, undef, "$id: no error");
    is($row->{lease}, undef, "$id: lease released");
    ok((file_of($row->{key}) // '') eq $meta->bytes($id),
       "$id: bytes equal on disk");
}
my $dt = time - $t0;
cmp_ok($dt, '<', 10 * $tf, sprintf('four files stored in %.2f s', $dt));

my $c = $meta->counts;
is($c->{'lookup:851'}, undef, "the webhook's fresh url: no lookup");
is($c->{'file:851'}, 1, 'one GET of it');
is($c->{'lookup:852'}, 1, 'without url: one lookup');
is(media_row('854')->{mime}, 'application/pdf',
   "no MIME type in the webhook: the lookup's");
like(media_row('854')->{key}, qr/\.pdf$/, 'and its extension');
like(media_row('853')->{key}, qr/\.ogg$/, 'audio/ogg; codecs=opus: .ogg');
is(scalar(() = glob("$store/.tmp/*")), 0, 'no temporary file left');

my $prom = scrape();
like($prom, qr/^metacloud_media_downloads_total\{result="ok"\} 4$/m,
     'metrics: 4 downloads ok');
like($prom, qr/^metacloud_media_bytes_total 67006$/m,
     'metrics: their bytes (20001 + 20002 + 20003 + 7000)');
like($prom, qr/^metacloud_media_download_duration_seconds_count 4$/m,
     'metrics: 4 durations');
like($prom, qr/^metacloud_media_in_flight 0$/m, 'metrics: none in flight');

# ======================================================================
# 3. failures

my $off = length $t->error_log;
$meta->add(id => '8601', size => 100, token => $TOKEN, lookup_fail => [500]);
$meta->add(id => '8602', size => 100, token => $TOKEN,
           file_fail => [503, 503, 503]);
$meta->add(id => '8603', size => 2_000_000, token => $TOKEN);
$meta->add(id => '8604', size => 5000, token => $TOKEN,
           bad_sha => JSON::PP::true);
$meta->add(id => '8605', size => 50_000, token => $TOKEN,
           truncate => JSON::PP::true);
$meta->add(id => '8606', size => 100, token => 'someone-elses-token');

is(post(MCMedia::webhook($PHONE, map { { id => $_ } }
        qw(8600 8601 8602 8603 8604 8605 8606))), 200,
   'webhook with seven media that fail: 200');

my $row = wait_status('8600', 'EXPIRED', 15);
is($row->{status}, 'EXPIRED', 'unknown media id: EXPIRED at once');
is($row->{attempts}, 1, 'after one attempt');
like($row->{error}, qr/GraphMethodException code 100 subcode 33/,
     "Meta's code in downloadError");

$row = wait_status('8603', 'FAILED', 15);
is($row->{status}, 'FAILED', 'over the size limit: FAILED at once');
is($row->{attempts}, 1, 'after one attempt');
like($row->{error}, qr/file_size 2000000 over the size limit/, 'the reason');

for my $id (qw(8601 8602 8604 8605 8606)) {
    $row = wait_status($id, 'PENDING', 15, 1);
    is($row->{status}, 'PENDING', "$id: failed once, PENDING again");
    is($row->{attempts}, 1, "$id: one attempt counted");
    is($row->{next_at}, 't', "$id: next attempt scheduled (back-off)");
}
like(media_row('8601')->{error}, qr/^lookup: HTTP 500/, '8601: lookup 500');
is(media_row('8602')->{error}, 'download: HTTP 503', '8602: file 503');
like(media_row('8604')->{error}, qr/^download: sha256 mismatch/,
     '8604: sha256 mismatch');
like(media_row('8605')->{error}, qr/\(curl 18\)$/, '8605: truncated body');
like(media_row('8606')->{error}, qr/HTTP 401 \(OAuthException code 190\)/,
     '8606: token refused');
for my $id (qw(8601 8602 8604 8605 8606)) {
    is(scalar(() = glob("$store/$ORG/*/*/*/$id.*")), 0, "$id: no file");
}

# the back-off is 30 s: time passes in the database
sleep 1;
$t->sql(q{UPDATE meta_cloud_media SET "nextAttemptAt" = now()
           WHERE status = 'PENDING'});

$row = wait_status('8601', 'DOWNLOADED', 15);
is($row->{status}, 'DOWNLOADED', '8601: second attempt stored');
is($row->{attempts}, 2, '8601: two attempts');
is($row->{error}, undef, '8601: error cleared');

for my $id (qw(8602 8604 8605 8606)) {
    $row = wait_status($id, 'FAILED', 15);
    is($row->{status}, 'FAILED', "$id: FAILED after metacloud_media_retries 2");
    is($row->{attempts}, 2, "$id: two attempts");
    is($row->{next_at}, 'f', "$id: no next attempt");
}

my $log = substr($t->error_log, $off);
my @lines = grep { /metacloud: media 86\d\d/ } split /\n/, $log;
for my $id (qw(8600 8603)) {
    is(scalar(grep { /media $id / } @lines), 1, "$id: logged once");
}
is(scalar(grep { /media 8602 / } @lines), 2, '8602: logged once per attempt');
like((grep { /media 8600 / } @lines)[0], qr/\[notice\].*expired/,
     'EXPIRED: a notice');
like((grep { /media 8602 / } @lines)[0], qr/\[warn\].*failed, will retry: download: HTTP 503/,
     'a failure: a warning with the reason');
unlike($t->error_log, qr/\Q$TOKEN\E/, 'the token is never in the log');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_media
               WHERE "downloadError" LIKE '%' || :'v1' || '%'}, $TOKEN), 0,
   'nor in an error column');

$prom = scrape();
for my $r (qw(retry failed expired)) {
    like($prom, qr/^metacloud_media_downloads_total\{result="$r"\} [1-9]/m,
         "metrics: $r counted");
}

# ======================================================================
# 4. the sweep: rows written while media was off

$meta->add(id => '8701', size => 3000, token => $TOKEN, mime => 'image/png');
$t->sql(q{INSERT INTO meta_cloud_media ("mediaId", "type", "mimeType",
                                        "organizationId", "phoneNumberId")
          VALUES ('8701', 'IMAGE', 'image/png', :'v1', :'v2')}, $ORG, $PHONE);
$row = wait_status('8701', 'DOWNLOADED', 15);
is($row->{status}, 'DOWNLOADED', 'a row written while off: swept and stored');
ok((file_of($row->{key}) // '') eq $meta->bytes('8701'), 'bytes equal');

# ======================================================================
# 5. a stalled Graph API does not hold the webhooks

$meta->add(id => "88$_", size => 10, token => $TOKEN,
           lookup_stall => JSON::PP::true) for 1 .. 4;
is(post(MCMedia::webhook($PHONE, map { { id => "88$_" } } 1 .. 4)), 200,
   'webhook with media whose lookups stall: 200');
sleep 0.5;
my ($worst, $n200) = (0, 0);
for my $i (1 .. 20) {
    my $s = time;
    $n200++ if post(MCMedia::webhook($PHONE, { id => "89$i" })) == 200;
    my $d = time - $s;
    $worst = $d if $d > $worst;
}
is($n200, 20, '20 webhooks answered 200 while the lookups stall');
cmp_ok($worst, '<', 2 * $tf, sprintf('the slowest in %.3f s', $worst));
$row = wait_status('881', 'PENDING', 20, 1);
like($row->{error}, qr/^lookup: .*\(curl 28\)$/, 'the stalled lookup timed out');
$meta->release;

$t->stop;
done_testing();
