#!/usr/bin/perl
# t/45-bridge-conversation.t: the platform's view (sql/004, docs/SQL.md
# "Bridge"), through nginx with the fixtures (ids changed so that they
# refer to each other):
#
#   1. a conversation: inbound text, the business's echo, a reply with
#      context, an image with caption, a reaction, its removal, an edit of
#      the caption, a revoke of the text: one lead, one conversation, one
#      open ticket, four "Message" rows with their final body, reaction,
#      editedAt, revokedAt; every meta_cloud_messages row linked;
#   2. a reaction that arrives before its target: applied on arrival;
#   3. identity changes (user_changed_number, user_changed_user_id): one
#      lead, which takes the new identity;
#   4. a BSUID-only contact (no phone) gets a lead;
#   5. a history sync in out-of-order chunks (the media follow-up first):
#      leads, conversations, messages with their historical status, the
#      placeholder joined with its media, no ticket;
#   6. smb_app_state_sync: a contact add makes a lead, a remove sets
#      "whatsappRemovedAt" and deletes nothing;
#   7. eight concurrent first messages from one new contact (held lock):
#      one lead, one conversation, one open ticket, eight messages;
#   8. a replaced bridge function is used at once by the sessions already
#      running, survives `make migrate` (and a forced re-run of 004), and
#      the ingest uses it.
#
# Run: make test T=t/45-bridge-conversation.t   (PROVE_FLAGS=-v)
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;
use MCBridge;

my $t = MCTest->new(name => 'bridge_conv');
plan skip_all => 'module not built' unless $t->has_module;

binmode(Test::More->builder->$_, ':encoding(UTF-8)')
    for qw(output failure_output todo_output);

my $b = MCBridge->new($t);
$b->start(8);
my $PHONE = $MCBridge::PHONE;
my $CUST = '16505551234';
my $SHEENA = MCBridge::contact('Sheena Nelson', $CUST);
# psql gives bytes: the UTF-8 of U+1F44D
my $THUMBS = "\xf0\x9f\x91\x8d";

sub rows { return $t->sql(@_) }
sub one { return $t->sql1(@_) }

# a fixture's first item with a new id and time
sub item_body {
    my ($fixture, $wamid, $ts, $edit, %o) = @_;
    return $b->body($fixture, %o, item => sub {
        my ($item) = @_;
        $item->{id} = $wamid;
        $item->{timestamp} = "$ts";
        $edit->($item) if $edit;
    });
}

# ======================================================================
# 1. a conversation

my ($W_TEXT, $W_ECHO, $W_REPLY, $W_IMG, $W_REACT, $W_UNREACT, $W_EDIT,
    $W_REVOKE) = map { "wamid.BRIDGE-CONV-$_" } 1 .. 8;

$b->post_ok(item_body('meta_text', $W_TEXT, 1749416000), 'inbound text');

is_deeply(rows(q{SELECT "organizationId", "phone", "userId", "name"
                   FROM "Lead"}),
          [['org-test', $CUST, undef, 'Sheena Nelson']],
          'text: a lead with the phone and the profile name');
is_deeply(rows(q{SELECT c."organizationId", c."phoneNumberId",
                        extract(epoch FROM c."lastMessageAt")::bigint,
                        extract(epoch FROM c."lastInboundAt")::bigint,
                        c."leadId" = l."id"
                   FROM "Conversation" c, "Lead" l}),
          [['org-test', $PHONE, 1749416000, 1749416000, 't']],
          'text: a conversation of the business number and the lead');
is_deeply(rows(q{SELECT t."status", t."conversationId" = c."id"
                   FROM "Ticket" t, "Conversation" c}),
          [['open', 't']], 'text: an open ticket');

$b->post_ok(item_body('meta_echo_text', $W_ECHO, 1749416100, undef,
                      contacts => undef),
            'echo (the business answers from the app)');
$b->post_ok(item_body('pywa_text_reply_context', $W_REPLY, 1749416200, sub {
                my ($i) = @_;
                $i->{from} = $CUST;
                $i->{context} = { from => $MCBridge::DISPLAY, id => $W_ECHO };
            }, contacts => $SHEENA), 'reply with context');
