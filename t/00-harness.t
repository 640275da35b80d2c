#!/usr/bin/perl
# t/00-harness.t: tests of the test harness (t/lib/MCTest.pm) itself, with
# a plain nginx configuration (no module directive), so that a failure here
# points at the harness or the machine, not at the module.
#
# mc-valgrind: this suite runs a second time under valgrind in `make test`
# (put the same marker line into a suite to add it to that run).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use File::Temp ();
use JSON::PP ();
use MCTest;

my $t = MCTest->new(name => 'harness');

# --- configuration and nginx -t

my ($rc, $out) = $t->nginx_t(<<'EOF', module => 0);
server {
    listen 127.0.0.1:%%PORT%%;
    location / { no_such_directive on; }
}
EOF
isnt($rc, 0, 'nginx -t refuses a bad configuration');
like($out, qr/unknown directive "no_such_directive"/, 'nginx -t output');

SKIP: {
    skip 'module not built', 2 unless $t->has_module;
    my ($rc, $out) = $t->nginx_t(<<'EOF', module => 1);
server { listen 127.0.0.1:%%PORT%%; location / { return 204; } }
EOF
    is($rc, 0, 'the module loads into the stock nginx (load_module)')
        or diag($out);
    unlike($out, qr/not binary compatible/, 'binary compatible');
}

$t->write_conf(<<'EOF', module => 0);
server {
    listen 127.0.0.1:%%PORT%%;
    location = /ok { return 200 "ok"; }
    location = /post {
        client_max_body_size 1k;
        return 204;
    }
    location = /dir { return 200 "%%TESTDIR%% %%DBNAME%%"; }
    location = /chunked {
        # SSI drops Content-Length: nginx answers chunked to HTTP/1.1
        default_type text/html;
        ssi on;
        add_header X-Two a;
        add_header X-Two b;
        return 200 "$request_method $uri";
    }
}
EOF

my ($rc2, $out2) = $t->nginx_t;
is($rc2, 0, 'nginx -t on the written configuration') or diag($out2);

ok($t->run, 'nginx started');
ok($t->pid, 'master pid');
my @workers = $t->worker_pids;
is(scalar @workers, 1, 'one worker') or diag("workers: @workers");

# --- HTTP

my ($status, $h, $body) = $t->http_get('/ok');
is($status, 200, 'GET /ok: 200');
is($body, 'ok', 'GET /ok: body');
like($h->{'content-type'}, qr{^text/plain}, 'GET /ok: content-type');
is(scalar $t->http_get('/nope'), 404, 'scalar context gives the status');

($status, $h, $body) = $t->http_get('/dir');
is($body, $t->testdir . ' ' . $t->dbname, '%%TESTDIR%% and %%DBNAME%%');

($status, $h, $body) = $t->http('HEAD', '/ok');
is($status, 200, 'HEAD');

is(scalar $t->post('/post', '{"a":1}'), 204, 'POST');
is(scalar $t->post('/post', 'x' x 2000), 413, 'POST over the limit: 413');
is(scalar $t->post_signed('/post', '{}'), 204, 'POST signed');
is(scalar $t->post('/post', 'x' x (8 * 1024 * 1024)), 413,
   'POST of 8 MB over the limit: 413, the client survives the early close');

