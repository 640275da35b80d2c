#!/usr/bin/perl
# t/65-odd-values.t: one odd value never poisons a delivery (issue 6;
# docs/EVENTS.md "Keys" and "Parsing rules"):
#
#   1. every string that becomes part of an event key or of an indexed
#      column, 10 KB of random letters (incompressible enough to pass
#      PostgreSQL's index compression): message id, status id, status,
#      recipient, phone_number_id, entry id, from, from_user_id, an echo's
#      to, media id, history ids.
#      Each delivery answers 200 with every event stored, beside ordinary
#      ones; keys and indexed columns are bounded (the first 200 bytes, "~",
#      the SHA-256 of the whole); the payload keeps the whole id; a retry is
#      all duplicates; a status of the long message finds it;
#   2. numbers jansson refuses (1e999, 30-digit integers, in known and
#      unknown fields): 200, outcome ok, every event stored, the number's
#      text in the payload, the column that reads it null or absent.
#
# Run: make test T=t/65-odd-values.t   (PROVE_FLAGS=-v for every check)
#
# mc-valgrind: this suite runs a second time under valgrind in `make test`
# (hostile values are what valgrind is for).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Digest::SHA qw(sha256_hex);
use MCTest;

my $t = MCTest->new(name => 'odd');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $JSON = JSON::PP->new->canonical;

my $PHONE = '106540352242922';
my $WABA = '102290129340398';

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
}
EOF
$t->run;

$t->sql(q{SELECT metacloud_add_phone_number('org-test', :'v1', :'v2', 'tok')},
        $PHONE, $WABA);

srand(6);

sub letters {
    my ($prefix) = @_;
    return $prefix . join '', map { ('a' .. 'z')[rand 26] }
                              1 .. 10240 - length $prefix;
}

# what the module stores for an id over 200 bytes (ASCII here)
sub bounded {
    my ($id) = @_;
    return length($id) <= 200 ? $id
                              : substr($id, 0, 200) . '~' . sha256_hex($id);
}

sub webhook {
    my (%o) = @_;
    return $JSON->encode({
        object => 'whatsapp_business_account',
        entry => [{ id => $o{waba} // $WABA, changes => [{
            field => $o{field} // 'messages',
            value => {
                messaging_product => 'whatsapp',
                metadata => { display_phone_number => '15550783881',
                              phone_number_id => $o{phone} // $PHONE },
                %{ $o{value} },
            },
        }] }],
    });
}