$b->post_ok(item_body('meta_image_with_url', $W_IMG, 1749416300),
            'image with caption');
$b->post_ok(item_body('meta_reaction', $W_REACT, 1749416400, sub {
                $_[0]{reaction}{message_id} = $W_IMG }), 'reaction');
is(one(q{SELECT m."reaction" FROM "Message" m
           JOIN meta_cloud_messages c ON c."messageId" = m."id"
          WHERE c."wamid" = :'v1'}, $W_IMG), $THUMBS,
   'reaction: the image\'s "reaction" is the emoji');
$b->post_ok(item_body('meta_reaction_removed_no_emoji_key', $W_UNREACT,
                      1749416500, sub {
                          $_[0]{reaction}{message_id} = $W_IMG }),
            'reaction removed');
$b->post_ok(item_body('meta_edit_image_caption', $W_EDIT, 1749416600, sub {
                $_[0]{edit}{original_message_id} = $W_IMG }),
            'edit of the caption');
$b->post_ok(item_body('meta_revoke', $W_REVOKE, 1749416700, sub {
                $_[0]{revoke}{original_message_id} = $W_TEXT }),
            'revoke of the text');

is(one('SELECT count(*) FROM "Lead"'), 1, 'conversation: one lead');
is(one('SELECT count(*) FROM "Conversation"'), 1,
   'conversation: one conversation');
is_deeply(rows(q{SELECT extract(epoch FROM "lastMessageAt")::bigint,
                        extract(epoch FROM "lastInboundAt")::bigint
                   FROM "Conversation"}),
          [[1749416700, 1749416700]],
          'conversation: lastMessageAt / lastInboundAt of the last message');
is_deeply(rows(q{SELECT "status" FROM "Ticket"}), [['open']],
          'conversation: one ticket, open');

# the bridge rows, in time order
is_deeply(rows(q{SELECT c."wamid", m."direction", m."type", m."body",
                        m."status", m."reaction",
                        extract(epoch FROM m."sentAt")::bigint,
                        extract(epoch FROM m."editedAt")::bigint,
                        extract(epoch FROM m."revokedAt")::bigint,
                        m."leadId" = l."id", m."conversationId" = cv."id",
                        m."ticketId" = tk."id", m."organizationId"
                   FROM "Message" m
                   JOIN meta_cloud_messages c ON c."messageId" = m."id",
                        "Lead" l, "Conversation" cv, "Ticket" tk
                  ORDER BY m."sentAt"}),
          [[$W_TEXT, 'INBOUND', 'text', 'Does it come in another color?',
            'PENDING', undef, 1749416000, undef, 1749416700, 't', 't', 't',
            'org-test'],
           [$W_ECHO, 'OUTBOUND', 'text',
            "Here's the info you requested! https://www.meta.com/quest/quest-3/",
            'PENDING', undef, 1749416100, undef, undef, 't', 't', 't',
            'org-test'],
           [$W_REPLY, 'INBOUND', 'text', 'replied text', 'PENDING', undef,
            1749416200, undef, undef, 't', 't', 't', 'org-test'],
           [$W_IMG, 'INBOUND', 'image', 'Updated image caption', 'PENDING',
            undef, 1749416300, 1749416600, undef, 't', 't', 't',
            'org-test']],
          'conversation: four bridge messages (reaction removed, caption '
          . 'edited, text revoked and kept)');
is(one('SELECT count(*) FROM "Message"'), 4,
   'conversation: no bridge row for the reaction, removal, edit, revoke');

