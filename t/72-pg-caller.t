#!/usr/bin/perl
# t/72-pg-caller.t: the pool and the code that runs a query.
#
# 1. While a connection serves a query, it logs to the query's log: the
#    error line of a statement that fails in PostgreSQL (a CHECK
#    constraint the superuser adds to the raw-request table) names the
#    client and the request line; the answer is 503 "database error".
#
# 2. A query's completion is always a posted event, never a call back into
#    the code that ran the query.  metacloud_db names a Unix socket
#    directory that does not exist: libpq fails inside PQconnectStart(),
#    that is inside ngx_http_metacloud_pg_run() called from the request's
#    body handler.  The debug log shows the order:
#      a. "could not connect to PostgreSQL" (the failure, inside the caller),
#      b. "http finalize request: -4" (the content handler returned
#         NGX_DONE),
#      c. the 503 header, written by the completion handler from the posted
#         event, after the caller has returned.
#    Before, the 503 was written inside the caller, before b.  A second
#    POST during the back-off is refused at once (NGX_DECLINED): 503 too.
#
# 3. A conninfo with two hosts, the first a TCP port where nothing listens:
#    libpq gives up on it inside PQconnectPoll() and connects to the second
#    on a new socket, which usually gets the old one's number; the pool
#    registers it anyway (the socket's inode differs) and the POST gets 200
#    at once, not 503 at metacloud_db_timeout.
#
# Run: make test T=t/72-pg-caller.t
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use MCTest;

my $t1 = MCTest->new(name => 'pgerr');
plan skip_all => 'module not built' unless $t1->has_module;

my $URI = $MCTest::WEBHOOK_URI;

# a webhook location with this metacloud_db
sub conf {
    my ($db) = @_;
    return <<"EOF";
metacloud_db "$db";
metacloud_db_timeout 3s;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
    }
}
EOF
}

# ----------------------------------------------------------------------
# 1. a PostgreSQL error names its request

$t1->write_conf(conf('%%DB%%'));

$t1->run;

$t1->sql(q{ALTER TABLE meta_cloud_webhook_requests
           ADD CONSTRAINT mct_refuse CHECK (false) NOT VALID});

my ($st, $h, $b) = $t1->post_signed($URI, $t1->wire('meta_text'));
is($st, 503, 'a statement that fails: 503');
like($b, qr/"database error"/, '  "database error"');

my ($line) = $t1->error_log =~ /^(.*metacloud: PostgreSQL: .*mct_refuse.*)$/m;
ok($line, 'the PostgreSQL error is logged') or diag($t1->error_log);
like($line // '', qr/\[error\]/, '  at level error');
like($line // '', qr/, client: 127\.0\.0\.1,/, '  with the client');
like($line // '', qr/, request: "POST \Q$URI\E HTTP\/1\.1"/,
     '  with the request line');

$t1->stop;

# ----------------------------------------------------------------------
# 2. a failure inside run() completes from a posted event

my $t = MCTest->new(name => 'pgasync', db => 0);

$t->write_conf(conf('host=%%TESTDIR%%/no-such-dir dbname=x '
                    . 'user=metacloud_module'),
               error_log_level => 'debug');

$t->run;

my $body = $t->wire('meta_text');

my $off = length $t->error_log;
($st, $h, $b) = $t->post_signed($URI, $body);
is($st, 503, 'the database cannot be reached: 503');
like($b, qr/"database unavailable"/, '  "database unavailable"');

my $log = substr($t->error_log, $off);

sub pos_of {
    my ($re) = @_;
    return $log =~ $re ? $-[0] : undef;
}

my $fail = pos_of(qr/metacloud: could not connect to PostgreSQL/);
my $done = pos_of(qr/http finalize request: -4, "\Q$URI\E\?"/);
my $hdr = pos_of(qr/HTTP\/1\.1 503 /);

SKIP: {
    skip 'nginx without --with-debug', 3 unless defined $done;

    ok(defined $fail && defined $hdr, 'the failure and the 503 are logged')
        or diag($log);
    cmp_ok($fail // 0, '<', $done,
           'the connect failure happened inside the content handler');
    cmp_ok($hdr // 0, '>', $done,
           'the 503 was written after the content handler returned');
}

($st) = $t->post_signed($URI, $body);
is($st, 503, 'during the back-off: 503 too');

$t->stop;

# ----------------------------------------------------------------------
# 3. libpq moves to the second host on a new socket

my $t3 = MCTest->new(name => 'pghosts');

my $closed = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1:0')
    or die "listen: $!";
my $cport = $closed->sockport;
close $closed;

$t3->write_conf(conf("host=127.0.0.1,$ENV{PGHOST} port=$cport,$ENV{PGPORT} "
                     . 'dbname=%%DBNAME%% user=metacloud_module '
                     . 'sslmode=disable'));
$t3->sql(q{SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                             '102290129340398', 'tok')});
$t3->run;

($st, $h, $b) = $t3->post_signed($URI, $t3->wire('meta_text'));
is($st, 200, 'first host refused, second host: 200') or diag($b);
unlike($t3->error_log, qr/timed out/, '  no timeout on the way');
is($t3->sql1('SELECT count(*) FROM meta_cloud_webhook_requests'), 1,
   '  stored');

done_testing;