sub text_item {
    my ($id, %o) = @_;
    return { from => $o{from} // '16505551234', id => $id,
             timestamp => '1749416383', type => 'text',
             text => { body => $o{text} // 'hello' } };
}

sub post {
    my ($body) = @_;
    my ($st, $h, $b) = $t->post_signed($URI, $body);
    return ($st, eval { $JSON->decode($b) } // {}, $b);
}

sub count {
    my ($table, $where, @binds) = @_;
    return $t->sql1("SELECT count(*) FROM $table"
                    . ($where ? " WHERE $where" : ''), @binds);
}

# posts a body twice: all new, then all duplicates
sub deliver_twice {
    my ($name, $body, $events) = @_;
    my ($st, $doc, $raw) = post($body);
    is($st, 200, "$name: 200") or diag($raw);
    is($doc->{outcome}, 'ok', "$name: outcome ok");
    is($doc->{inserted}, $events, "$name: $events new events");
    is($doc->{failed}, 0, "$name: none failed");
    is(count('meta_cloud_webhook_requests', q{"id" = :'v1'
                                              AND length("body") = :'v2'},
             $doc->{rawId} // '', length $body), 1,
       "$name: the raw body stored whole");

    my ($st2, $doc2) = post($body);
    is($st2, 200, "$name: the retry: 200");
    is($doc2->{duplicate}, $events, "$name: the retry: all duplicates");
    is($doc2->{inserted}, 0, "$name: the retry: nothing new");
    return $doc;
}

# ======================================================================
# 1. 10 KB ids

# a message id, beside an ordinary message
my $wamid = letters('wamid.');
deliver_twice('10 KB message id', webhook(value => {
    contacts => [{ profile => { name => 'A' }, wa_id => '16505551234' }],
    messages => [ text_item($wamid), text_item('wamid.ordinary1') ],
}), 2);

is($t->sql1(q{SELECT "text" FROM meta_cloud_messages WHERE "wamid" = :'v1'},
            bounded($wamid)), 'hello',
   '10 KB message id: the message row, under the bounded wamid');
is(count('meta_cloud_webhook_events', q{"scope" = :'v1'
                                        AND "webhookId" = :'v2'
                                        AND "processed"
                                        AND "payload" ->> 'id' = :'v3'},
         $PHONE, 'msg:' . bounded($wamid), $wamid), 1,
   '10 KB message id: the event keyed msg:<bounded>, payload whole');
is(count('meta_cloud_messages', q{"wamid" = 'wamid.ordinary1'}), 1,
   '10 KB message id: the ordinary message beside it stored');

# its statuses: a long status id is the long message; long status, recipient
my $who = letters('1');
my $status = letters('delivered');
deliver_twice('10 KB status id, status and recipient', webhook(value => {
    statuses => [
        { id => $wamid, status => 'read', timestamp => '1749416390',
          recipient_id => '16505551234' },
        { id => 'wamid.ordinary1', status => $status,
          timestamp => '1749416391', recipient_id => $who },
        { id => 'wamid.ordinary1', status => 'delivered',
          timestamp => '1749416392', recipient_id => '16505551234' },
    ],
}), 3);

is($t->sql1(q{SELECT "currentStatus" FROM meta_cloud_messages
               WHERE "wamid" = :'v1'}, bounded($wamid)), 'READ',
   'a status of the long message id finds its message');
is($t->sql1(q{SELECT "currentStatus" FROM meta_cloud_messages
               WHERE "wamid" = 'wamid.ordinary1'}), 'DELIVERED',
   'the ordinary status beside the long ones applied');
is(count('meta_cloud_webhook_events', q{"webhookId" = :'v1'},
         'status:wamid.ordinary1:' . bounded($status) . ':' . bounded($who)),
   1, 'long status and recipient: status:<id>:<bounded>:<bounded>');

# from (an indexed column) and a media id (unique index)
my $from = letters('1');
my $media = letters('M');
deliver_twice('10 KB from and media id', webhook(value => {
    messages => [
        text_item('wamid.longfrom', from => $from),
        { from => '16505551234', id => 'wamid.longmedia',
          timestamp => '1749416383', type => 'image',
          image => { id => $media, mime_type => 'image/jpeg' } },
    ],
}), 2);

is($t->sql1(q{SELECT "from" FROM meta_cloud_messages
               WHERE "wamid" = 'wamid.longfrom'}), bounded($from),
   '10 KB from: stored bounded');

# the user id of a sender, and the recipient of an echo (indexed columns)
my $user = letters('US.');
my $to = letters('1');
deliver_twice('10 KB from_user_id', webhook(value => {
    messages => [{ from_user_id => $user, id => 'wamid.longuser',
                   timestamp => '1749416383', type => 'text',
                   text => { body => 'from a user id' } }],
}), 1);
deliver_twice('10 KB echo recipient', webhook(field => 'smb_message_echoes',
                                              value => {
    message_echoes => [{ from => '15550783881', to => $to,
                         id => 'wamid.longto', timestamp => '1749416383',
                         type => 'text', text => { body => 'echo' } }],
}), 1);

is($t->sql1(q{SELECT "fromUserId" FROM meta_cloud_messages
               WHERE "wamid" = 'wamid.longuser'}), bounded($user),
   '10 KB from_user_id: stored bounded');
is($t->sql1(q{SELECT "to" FROM meta_cloud_messages
               WHERE "wamid" = 'wamid.longto'}), bounded($to),
   '10 KB echo recipient: stored bounded');
is(count('meta_cloud_media', q{"mediaId" = :'v1'}, bounded($media)), 1,
   '10 KB media id: the media row, bounded');

# a phone_number_id: unrouted, kept, replayable under its bounded scope
my $phone = letters('9');
deliver_twice('10 KB phone_number_id', webhook(phone => $phone, value => {
    messages => [ text_item('wamid.longphone') ],
}), 1);

is(count('meta_cloud_webhook_events', q{"scope" = :'v1' AND "unrouted"
                                        AND "phoneNumberId" = :'v1'},
         bounded($phone)), 1,
   '10 KB phone_number_id: an unrouted event, scope bounded');

# an entry id, for a field without a phone number (scope waba:<id>)
my $waba = letters('7');
deliver_twice('10 KB entry id', $JSON->encode({
    object => 'whatsapp_business_account',
    entry => [{ id => $waba, changes => [{
        field => 'account_update',
        value => { event => 'PARTNER_REMOVED' } }] }],
}), 1);

is(count('meta_cloud_webhook_events', q{"scope" = :'v1'},
         'waba:' . bounded($waba)), 1,
   '10 KB entry id: scope waba:<bounded>');

# history: a thread message and a media follow-up with long ids
my $hid = letters('wamid.h');
deliver_twice('10 KB history ids', webhook(field => 'history', value => {
    history => [{ metadata => { phase => 0, chunk_order => 1,
                                progress => 100 },
                  threads => [{ id => '16505551234', messages => [
                      { from => '16505551234', id => $hid,
                        timestamp => '1749416383', type => 'text',
                        text => { body => 'old' },
                        history_context => { status => 'READ' } } ] }] }],
}), 1);

is(count('meta_cloud_messages', q{"wamid" = :'v1'}, bounded($hid)), 1,
   '10 KB history message id: stored bounded');

my $max_after = $t->sql1(q{SELECT max(octet_length("scope")
                                      + octet_length("webhookId"))
                             FROM meta_cloud_webhook_events});
cmp_ok($max_after, '<', 2000,
       "every key bounded: longest scope + key $max_after bytes");

# ======================================================================
# 2. numbers jansson refuses

my $nums = '{"object":"whatsapp_business_account","entry":[{"id":"' . $WABA
    . '","changes":[{"field":"messages","value":{"messaging_product":'
    . '"whatsapp","metadata":{"display_phone_number":"15550783881",'
    . '"phone_number_id":"' . $PHONE . '"},"odd":1e999,"messages":['
    . '{"from":"16505551234","id":"wamid.num1","timestamp":'
    . '123456789012345678901234567890,"type":"location","location":'
    . '{"latitude":1e999,"longitude":-122.5},"unknown":-1E+400},'
    . '{"from":"16505551234","id":"wamid.num2","timestamp":"1749416383",'
    . '"type":"text","text":{"body":"beside"},"big":99999999999999999999}],'
    . '"statuses":[{"id":"wamid.num2","status":"delivered","timestamp":'
    . '1e999,"recipient_id":"16505551234"}]}}]}]}';

deliver_twice('numbers jansson refuses', $nums, 3);

is_deeply($t->sql(q{SELECT "timestamp" IS NULL, "locationLatitude" IS NULL,
                           "locationLongitude"
                      FROM meta_cloud_messages WHERE "wamid" = 'wamid.num1'}),
          [['t', 't', '-122.5']],
          '30-digit timestamp and 1e999 latitude: null; the longitude kept');
is_deeply($t->sql(q{SELECT "payload" ->> 'timestamp',
                           "payload" -> 'location' ->> 'latitude',
                           "payload" ->> 'unknown'
                      FROM meta_cloud_webhook_events
                     WHERE "webhookId" = 'msg:wamid.num1'}),
          [['123456789012345678901234567890', '1e999', '-1E+400']],
          'the payload keeps each number as its text');
is($t->sql1(q{SELECT "text" FROM meta_cloud_messages
               WHERE "wamid" = 'wamid.num2'}), 'beside',
   'the message beside them stored');
is($t->sql1(q{SELECT "currentStatus" FROM meta_cloud_messages
               WHERE "wamid" = 'wamid.num2'}), 'DELIVERED',
   'a status with a 1e999 timestamp still applied');

done_testing();
