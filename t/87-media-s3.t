#!/usr/bin/perl
# t/87-media-s3.t: media stored in S3-compatible storage (s3rver from npm,
# with AWS SigV4 checked by t/lib/fake-s3.js): the rows (provider s3,
# bucket, key under the prefix, storageUrl), the bytes and Content-Type in
# the bucket, no token sent to S3; wrong credentials: refused by the
# signature check, the attempt fails and is retried.
#
# Run: make test T=t/87-media-s3.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;
use MCMedia;

my $t = MCTest->new(name => 'media_s3');
plan skip_all => 'module not built' unless $t->has_module;
plan skip_all => 'node is not installed' if system('node -v >/dev/null 2>&1');

my $tf = $t->timeout_factor;
my $URI = $MCTest::WEBHOOK_URI;
my $PHONE = '1065400087';
my $ORG = 'org-s3';
my $TOKEN = 'EAAG-s3-token-0123456789abcdef';
my $dir = $t->testdir;

my ($meta) = MCMedia::setup($t, org => $ORG, phone => $PHONE,
                             token => $TOKEN);
my $s3 = MCMedia::S3->start($dir, bucket => 'wa-media', region => 'eu-west-3');

sub creds {
    my ($name, $id, $secret) = @_;
    my $f = "$dir/$name";
    open my $fh, '>', $f or die;
    print $fh "$id\n$secret\n";
    close $fh;
    chmod 0644, $f;
    return $f;
}

sub conf {
    my ($creds) = @_;
    return <<"EOF";
metacloud_db "%%DB%%";
metacloud_media on;
metacloud_media_s3 endpoint=@{[ $s3->endpoint ]} bucket=wa-media
                   region=eu-west-3 credentials=$creds prefix=whatsapp;
metacloud_graph_url @{[ $meta->graph_url ]};
metacloud_media_timeout 5s;
metacloud_media_url_prefix https://media.example.com/;
$MCMedia::SERVER
EOF
}

sub row {
    my ($id) = @_;
    my $r = $t->sql(q{SELECT status, "storageProvider", "storageBucket",
                             "storageKey", "storageUrl", "sizeBytes",
                             "downloadAttempts", "downloadError"
                        FROM meta_cloud_media WHERE "mediaId" = :'v1'}, $id);
    return $r->[0] || [];
}

# the row once its status is $want after at least one attempt (a new row
# is PENDING too, before its first attempt)
sub wait_status {
    my ($id, $want) = @_;
    MCMedia::wait_until(20 * $tf, sub {
        my $r = row($id);
        ($r->[0] // '') eq $want && ($r->[6] // 0) >= 1;
    });
    return row($id);
}

my ($rc, $out) = $t->nginx_t(conf("$dir/missing"));
isnt($rc, 0, 'nginx -t refuses a missing credentials file');
like($out, qr/"metacloud_media_s3": open\(\) "[^"]*missing" failed/,
     'naming the directive and the file') or diag($out);
($rc, $out) = $t->nginx_t(conf(creds('one-line', 'AKIA', '')));
isnt($rc, 0, 'nginx -t refuses a credentials file without the secret');
like($out, qr/must hold the access key id and the secret, one a line/,
     'and says what it needs') or diag($out);

$t->write_conf(conf(creds('s3.creds', $s3->key_id, $s3->secret)));
$t->run;

my @m = ($meta->add(id => '87001', size => 250_000, mime => 'video/mp4',
                    token => $TOKEN),
         $meta->add(id => '87002', size => 1234, mime => 'image/webp',
                    token => $TOKEN));
my ($st) = $t->post_signed($URI, MCMedia::webhook($PHONE,
    { id => '87001', type => 'video', mime => 'video/mp4',
      sha256 => $m[0]{sha256_b64}, url => $m[0]{url} },
    { id => '87002', type => 'sticker', mime => 'image/webp' }));
is($st, 200, 'webhook with a video and a sticker: 200');

for my $m (@m) {
    my $id = $m->{id};
    my $r = wait_status($id, 'DOWNLOADED');
    my ($status, $prov, $bucket, $key, $url, $size) = @$r;
    is($status, 'DOWNLOADED', "$id: DOWNLOADED") or diag explain $r;
    is($prov, 's3', "$id: provider s3");
    is($bucket, 'wa-media', "$id: bucket");
    like($key // '', qr{^whatsapp/$ORG/\d{4}/\d\d/\d\d/$id\.(?:mp4|webp)$},
         "$id: key under the prefix");
    is($url, "https://media.example.com/$key", "$id: storageUrl");
    is($size, $m->{size}, "$id: sizeBytes");
    ok(($s3->object($key // '') // '') eq $meta->bytes($id),
       "$id: bytes equal in the bucket");
    is(($s3->meta($key // '') || {})->{'content-type'},
       $id eq '87001' ? 'video/mp4' : 'image/webp', "$id: Content-Type");
}
is($s3->refused, 0, 'every signature accepted');
ok(!grep({ /\Q$TOKEN\E/ } do { open my $h, '<', "$dir/fake-s3.log"; <$h> }),
   'no token in what S3 saw');

# wrong credentials: the signature check refuses, the attempt is retried
$t->stop;
$t->write_conf(conf(creds('bad.creds', $s3->key_id, 'not-the-secret')));
$t->run;
$meta->add(id => '87003', size => 100, token => $TOKEN);
($st) = $t->post_signed($URI, MCMedia::webhook($PHONE, { id => '87003' }));
is($st, 200, 'webhook: 200');
my $r = wait_status('87003', 'PENDING');
is($r->[0], 'PENDING', 'wrong S3 secret: the attempt failed, PENDING again');
is($r->[7], 's3: PUT answered HTTP 403', 'downloadError');
cmp_ok($s3->refused, '>=', 1, 'refused by the signature check');
like($t->error_log, qr/\[error\].*media 87003 .*s3: PUT answered HTTP 403/,
     'logged as an error (our storage)');
unlike($t->error_log, qr/not-the-secret|\Q$TOKEN\E/, 'no secret in the log');

$t->stop;
done_testing();
