#!/usr/bin/perl
# t/90-metrics.t: metacloud_status counts exactly, across two workers and
# a reload.
#
# Two workers (listen reuseport, so the kernel spreads the connections
# over both) get a known mix of requests; then every counter of
# metacloud_requests_total and metacloud_events_total is compared with the
# mix, the histograms with the number of requests, `promtool check
# metrics` lints a live scrape, and ?format=json is parsed and agrees with
# the text.  A reload keeps every count; more traffic adds to it.  A lock
# held on the raw-requests table makes one ingest time out: a 503, counted
# as "unavailable" and as a db "timeout" error, its error line naming the
# wamid.  The backlog is read from PostgreSQL within ~10 s and counts the
# pending statuses and unrouted messages; the pools of both workers show.
# The JSON access log of nginx.conf.example (its log_format, as it is)
# parses, with $metacloud_organization and $metacloud_wamids right for an
# ok, a duplicate, an unrouted, a 401 and a 503 delivery.
#
# Run: make test T=t/90-metrics.t
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use POSIX qw(_exit);
use Time::HiRes qw(sleep time);
use MCTest;

my $t = MCTest->new(name => 'metrics');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $STATUS = '/metacloud/status';
my $tf = $t->timeout_factor;
my $WAMID = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=';
my $PHONE = '106540352242922';
my $JSON = JSON::PP->new;

# the log_format of nginx.conf.example, as it is
my ($format) = MCTest::_read_file($t->root . '/nginx.conf.example')
               =~ /^\s*(log_format\s+metacloud\s.*?;)\s*$/ms;
ok($format, 'nginx.conf.example has a "log_format metacloud"');

# under valgrind a new worker's first connect alone may take seconds: the
# timeout scales as the harness's other bounds do (1s, 10s under valgrind)
my $DB_TIMEOUT = $tf;

$t->write_conf(<<"EOF", workers => 2);
metacloud_db "%%DB%%";
metacloud_db_timeout ${DB_TIMEOUT}s;
log_format mc escape=json '{"pid":"\$pid"}';
$format
server {
    listen 127.0.0.1:%%PORT%% reuseport;
    access_log %%TESTDIR%%/logs/mc.log mc;
    access_log %%TESTDIR%%/logs/json.log metacloud;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
    }
    location = /small {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 1k;
    }
    location = /metacloud/status {
        metacloud_status;
        allow 127.0.0.1;
        deny all;
    }
    location = /other {
        return 200;
    }
}
EOF

$t->sql(q{SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                            '102290129340398', 'tok')});

# nginx -t: the directives
{
    my $loc = 'location = /s { metacloud_status; }';
    my $hook = 'location = /w { metacloud_webhook; metacloud_app_secret s; '
             . 'client_max_body_size 4m; }';
    my ($rc, $out) = $t->nginx_t("metacloud_metrics off;\n"
                                 . "server { listen 127.0.0.1:%%PORT%%; $loc }");
    isnt($rc, 0, 'metacloud_status with metrics off: refused');
    like($out, qr/"metacloud_status" needs "metacloud_metrics on"/,
         '  naming both directives');
    ($rc, $out) = $t->nginx_t("metacloud_metrics maybe;\n"
                              . "server { listen 127.0.0.1:%%PORT%%; }");
    isnt($rc, 0, 'metacloud_metrics maybe: refused');
    like($out, qr/metacloud_metrics/, '  naming the directive');
    ($rc, $out) = $t->nginx_t("server { listen 127.0.0.1:%%PORT%%; "
                              . "location = /s { metacloud_status; "
                              . "metacloud_status; } }");
    isnt($rc, 0, 'metacloud_status twice: refused');
    ($rc, $out) = $t->nginx_t("metacloud_db \"%%DB%%\";\n"
                              . "metacloud_metrics off;\n"
                              . "server { listen 127.0.0.1:%%PORT%%; $hook }");
    is($rc, 0, 'a webhook with metrics off: accepted') or diag($out);
    ($rc, $out) = $t->nginx_t("server { listen 127.0.0.1:%%PORT%%; $loc }");
    is($rc, 0, 'a status location without any webhook: accepted')
        or diag($out);
}

$t->run;

# ----------------------------------------------------------------------
# helpers

# name{labels} => value, from the Prometheus text
sub scrape {
    my ($st, $h, $body) = $t->http_get($STATUS);
    is($st, 200, 'scrape: 200') or diag($body);
    my %m;
    for my $l (split /\n/, $body) {
        next if $l =~ /^#/ || $l eq '';
        my ($k, $v) = $l =~ /^(\S+) (\S+)$/ or do {
            fail("scrape: line '$l'");
            next;
        };
        $m{$k} = $v;
    }
    return wantarray ? (\%m, $body, $h) : \%m;
}