my $raw = $t->request("GARBAGE\r\n\r\n");
like($raw, qr{^HTTP/1\.1 400 }, 'raw bad request: 400');
($status) = MCTest::_parse_response($t->request(
    "POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    . "Content-Length: 5\r\nConnection: close\r\n\r\nhello"));
is($status, 400, 'duplicate Content-Length: 400');

($status, $h, $body) = $t->http_get('/chunked',
                                    headers => { 'X-Test' => 'yes' });
is($status, 200, 'chunked: status');
is($h->{'transfer-encoding'}, 'chunked', 'chunked: really chunked');
is($body, 'GET /chunked', 'chunked: body');
is($h->{'x-two'}, 'a, b', 'repeated headers joined');

# --- signature: against an independent HMAC (openssl) and RFC 4231

is($t->sign('what do ya want for nothing?', 'Jefe'),
   'sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
   'sign: RFC 4231 test case 2');

my $fixture = $t->fixture('meta_text');
my $tmp = File::Temp->new;
binmode $tmp;
print $tmp $fixture;
close $tmp;
my $dgst = `openssl dgst -sha256 -hmac demo-app-secret -r $tmp`;
my ($hex) = $dgst =~ /^([0-9a-f]{64})/;
ok($hex, 'openssl dgst -hmac ran') or diag($dgst);
is($t->sign($fixture), "sha256=$hex", 'sign = openssl HMAC (demo secret)');
is($t->sign($fixture, 'other'), $t->sign($fixture, 'other'),
   'sign is deterministic');
isnt($t->sign($fixture, 'other'), $t->sign($fixture), 'secret matters');

# --- fixtures in wire form

my $wire = $t->wire('meta_text');
unlike($wire, qr/\n/, 'wire: compact');
is_deeply(JSON::PP->new->decode($wire), JSON::PP->new->decode($fixture),
          'wire: same JSON');
my $img = $t->wire('meta_image_with_url');
like($img, qr{https:\\/\\/}, 'wire: "/" escaped as "\/"');
my $react = $t->wire('meta_reaction');
like($react, qr/\\ud83d\\u[0-9a-f]{4}/i, 'wire: non-ASCII as \uXXXX pairs');
unlike($react, qr/[^\x00-\x7f]/, 'wire: ASCII only');
ok(scalar($t->fixtures) > 50, 'fixtures listed');

# --- PostgreSQL: a fresh database from the template

like($t->dbname, qr/^mct_harness_\d+$/, 'database name');
is($t->sql1('SELECT current_database()'), $t->dbname, 'connected to it');
is($t->sql1('SELECT current_setting($$fsync$$)'), 'on', 'fsync is on');

my $tmpl = $ENV{MC_TEMPLATE_DB};
my $count = q{SELECT count(*) FROM pg_class c JOIN pg_namespace n
              ON n.oid = c.relnamespace WHERE n.nspname NOT IN
              ('pg_catalog', 'information_schema', 'pg_toast')};
is($t->sql1($count), $t->sql_in($tmpl, $count)->[0][0],
   'same relations as the template');

my $rows = $t->sql(q{SELECT 1, NULL, E'a\nb', '', 'q"x,y'
                     UNION ALL SELECT 2, 'x', :'v1', :'v2', 'NULL'
                     ORDER BY 1},
                   "it's", 'b,"c"');
is_deeply($rows, [[1, undef, "a\nb", '', 'q"x,y'],
                  [2, 'x', "it's", 'b,"c"', 'NULL']],
          'sql: rows, NULL, newlines, quotes, binds');
is_deeply($t->sql('CREATE TEMP TABLE z (a int); INSERT INTO z VALUES (1)'),
          [], 'sql: statements without rows');
is($t->sql1('SELECT 1 WHERE false'), undef, 'sql1: no row');
ok(!eval { $t->sql('SELECT no_such_column'); 1 }, 'sql dies on an error');
like($@, qr/no_such_column/, 'with the error');

like($t->conninfo, qr/^host=\S+ port=\d+ dbname=mct_harness_\d+ user=metacloud_module$/,
     'conninfo for the module role');

# --- reload, error log

ok($t->reload, 'reload');
is(scalar $t->http_get('/ok'), 200, 'serving after reload');
isnt(join(',', $t->worker_pids), join(',', @workers), 'new worker');
like($t->error_log, qr/start worker process/, 'error_log');

# --- PostgreSQL stop/start hooks

SKIP: {
    skip 'MC_PG_DIR unset', 3 unless $ENV{MC_PG_DIR};
    ok($t->pg_stop, 'pg_stop');
    ok(!eval { $t->sql('SELECT 1'); 1 }, 'no database while stopped');
    $t->pg_start;
    is($t->sql1('SELECT 1'), 1, 'pg_start: back');
}

# --- the valgrind log check (on made-up logs)

my $clean = <<'EOF';
==10== HEAP SUMMARY:
==10==     in use at exit: 13,618 bytes in 22 blocks
==10== LEAK SUMMARY:
==10==    definitely lost: 0 bytes in 0 blocks
==10==         suppressed: 442,376 bytes in 3 blocks
==10== ERROR SUMMARY: 0 errors from 0 contexts (suppressed: 2 from 2)
EOF
is_deeply([MCTest::valgrind_problems($clean, 0)], [], 'valgrind: clean worker');
my $bad = <<'EOF';
==11== Invalid read of size 4
==11==    at 0x4848: ngx_http_metacloud_handler (ngx_http_metacloud_module.c:10)
==11== Conditional jump or move depends on uninitialised value(s)
==11==    definitely lost: 1,024 bytes in 1 blocks
==11== ERROR SUMMARY: 3 errors from 3 contexts (suppressed: 0 from 0)
EOF
my @p = MCTest::valgrind_problems($bad, 0);
is(scalar @p, 4,
   'valgrind: a bad worker (invalid read, uninitialised, leak, summary)');
my $master = <<'EOF';
==12== Syscall param sendmsg(msg.msg_iov[0]) points to uninitialised byte(s)
==12==    definitely lost: 8 bytes in 1 blocks
==12== ERROR SUMMARY: 2 errors from 2 contexts (suppressed: 0 from 0)
EOF
is_deeply([MCTest::valgrind_problems($master, 1)], [],
          'valgrind: master leaks ignored');
@p = MCTest::valgrind_problems("==13== Invalid write of size 8\n", 1);
is(scalar @p, 1, 'valgrind: invalid write in the master counts');
like(join(' ', MCTest::valgrind_problems("==14== Memcheck\n", 0)),
     qr/no ERROR SUMMARY/, 'valgrind: a killed worker counts');

# --- stop

ok($t->stop, 'stop');
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                          Proto => 'tcp'), 'port closed after stop');

done_testing;
