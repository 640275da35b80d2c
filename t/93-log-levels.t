#!/usr/bin/perl
# t/93-log-levels.t: error-log levels follow nginx, and an outage is told
# once per state change, not once per request.
#
#   1. a client's fault (a bad signature, a refused handshake) is "info";
#   2. PostgreSQL stopped: the first failed connect is "error", the next
#      attempts (one per delivery after the back-off) are "info"; each
#      attempt counts in metacloud_db_errors_total{reason="connect"} and
#      each delivery in metacloud_requests_total{outcome="unavailable"};
#   3. PostgreSQL back: "PostgreSQL answers again" once, at "notice";
#   4. a second outage is a new state: "error" again, once.
#
# Stops and starts the shared test cluster (as t/70-pg-down.t does;
# MCTest starts it again at the end if a failure left it stopped).
#
# Run: make test T=t/93-log-levels.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);
use MCTest;

my $t = MCTest->new(name => 'log_levels');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $tf = $t->timeout_factor;
my $WAMID = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=';

$t->write_conf(<<'EOF');
metacloud_db "%%DB%%";
metacloud_db_timeout 2s;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
    }
    location = /status {
        metacloud_status;
    }
}
EOF

$t->sql(q{SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                            '102290129340398', 'tok')});
$t->run;

my $template = $t->wire('meta_text');
my $n = 0;
sub body {
    $n++;
    (my $b = $template) =~ s/\Q$WAMID\E/wamid.LVL$$-$n/;
    return $b;
}

sub metric {
    my ($key) = @_;
    my ($st, $h, $text) = $t->http_get('/status');
    return $text =~ /^\Q$key\E (\S+)$/m ? $1 : undef;
}

sub lines {
    my ($re) = @_;
    return grep { /$re/ } split /\n/, $t->error_log;
}

# 1. a client's fault

is(scalar $t->post_signed($URI, body(), secret => 'wrong'), 401,
   'bad signature: 401');
is(scalar $t->http_get("$URI?hub.mode=subscribe&hub.challenge=1"
                       . '&hub.verify_token=wrong'), 403, 'handshake: 403');
my @l = lines(qr/metacloud: webhook (?:refused|verification handshake refused)/);
is(scalar @l, 2, 'both logged');
is(scalar(grep { /\[info\]/ } @l), 2, '  at info') or diag(join "\n", @l);
unlike($t->error_log, qr/\Q$MCTest::SECRET\E|\Q$MCTest::VERIFY_TOKEN\E/,
       'no secret, no verify token in the error log');

is(scalar $t->post_signed($URI, body()), 200, 'a delivery: 200');

# 2. PostgreSQL stopped: one error, then info

my $connect = 'metacloud_db_errors_total{reason="connect"}';
my $c0 = metric($connect) // 0;

$t->pg_stop;
ok(!$t->pg_running, 'cluster stopped');
my $failed = 0;
for my $i (1 .. 4) {
    my $st = $t->post_signed($URI, body());
    is($st, 503, "cluster down: delivery $i gets 503");
    $failed++;
    sleep 0.5 * $tf;                   # past the pool's back-off
}

my @err = lines(qr/\[error\].*metacloud: could not connect to PostgreSQL/);
my @info = lines(qr/\[info\].*metacloud: could not connect to PostgreSQL/);
is(scalar @err, 1, 'the outage: one line at error');
cmp_ok(scalar @info, '>=', 1, 'the next attempts: at info')
    or diag($t->error_log);
cmp_ok(metric($connect) - $c0, '>=', 1 + @info,
       'every attempt counted in metacloud_db_errors_total');
is(metric('metacloud_requests_total{outcome="unavailable",code="503"}'),
   $failed, 'every delivery counted unavailable');

# 3. back: one notice

$t->pg_start;
ok($t->pg_running, 'cluster started again');

my $b = body();
my $st;
my $until = time + 20 * $tf;
while (time < $until) {
    $st = $t->post_signed($URI, $b);
    last if $st eq '200';
    $failed++;
    sleep 0.25;
}
is($st, 200, 'after the restart: 200');
my @back = lines(qr/metacloud: PostgreSQL answers again/);
is(scalar @back, 1, '"PostgreSQL answers again" once');
like($back[0] // '', qr/\[notice\]/, '  at notice');

# 4. a second outage: error again, once

$t->pg_stop;
for my $i (1 .. 2) {
    is(scalar $t->post_signed($URI, body()), 503,
       "second outage: delivery $i gets 503");
    $failed++;
    sleep 0.5 * $tf;
}
$t->pg_start;

@err = lines(qr/\[error\].*metacloud: could not connect to PostgreSQL/);
is(scalar @err, 2, 'a second outage: a second line at error');

is(metric('metacloud_requests_total{outcome="unavailable",code="503"}'),
   $failed, 'every delivery of both outages counted unavailable');

done_testing;
