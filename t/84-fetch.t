#!/usr/bin/perl
# t/84-fetch.t: the thread code of the media downloads
# (src/ngx_http_metacloud_fetch.c) alone, one attempt at a time, against
# the fake Graph API / file server (t/lib/fake-meta.js) and s3rver with
# SigV4 checked (t/lib/fake-s3.js): built with ASan + UBSan into a small
# driver (t/lib/fetch-driver.c) that prints the attempt's result.
# Every outcome: stored (local: bytes, place, no temporary left; S3: bytes,
# Content-Type, refused when the signature is wrong), the webhook's URL
# used while fresh, an expired URL looked up again within the attempt, an
# unknown media id EXPIRED, a refused token, 5xx, a truncated body, a wrong
# SHA-256, a file over the limit (announced or streamed), a stalled and a
# slow transfer within the timeout, an id that could escape its directory.
#
# Run: make test T=t/84-fetch.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use File::Temp qw(tempdir);
use JSON::PP ();
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time);
use MCMedia;

my $root = $MCMedia::ROOT;
my $dir = tempdir('mcfetch-XXXXXX', DIR => '/tmp',
                  CLEANUP => !$ENV{MC_KEEP});
my $JSON = JSON::PP->new;

plan skip_all => 'node is not installed' if system('node -v >/dev/null 2>&1');

# the driver, with the same warnings as the module and the sanitizers
my $driver = "$root/build/fetch/fetch-driver";
system('mkdir', '-p', "$root/build/fetch");
my $cc = 'cc -W -Wall -Wpointer-arith -Wno-unused-parameter -Werror -O1 -g '
    . '-fsanitize=address,undefined -fno-sanitize-recover=all '
    . "-I$root/src -I$root/src/core -o $driver $root/t/lib/fetch-driver.c "
    . "$root/src/ngx_http_metacloud_fetch.c $root/src/core/mc_media.c "
    . '`pkg-config --cflags --libs libcurl jansson libcrypto` 2>&1';
my $out = `$cc`;
is($?, 0, 'the driver builds warning-free') or BAIL_OUT($out);

my $meta = MCMedia::Meta->start($dir);
my $s3 = MCMedia::S3->start($dir);
my $store = "$dir/store";
mkdir $store;

my $DAY = '2026/03/04';
my $ORG = 'org-fetch';
my $TOKEN = 'EAAG-test-token-1234567890';

sub fetch {
    my (%a) = @_;
    my %args = (graph => $meta->graph_url, path => $store, org => $ORG,
                day => $DAY, token => $TOKEN, timeout => 3000, %a);
    delete $args{path} if $args{s3};
    for (keys %args) { delete $args{$_} unless defined $args{$_} }
    local $ENV{ASAN_OPTIONS} = 'detect_leaks=1';
    my @cmd = ($driver, map { "$_=$args{$_}" } sort keys %args);
    my $t0 = time;
    my $o = `@{[ join ' ', map { "'$_'" } @cmd ]} 2>&1`;
    my $dt = time - $t0;
    my $r = eval { $JSON->decode((split /\n/, $o)[-1]) };
    fail("driver output: $o") unless $r && $? == 0;
    $r ||= {};
    $r->{wall} = $dt;
    return $r;
}

sub file_of { my $f = "$store/$_[0]"; -f $f ? do { local $/; open my $h, '<:raw', $f; <$h> } : undef }
sub tmp_left { my @f = glob("$store/.tmp/*"); scalar @f }
sub counts { $meta->counts }

# 1. a lookup, the download, the local store
my $m = $meta->add(id => '1001', size => 300_000, mime => 'image/jpeg',
                   token => $TOKEN);
my $r = fetch(media_id => '1001', url_prefix => 'https://cdn.example/m/');
is($r->{rc}, 'downloaded', 'stored') or diag explain $r;
is($r->{key}, "$ORG/$DAY/1001.jpg", 'key <org>/<yyyy>/<mm>/<dd>/<id>.<ext>');
is($r->{size}, 300_000, 'size');
is($r->{lookups}, 1, 'one lookup');
is($r->{mime_found}, 'image/jpeg', "the lookup's MIME type reported");
is($r->{storage_url}, "https://cdn.example/m/$ORG/$DAY/1001.jpg",
   'storage url = prefix + key');
ok(file_of($r->{key}) eq $meta->bytes('1001'), 'bytes equal on disk');
is((stat "$store/$r->{key}")[2] & 0777, 0644, 'file mode 0644');
is(tmp_left(), 0, 'no temporary file left');
is(counts()->{'file:1001'}, 1, 'one GET of the file');
ok((grep { $_ eq "Bearer $TOKEN" } @{ $meta->seen }), 'the bearer token sent');