# meta_cloud_messages: every row linked; the changes have no bridge row
is_deeply(rows(q{SELECT c."wamid", c."type", c."text",
                        c."leadId" IS NOT NULL, c."conversationId" IS NOT NULL,
                        c."ticketId" IS NOT NULL, c."messageId" IS NOT NULL
                   FROM meta_cloud_messages c ORDER BY c."sentAt"}),
          [[$W_TEXT, 'TEXT', 'Does it come in another color?',
            't', 't', 't', 't'],
           [$W_ECHO, 'TEXT',
            "Here's the info you requested! https://www.meta.com/quest/quest-3/",
            't', 't', 't', 't'],
           [$W_REPLY, 'TEXT', 'replied text', 't', 't', 't', 't'],
           [$W_IMG, 'IMAGE', 'Taj Mahal', 't', 't', 't', 't'],
           [$W_REACT, 'REACTION', undef, 't', 't', 't', 'f'],
           [$W_UNREACT, 'REACTION', undef, 't', 't', 't', 'f'],
           [$W_EDIT, 'EDIT', 'Updated image caption', 't', 't', 't', 'f'],
           [$W_REVOKE, 'REVOKE', undef, 't', 't', 't', 'f']],
          'conversation: meta_cloud_messages keep the first text and the '
          . 'reactions as history, all linked');
is(one(q{SELECT count(DISTINCT ("leadId", "conversationId", "ticketId"))
           FROM meta_cloud_messages}), 1,
   'conversation: all linked to the same lead, conversation, ticket');
is(one(q{SELECT count(*) FROM meta_cloud_webhook_events
          WHERE NOT "processed" OR "error" IS NOT NULL}), 0,
   'conversation: every event processed');

# ======================================================================
# 2. a reaction before its target

my ($W_LATE, $W_LATE_R) = ('wamid.BRIDGE-LATE-1', 'wamid.BRIDGE-LATE-R');
$b->post_ok(item_body('meta_reaction', $W_LATE_R, 1749417100, sub {
                $_[0]{reaction}{message_id} = $W_LATE }),
            'reaction before its target');
$b->post_ok(item_body('meta_text', $W_LATE, 1749417000, sub {
                $_[0]{text}{body} = 'late target' }), 'the target, late');
is_deeply(rows(q{SELECT m."body", m."reaction" FROM "Message" m
                   JOIN meta_cloud_messages c ON c."messageId" = m."id"
                  WHERE c."wamid" = :'v1'}, $W_LATE),
          [['late target', $THUMBS]],
          'late target: the earlier reaction applied on arrival');
is_deeply(rows(q{SELECT extract(epoch FROM "lastMessageAt")::bigint
                   FROM "Conversation"}), [[1749417100]],
          'late target: lastMessageAt not moved back by the older target');

# ======================================================================
# 3. identity changes

$b->empty_db;
$b->post_ok(item_body('meta_text', 'wamid.BRIDGE-ID-1', 1750269000),
            'identity: a first message');
$b->post_ok($b->body('meta_system_user_changed_number_no_contacts'),
            'identity: user_changed_number');
is_deeply(rows(q{SELECT "phone", "name" FROM "Lead"}),
          [['12195555358', 'Sheena Nelson']],
          'identity: the lead has the new number, keeps its name');
$b->post_ok(item_body('meta_text', 'wamid.BRIDGE-ID-2', 1750270000, sub {
                $_[0]{from} = '12195555358';
                $_[0]{from_user_id} = 'US.OLD1';
            }, contacts => MCBridge::contact('Sheena N.', '12195555358',
                                             user_id => 'US.OLD1')),
            'identity: a message from the new number');
$b->post_ok(item_body('meta_system_user_changed_number_no_contacts',
                      'wamid.BRIDGE-ID-3', 1750271000, sub {
                          my ($i) = @_;
                          $i->{from} = '12195555358';
                          $i->{from_user_id} = 'US.OLD1';
                          $i->{system} = { type => 'user_changed_user_id',
                                           body => 'user id changed',
                                           user_id => 'US.NEW1' };
                      }), 'identity: user_changed_user_id');
$b->post_ok(item_body('meta_bsuid_text_username_no_phone',
                      'wamid.BRIDGE-ID-4', 1750272000, sub {
                          $_[0]{from_user_id} = 'US.NEW1' },
                      contacts => [{ profile => { name => 'Sheena N.' },
                                     user_id => 'US.NEW1' }]),
            'identity: a message from the new user id only');