sub req {
    my ($m, $outcome, $code) = @_;
    return $m->{qq{metacloud_requests_total{outcome="$outcome",code="$code"}}};
}

sub ev {
    my ($m, $type, $result) = @_;
    return $m->{qq{metacloud_events_total{type="$type",result="$result"}}};
}

sub text_body {
    my ($w, $phone) = @_;
    (my $b = $t->wire('meta_text')) =~ s/\Q$WAMID\E/$w/;
    $b =~ s/\Q$PHONE\E/$phone/g if $phone;
    return $b;
}

sub handshake {
    my ($token) = @_;
    return scalar $t->http_get("$URI?hub.mode=subscribe&hub.challenge=42"
                               . "&hub.verify_token=$token");
}

my $run = "$$";

# the mix; %want: outcome/code => count, %ev: type/result => count
my (%want, %ev);

sub mix {
    my ($tag) = @_;

    is(handshake($MCTest::VERIFY_TOKEN), 200, "$tag: handshake") for 1 .. 2;
    $want{'handshake/200'} += 2;
    is(handshake('wrong'), 403, "$tag: handshake refused");
    $want{'handshake_refused/403'} += 1;

    for my $i (1 .. 3) {
        is(scalar $t->post_signed($URI, text_body("wamid.M$run$tag$i"),
                                  secret => 'nope'), 401,
           "$tag: bad signature $i");
    }
    $want{'bad_signature/401'} += 3;

    for my $i (1 .. 4) {
        is(scalar $t->post_signed($URI, text_body("wamid.M$run$tag$i")), 200,
           "$tag: text $i");
    }
    for my $i (1 .. 2) {
        is(scalar $t->post_signed($URI, text_body("wamid.M$run$tag$i")), 200,
           "$tag: duplicate $i");
    }
    $want{'ok/200'} += 6;
    $ev{'message/inserted'} += 4;
    $ev{'message/duplicate'} += 2;

    # a status of a message never seen: stored, waiting for it
    (my $st = $t->wire('meta_status_delivered_cbp_legacy'))
        =~ s/wamid\.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA/wamid.S$run$tag/;
    is(scalar $t->post_signed($URI, $st), 200, "$tag: pending status");
    $want{'ok/200'} += 1;
    $ev{'status/pending'} += 1;

    is(scalar $t->post_signed($URI, text_body("wamid.U$run$tag",
                                              '999000999')), 200,
       "$tag: unrouted");
    $want{'ok/200'} += 1;
    $ev{'message/unrouted'} += 1;

    is(scalar $t->post_signed($URI, '{"object":'), 200, "$tag: invalid json");
    $want{'invalid_json/200'} += 1;
    is(scalar $t->post_signed($URI, '[1,2]'), 200, "$tag: not a webhook");
    $want{'not_webhook/200'} += 1;
    is(scalar $t->post_signed($URI, '{"object":"page","entry":[]}'), 200,
       "$tag: other object");
    $want{'other_object/200'} += 1;

    is(scalar $t->post_signed('/small', 'x' x 2048), 413, "$tag: too large");
    $want{'too_large/413'} += 1;

    is(scalar $t->http('PUT', $URI, body => '{}'), 405, "$tag: PUT");
    $want{'method_not_allowed/405'} += 1;

    # not a webhook location: not counted
    is(scalar $t->http_get('/other'), 200, "$tag: other location");
}

my @outcomes = qw(handshake/200 handshake_refused/403 bad_signature/401
    ok/200 invalid_json/200 not_webhook/200 other_object/200 too_large/413
    unavailable/503 method_not_allowed/405 error/500);
my @types = qw(message status echo history_message history_media
    history_error state_sync error generic);
my @results = qw(inserted duplicate failed unrouted pending);

