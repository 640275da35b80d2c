#!/usr/bin/perl
# t/20-handshake.t: the GET verification handshake (docs/DESIGN.md section 1):
# 200 text/plain with hub.challenge byte for byte when hub.mode=subscribe
# and hub.verify_token matches; 403 otherwise; 405 for other methods.
#
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;

my $t = MCTest->new(name => 'handshake');

plan skip_all => 'module not built' unless $t->has_module;

$t->write_conf(<<'EOF');
metacloud_db "%%DB%%";
server {
    listen 127.0.0.1:%%PORT%%;
    client_max_body_size 4m;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_verify_token "my token+/&=";
        metacloud_app_secret %%SECRET%%;
    }
    location = /notoken {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
    }
}
EOF
$t->run;

my $tok = 'my%20token%2B%2F%26%3D';    # "my token+/&=" URL-encoded

sub hs {
    my ($query, $uri) = @_;
    return $t->http_get(($uri // '/webhooks/whatsapp') . "?$query");
}

my ($st, $h, $body) = hs("hub.mode=subscribe&hub.challenge=1158201444"
    . "&hub.verify_token=$tok");
is($st, 200, 'handshake: 200');
is($body, '1158201444', 'handshake: the challenge is the body');
like($h->{'content-type'}, qr{^text/plain}, 'handshake: text/plain');
is($h->{'content-length'}, 10, 'handshake: content-length');

# parameters in another order, "+" as a space in the token
($st, $h, $body) = hs("hub.verify_token=my+token%2B%2F%26%3D"
    . "&hub.challenge=abc&hub.mode=subscribe");
is($st, 200, 'any order, + decoded as a space');
is($body, 'abc', 'challenge echoed');

# the challenge is URL-decoded and then echoed byte for byte
($st, $h, $body) = hs("hub.mode=subscribe&hub.verify_token=$tok"
    . "&hub.challenge=a%20b%2Bc%C3%A9%00z");
is($st, 200, 'encoded challenge');
is($body, "a b+c\xc3\xa9\x00z", 'challenge decoded byte for byte');

my $long = 'x' x 1024;
($st, $h, $body) = hs("hub.mode=subscribe&hub.verify_token=$tok"
    . "&hub.challenge=$long");
is($st, 200, '1024-byte challenge');
is(length $body, 1024, '1024-byte challenge echoed');

# --- refused

is(scalar hs("hub.mode=subscribe&hub.verify_token=$tok"
    . "&hub.challenge=" . ('x' x 1025)), 403, 'challenge over 1024 bytes');
is(scalar hs("hub.mode=subscribe&hub.verify_token=wrong"
    . "&hub.challenge=1"), 403, 'wrong token');
is(scalar hs("hub.mode=subscribe&hub.verify_token=my%20token"
    . "&hub.challenge=1"), 403, 'token prefix');
is(scalar hs("hub.mode=subscribe&hub.verify_token=${tok}x"
    . "&hub.challenge=1"), 403, 'token with a byte more');
is(scalar hs("hub.mode=subscribe&hub.challenge=1"), 403, 'no token');
is(scalar hs("hub.mode=unsubscribe&hub.verify_token=$tok"
    . "&hub.challenge=1"), 403, 'mode is not subscribe');
is(scalar hs("hub.verify_token=$tok&hub.challenge=1"), 403, 'no mode');
is(scalar hs("hub.mode=subscribe&hub.verify_token=$tok"), 403,
    'no challenge');
is(scalar hs("hub.mode=subscribe&hub.verify_token=$tok&hub.challenge="),
    403, 'empty challenge');
is(scalar hs("hub_mode=subscribe&hub_verify_token=$tok&hub_challenge=1"),
    403, 'underscored names (PHP-style) are not the parameters');
is(scalar hs("hub.mode=subscribe&hub.verify_token=&hub.challenge=1",
    '/notoken'), 403, 'no metacloud_verify_token: always refused');

($st, $h, $body) = hs("hub.mode=subscribe&hub.verify_token=wrong"
    . "&hub.challenge=4242");
unlike($body, qr/4242/, 'a refusal does not echo the challenge');
like($t->error_log, qr/handshake refused/, 'refusal logged');
unlike($t->error_log, qr/my token/, 'the token is not logged');

# HEAD answers like GET, without a body
($st, $h, $body) = $t->http('HEAD', "/webhooks/whatsapp?hub.mode=subscribe"
    . "&hub.verify_token=$tok&hub.challenge=777");
is($st, 200, 'HEAD handshake');
is($body, '', 'HEAD: no body');

# --- other methods

for my $m (qw(PUT DELETE PATCH OPTIONS)) {
    ($st, $h, $body) = $t->http($m, '/webhooks/whatsapp', body => '{}');
    is($st, 405, "$m: 405");
    is($h->{allow}, 'GET, POST', "$m: Allow header");
}

is($t->sql1('SELECT count(*) FROM meta_cloud_webhook_requests'), 0,
    'nothing stored by handshakes and refused methods');

done_testing;