is_deeply(rows(q{SELECT "phone", "userId", "name" FROM "Lead"}),
          [['12195555358', 'US.NEW1', 'Sheena N.']],
          'identity: still one lead, with the new number and user id');
is(one('SELECT count(*) FROM "Conversation"'), 1,
   'identity: one conversation');
is(one(q{SELECT count(*) FROM "Message" WHERE "leadId" =
          (SELECT "id" FROM "Lead")}), 5,
   'identity: every message (system ones too) on that lead');

# ======================================================================
# 4. a BSUID-only contact

$b->empty_db;
$b->post_ok($b->body('meta_bsuid_text_username_no_phone'),
            'BSUID only: text without a phone');
is_deeply(rows(q{SELECT "phone", "userId", "name", "username" FROM "Lead"}),
          [[undef, 'US.13491208655302741918', 'Sheena Nelson',
            '@realsheenanelson']],
          'BSUID only: a lead with the user id, name and username');
is_deeply(rows(q{SELECT m."body", m."direction", t."status"
                   FROM "Message" m JOIN "Ticket" t ON t."id" = m."ticketId"}),
          [['Does it come in another color?', 'INBOUND', 'open']],
          'BSUID only: the message on an open ticket');

# ======================================================================
# 5. a history sync, chunks out of order

$b->empty_db;
$b->post_ok($b->body('meta_history_media_asset_follow_up'),
            'history: the media follow-up first');
$b->post_ok($b->body('meta_history_threads_phase0'),
            'history: then the threads');
is(one('SELECT count(*) FROM "Ticket"'), 0, 'history: no ticket opened');
is_deeply(rows(q{SELECT "phone" FROM "Lead" ORDER BY "phone"}),
          [['12125557890'], [$CUST]], 'history: a lead per thread');
is_deeply(rows(q{SELECT l."phone", c."phoneNumberId",
                        extract(epoch FROM c."lastMessageAt")::bigint
                   FROM "Conversation" c JOIN "Lead" l ON l."id" = c."leadId"
                  ORDER BY l."phone"}),
          [['12125557890', $PHONE, 1739230970], [$CUST, $PHONE, 1739230970]],
          'history: a conversation per thread, with the last message time');
is_deeply(rows(q{SELECT l."phone", m."direction", m."type", m."body",
                        m."status", extract(epoch FROM m."sentAt")::bigint,
                        m."ticketId"
                   FROM "Message" m JOIN "Lead" l ON l."id" = m."leadId"
                  ORDER BY l."phone", m."sentAt", m."body"}),
          [['12125557890', 'OUTBOUND', 'text',
            'Thanks for your order! As a thank you, use code THANKS30 to get '
            . '30% of your next order.', 'DELIVERED', 1739230970, undef],
           [$CUST, 'INBOUND', 'image', 'Black Prince echeveria', 'PLAYED',
            1738796547, undef],
           [$CUST, 'OUTBOUND', 'text',
            "Here's the info you requested! https://www.meta.com/quest/quest-3/",
            'READ', 1739230955, undef],
           [$CUST, 'INBOUND', 'text', 'Thanks!', 'READ', 1739230970, undef]],
          'history: the messages with their historical status, the '
          . 'placeholder joined with its media');
is(one(q{SELECT count(*) FROM meta_cloud_messages
          WHERE "messageId" IS NULL OR "leadId" IS NULL
             OR "conversationId" IS NULL}), 0,
   'history: every meta_cloud_messages row linked');

# ======================================================================
# 6. the business app's contacts

$b->empty_db;
$b->post_ok($b->body('meta_smb_app_state_sync_contact_add'),
            'state sync: contact add');
is_deeply(rows(q{SELECT "organizationId", "phone", "name", "whatsappRemovedAt"
                   FROM "Lead"}),
          [['org-test', $CUST, 'Pablo Morales', undef]],
          'state sync: the contact is a lead');
$b->post_ok($b->body('meta_smb_app_state_sync_contact_add', item => sub {
                my ($i) = @_;
                $i->{action} = 'remove';
                $i->{contact} = { phone_number => $CUST };
                $i->{metadata}{timestamp} = '1739322000';
            }), 'state sync: contact remove');