# 2. the same media again: one file, same bytes
$r = fetch(media_id => '1001');
is($r->{rc}, 'downloaded', 'stored again');
my @files = glob("$store/$ORG/$DAY/1001.*");
is(scalar @files, 1, 'storing the same media twice leaves one file');

# 3. the webhook's own URL while fresh: no lookup; its base64 digest checked
$m = $meta->add(id => '1002', size => 5000, mime => 'audio/ogg; codecs=opus',
                token => $TOKEN);
$r = fetch(media_id => '1002', url => $m->{url}, sha256 => $m->{sha256_b64},
           mime => 'audio/ogg; codecs=opus');
is($r->{rc}, 'downloaded', "the webhook's url: stored");
is($r->{lookups}, 0, 'no lookup');
is(counts()->{'lookup:1002'}, undef, 'the Graph API not asked');
is($r->{key}, "$ORG/$DAY/1002.ogg", 'extension from the MIME type');
ok(file_of($r->{key}) eq $meta->bytes('1002'), 'bytes equal');

# 4. the webhook's URL expired (404): a fresh one within the same attempt
$m = $meta->add(id => '1003', size => 4000, token => $TOKEN, url_expired => 1);
$r = fetch(media_id => '1003', url => $m->{url}, sha256 => $m->{sha256_b64});
is($r->{rc}, 'downloaded', 'expired url: looked up and stored');
is($r->{lookups}, 1, 'one lookup after the 404');
is(counts()->{'file:1003'}, 2, 'two GETs of the file');

# 5. expired twice: the attempt fails (and will be retried)
$m = $meta->add(id => '1004', size => 4000, token => $TOKEN, url_expired => 5);
$r = fetch(media_id => '1004');
is($r->{rc}, 'failed, will retry', 'expired again: retry later');
like($r->{error}, qr/HTTP 404/, 'error says 404');
is($r->{lookups}, 2, 'two lookups, no more');

# 6. an unknown media id: expired at once
$r = fetch(media_id => '999999');
is($r->{rc}, 'expired', 'unknown id: EXPIRED');
like($r->{error}, qr/^lookup: HTTP 400 \(GraphMethodException code 100 subcode 33\)$/,
     'error: code and subcode');

# 7. the media deleted (404 on the lookup): expired
$meta->add(id => '1005', size => 10, token => $TOKEN, gone => JSON::PP::true);
is(fetch(media_id => '1005')->{rc}, 'expired', 'deleted media: EXPIRED');

# 8. a refused token
$meta->add(id => '1006', size => 10, token => 'another-token');
$r = fetch(media_id => '1006');
is($r->{rc}, 'failed, will retry', 'refused token: retry later');
like($r->{error}, qr/HTTP 401 \(OAuthException code 190\)/, '401 in the error');
unlike($r->{error}, qr/\Q$TOKEN\E/, 'no token in the error');

# 9. 5xx from the Graph API, then from the file server
$meta->add(id => '1007', size => 10, token => $TOKEN, lookup_fail => [500]);
$r = fetch(media_id => '1007');
is($r->{rc}, 'failed, will retry', 'lookup 500: retry');
like($r->{error}, qr/^lookup: HTTP 500/, 'lookup 500 error');
is(fetch(media_id => '1007')->{rc}, 'downloaded', 'next attempt stored');

$meta->add(id => '1008', size => 10, token => $TOKEN, file_fail => [503]);
$r = fetch(media_id => '1008');
is($r->{rc}, 'failed, will retry', 'file 503: retry');
is($r->{error}, 'download: HTTP 503', 'file 503 error');
ok(!defined file_of("$ORG/$DAY/1008.jpg"), 'nothing stored');

# 10. a truncated body
$meta->add(id => '1009', size => 100_000, token => $TOKEN,
           truncate => JSON::PP::true);
$r = fetch(media_id => '1009');
is($r->{rc}, 'failed, will retry', 'truncated: retry');
like($r->{error}, qr/^download: .*\(curl 18\)$/, 'partial file error');
ok(!defined file_of("$ORG/$DAY/1009.jpg"), 'nothing stored');
is(tmp_left(), 0, 'no temporary file left');

# 11. a wrong SHA-256 (lookup), and a wrong one from the webhook
$meta->add(id => '1010', size => 1000, token => $TOKEN,
           bad_sha => JSON::PP::true);
$r = fetch(media_id => '1010');
is($r->{rc}, 'failed, will retry', 'sha256 mismatch: retry');
is($r->{error}, 'download: sha256 mismatch (1000 bytes)', 'mismatch error');
ok(!defined file_of("$ORG/$DAY/1010.jpg"), 'nothing stored');

