#!/usr/bin/perl
# t/30-signature.t: X-Hub-Signature-256 over the raw body (docs/DESIGN.md
# section 1): 401 and nothing stored for a missing, malformed or wrong
# signature; any configured secret passes (rotation); a secret file; a
# body that nginx wrote to a temporary file; 413 over the body limit.
#
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(hmac_sha256_hex sha256_hex);
use JSON::PP ();
use MCTest;

my $t = MCTest->new(name => 'signature');

plan skip_all => 'module not built' unless $t->has_module;

my $dir = $t->testdir;
open my $fh, '>', "$dir/secrets" or die $!;
print $fh "# rotated: the new one first\nfile-new-secret\r\n\nfile-old-secret\n";
close $fh;

$t->write_conf(<<"EOF");
metacloud_db "%%DB%%";
server {
    listen 127.0.0.1:%%PORT%%;
    client_max_body_size 4m;
    client_body_buffer_size 4m;

    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        metacloud_app_secret previous-secret;
    }
    location = /file {
        metacloud_webhook;
        metacloud_app_secret_file $dir/secrets;
    }
    location = /tempfile {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
        client_body_in_file_only clean;
    }
    location = /small {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
        client_body_buffer_size 1k;
    }
    location = /unsigned {
        metacloud_webhook;
        metacloud_app_secret off;
    }
    location = /limited {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 1k;
    }
}
EOF
$t->run;

$t->sql("SELECT metacloud_add_phone_number('org-test', '106540352242922',"
    . " '102290129340398', 'tok')");

my $uri = '/webhooks/whatsapp';
my $secret = $MCTest::SECRET;
my $body = $t->wire('meta_text');
my $hex = hmac_sha256_hex($body, $secret);

sub requests { $t->sql1('SELECT count(*) FROM meta_cloud_webhook_requests') }