sub check_counts {
    my ($m, $tag) = @_;

    my $total = 0;
    for my $k (@outcomes) {
        my ($o, $c) = split m{/}, $k;
        is(req($m, $o, $c), $want{$k} // 0, "$tag: requests $o $c");
        $total += $want{$k} // 0;
    }
    # nothing else was counted (no other code)
    my $sum = 0;
    $sum += $m->{$_} for grep { /^metacloud_requests_total\{/ } keys %$m;
    is($sum, $total, "$tag: requests_total adds up to $total");

    my $ingested = 0;
    for my $ty (@types) {
        for my $r (@results) {
            is(ev($m, $ty, $r), $ev{"$ty/$r"} // 0, "$tag: events $ty $r");
        }
    }

    # a histogram observation per request; per committed ingest for the db
    for my $h (qw(metacloud_request_duration_seconds
                  metacloud_db_duration_seconds))
    {
        my $count = $m->{"${h}_count"};
        is($m->{qq{${h}_bucket{le="+Inf"}}}, $count, "$tag: $h +Inf = count");
        my $prev = 0;
        my $mono = 1;
        for my $le (qw(0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1
                       2.5 5 10 +Inf))
        {
            my $v = $m->{qq{${h}_bucket{le="$le"}}};
            $mono = 0 unless defined $v && $v >= $prev;
            $prev = $v // 0;
        }
        ok($mono, "$tag: $h buckets cumulative");
        ok($m->{"${h}_sum"} >= 0, "$tag: $h sum");
    }
    is($m->{metacloud_request_duration_seconds_count}, $total,
       "$tag: request duration count = requests");
    my $committed = 0;
    $committed += $want{$_} // 0
        for qw(ok/200 invalid_json/200 not_webhook/200 other_object/200);
    is($m->{metacloud_db_duration_seconds_count}, $committed,
       "$tag: db duration count = committed ingests");
}

# ----------------------------------------------------------------------
# the mix, two workers

my $m0 = scrape();
is(req($m0, 'ok', '200'), 0, 'fresh zone: ok 0');
is($m0->{metacloud_media_in_flight}, 0, 'media in flight 0');
is($m0->{'metacloud_media_downloads_total{result="ok"}'}, 0,
   'media downloads defined at 0');

mix('a');
my ($m, $text, $hdr) = scrape();
like($hdr->{'content-type'}, qr{^text/plain; version=0\.0\.4},
     'Prometheus content type');
check_counts($m, 'two workers');

my %pids;
for my $l (split /\n/, MCTest::_read_file($t->testdir . '/logs/mc.log')) {
    my $j = eval { $JSON->decode($l) } or next;
    $pids{ $j->{pid} }++;
}
cmp_ok(scalar keys %pids, '>=', 2, 'both workers served requests')
    or diag(join ' ', %pids);

# promtool lints a live scrape
SKIP: {
    skip 'promtool not installed', 1 unless -x '/usr/bin/promtool';
    my $f = $t->testdir . '/scrape.prom';
    open my $fh, '>', $f or die;
    print $fh $text;
    close $fh;
    my $out = `promtool check metrics < $f 2>&1`;
    is($?, 0, 'promtool check metrics accepts the scrape') or diag($out);
}

# JSON: parses, and agrees with the text
{
    my ($st, $h, $body) = $t->http_get("$STATUS?format=json");
    is($st, 200, 'json: 200');
    is($h->{'content-type'}, 'application/json', 'json: content type');
    my $j = eval { $JSON->decode($body) };
    ok($j, 'json: parses') or diag($@);
    my ($ok) = grep { $_->{outcome} eq 'ok' && $_->{code} eq '200' }
               @{ $j->{requests} };
    is($ok->{count}, $want{'ok/200'}, 'json: ok requests');
    is($j->{events}{message}{inserted}, $ev{'message/inserted'},
       'json: message inserted');
    is($j->{request_duration}{count},
       $m->{metacloud_request_duration_seconds_count}, 'json: histogram');
    is(scalar @{ $j->{request_duration}{le} }, 13, 'json: 13 bounds');
    is($j->{db}{workers}, 2, 'json: two workers report their pools');
}

is(scalar $t->http_get("$STATUS?format=xml"), 400, 'unknown format: 400');
is(scalar $t->http('POST', $STATUS, body => 'x'), 405, 'POST status: 405');


# ----------------------------------------------------------------------
# a reload keeps everything; more traffic adds up

my @old = $t->worker_pids;
ok($t->reload, 'reload');
my $until = time + 10 * $tf;
while (time < $until) {
    my %now = map { $_ => 1 } $t->worker_pids;
    last unless grep { $now{$_} } @old;
    sleep 0.1;
}
check_counts(scrape(), 'after reload');

mix('b');
check_counts(scrape(), 'after reload and traffic');

# ----------------------------------------------------------------------
# unavailable: an ingest waits on a lock past metacloud_db_timeout

my $dir = $t->testdir;
my $locker = fork;
die "fork: $!" unless defined $locker;
if ($locker == 0) {
    my $db = $t->dbname;
    exec('psql', '-X', '-q', '-d', $db, '-c',
         'BEGIN; LOCK TABLE meta_cloud_webhook_requests IN ACCESS EXCLUSIVE '
         . 'MODE; SELECT pg_sleep(' . (2 * $DB_TIMEOUT + 1) . '); COMMIT;')
        or _exit(127);
}
$until = time + 10;
sleep 0.05 until time > $until || $t->sql1(q{SELECT count(*) FROM pg_locks l
    JOIN pg_class c ON c.oid = l.relation
    WHERE c.relname = 'meta_cloud_webhook_requests'
      AND l.mode = 'AccessExclusiveLock' AND l.granted});
is(scalar $t->post_signed($URI, text_body("wamid.L$run")), 503,
   'ingest blocked past metacloud_db_timeout: 503');
waitpid($locker, 0);
$want{'unavailable/503'} += 1;

$m = scrape();
is(req($m, 'unavailable', '503'), 1, 'unavailable counted');
cmp_ok($m->{'metacloud_db_errors_total{reason="timeout"}'}, '>=', 1,
       'db timeout counted');
like($t->error_log,
     qr/\[error\][^\n]*metacloud: [^\n]*(?:timed out|statement timeout)[^\n]*, wamid: wamid\.L$run$/m,
     'the timeout is logged once at error, naming the wamid');

# ----------------------------------------------------------------------
# the JSON access log

my @json = map { $JSON->decode($_) }
           split /\n/, MCTest::_read_file($t->testdir . '/logs/json.log');
cmp_ok(scalar @json, '>', 40, 'the access log parses as JSON, line by line');

sub logged {
    my ($what, %want) = @_;
    my ($l) = grep {
        my $j = $_;
        !grep { ($j->{$_} // '') ne $want{$_} } keys %want
    } @json;
    ok($l, "access log: $what") or diag(explain(\%want));
    return $l || {};
}

my $l = logged('ok', status => 200, wamids => "wamid.M${run}a1",
               inserted => 1, duplicate => 0);
is($l->{organization}, 'org-test', 'ok: $metacloud_organization');
like($l->{raw_id}, qr/^[0-9a-f-]{36}$/, 'ok: $metacloud_raw_id');
$l = logged('duplicate', status => 200, wamids => "wamid.M${run}a1",
            inserted => 0, duplicate => 1);
is($l->{organization}, 'org-test', 'duplicate: $metacloud_organization');
$l = logged('unrouted', status => 200, wamids => "wamid.U${run}a",
            unrouted => 1);
is($l->{organization}, '', 'unrouted: no organisation');
$l = logged('401', status => 401, outcome => 'invalid_signature');
is($l->{wamids} . $l->{organization}, '', '401: no wamid, no organisation');
$l = logged('503', status => 503, wamids => "wamid.L$run");
is($l->{organization}, '', '503: no organisation (nothing stored)');
is($l->{inserted}, '', '503: no counts');

# ----------------------------------------------------------------------
# the backlog: read within ~10 s, by one worker through its pool

# read at a worker's first tick (1 s after it starts), then every 10 s.
# The first read is not always before the traffic: when the first
# generation is reloaded within its first second, the first read comes
# from the new workers' first tick, in the middle of mix('b'), and may
# fall between its pending status and its unrouted message (statuses 2,
# events 3).  So wait for a read that has all of the traffic: both
# counts reached (neither decreases here), then check them exactly.
$until = time + 25 * $tf;
do { $m = scrape(); sleep 0.5 }
    until (($m->{'metacloud_backlog{kind="statuses_pending"}'} // 0) >= 2
           && ($m->{'metacloud_backlog{kind="events_unprocessed"}'} // 0) >= 4)
          || time > $until;
ok(defined $m->{metacloud_backlog_age_seconds}, 'backlog read');
is($m->{'metacloud_backlog{kind="statuses_pending"}'}, 2,
   'backlog: the two pending statuses');
is($m->{'metacloud_backlog{kind="events_unprocessed"}'}, 4,
   'backlog: 2 pending statuses and 2 unrouted messages unprocessed');
is($m->{'metacloud_backlog{kind="media_pending"}'}, 0, 'backlog: no media');
cmp_ok($m->{metacloud_backlog_age_seconds}, '<', 12 * $tf,
       'backlog: fresh');
cmp_ok($m->{'metacloud_db_connections{state="idle"}'}, '>=', 1,
       'an idle connection in the pools');
cmp_ok($m->{metacloud_db_pool_size}, '==', 8, 'pool size: 2 workers x 4');
is($m->{metacloud_db_queue_waiting}, 0, 'nothing waiting');

done_testing;