$m = $meta->add(id => '1011', size => 1000, token => $TOKEN);
$r = fetch(media_id => '1011', url => $m->{url},
           sha256 => 'ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=');
is($r->{rc}, 'failed, will retry', "the webhook's digest is checked too");

# 12. over the size limit: announced by the lookup, by Content-Length, or
# only while streaming (chunked)
$meta->add(id => '1012', size => 20_000, token => $TOKEN);
$r = fetch(media_id => '1012', max => 10_000);
is($r->{rc}, 'failed', 'file_size over the limit: FAILED for good');
is($r->{error}, 'lookup: file_size 20000 over the size limit', 'its error');
is(counts()->{'file:1012'}, undef, 'not even downloaded');

$m = $meta->add(id => '1013', size => 20_000, token => $TOKEN);
$r = fetch(media_id => '1013', url => $m->{url}, max => 10_000);
is($r->{rc}, 'failed', 'Content-Length over the limit: FAILED');
like($r->{error}, qr/over the size limit of 10000 bytes/, 'its error');

$m = $meta->add(id => '1014', size => 200_000, token => $TOKEN,
                chunked => JSON::PP::true);
$r = fetch(media_id => '1014', url => $m->{url}, max => 10_000);
is($r->{rc}, 'failed', 'chunked over the limit: FAILED while streaming');
is(tmp_left(), 0, 'no temporary file left');

# 13. a stalled transfer, a stalled lookup: the timeout ends them
$meta->add(id => '1015', size => 100_000, token => $TOKEN,
           stall => JSON::PP::true);
$r = fetch(media_id => '1015', timeout => 2000);
is($r->{rc}, 'failed, will retry', 'stalled download: retry');
like($r->{error}, qr/\(curl 28\)$/, 'a timeout');
cmp_ok($r->{wall}, '<', 8, "ended by the timeout ($r->{wall} s)");

$meta->add(id => '1016', size => 10, token => $TOKEN,
           lookup_stall => JSON::PP::true);
$r = fetch(media_id => '1016', timeout => 1500);
is($r->{rc}, 'failed, will retry', 'stalled lookup: retry');
like($r->{error}, qr/^lookup: .*\(curl 28\)$/, 'a lookup timeout');
$meta->release;

# 14. slow but within the timeout: stored
$meta->add(id => '1017', size => 20_000, token => $TOKEN, slow => 40_000);
$r = fetch(media_id => '1017', timeout => 5000);
is($r->{rc}, 'downloaded', 'slow transfer within the timeout: stored');
ok(file_of($r->{key}) eq $meta->bytes('1017'), 'bytes equal');

# 15. file_size as a string; no MIME type anywhere: .bin
$meta->add(id => '1018', size => 10, token => $TOKEN,
           size_string => JSON::PP::true, no_mime => JSON::PP::true);
$r = fetch(media_id => '1018');
is($r->{rc}, 'downloaded', 'string file_size, no mime: stored');
is($r->{key}, "$ORG/$DAY/1018.bin", 'unknown type: .bin');

# 16. ids that could escape the store are refused before any request
$r = fetch(media_id => '../../etc/x');
is($r->{rc}, 'failed', 'media id with a path: FAILED');
$r = fetch(media_id => '1001', org => '../other');
is($r->{rc}, 'failed', 'organization with a path: FAILED');
ok(!-e "$dir/other", 'nothing written outside the store');

# 17. S3: a signed PUT with Content-Type and checksum headers
$m = $meta->add(id => '2001', size => 1_000_000, mime => 'video/mp4',
                token => $TOKEN);
my %s3 = (s3 => $s3->endpoint, bucket => $s3->bucket, region => $s3->region,
          key_id => $s3->key_id, secret => $s3->secret, tmp_dir => $dir);
$r = fetch(media_id => '2001', %s3, prefix => 'wa/');
is($r->{rc}, 'downloaded', 'S3: stored') or diag explain $r;
is($r->{key}, "wa/$ORG/$DAY/2001.mp4", 'S3: key, with the prefix');
ok(($s3->object($r->{key}) // '') eq $meta->bytes('2001'),
   'S3: bytes equal in the bucket (under the prefix)');
is($s3->meta($r->{key})->{'content-type'}, 'video/mp4',
   'S3: Content-Type');
is($s3->refused, 0, 'S3: the signature was accepted');

$r = fetch(media_id => '2001', %s3, secret => 'wrong-secret');
is($r->{rc}, 'failed, will retry', 'S3: a wrong secret fails the attempt');
is($r->{error}, 's3: PUT answered HTTP 403', 'S3: 403');
is($s3->refused, 1, 'S3: refused by the signature check');
ok(!(grep { /\Q$TOKEN\E/ } `cat $dir/fake-s3.log`), 'no token sent to S3');

done_testing();
