#!/usr/bin/perl
# t/89-media-cleanup.t: the media workers drain meta_cloud_media_deletions
# (sql/009): files of deleted media rows removed from their storage.
# mc-valgrind: this suite runs a second time under valgrind in `make test`
#
#   1. local storage: downloaded files; metacloud_forget_contact() of one
#      person and metacloud_purge() of an orphaned media remove their
#      files and their queue rows; another person's file stays
#   2. a queued file already gone: the row goes (done), ten of them too
#      (several batches); a key that climbs
#      out of metacloud_media_path: refused, the file outside untouched,
#      the row kept with its error and a back-off
#   3. S3 storage: after metacloud_forget_contact() the object is gone from
#      the bucket (a signed DELETE), another person's object stays
#
# Run: make test T=t/89-media-cleanup.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;
use MCMedia;

my $t = MCTest->new(name => 'media_cleanup');
plan skip_all => 'module not built' unless $t->has_module;
plan skip_all => 'node is not installed' if system('node -v >/dev/null 2>&1');

my $tf = $t->timeout_factor;
my $URI = $MCTest::WEBHOOK_URI;
my $PHONE = '1065400089';
my $ORG = 'org-cleanup';
my $TOKEN = 'EAAG-cleanup-token-0123456789abcdef';
my $A = '16505551234';                  # MCMedia::webhook's sender
my $B = '16505559876';
my $dir = $t->testdir;

my ($meta, $store) = MCMedia::setup($t, org => $ORG, phone => $PHONE,
                                    token => $TOKEN);

sub conf {
    my ($storage) = @_;
    return <<"EOF";
metacloud_db "%%DB%%";
metacloud_media on;
$storage
metacloud_graph_url @{[ $meta->graph_url ]};
metacloud_media_timeout 5s;
$MCMedia::SERVER
EOF
}

# a webhook of one image from A, or from B (another person)
sub post_image {
    my ($m, $from) = @_;
    my $body = MCMedia::webhook($PHONE, { id => $m->{id}, mime => 'image/jpeg',
                                          sha256 => $m->{sha256_b64} });
    if ($from eq $B) {
        $body =~ s/$A/$B/g;
        $body =~ s/Media Tester/Other Person/g;
    }
    my ($st) = $t->post_signed($URI, $body);
    return $st;
}

sub key_of {
    my ($id) = @_;
    return MCMedia::wait_until(20 * $tf, sub {
        $t->sql1(q{SELECT "storageKey" FROM meta_cloud_media
                    WHERE "mediaId" = :'v1' AND status = 'DOWNLOADED'}, $id);
    });
}

sub queued {
    my ($key) = @_;
    return $t->sql1(q{SELECT count(*) FROM meta_cloud_media_deletions
                       WHERE "storageKey" = :'v1'}, $key);
}

sub slurp {
    my ($f) = @_;
    open my $fh, '<:raw', $f or return undef;
    local $/;
    return scalar <$fh>;
}

# ======================================================================
# 1. local storage

$t->write_conf(conf("metacloud_media_path $store;"));
$t->run;

my %m;
for my $spec (['89001', $A], ['89002', $B], ['89003', $B]) {
    my ($id, $from) = @$spec;
    $m{$id} = $meta->add(id => $id, size => 5000, token => $TOKEN,
                         mime => 'image/jpeg');
    is(post_image($m{$id}, $from), 200, "webhook with image $id: 200");
}

