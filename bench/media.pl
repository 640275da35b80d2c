#!/usr/bin/perl

# The media case of `make bench` (scripts/bench runs it): FILES webhooks,
# each with one image of SIZE bytes served by the local fake Graph API /
# file server (t/lib/fake-meta.js), posted at RATE per second; for each
# file, the time from the webhook's 200 to its row's DOWNLOADED
# ("updatedAt" of the mark), then p50 / p95 / max and files per second
# (files / (last DOWNLOADED - first 200)).  Fails unless every file is
# DOWNLOADED with the right size within the wait.
#
#   media.pl URL SECRET PHONE_NUMBER_ID TOKEN FAKE_BASE FILES SIZE RATE
#
# psql reaches the database through the PG* environment.

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use HTTP::Tiny;
use JSON::PP ();
use Time::HiRes qw(time sleep);

my ($url, $secret, $phone, $token, $fake, $files, $size, $rate) = @ARGV;
die "usage: $0 URL SECRET PHONE TOKEN FAKE_BASE FILES SIZE RATE\n"
    unless defined $rate;

my $http = HTTP::Tiny->new(timeout => 60, keep_alive => 1);
my $json = JSON::PP->new->canonical;
my $run = sprintf '%x%x', time, $$;
my @ids = map { sprintf '9%s%05d', $run =~ tr/a-f/1-6/r, $_ } 1 .. $files;

sub psql {
    my ($sql) = @_;
    open my $fh, '-|', 'psql', '-XAtq', '-F', ' ', '-c', $sql
        or die "media.pl: psql: $!\n";
    local $/;
    my $out = <$fh> // '';
    close $fh or die "media.pl: psql failed\n";
    return $out;
}

# the files: one random content shared by all (the fake keeps one copy)
my $res = $http->post("$fake/_fake/media", {
    headers => { 'Content-Type' => 'application/json' },
    content => $json->encode([ map { { id => $_, size => $size,
                                       mime => 'image/jpeg', token => $token,
                                       shared => JSON::PP::true } } @ids ]) });
die "media.pl: the fake refused the files: $res->{status}\n"
    unless $res->{success};
my %meta = map { $_->{id} => $_ } @{ $json->decode($res->{content}) };

my %ok_at;
my $start = time;
my $bad = 0;

for my $i (0 .. $#ids) {
    my $id = $ids[$i];
    my $due = $start + $i / $rate;
    my $now = time;
    sleep($due - $now) if $due > $now;

    my $body = $json->encode({
        object => 'whatsapp_business_account',
        entry => [{ id => '102290129340398', changes => [{
            field => 'messages',
            value => { messaging_product => 'whatsapp',
                       metadata => { display_phone_number => '15550783881',
                                     phone_number_id => $phone },
                       contacts => [{ profile => { name => 'Bench' },
                                      wa_id => '5511999990000' }],
                       messages => [{ from => '5511999990000',
                                      id => "wamid.BENCHM$id",
                                      timestamp => '' . int(time),
                                      type => 'image',
                                      image => {
                                          id => $id, mime_type => 'image/jpeg',
                                          sha256 => $meta{$id}{sha256_b64} } }] } }] }] });
    my $r = $http->post($url, {
        headers => { 'Content-Type' => 'application/json',
                     'X-Hub-Signature-256' => 'sha256='
                                              . hmac_sha256_hex($body, $secret) },
        content => $body });
    if ($r->{status} == 200) {
        $ok_at{$id} = time;
    } else {
        $bad++;
    }
}

# the rows: DOWNLOADED and when (epoch seconds, ms precision)
my $list = join ',', map { "'$_'" } @ids;
my (%done, $rows);
my $deadline = time + 120 + $files * $size / 20e6;
while (1) {
    $rows = psql(qq{SELECT "mediaId", status, coalesce("sizeBytes", 0),
                           extract(epoch FROM "updatedAt")
                      FROM meta_cloud_media WHERE "mediaId" IN ($list)});
    %done = ();
    for (split /\n/, $rows) {
        my ($id, $st, $sz, $at) = split / /;
        $done{$id} = [$st, $sz, $at] if $st eq 'DOWNLOADED' || $st eq 'FAILED'
                                        || $st eq 'EXPIRED';
    }
    last if keys %done == @ids || time > $deadline;
    sleep 0.2;
}

my (@lat, $wrong);
$wrong = 0;
for my $id (@ids) {
    my $d = $done{$id};
    if (!$d || $d->[0] ne 'DOWNLOADED' || $d->[1] != $size || !$ok_at{$id}) {
        $wrong++;
        next;
    }
    push @lat, $d->[2] - $ok_at{$id};
}
@lat = sort { $a <=> $b } @lat;

my $first = (sort { $a <=> $b } values %ok_at)[0] // $start;
my $last = (sort { $b <=> $a } map { $_->[2] } values %done)[0] // time;
my $pct = sub { @lat ? 1000 * $lat[int($_[0] * $#lat + 0.5)] : 0 };

printf "MCBENCH media files=%d size=%d rate=%s non200=%d not_downloaded=%d "
       . "p50_ms=%.0f p95_ms=%.0f max_ms=%.0f files_per_s=%.1f\n",
       $files, $size, $rate, $bad, $wrong, $pct->(0.50), $pct->(0.95),
       $pct->(1), $last > $first ? @lat / ($last - $first) : 0;

exit($bad || $wrong ? 1 : 0);
