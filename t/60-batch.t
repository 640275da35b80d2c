#!/usr/bin/perl
# t/60-batch.t: big and odd bodies (docs/DESIGN.md sections 1 and 3,
# docs/EVENTS.md "Parsing rules"):
#
#   1. 1,000 text messages (distinct wamids) in one change: 200, 1,000
#      events, 1,000 messages; then 1,000 statuses of those messages in one
#      change: 1,000 events, 1,000 status rows, every currentStatus raised;
#      the same through a temp file (client_body_buffer_size 8k), with
#      Content-Length and chunked in odd pieces: byte-exact, all stored;
#   2. two entries (two WABAs / numbers), several changes each: every item of
#      every change of every entry stored, with its indexes;
#   3. an unknown phone number id: 200, raw row kept, events unrouted, no
#      message; metacloud_add_phone_number() replays them: the messages
#      appear;
#   4. signed bodies that are not webhooks: invalid JSON, `[1,2]`, another
#      object, an empty body: 200, the raw body byte-exact with its outcome,
#      no event;
#   5. a body over client_max_body_size (1m location, 1.5 MB): 413, nothing
#      stored; the same body where the limit is 4m: 200;
#   6. one batch with NUL, lone surrogates, invalid UTF-8 (raw \xff\xfe, an
#      overlong \xc0\xaf), an emoji pair, SQL metacharacters: every message
#      stored, exact texts (U+FFFD for each bad sequence), raw body
#      byte-for-byte;
#   7. wrong types in an otherwise valid batch (text a number, body a
#      number, timestamp an integer or junk, an item that is a string,
#      unknown fields): 200, the good items stored, the odd one recorded as
#      failed, raw row exact.
#
# Run: make test T=t/60-batch.t   (PROVE_FLAGS=-v for every check)
#
# mc-valgrind: this suite runs a second time under valgrind in `make test`
# (hostile bytes are what valgrind is for).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Digest::SHA qw(sha256_hex);
use Encode qw(encode_utf8);
use MCTest;

our $TODO;

my $t = MCTest->new(name => 'batch');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $JSON = JSON::PP->new->canonical;

my $PHONE_A = '106540352242922';
my $WABA_A = '102290129340398';
my $DISPLAY_A = '15550783881';
my $PHONE_B = '1122334455667';
my $WABA_B = '1234567890987654321';
my $DISPLAY_B = '972123456789';

$t->write_conf(<<'EOF');
metacloud_db "%%DB%%";
metacloud_db_timeout 30s;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
        client_body_buffer_size 4m;
    }
    location = /webhooks/tempfile {
        # a small buffer: the body goes to a temp file, read back in pieces
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
        client_body_buffer_size 8k;
    }
    location = /webhooks/small {
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 1m;
        client_body_buffer_size 1m;
    }
}
EOF
$t->run;

$t->sql(q{
    SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                      '102290129340398', 'tok');
    SELECT metacloud_add_phone_number('org-test', '1122334455667',
                                      '1234567890987654321', 'tok');
});

is($t->sql1(q{SELECT current_setting('server_encoding')}), 'UTF8',
   'the test database is UTF8');

# ----------------------------------------------------------------------
# helpers

sub change {
    my (%o) = @_;
    return {
        field => $o{field} // 'messages',
        value => {
            messaging_product => 'whatsapp',
            metadata => {
                display_phone_number => $o{display} // $DISPLAY_A,
                phone_number_id => $o{phone} // $PHONE_A,
            },
            %{ $o{value} || {} },
        },
    };
}

sub webhook {
    my (@entries) = @_;     # [waba id, [changes]]
    return $JSON->encode({
        object => 'whatsapp_business_account',
        entry => [ map { { id => $_->[0], changes => $_->[1] } } @entries ],
    });
}

sub text_item {
    my ($wamid, $text, %o) = @_;
    return { from => $o{from} // '16505551234', id => $wamid,
             timestamp => $o{ts} // '1749416383', type => 'text',
             text => { body => $text } };
}

sub contacts {
    return [{ profile => { name => 'Sheena Nelson' }, wa_id => '16505551234' }];
}