my %key;
for my $id (sort keys %m) {
    $key{$id} = key_of($id);
    ok(defined $key{$id} && slurp("$store/$key{$id}") eq $meta->bytes($id),
       "$id: downloaded, bytes on disk") or diag("key: " . ($key{$id} // ''));
}

# erasure of A: its media row goes, the file follows
my $res = $t->sql1(q{SELECT metacloud_forget_contact(:'v1', :'v2')->>'media'},
                   $ORG, $A);
is($res, 1, 'metacloud_forget_contact(A): one media row deleted');

ok(MCMedia::wait_until(10 * $tf, sub { !-e "$store/$key{89001}" }),
   '89001 (A): the file is removed from the disk');
ok(MCMedia::wait_until(10 * $tf, sub { queued($key{89001}) == 0 }),
   '89001: its deletion row is gone (done)');

# an orphaned media: its message is deleted (as a platform may), the purge
# takes the media row
$t->sql(q{DELETE FROM meta_cloud_messages m USING meta_cloud_media md
           WHERE m."mediaId" = md."id" AND md."mediaId" = '89003'});
$res = $t->sql1(q{CALL metacloud_purge(NULL, '0 seconds')});
like($res, qr/"media": 1\b/, 'metacloud_purge(): one orphaned media row')
    or diag($res);
ok(MCMedia::wait_until(10 * $tf, sub { !-e "$store/$key{89003}" }),
   '89003 (purged): the file is removed from the disk');
ok(MCMedia::wait_until(10 * $tf, sub { queued($key{89003}) == 0 }),
   '89003: its deletion row is gone');

is(slurp("$store/$key{89002}"), $meta->bytes('89002'),
   '89002 (B): the file is untouched');
is($t->sql1(q{SELECT status FROM meta_cloud_media WHERE "mediaId" = '89002'}),
   'DOWNLOADED', '89002: its row is untouched');

# ======================================================================
# 2. a file already gone; a key that climbs out of the storage

open my $fh, '>', "$dir/outside" or die;
print $fh "not the module's\n";
close $fh;

$t->sql(q{INSERT INTO meta_cloud_media_deletions
              ("mediaId", "storageProvider", "storageKey", "reason")
          VALUES ('89004', 'local', :'v1', 'test'),
                 ('89005', 'local', '../outside', 'test')},
        "$ORG/2020/01/01/89004.jpg");

ok(MCMedia::wait_until(10 * $tf, sub {
       queued("$ORG/2020/01/01/89004.jpg") == 0 }),
   'a queued file already gone: the row ends done (deleted)');

# more than a batch (metacloud_media_concurrency, 4): several batches
$t->sql(q{INSERT INTO meta_cloud_media_deletions
              ("mediaId", "storageProvider", "storageKey", "reason")
          SELECT 'many', 'local', 'many/' || i || '.jpg', 'test'
            FROM generate_series(1, 10) i});
ok(MCMedia::wait_until(10 * $tf, sub {
       $t->sql1(q{SELECT count(*) FROM meta_cloud_media_deletions
                   WHERE "mediaId" = 'many'}) == 0 }),
   'ten queued rows: all done');

my $bad = MCMedia::wait_until(10 * $tf, sub {
    $t->sql(q{SELECT attempts, error, "nextAttemptAt" > now(),
                     "leaseUntil" IS NULL
                FROM meta_cloud_media_deletions
               WHERE "mediaId" = '89005' AND error IS NOT NULL})->[0];
});
is_deeply($bad, [1, 'refused: the key leaves the storage', 't', 't'],
          '"../outside": refused, kept with its error and a back-off');
ok(-e "$dir/outside", 'the file outside the storage is untouched');
like($t->error_log, qr/\[error\].*media 89005: removing local "\.\.\/outside" \(attempt 1\) failed: refused/,
     'the refusal is logged as an error');

$t->sql(q{DELETE FROM meta_cloud_media_deletions WHERE "mediaId" = '89005'});
$t->stop;

# ======================================================================
# 3. S3 storage

my $s3 = MCMedia::S3->start($dir, bucket => 'wa-media', region => 'eu-west-3');
my $creds = "$dir/s3.creds";
open $fh, '>', $creds or die;
print $fh $s3->key_id, "\n", $s3->secret, "\n";
close $fh;
chmod 0644, $creds;

$t->write_conf(conf("metacloud_media_s3 endpoint=@{[ $s3->endpoint ]} "
                    . "bucket=wa-media region=eu-west-3 credentials=$creds "
                    . "prefix=whatsapp;"));
$t->run;

for my $spec (['89011', $B], ['89012', $A]) {
    my ($id, $from) = @$spec;
    $m{$id} = $meta->add(id => $id, size => 7000, token => $TOKEN,
                         mime => 'image/jpeg');
    is(post_image($m{$id}, $from), 200, "webhook with image $id: 200");
    $key{$id} = key_of($id);
    ok(defined $key{$id}
       && ($s3->object($key{$id}) // '') eq $meta->bytes($id),
       "$id: downloaded into the bucket");
}

# A again: 89012 is theirs now
$res = $t->sql1(q{SELECT metacloud_forget_contact(:'v1', :'v2')->>'media'},
                $ORG, $A);
is($res, 1, 'metacloud_forget_contact(A): one media row deleted');

ok(MCMedia::wait_until(10 * $tf, sub { !defined $s3->object($key{89012}) }),
   '89012 (A): the object is removed from the bucket');
ok(MCMedia::wait_until(10 * $tf, sub { queued($key{89012}) == 0 }),
   '89012: its deletion row is gone');
is($s3->object($key{89011}), $meta->bytes('89011'),
   '89011 (B): its object is untouched');
is($s3->refused, 0, 'every signature accepted, the DELETE included');

$t->stop;
done_testing();