is_deeply(rows(q{SELECT "phone", "name",
                        extract(epoch FROM "whatsappRemovedAt")::bigint
                   FROM "Lead"}),
          [[$CUST, 'Pablo Morales', 1739322000]],
          'state sync: removed, nothing deleted');

# ======================================================================
# 7. eight first messages from one new contact at once

$b->empty_db;
my $NEW = '15559990000';
my @bodies = map {
    item_body('meta_text', "wamid.BRIDGE-RACE-$_", 1749500000 + $_, sub {
        $_[0]{from} = $NEW }, contacts => MCBridge::contact('New One', $NEW))
} 1 .. 8;
my @answers = $b->race('eight first messages', bodies => \@bodies);
is(scalar(grep { $_->[1] && $_->[1]{inserted} == 1 && $_->[1]{failed} == 0 }
          @answers), 8, 'eight first messages: each inserted, none failed');
is_deeply(rows(q{SELECT "phone", "name" FROM "Lead"}), [[$NEW, 'New One']],
          'eight first messages: one lead');
is(one('SELECT count(*) FROM "Conversation"'), 1,
   'eight first messages: one conversation');
is_deeply(rows(q{SELECT "status" FROM "Ticket"}), [['open']],
          'eight first messages: one open ticket');
is(one(q{SELECT count(*) FROM "Message" m, "Ticket" t, "Conversation" c
          WHERE m."ticketId" = t."id" AND m."conversationId" = c."id"}), 8,
   'eight first messages: eight messages on that ticket');

# ======================================================================
# 8. a replaced bridge function is used at once by the running sessions
# (each of the pool's eight ran the fast path in 7, whose check that the
# hooks are the defaults is read when its plan is made, and must be made
# again), and survives make migrate

$t->sql(q{CREATE OR REPLACE FUNCTION metacloud_bridge_ticket(p_org text,
              p_conversation text, p_open boolean)
          RETURNS text LANGUAGE sql AS $f$ SELECT NULL::text $f$});
$b->empty_db;
for my $i (1 .. 8) {
    $b->post_ok(item_body('meta_text', "wamid.BRIDGE-HOT-$i",
                          1749600000 + $i),
                "replaced, sessions running: message $i");
}
is(one('SELECT count(*) FROM "Ticket"'), 0,
   'replaced, sessions running: the platform\'s rule is used (no ticket)');
is(one('SELECT count(*) FROM "Message" WHERE "ticketId" IS NULL'), 8,
   'replaced, sessions running: the other defaults still run');
my %env = (PGDATABASE => $t->dbname);
my $root = $t->root;
my $out = `cd '$root' && PGDATABASE='$env{PGDATABASE}' make -s migrate 2>&1`;
is($?, 0, 'make migrate: ok') or diag($out);
like($out, qr/nothing to apply \(schema version \d+\)/,
     'make migrate: nothing to apply');
$t->sql('DELETE FROM metacloud_schema_migrations WHERE version = 4');
$out = `cd '$root' && PGDATABASE='$env{PGDATABASE}' make -s migrate 2>&1`;
like($out, qr/applied 004_metacloud_bridge\.sql/,
     'make migrate: 004 applied again') or diag($out);
like(one(q{SELECT prosrc FROM pg_proc
            WHERE oid = 'metacloud_bridge_ticket(text, text, boolean)'
                        ::regprocedure}), qr/SELECT NULL::text/,
     'the replaced metacloud_bridge_ticket survives');
$b->empty_db;
$b->post_ok(item_body('meta_text', 'wamid.BRIDGE-REPLACED', 1749600000),
            'replaced: a message');
is(one('SELECT count(*) FROM "Ticket"'), 0,
   'replaced: the platform\'s rule is used (no ticket)');
is(one('SELECT count(*) FROM "Message" WHERE "ticketId" IS NULL'), 1,
   'replaced: the other defaults still run (the message is bridged)');

$t->stop;
done_testing;