sub post {
    my ($body, $uri) = @_;
    my ($st, $h, $b) = $t->post_signed($uri // $URI, $body);
    my $doc = eval { $JSON->decode($b) };
    return ($st, $doc, $b);
}

sub answer_is {
    my ($doc, $exp, $name) = @_;
    my %got = map { $_ => ($doc ? $doc->{$_} : undef) } keys %$exp;
    is_deeply(\%got, $exp, $name)
        or diag('answer: ' . $JSON->encode($doc // {}));
}

sub count {
    my ($table, $where, @binds) = @_;
    return $t->sql1("SELECT count(*) FROM $table"
                    . ($where ? " WHERE $where" : ''), @binds);
}

# the raw row of a delivery: [outcome, error is not null, eventCount,
# length, body hex]
sub raw_row {
    my ($raw_id) = @_;
    my $r = $t->sql(q{SELECT "outcome", "error" IS NOT NULL, "eventCount",
                             length("body"), encode("body", 'hex'),
                             "signatureChecked"
                        FROM meta_cloud_webhook_requests
                       WHERE "id" = :'v1'}, $raw_id // '');
    return $r->[0] || [];
}

# byte-exact check of the stored body of one delivery
sub raw_is {
    my ($raw_id, $body, $name) = @_;
    my $r = $t->sql(q{SELECT length("body"), encode(sha256("body"), 'hex'),
                             encode("sha256", 'hex')
                        FROM meta_cloud_webhook_requests
                       WHERE "id" = :'v1'}, $raw_id // '');
    is_deeply($r, [[length($body), sha256_hex($body), sha256_hex($body)]],
              "$name: raw body stored byte-exact (length, SHA-256 of the "
              . 'bytea and the sha256 column)');
}

sub empty_db {
    $t->sql(q{TRUNCATE meta_cloud_message_statuses, meta_cloud_messages,
                       meta_cloud_media, meta_cloud_webhook_events,
                       meta_cloud_webhook_requests CASCADE});
}

# ======================================================================
# 1. 1,000 messages, then 1,000 statuses, in one change each

my $N = 1000;
my @wamids = map { sprintf 'wamid.BATCH-%04d', $_ } 1 .. $N;
my $big = webhook([$WABA_A, [change(value => {
    contacts => contacts(),
    messages => [ map { text_item($wamids[$_], "batch text $_") } 0 .. $N - 1 ],
})]]);

my ($st, $doc) = post($big);
is($st, 200, '1,000 messages: 200');
answer_is($doc, { status => 'ok', outcome => 'ok', events => $N,
                  inserted => $N, duplicate => 0, failed => 0,
                  unrouted => 0, pending => 0 },
          '1,000 messages: the answer counts 1,000 new events');
raw_is($doc && $doc->{rawId}, $big, '1,000 messages');
is(count('meta_cloud_webhook_events', q{"eventType" = 'message'
                                        AND "processed"}), $N,
   '1,000 messages: 1,000 processed message events');
is(count('meta_cloud_messages'), $N, '1,000 messages: 1,000 message rows');
is_deeply($t->sql(q{SELECT count(DISTINCT "wamid"), min("wamid"), max("wamid"),
                           count(*) FILTER (WHERE "text" = 'batch text '
                                   || (substr("wamid", 13)::int - 1))
                      FROM meta_cloud_messages}),
          [[$N, $wamids[0], $wamids[-1], $N]],
          '1,000 messages: every wamid once, each with its own text');
is_deeply($t->sql(q{SELECT min(("event" ->> 'itemIndex')::int),
                           max(("event" ->> 'itemIndex')::int),
                           count(DISTINCT "event" ->> 'itemIndex')
                      FROM meta_cloud_webhook_events}),
          [[0, $N - 1, $N]], '1,000 messages: itemIndex 0..999');

my $bigst = webhook([$WABA_A, [change(value => {
    contacts => contacts(),
    statuses => [ map { { id => $_, status => 'delivered',
                          timestamp => '1749416400',
                          recipient_id => '16505551234' } } @wamids ],
})]]);
($st, $doc) = post($bigst);
is($st, 200, '1,000 statuses: 200');
answer_is($doc, { outcome => 'ok', events => $N, inserted => $N,
                  duplicate => 0, failed => 0, unrouted => 0, pending => 0 },
          '1,000 statuses: 1,000 new events, none pending');
raw_is($doc && $doc->{rawId}, $bigst, '1,000 statuses');
is(count('meta_cloud_webhook_events', q{"eventType" = 'status'
                                        AND "processed"}), $N,
   '1,000 statuses: 1,000 processed status events');
is(count('meta_cloud_message_statuses', q{"status" = 'DELIVERED'}), $N,
   '1,000 statuses: 1,000 status rows');
is(count('meta_cloud_messages', q{"currentStatus" = 'DELIVERED'}), $N,
   '1,000 statuses: every message DELIVERED');

# the same 1,000-item body again: all duplicates
($st, $doc) = post($big);
answer_is($doc, { events => $N, inserted => 0, duplicate => $N },
          '1,000 messages again: 1,000 duplicates');
is(count('meta_cloud_messages'), $N, '1,000 messages again: no new row');

# 1b. 1,000 messages through a temp file (client_body_buffer_size 8k), once
# with Content-Length, once chunked in odd-sized pieces

for my $mode ('temp file', 'temp file, chunked') {
    empty_db();
    my $tag = $mode =~ /chunked/ ? 'C' : 'F';
    my @w = map { sprintf "wamid.TMP$tag-%04d", $_ } 1 .. $N;
    my $b = webhook([$WABA_B, [change(phone => $PHONE_B, display => $DISPLAY_B,
        value => { contacts => contacts(),
                   messages => [ map { text_item($w[$_], "tmp $tag $_") }
                                 0 .. $N - 1 ] })]]);
    cmp_ok(length $b, '>', 64 * 1024, "$mode: body over 64k");
    my ($s, $h, $rb);
    if ($mode =~ /chunked/) {
        my ($chunked, $off, $i) = ('', 0, 0);
        while ($off < length $b) {
            my $n = (1, 7, 4093, 8192, 12345)[$i++ % 5];
            my $piece = substr($b, $off, $n);
            $chunked .= sprintf("%x\r\n", length $piece) . $piece . "\r\n";
            $off += length $piece;
        }
        $chunked .= "0\r\n\r\n";
        ($s, $h, $rb) = $t->http('POST', '/webhooks/tempfile',
            body => $chunked,
            headers => { 'Content-Type' => 'application/json',
                         'Transfer-Encoding' => 'chunked',
                         'X-Hub-Signature-256' => $t->sign($b) });
    } else {
        ($s, $h, $rb) = $t->post_signed('/webhooks/tempfile', $b);
    }
    my $d = eval { $JSON->decode($rb) };
    is($s, 200, "$mode: 200") or diag($rb);
    answer_is($d, { outcome => 'ok', events => $N, inserted => $N,
                    failed => 0, unrouted => 0 },
              "$mode: 1,000 new events");
    raw_is($d && $d->{rawId}, $b, $mode);
    is_deeply($t->sql(q{SELECT count(*), count(DISTINCT "wamid"),
                               min("wamid"), max("wamid")
                          FROM meta_cloud_messages
                         WHERE "phoneNumberId" = :'v1'}, $PHONE_B),
              [[$N, $N, $w[0], $w[-1]]], "$mode: 1,000 messages");
}
my $buffered = () = $t->error_log
    =~ /a client request body is buffered to a temporary file/g;
cmp_ok($buffered, '>=', 2, 'temp file: nginx did buffer both bodies to disk');

# ======================================================================
# 2. two entries, several changes each

empty_db();
my $multi = webhook(
    [$WABA_A, [
        change(value => { contacts => contacts(), messages => [
            text_item('wamid.MULTI-A00', 'A change 0 item 0'),
            text_item('wamid.MULTI-A01', 'A change 0 item 1') ] }),
        change(value => { contacts => contacts(), messages => [
            text_item('wamid.MULTI-A10', 'A change 1 item 0') ],
            statuses => [ { id => 'wamid.MULTI-A00', status => 'read',
                            timestamp => '1749416500',
                            recipient_id => '16505551234' } ] }),
    ]],
    [$WABA_B, [
        change(phone => $PHONE_B, display => $DISPLAY_B, value => {
            contacts => contacts(), messages => [
            text_item('wamid.MULTI-B00', 'B change 0 item 0'),
            text_item('wamid.MULTI-B01', 'B change 0 item 1'),
            text_item('wamid.MULTI-B02', 'B change 0 item 2') ] }),
        change(phone => $PHONE_B, display => $DISPLAY_B,
               field => 'smb_message_echoes', value => {
            message_echoes => [ { from => $DISPLAY_B, to => '16505551234',
                                  id => 'wamid.MULTI-B10',
                                  timestamp => '1749416383', type => 'text',
                                  text => { body => 'B change 1 echo' } } ] }),
    ]],
);
($st, $doc) = post($multi);
is($st, 200, 'two entries: 200');
answer_is($doc, { outcome => 'ok', events => 8, inserted => 8,
                  duplicate => 0, failed => 0, unrouted => 0 },
          'two entries: 8 events (7 messages, 1 status), all new');
raw_is($doc && $doc->{rawId}, $multi, 'two entries');
is_deeply($t->sql(q{SELECT "event" ->> 'entryIndex', "event" ->> 'changeIndex',
                           "event" ->> 'itemIndex', "eventType", "scope",
                           "wabaId", "webhookId", "processed"
                      FROM meta_cloud_webhook_events
                     ORDER BY 1, 2, 3}),
          [[0, 0, 0, 'message', $PHONE_A, $WABA_A, 'msg:wamid.MULTI-A00', 't'],
           [0, 0, 1, 'message', $PHONE_A, $WABA_A, 'msg:wamid.MULTI-A01', 't'],
           [0, 1, 0, 'message', $PHONE_A, $WABA_A, 'msg:wamid.MULTI-A10', 't'],
           [0, 1, 1, 'status', $PHONE_A, $WABA_A,
            'status:wamid.MULTI-A00:read:16505551234', 't'],
           [1, 0, 0, 'message', $PHONE_B, $WABA_B, 'msg:wamid.MULTI-B00', 't'],
           [1, 0, 1, 'message', $PHONE_B, $WABA_B, 'msg:wamid.MULTI-B01', 't'],
           [1, 0, 2, 'message', $PHONE_B, $WABA_B, 'msg:wamid.MULTI-B02', 't'],
           [1, 1, 0, 'echo', $PHONE_B, $WABA_B, 'msg:wamid.MULTI-B10', 't']],
          'two entries: every item of every change of every entry, in place');
is_deeply($t->sql(q{SELECT "wamid", "phoneNumberId", "direction", "text",
                           "currentStatus"
                      FROM meta_cloud_messages ORDER BY "wamid"}),
          [['wamid.MULTI-A00', $PHONE_A, 'INBOUND', 'A change 0 item 0', 'READ'],
           ['wamid.MULTI-A01', $PHONE_A, 'INBOUND', 'A change 0 item 1', 'PENDING'],
           ['wamid.MULTI-A10', $PHONE_A, 'INBOUND', 'A change 1 item 0', 'PENDING'],
           ['wamid.MULTI-B00', $PHONE_B, 'INBOUND', 'B change 0 item 0', 'PENDING'],
           ['wamid.MULTI-B01', $PHONE_B, 'INBOUND', 'B change 0 item 1', 'PENDING'],
           ['wamid.MULTI-B02', $PHONE_B, 'INBOUND', 'B change 0 item 2', 'PENDING'],
           ['wamid.MULTI-B10', $PHONE_B, 'OUTBOUND', 'B change 1 echo', 'PENDING']],
          'two entries: seven message rows on the right numbers');
is(count('meta_cloud_message_statuses'), 1, 'two entries: one status row');

# ======================================================================
# 3. an unknown phone number id, then registered: replay

empty_db();
my $PHONE_U = '555000111222';
my $WABA_U = '555000111333';
my $unk = webhook([$WABA_U, [change(phone => $PHONE_U, display => '15559990000',
    value => { contacts => contacts(), messages => [
        text_item('wamid.UNROUTED-1', 'to an unknown number 1'),
        text_item('wamid.UNROUTED-2', 'to an unknown number 2') ] })]]);
($st, $doc) = post($unk);
is($st, 200, 'unknown number: 200');
answer_is($doc, { outcome => 'ok', events => 2, inserted => 2,
                  duplicate => 0, failed => 0, unrouted => 2 },
          'unknown number: 2 new events, both unrouted');
raw_is($doc && $doc->{rawId}, $unk, 'unknown number');
is_deeply($t->sql(q{SELECT "webhookId", "scope", "unrouted", "processed",
                           "organizationId"
                      FROM meta_cloud_webhook_events ORDER BY "webhookId"}),
          [['msg:wamid.UNROUTED-1', $PHONE_U, 't', 'f', undef],
           ['msg:wamid.UNROUTED-2', $PHONE_U, 't', 'f', undef]],
          'unknown number: events kept, unrouted, not processed, no org');
is(count('meta_cloud_messages'), 0, 'unknown number: no message row');

my $rep = eval { $JSON->decode($t->sql1(q{SELECT metacloud_add_phone_number(
    'org-test', :'v1', :'v2', 'tok')}, $PHONE_U, $WABA_U)) };
answer_is($rep, { replayed => 2, processed => 2, pending => 0, failed => 0 },
          'unknown number: metacloud_add_phone_number replays both');
is_deeply($t->sql(q{SELECT "wamid", "phoneNumberId", "organizationId", "text"
                      FROM meta_cloud_messages ORDER BY "wamid"}),
          [['wamid.UNROUTED-1', $PHONE_U, 'org-test', 'to an unknown number 1'],
           ['wamid.UNROUTED-2', $PHONE_U, 'org-test', 'to an unknown number 2']],
          'unknown number: the messages appear after the replay');
is(count('meta_cloud_webhook_events', q{"unrouted" OR NOT "processed"
                                        OR "organizationId" IS DISTINCT FROM
                                           'org-test'}), 0,
   'unknown number: events now routed and processed');
($st, $doc) = post($unk);
answer_is($doc, { inserted => 0, duplicate => 2, unrouted => 0 },
          'unknown number: the same body afterwards is a duplicate');
is(count('meta_cloud_messages'), 2, 'unknown number: still two messages');

# ======================================================================
# 4. signed bodies that are not webhooks

empty_db();
for my $case (
    ['invalid JSON', '{"object": "whatsapp_business_account", "entry": [',
     'invalid_json'],
    ['a JSON array', '[1,2]', 'not_webhook'],
    ['another object', '{"object":"page","entry":[]}', 'other_object'],
    ['entry not an array',
     '{"object":"whatsapp_business_account","entry":{}}', 'not_webhook'],
    ['an empty body', '', 'invalid_json'],
    ['binary garbage', "\x00\xff\x01garbage\r\n", 'invalid_json'],
) {
    my ($name, $body, $outcome) = @$case;
    my $before = count('meta_cloud_webhook_requests');
    ($st, $doc) = post($body);
    is($st, 200, "$name: 200");
    answer_is($doc, { status => 'ok', outcome => $outcome, events => 0,
                      inserted => 0 }, "$name: outcome $outcome, no event");
    is(count('meta_cloud_webhook_requests'), $before + 1,
       "$name: one raw row");
    is_deeply(raw_row($doc && $doc->{rawId}),
              [$outcome, 't', 0, length($body), unpack('H*', $body), 't'],
              "$name: raw row (outcome, error set, no event, body exact, "
              . 'signature checked)');
}
is(count('meta_cloud_webhook_events'), 0, 'not webhooks: no event at all');
is(count('meta_cloud_messages'), 0, 'not webhooks: no message');

# ======================================================================
# 5. over the limit

empty_db();
my $huge_text = 'x' x (1536 * 1024);
my $huge = webhook([$WABA_A, [change(value => { contacts => contacts(),
    messages => [ text_item('wamid.HUGE-1', $huge_text) ] })]]);
cmp_ok(length $huge, '>', 1.5 * 1024 * 1024, 'over the limit: 1.5 MB body');
($st) = post($huge, '/webhooks/small');
is($st, 413, 'over the limit (1m location): 413');
is(count('meta_cloud_webhook_requests'), 0, 'over the limit: no raw row');
is(count('meta_cloud_webhook_events'), 0, 'over the limit: no event');
($st, $doc) = post($huge);
is($st, 200, 'the same body where the limit is 4m: 200');
answer_is($doc, { inserted => 1, events => 1 }, '4m: one new event');
raw_is($doc && $doc->{rawId}, $huge, '4m');
is($t->sql1(q{SELECT length("text") FROM meta_cloud_messages
               WHERE "wamid" = 'wamid.HUGE-1'}), length($huge_text),
   '4m: the 1.5 MB text stored whole');

# ======================================================================
# 6. a batch with bad and hostile text

empty_db();
# [wamid, JSON string literal as sent (bytes), expected text (characters)]
my @texts = (
    ['wamid.TXT-NUL', q{"a\u0000b"}, "a\x{FFFD}b"],
    ['wamid.TXT-HIGH', q{"x\ud83dy"}, "x\x{FFFD}y"],
    ['wamid.TXT-HIGHEND', q{"end\ud83d"}, "end\x{FFFD}"],
    ['wamid.TXT-LOW', q{"l\ude00w"}, "l\x{FFFD}w"],
    ['wamid.TXT-FFFE', qq{"p\xff\xfeq"}, "p\x{FFFD}\x{FFFD}q"],
    ['wamid.TXT-OVERLONG', qq{"o\xc0\xafk"}, "o\x{FFFD}\x{FFFD}k"],
    ['wamid.TXT-TRUNC', qq{"t\xe2\x82"}, "t\x{FFFD}"],
    ['wamid.TXT-EMOJI', q{"smile \ud83d\ude00!"}, "smile \x{1F600}!"],
    ['wamid.TXT-RAWUTF8', qq{"caf\xc3\xa9 \xf0\x9f\x98\x80"},
     "caf\x{e9} \x{1F600}"],
    ['wamid.TXT-SQL', q{"'); DROP TABLE meta_cloud_messages; --"},
     q{'); DROP TABLE meta_cloud_messages; --}],
    ['wamid.TXT-BACKSLASH', q{"C:\\\\temp\\\\new \\\\u0041 \\\\\\\\ \" end"},
     q{C:\temp\new \u0041 \\\\ " end}],
    ['wamid.TXT-DOLLAR', q{"$$ $1 $body$ :'v1' %s %n E'\\\\x00'"},
     q{$$ $1 $body$ :'v1' %s %n E'\x00'}],
);
my $items = join ',', map {
    qq({"from":"16505551234","id":"$_->[0]","timestamp":"1749416383",)
    . qq("type":"text","text":{"body":$_->[1]}})
} @texts;
my $hostile = '{"object":"whatsapp_business_account","entry":[{"id":"'
    . $WABA_A . '","changes":[{"field":"messages","value":{'
    . '"messaging_product":"whatsapp","metadata":{"display_phone_number":"'
    . $DISPLAY_A . '","phone_number_id":"' . $PHONE_A . '"},'
    . '"contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234"}],'
    . '"messages":[' . $items . ']}}]}]}';

($st, $doc) = post($hostile);
is($st, 200, 'hostile texts: 200');
answer_is($doc, { outcome => 'ok', events => scalar @texts,
                  inserted => scalar @texts, failed => 0 },
          'hostile texts: one event per message, none failed');
my $raw = raw_row($doc && $doc->{rawId});
is($raw->[4], unpack('H*', $hostile),
   'hostile texts: the raw body stored byte-for-byte (invalid bytes too)');
is(count('meta_cloud_messages'), scalar @texts,
   'hostile texts: every message stored');
ok($t->sql1(q{SELECT to_regclass('meta_cloud_messages') IS NOT NULL}),
   'hostile texts: meta_cloud_messages still exists');
my %stored = map { $_->[0] => $_->[1] } @{ $t->sql(q{
    SELECT "wamid", encode(convert_to("text", 'UTF8'), 'hex')
      FROM meta_cloud_messages}) };
for my $c (@texts) {
    my ($wamid, $lit, $exp) = @$c;
    is($stored{$wamid}, unpack('H*', encode_utf8($exp)),
       "hostile texts: $wamid stored as expected")
        or diag('got: ' . (defined $stored{$wamid}
                           ? pack('H*', $stored{$wamid}) : 'NULL'));
}
is($t->sql1(q{SELECT "payload" -> 'text' ->> 'body'
                FROM meta_cloud_webhook_events
               WHERE "webhookId" = 'msg:wamid.TXT-NUL'}),
   encode_utf8("a\x{FFFD}b"), 'hostile texts: NUL is U+FFFD in the payload too');

# ======================================================================
# 7. wrong types in an otherwise valid batch

empty_db();
my $odd = '{"object":"whatsapp_business_account","entry":[{"id":"'
    . $WABA_A . '","changes":[{"field":"messages","value":{'
    . '"messaging_product":"whatsapp","metadata":{"display_phone_number":"'
    . $DISPLAY_A . '","phone_number_id":"' . $PHONE_A . '"},'
    . '"contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234"}],'
    . '"messages":['
    . '{"from":"16505551234","id":"wamid.ODD-GOOD1","timestamp":"1749416383",'
    .   '"type":"text","text":{"body":"good one"}},'
    . '{"from":"16505551234","id":"wamid.ODD-TEXTNUM","timestamp":"1749416383",'
    .   '"type":"text","text":42},'
    . '{"from":"16505551234","id":"wamid.ODD-BODYNUM","timestamp":"1749416383",'
    .   '"type":"text","text":{"body":17}},'
    . '{"from":"16505551234","id":"wamid.ODD-TSINT","timestamp":1749416390,'
    .   '"type":"text","text":{"body":"integer time"}},'
    . '{"from":"16505551234","id":"wamid.ODD-TSJUNK","timestamp":"soon",'
    .   '"type":"text","text":{"body":"junk time"}},'
    . '"i am a string, not a message",'
    . '{"from":"16505551234","id":"wamid.ODD-EXTRA","timestamp":"1749416383",'
    .   '"type":"text","text":{"body":"extra fields","zz":1},'
    .   '"unknown_field":{"nested":[1,2,{"x":null}]},"another":true},'
    . '{"from":"16505551234","id":"wamid.ODD-GOOD2","timestamp":"1749416383",'
    .   '"type":"text","text":{"body":"good two"}}'
    . ']}}]}]}';
ok(eval { $JSON->decode($odd); 1 }, 'odd types: the body is valid JSON');
my $sha = sha256_hex($odd);

($st, $doc) = post($odd);
is($st, 200, 'odd types: 200');
answer_is($doc, { outcome => 'ok', events => 8, inserted => 8,
                  duplicate => 0, failed => 1, unrouted => 0 },
          'odd types: 8 events, the string item failed');
raw_is($doc && $doc->{rawId}, $odd, 'odd types');
is_deeply($t->sql(q{SELECT "wamid", "type", "text", "timestamp",
                           extract(epoch FROM "sentAt")::bigint = 1749416383
                      FROM meta_cloud_messages
                     WHERE "wamid" <> 'wamid.ODD-TSJUNK'
                       AND "wamid" <> 'wamid.ODD-TSINT'
                     ORDER BY "wamid"}),
          [['wamid.ODD-BODYNUM', 'TEXT', '17', '1749416383', 't'],
           ['wamid.ODD-EXTRA', 'TEXT', 'extra fields', '1749416383', 't'],
           ['wamid.ODD-GOOD1', 'TEXT', 'good one', '1749416383', 't'],
           ['wamid.ODD-GOOD2', 'TEXT', 'good two', '1749416383', 't'],
           ['wamid.ODD-TEXTNUM', 'TEXT', undef, '1749416383', 't']],
          'odd types: good items stored; a numeric body as its decimal '
          . 'string; a text that is a number gives no text');
is_deeply($t->sql(q{SELECT "timestamp",
                           extract(epoch FROM "sentAt")::bigint
                      FROM meta_cloud_messages
                     WHERE "wamid" = 'wamid.ODD-TSINT'}),
          [['1749416390', 1749416390]],
          'odd types: an integer timestamp is accepted');
is_deeply($t->sql(q{SELECT "timestamp" IS NULL,
                           "sentAt" > now() - interval '10 minutes'
                      FROM meta_cloud_messages
                     WHERE "wamid" = 'wamid.ODD-TSJUNK'}),
          [['t', 't']],
          'odd types: a junk timestamp is NULL, sentAt = time of receipt');
my $bad = $t->sql(q{SELECT "webhookId", "processed", "error",
                           "payload" #>> '{}'
                      FROM meta_cloud_webhook_events
                     WHERE "webhookId" LIKE 'item:%'});
is_deeply([ map { [@$_[0, 1, 3]] } @$bad ],
          [["item:$sha:0:0:5", 'f', 'i am a string, not a message']],
          'odd types: the string item kept as a not processed event with its '
          . 'payload, keyed item:<sha>:0:0:5');
# the reason is free text (docs/EVENTS.md: "invalid": "<reason>")
like($bad->[0] && $bad->[0][2], qr/^message (?:is not an object|without id)$/,
     'odd types: the string item\'s error says why');
is($t->sql1(q{SELECT "payload" -> 'unknown_field' -> 'nested' ->> 2
                FROM meta_cloud_webhook_events
               WHERE "webhookId" = 'msg:wamid.ODD-EXTRA'}),
   '{"x": null}', 'odd types: unknown fields kept in the payload');
is(count('meta_cloud_webhook_events'), 8, 'odd types: 8 event rows');

$t->stop;
done_testing;