sub post_sig {
    my ($sig, $b, $u) = @_;
    my %h = defined $sig ? ('X-Hub-Signature-256' => $sig) : ();
    return $t->post($u // $uri, $b // $body, headers => \%h);
}

# --- refused: 401, nothing stored

my $before = requests();

my ($st, $h, $resp) = post_sig(undef);
is($st, 401, 'missing signature: 401');
is(JSON::PP::decode_json($resp)->{error}, 'invalid signature',
    'missing signature: JSON error');

is(scalar post_sig(''), 401, 'empty header: 401');
is(scalar post_sig("sha256=" . hmac_sha256_hex($body, 'wrong')), 401,
    'wrong secret: 401');
is(scalar post_sig("sha256=" . hmac_sha256_hex($body . ' ', $secret)), 401,
    'signature of other bytes: 401');
is(scalar post_sig("sha1=" . substr($hex, 0, 40)), 401, 'sha1= prefix: 401');
is(scalar post_sig($hex), 401, 'no prefix: 401');
is(scalar post_sig("sha256=" . substr($hex, 0, 63)), 401, '63 digits: 401');
is(scalar post_sig("sha256=${hex}0"), 401, '65 digits: 401');
is(scalar post_sig("sha256=" . substr($hex, 0, 63) . 'g'), 401,
    'non-hex digit: 401');
is(scalar post_sig("SHA256=$hex"), 401, 'upper-case prefix: 401');
is(scalar post_sig("sha256= $hex"), 401, 'space after =: 401');

is(scalar $t->post($uri, $body, headers => {
    'X-Hub-Signature' => 'sha1=' . substr($hex, 0, 40)}), 401,
    'only the legacy sha1 header: 401');

# the body is changed in one byte after signing
(my $tampered = $body) =~ s/another color/another colour/;
is(scalar post_sig("sha256=$hex", $tampered), 401, 'tampered body: 401');

is(requests(), $before, 'nothing stored for any refused request');
like($t->error_log, qr/signature (missing|malformed|mismatch)/,
    'refusals logged');
unlike($t->error_log, qr/\Q$secret\E|previous-secret/,
    'no secret in the log');

# --- accepted

($st, $h, $resp) = post_sig("sha256=$hex");
is($st, 200, 'valid signature: 200') or diag($resp);
like($h->{'content-type'}, qr{^application/json}, 'summary is JSON');
my $sum = JSON::PP::decode_json($resp);
is($sum->{status}, 'ok', 'summary status');
is($sum->{inserted}, 1, 'summary: one new event');

my $row = $t->sql("SELECT encode(body, 'hex'), encode(sha256, 'hex'),"
    . " \"signatureChecked\", outcome FROM meta_cloud_webhook_requests"
    . " WHERE id = :'v1'", $sum->{rawId})->[0];
is(pack('H*', $row->[0]), $body, 'raw body stored byte for byte');
is($row->[1], sha256_hex($body), 'sha256 of the raw body stored');
is($row->[2], 't', 'signatureChecked');
is($row->[3], 'ok', 'outcome ok');

is(scalar post_sig("sha256=" . uc $hex), 200, 'upper-case hex: 200');
is(scalar post_sig("sha256=" . hmac_sha256_hex($body, 'previous-secret')),
    200, 'second (rotated) secret: 200');

# a header name in another case is the same header
is(scalar $t->post($uri, $body,
    headers => {'x-hub-signature-256' => "sha256=$hex"}), 200,
    'lower-case header name: 200');

is(scalar post_sig("sha256=" . hmac_sha256_hex($body, 'file-new-secret'),
    $body, '/file'), 200, 'secret file, first secret: 200');
is(scalar post_sig("sha256=" . hmac_sha256_hex($body, 'file-old-secret'),
    $body, '/file'), 200, 'secret file, second secret: 200');
is(scalar post_sig("sha256=$hex", $body, '/file'), 401,
    'secret file: a secret not in the file: 401');

is($t->sql1("SELECT count(*) FROM meta_cloud_messages"), 1,
    'every accepted retry gave one message');

# --- bodies from a temporary file and from a chain of buffers

my $big = $t->wire('meta_image_with_url');
my $sig = 'sha256=' . hmac_sha256_hex($big, $secret);
($st, $h, $resp) = post_sig($sig, $big, '/tempfile');
is($st, 200, 'client_body_in_file_only clean: 200') or diag($resp);
is($t->sql1("SELECT encode(body, 'hex') FROM meta_cloud_webhook_requests"
    . " WHERE id = :'v1'", JSON::PP::decode_json($resp)->{rawId}),
    unpack('H*', $big), 'temp file body stored byte for byte');
is(scalar post_sig('sha256=' . hmac_sha256_hex($big, 'wrong'), $big,
    '/tempfile'), 401, 'temp file body, wrong signature: 401');

# 200 kB: over client_body_buffer_size 1k, so nginx writes it to a file;
# text padding inside the message keeps it a valid webhook
my $pad = 'x' x 200_000;
(my $large = $body) =~ s/another color\?/another color? $pad/;
$sig = 'sha256=' . hmac_sha256_hex($large, $secret);
($st, $h, $resp) = post_sig($sig, $large, '/small');
is($st, 200, '200 kB body through a 1k buffer: 200') or diag($resp);
is($t->sql1("SELECT octet_length(body) FROM meta_cloud_webhook_requests"
    . " WHERE id = :'v1'", JSON::PP::decode_json($resp)->{rawId}),
    length $large, '200 kB body stored whole');

# the same with a chunked request body, in chunks of 64 kB
my $chunked = '';
for (my $i = 0; $i < length $large; $i += 65536) {
    my $c = substr($large, $i, 65536);
    $chunked .= sprintf("%x\r\n%s\r\n", length $c, $c);
}
$chunked .= "0\r\n\r\n";
($st, $h, $resp) = $t->http('POST', '/small', body => $chunked,
    no_content_length => 1, headers => [
        'Transfer-Encoding' => 'chunked',
        'Content-Type' => 'application/json',
        'X-Hub-Signature-256' => $sig]);
is($st, 200, 'chunked body: 200') or diag($resp);

# --- signature off: accepted unsigned, recorded as not checked

($st, $h, $resp) = post_sig(undef, $body, '/unsigned');
is($st, 200, 'metacloud_app_secret off: unsigned body accepted');
is($t->sql1("SELECT \"signatureChecked\"::text FROM"
    . " meta_cloud_webhook_requests WHERE id = :'v1'",
    JSON::PP::decode_json($resp)->{rawId}), 'false',
    'recorded as not checked');

# --- over the limit: 413, nothing stored

$before = requests();
my $over = '{"object":"whatsapp_business_account","entry":[],"x":"'
    . ('y' x 2000) . '"}';
is(scalar post_sig('sha256=' . hmac_sha256_hex($over, $secret), $over,
    '/limited'), 413, 'body over client_max_body_size: 413');
is(requests(), $before, '413: nothing stored');

done_testing;
