#!/usr/bin/perl
# t/45-variables.t: the $metacloud_* variables, in the JSON access log of
# nginx.conf.example (its log_format is taken from that file, so the
# example stays true):
#
#   1. a new delivery (200): outcome ok, events 1, inserted 1, duplicate 0,
#      raw_id the id of its meta_cloud_webhook_requests row, a db_time;
#   2. the same body again (200): inserted 0, duplicate 1, another raw_id;
#   3. a bad signature (401): outcome invalid_signature, nothing else;
#   4. a statement that fails in PostgreSQL (a CHECK constraint the
#      superuser adds to the raw-request table): 503, outcome db_error,
#      events 1, no counts, a db_time (t/72-pg-caller.t checks its
#      error log line);
#   5. every line of the access log is one JSON object.
#
# Run: make test T=t/45-variables.t
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use MCTest;

my $t = MCTest->new(name => 'vars');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $JSON = JSON::PP->new;

# the log_format statement of nginx.conf.example, as it is
my $example = do {
    local $/;
    open my $fh, '<', $t->root . '/nginx.conf.example' or die "$!";
    <$fh>;
};
my ($format) = $example =~ /^\s*(log_format\s+metacloud\s.*?;)\s*$/ms;
ok($format, 'nginx.conf.example has a "log_format metacloud"')
    or BAIL_OUT('no log_format metacloud in nginx.conf.example');
like($format, qr/escape=json/, '  with escape=json');

$t->write_conf(<<"EOF");
metacloud_db "%%DB%%";
$format
server {
    listen 127.0.0.1:%%PORT%%;
    access_log %%TESTDIR%%/logs/json.log metacloud;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
    }
}
EOF

$t->sql(q{SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                            '102290129340398', 'tok')});
$t->run;

my $body = $t->wire('meta_text');

my @status;
push @status, scalar $t->post_signed($URI, $body);
push @status, scalar $t->post_signed($URI, $body);
push @status, scalar $t->post($URI, $body,
                              headers => { 'X-Hub-Signature-256' =>
                                           'sha256=' . ('0' x 64) });

$t->sql(q{ALTER TABLE meta_cloud_webhook_requests
          ADD CONSTRAINT mct_refuse CHECK (false) NOT VALID});
push @status, scalar $t->post_signed($URI, $body);
$t->sql(q{ALTER TABLE meta_cloud_webhook_requests
          DROP CONSTRAINT mct_refuse});

is_deeply(\@status, [200, 200, 401, 503],
          'statuses: ok, duplicate, bad signature, database error');

# ----------------------------------------------------------------------
# the access log

my $log = '';
for (1 .. 50) {                 # written at the end of each request
    $log = do {
        local $/;
        open my $fh, '<', $t->testdir . '/logs/json.log' or die "$!";
        <$fh>;
    };
    last if ($log =~ tr/\n//) >= 4;
    select(undef, undef, undef, 0.1);
}

my @lines = split /\n/, $log;
is(scalar @lines, 4, 'four access log lines');

my @doc = map { my $d = eval { $JSON->decode($_) }; $d } @lines;
is(scalar(grep { ref $_ eq 'HASH' } @doc), 4, 'each line is a JSON object')
    or diag($log);

my @raw = @{ $t->sql(q{SELECT id FROM meta_cloud_webhook_requests
                       ORDER BY "receivedAt", id}) };

sub fields {
    my ($d) = @_;
    return { map { $_ => $d->{$_} }
             qw(status outcome events inserted duplicate failed unrouted) };
}

is_deeply(fields($doc[0] || {}),
          { status => 200, outcome => 'ok', events => 1, inserted => 1,
            duplicate => 0, failed => 0, unrouted => 0 },
          'ok: the counts');
is_deeply(fields($doc[1] || {}),
          { status => 200, outcome => 'ok', events => 1, inserted => 0,
            duplicate => 1, failed => 0, unrouted => 0 },
          'duplicate: the counts');
is_deeply(fields($doc[2] || {}),
          { status => 401, outcome => 'invalid_signature', events => '',
            inserted => '', duplicate => '', failed => '', unrouted => '' },
          '401: the outcome, nothing else');
is_deeply(fields($doc[3] || {}),
          { status => 503, outcome => 'db_error', events => 1,
            inserted => '', duplicate => '', failed => '', unrouted => '' },
          '503: the outcome and the events, no counts');

is(scalar @raw, 2, 'two raw requests stored');
is_deeply([map { $_ && $_->{raw_id} } @doc],
          [$raw[0][0], $raw[1][0], '', ''],
          'raw_id: the rows of the two stored deliveries, else empty');
like($doc[0] && $doc[0]{db_time}, qr/^\d+$/, 'ok: db_time in ms');
like($doc[3] && $doc[3]{db_time}, qr/^\d+$/, '503: db_time in ms');
is($doc[2] && $doc[2]{db_time}, '', '401: no db_time');

done_testing;
