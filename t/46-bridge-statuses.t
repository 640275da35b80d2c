#!/usr/bin/perl
# t/46-bridge-statuses.t: statuses reach the platform's "Message" and
# "CampaignRecipient" with the never-downgrade rule of meta_cloud_messages
# "currentStatus" (sql/004, docs/SQL.md "Bridge"), through nginx with the
# status fixtures (ids changed):
#
#   1. metacloud_register_outbound() as the platform's sender (a role
#      granted metacloud_platform; metacloud_module may not call it): the
#      OUTBOUND row, its bridge "Message", the campaign recipient linked;
#      a second call changes nothing;
#   2. read before delivered, failed after sent, duplicates, group
#      receipts: the three tables end right;
#   3. a status before metacloud_register_outbound(): pending, then
#      applied by it, to all three tables;
#   4. a status and its message (an echo) committing at the same moment
#      (held lock: both have done their work before either commits): the
#      status is applied, nothing stays pending;
#   5. a replaced status hook is used at once by the sessions already
#      running;
#   6. in one delivery, a status whose message commits at that moment
#      (found on a second look, once its lock is free) beside one found
#      at once: both recorded, the hook called in key order.
#
# Run: make test T=t/46-bridge-statuses.t   (PROVE_FLAGS=-v)
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;
use MCBridge;

my $t = MCTest->new(name => 'bridge_status');
plan skip_all => 'module not built' unless $t->has_module;

my $b = MCBridge->new($t);
$b->start(4);
my $PHONE = $MCBridge::PHONE;
my $CUST = '16505551234';
my $SENDER = 'mct_sender_' . $$;

$t->sql(qq{CREATE ROLE $SENDER; GRANT metacloud_platform TO $SENDER;
           INSERT INTO "CampaignRecipient" ("id", "organizationId")
           VALUES ('cr-1', 'org-test'), ('cr-2', 'org-test'),
                  ('cr-4', 'org-test')});
END { $t->sql("DROP ROLE IF EXISTS $SENDER") if $t && $t->dbname }

sub rows { return $t->sql(@_) }
sub one { return $t->sql1(@_) }

sub register {
    my ($wamid, $cr) = @_;
    return one(qq{SET ROLE $SENDER;
        SELECT metacloud_register_outbound('org-test', :'v1', :'v2', :'v3',
               'text', 'Your order shipped', NULLIF(:'v4', ''))},
        $PHONE, $wamid, $CUST, $cr // '');
}

# a status fixture's item for $wamid
sub status_body {
    my ($fixture, $wamid, $ts, %o) = @_;
    return $b->body($fixture, item => sub {
        my ($i) = @_;
        $i->{id} = $wamid;
        $i->{timestamp} = "$ts";
        $i->{$_} = $o{$_} for keys %o;
    });
}

# [mcm currentStatus, "Message".status, "CampaignRecipient".status]
sub statuses {
    my ($wamid) = @_;
    my $r = rows(q{SELECT c."currentStatus", m."status",
                          (SELECT r."status" FROM "CampaignRecipient" r
                            WHERE r."wamid" = c."wamid")
                     FROM meta_cloud_messages c
                     LEFT JOIN "Message" m ON m."id" = c."messageId"
                    WHERE c."wamid" = :'v1'}, $wamid);
    return $r->[0] || [];
}

# ======================================================================
# 1. metacloud_register_outbound

my ($W1, $W2, $W3, $W4, $W5) = map { "wamid.BRIDGE-ST-$_" } 1 .. 5;

my $id1 = register($W1, 'cr-1');
ok($id1, 'register: returns the meta_cloud_messages id');
is_deeply(rows(q{SELECT "id", "direction", "to", "type", "rawType", "text",
                        "source", "currentStatus", "messageId" IS NOT NULL
                   FROM meta_cloud_messages WHERE "wamid" = :'v1'}, $W1),
          [[$id1, 'OUTBOUND', $CUST, 'TEXT', 'text', 'Your order shipped',
            'api', 'PENDING', 't']],
          'register: the OUTBOUND row, linked to a bridge message');
is_deeply(rows(q{SELECT m."direction", m."body", m."type", m."status",
                        l."phone", m."ticketId"
                   FROM "Message" m JOIN "Lead" l ON l."id" = m."leadId"}),
          [['OUTBOUND', 'Your order shipped', 'text', 'PENDING', $CUST,
            undef]],
          'register: the bridge message on the recipient\'s lead, no ticket');
is(one(q{SELECT "wamid" FROM "CampaignRecipient" WHERE "id" = 'cr-1'}), $W1,
   'register: the campaign recipient has the wamid');
is(register($W1, 'cr-1'), $id1, 'register twice: the same id');
is_deeply(rows(q{SELECT (SELECT count(*) FROM meta_cloud_messages),
                        (SELECT count(*) FROM "Message"),
                        (SELECT count(*) FROM "Lead"),
                        (SELECT count(*) FROM "Conversation")}),
          [[1, 1, 1, 1]], 'register twice: nothing added');
ok(!eval {
       $t->sql(q{SET ROLE metacloud_module;
                 SELECT metacloud_register_outbound('org-test', :'v1', 'w',
                        'x', 'text', 'y')}, $PHONE);
       1 }, 'register: refused to metacloud_module');
like($@, qr/permission denied/, 'register: permission denied');

# ======================================================================
# 2. statuses in every order

# read before delivered
$b->post_ok(status_body('pywa_status_read_cbp', $W1, 1749400030,
                        recipient_id => $CUST), 'W1 read');
is_deeply(statuses($W1), ['READ', 'READ', 'READ'],
          'read: READ in the three tables');
$b->post_ok(status_body('meta_status_delivered_cbp_legacy', $W1, 1749400020,
                        recipient_id => $CUST), 'W1 delivered after read');
is_deeply(statuses($W1), ['READ', 'READ', 'READ'],
          'delivered after read: still READ everywhere');
# duplicates
my ($st, $doc) = $b->post(status_body('pywa_status_read_cbp', $W1,
                                      1749400030, recipient_id => $CUST));
is($doc && $doc->{duplicate}, 1, 'read again: a duplicate');
is(one(q{SELECT count(*) FROM meta_cloud_message_statuses
          WHERE "wamid" = :'v1'}, $W1), 2, 'W1: two status rows');

# failed after sent
register($W2, 'cr-2');
$b->post_ok(status_body('meta_status_sent_marketing_pmp', $W2, 1749400010,
                        recipient_id => $CUST), 'W2 sent');
is_deeply(statuses($W2), ['SENT', 'SENT', 'SENT'], 'sent: SENT everywhere');
$b->post_ok(status_body('meta_status_failed_131049', $W2, 1749400040,
                        recipient_id => $CUST), 'W2 failed after sent');
is_deeply(statuses($W2), ['FAILED', 'FAILED', 'FAILED'],
          'failed after sent: FAILED everywhere');
$b->post_ok(status_body('meta_status_sent_marketing_pmp', $W2, 1749400011,
                        recipient_id => $CUST), 'W2 sent, late');
is_deeply(statuses($W2), ['FAILED', 'FAILED', 'FAILED'],
          'sent after failed: no downgrade');

# group receipts: one per participant
register($W3);
for my $p (['15550000001', 'US.P1', 'read'], ['15550000002', 'US.P2', 'read'],
           ['15550000003', 'US.P3', 'delivered'])
{
    my ($pid, $puid, $s) = @$p;
    $b->post_ok(status_body('pywa_status_read_group_participant', $W3,
                            1749400100, status => $s,
                            recipient_id => 'group-1',
                            recipient_participant_id => $pid,
                            recipient_participant_user_id => $puid,
                            recipient_participant_parent_user_id => undef),
                "W3 group receipt $s from $puid");
}
is(one(q{SELECT count(*) FROM meta_cloud_message_statuses
          WHERE "wamid" = :'v1'}, $W3), 3,
   'group: a status row per participant receipt');
is_deeply(statuses($W3), ['READ', 'READ', undef],
          'group: READ (no recipient: not a campaign message)');

# ======================================================================
# 3. a status before metacloud_register_outbound

($st, $doc) = $b->post(status_body('meta_status_delivered_cbp_legacy', $W4,
                                   1749400200, recipient_id => $CUST));
is($doc && $doc->{pending}, 1, 'status first: pending');
my $id4 = register($W4, 'cr-4');
is_deeply(statuses($W4), ['DELIVERED', 'DELIVERED', 'DELIVERED'],
          'status first: applied by register to the three tables');
is_deeply(rows(q{SELECT "processed", "error" FROM meta_cloud_webhook_events
                  WHERE "webhookId" LIKE 'status:' || :'v1' || ':%'}, $W4),
          [['t', undef]], 'status first: the event processed');
is(register($W4, 'cr-4'), $id4, 'status first: register again, same id');
is(one(q{SELECT count(*) FROM meta_cloud_message_statuses
          WHERE "wamid" = :'v1'}, $W4), 1, 'status first: one status row');

# ======================================================================
# 4. a status and its message committing at the same moment

my @answers = $b->race('status and message at once', bodies => [
    $b->body('meta_echo_text', contacts => undef, item => sub {
        $_[0]{id} = $W5 }),
    status_body('pywa_status_read_cbp', $W5, 1749400300,
                recipient_id => $CUST),
]);
is(scalar(grep { $_->[1] && $_->[1]{inserted} == 1 } @answers), 2,
   'race: both events new');
is_deeply(statuses($W5), ['READ', 'READ', undef],
          'race: the status reached the message and its bridge row');
is(one(q{SELECT count(*) FROM meta_cloud_webhook_events
          WHERE NOT "processed" OR "error" IS NOT NULL}), 0,
   'race: every event processed, none waiting for its message');

# ======================================================================
# 5. a replaced status hook is used at once by the running sessions: each
# of the pool's four applies a status first (the check that the hooks are
# the defaults is read when its plan is made, and must be made again)

my @hot = map { "wamid.BRIDGE-HOT-$_" } 1 .. 4;
register($_) for @hot;
@answers = $b->race('a status in every session', bodies => [
    map { status_body('meta_status_delivered_cbp_legacy', $hot[$_],
                      1749400400 + $_, recipient_id => $CUST) } 0 .. 3 ]);
is(scalar(grep { $_->[1] && $_->[1]{statusesProcessed} == 1 } @answers), 4,
   'warm: four statuses applied');
$t->sql(q{CREATE TABLE hot_log (status_id text);
          CREATE OR REPLACE FUNCTION metacloud_on_status(p_status_id text)
          RETURNS void LANGUAGE sql
          AS $f$ INSERT INTO hot_log VALUES (p_status_id) $f$});
$b->post_ok(status_body('pywa_status_read_cbp', $hot[$_], 1749400500 + $_,
                        recipient_id => $CUST), "replaced: $hot[$_] read")
    for 0 .. 3;
is(one('SELECT count(*) FROM hot_log'), 4,
   'replaced, sessions running: the platform\'s metacloud_on_status is '
   . 'called for each status');
is_deeply(statuses($hot[0]), ['READ', 'DELIVERED', undef],
          'replaced, sessions running: the default rule no longer runs');

# ======================================================================
# 6. one status found at once, one whose message commits at the same
# moment (the echo holds its (number, wamid) lock first: the status looks
# again once it has it): both recorded, and the platform's hook called in
# key order, the second look's first

my ($WA, $WB) = ('wamid.BRIDGE-ORDER-A', 'wamid.BRIDGE-ORDER-B');
register($WB);
$t->sql(q{DELETE FROM hot_log; ALTER TABLE hot_log ADD COLUMN n serial});
@answers = $b->race('two statuses, one message at once', in_order => 1,
                    bodies => [
    $b->body('meta_echo_text', contacts => undef, item => sub {
        $_[0]{id} = $WA }),
    $b->body('pywa_status_read_cbp', item => sub {
        my ($i, $v) = @_;
        @$i{qw(id timestamp recipient_id)} = ($WA, '1749400600', $CUST);
        push @{ $v->{statuses} }, { %$i, id => $WB };
    }),
]);
is_deeply([map { $_->[1] && $_->[1]{statusesProcessed} } @answers], [0, 2],
          'second look: both statuses recorded by their delivery');
is_deeply([map { statuses($_)->[0] } $WA, $WB], ['READ', 'READ'],
          'second look: both messages READ');
is(one(q{SELECT string_agg(s."wamid", ' ' ORDER BY h.n)
           FROM hot_log h
           JOIN meta_cloud_message_statuses s ON s."id" = h.status_id}),
   "$WA $WB", 'second look: the hook called in key order');
is(one(q{SELECT count(*) FROM meta_cloud_webhook_events
          WHERE NOT "processed" OR "error" IS NOT NULL}), 0,
   'second look: nothing waits for its message');

$t->stop;
done_testing;
