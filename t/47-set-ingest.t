#!/usr/bin/perl
# t/47-set-ingest.t: the set-based ingest writes what the per-event loop
# writes.  metacloud_ingest() tries metacloud_ingest_set() (a few statements
# per table) and falls back to metacloud_ingest_each() (007's loop, one
# sub-transaction per event) only when it fails; a fallback would hide a
# wrong set-based path from every other suite.  So here both are called
# directly, the set-based one without any fallback, on two databases made
# from the same template, with the same deliveries:
#   - every fixture body (normalised by the core, as the module sends it),
#     in order, then all of them again (duplicates);
#   - status ladders in every order within one delivery (60 statuses for
#     20 messages), statuses before their message, a key twice in one body,
#     an event without a key, an unrouted number, a custom status hook;
# and each call's counts, then every row of every table the ingest writes
# (without generated ids and times; links by their natural keys), must be
# the same.  The fallback itself: a delivery with a failing event goes
# through metacloud_ingest() and keeps its siblings (t/sql/03_failures.sql
# and t/65-odd-values.t cover the rest).
#
# Run: make test T=t/47-set-ingest.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;
use JSON::PP;

my $t = MCTest->new(name => 'set-ingest');
my $set = $t->dbname;
my $each = "${set}_each";

$t->sql_in('postgres', qq{DROP DATABASE IF EXISTS "$each";
                          CREATE DATABASE "$each" TEMPLATE "$t->{template}"});

my $norm = $t->root . '/build/core/metacloud-normalize';
-x $norm or BAIL_OUT("no $norm: make build");

my $setup = q{
    INSERT INTO "Organization" ("id", "name", "updatedAt")
    VALUES ('org-a', 'A', now()), ('org-b', 'B', now());
    SELECT metacloud_add_phone_number('org-a', '106540352242922',
                                      '102290129340398', 'tok');
    SELECT metacloud_add_phone_number('org-b', '1122334455667',
                                      '1234567890987654321', 'tok');
    -- a campaign recipient for a wamid the statuses below reach
    INSERT INTO "CampaignRecipient" ("id", "organizationId", "wamid",
                                     "status", "updatedAt")
    VALUES ('cr-1', 'org-a', 'wamid.SET3', 'SENT', now());
};
$t->sql_in($_, $setup) for $set, $each;

# one delivery: (raw body, events), the events as the core prints them
my @deliveries;
for my $f ($t->fixtures) {
    my $body = $t->fixture($f);
    my $events = `$norm --compact < '$f' 2>/dev/null`;
    next unless ($? >> 8) == 0 && $events =~ /^\[/;
    chomp $events;
    push @deliveries, [$f, $body, $events];
}
cmp_ok(scalar @deliveries, '>', 60, 'fixture deliveries normalised');
push @deliveries, @deliveries;    # every one again: duplicates

sub ev {
    my (%o) = @_;
    my $phone = $o{phone} // '106540352242922';
    my $e = { v => 1, field => 'messages', scope => $phone,
              phoneNumberId => $phone, wabaId => 'W', payload => {}, %o };
    delete $e->{phone};
    return $e;
}

sub message {
    my ($wamid, $dir, $at) = @_;
    return ev(eventType => 'message', webhookId => "msg:$wamid",
              message => { wamid => $wamid, direction => $dir,
                           source => 'webhook', type => 'TEXT',
                           rawType => 'text', text => "text of $wamid",
                           timestamp => $at,
                           ($dir eq 'INBOUND'
                               ? (from => '5511900000001',
                                  contactName => 'Ana')
                               : (to => '5511900000001')) });
}

sub status {
    my ($wamid, $st, $at, $n) = @_;
    return ev(eventType => 'status',
              webhookId => "status:$wamid:" . lc($st) . ":$n",
              status => { wamid => $wamid, status => $st,
                          statusRaw => lc $st, timestamp => $at,
                          recipientId => '5511900000001',
                          pricingCategory => 'utility', billable => \1 });
}

my $JSON = JSON::PP->new->canonical;
sub synthetic {
    my ($name, @events) = @_;
    my $events = $JSON->encode(\@events);
    push @deliveries, ["synthetic: $name", $events, $events];
}

# 20 outbound messages, then 60 statuses in every ladder order in one body
synthetic('20 outbound messages',
          map { message("wamid.SET$_", 'OUTBOUND', 1700000000 + $_) } 1 .. 20);
my @ladder = (['SENT', 'DELIVERED', 'READ'], ['READ', 'DELIVERED', 'SENT'],
              ['DELIVERED', 'FAILED', 'SENT'], ['FAILED', 'SENT', 'SENT'],
              ['READ', 'READ', 'DELIVERED']);
synthetic('60 statuses, ladders in every order',
          map { my $m = $_;
                map { status("wamid.SET$m", $ladder[$m % 5][$_],
                             1700000100 + $_, $_) } 0 .. 2 } 1 .. 20);
# statuses first, then their message, then one more
synthetic('statuses before their message',
          status('wamid.LATE1', 'DELIVERED', 1700000200, 0),
          status('wamid.LATE1', 'SENT', 1700000199, 1),
          status('wamid.LATE2', 'READ', 1700000200, 0));
synthetic('the late message', message('wamid.LATE1', 'OUTBOUND', 1700000150));
synthetic('a status and its message in one body',
          status('wamid.SAME', 'READ', 1700000300, 0),
          message('wamid.SAME', 'OUTBOUND', 1700000290));
synthetic('a key twice in one body',
          message('wamid.TWICE', 'INBOUND', 1700000400),
          message('wamid.TWICE', 'INBOUND', 1700000401));
synthetic('an event without a key and an unrouted number',
          { v => 1, eventType => 'message', payload => { x => 1 } },
          message('wamid.UNR', 'INBOUND', 1700000500),
          { %{ message('wamid.UNR', 'INBOUND', 1700000500) },
            scope => '999', phoneNumberId => '999' });
synthetic('inbound messages from one contact, then statuses',
          (map { message("wamid.IN$_", 'INBOUND', 1700000600 + $_) } 1 .. 5),
          (map { status("wamid.IN$_", 'READ', 1700000700, 0) } 1 .. 5));

# the counts of each call, without the media rows' generated ids
sub counts {
    my ($j) = @_;
    my $c = $JSON->decode($j);
    $c->{media} = [sort map { $_->{mediaId} } @{ $c->{media} }];
    return $JSON->encode($c);
}

my $k = 0;
my $same = 0;
for my $d (@deliveries) {
    my ($name, $body, $events) = @$d;
    my @r;
    for my $pair ([$set, 'metacloud_ingest_set'],
                  [$each, 'metacloud_ingest_each']) {
        my ($db, $fn) = @$pair;
        my $rows = $t->sql_in($db, qq{
            SELECT $fn('raw-$k', sha256(convert_to(:'v1', 'UTF8')),
                       :'v2'::jsonb)}, $body, $events);
        push @r, counts($rows->[0][0]);
    }
    if ($r[0] eq $r[1]) {
        $same++;
    } else {
        is($r[0], $r[1], "counts of $name");
    }
    $k++;
}
is($same, scalar @deliveries, 'the same counts for every delivery');

# a custom status hook (the per-status path of the set-based ingest)
my $hook = q{
    CREATE TABLE hook_log (status_id text, wamid text, status text);
    CREATE OR REPLACE FUNCTION metacloud_on_status(p_status_id text)
    RETURNS void LANGUAGE sql AS $f$
        INSERT INTO hook_log
        SELECT s."id", s."wamid", s."status"::text
          FROM meta_cloud_message_statuses s WHERE s."id" = p_status_id
    $f$;
};
$t->sql_in($_, $hook) for $set, $each;
for my $pair ([$set, 'metacloud_ingest_set'],
              [$each, 'metacloud_ingest_each']) {
    my ($db, $fn) = @$pair;
    my $events = $JSON->encode([map { status("wamid.SET$_", 'PLAYED',
                                             1700000900, 9) } 1 .. 4]);
    $t->sql_in($db, qq{SELECT $fn('raw-hook', sha256('x'), :'v1'::jsonb)},
               $events);
}
is($t->sql_in($set, q{SELECT count(*) FROM hook_log})->[0][0], 4,
   'a replaced metacloud_on_status() is called for each status');

# every row, without generated ids and times, links by natural keys
my %dump = (
    events => q{
        SELECT to_jsonb(w) - ARRAY['id', 'createdAt', 'updatedAt',
                                   'receivedAt', 'processedAt',
                                   'rawRequestId']
               || jsonb_build_object('processedAt',
                                     w."processedAt" IS NOT NULL)
          FROM meta_cloud_webhook_events w},
    messages => q{
        SELECT to_jsonb(m) - ARRAY['id', 'createdAt', 'updatedAt',
                                   'webhookEventId', 'mediaId', 'leadId',
                                   'conversationId', 'ticketId',
                                   'messageId', 'lastStatusUpdate']
               || jsonb_build_object(
                      'event', (SELECT w."webhookId"
                                  FROM meta_cloud_webhook_events w
                                 WHERE w."id" = m."webhookEventId"),
                      'media', (SELECT d."mediaId" FROM meta_cloud_media d
                                 WHERE d."id" = m."mediaId"),
                      'lead', (SELECT l."phone" FROM "Lead" l
                                WHERE l."id" = m."leadId"),
                      'conversation', m."conversationId" IS NOT NULL,
                      'ticket', m."ticketId" IS NOT NULL,
                      'message', (SELECT x."status" || ' ' || x."body"
                                   FROM "Message" x
                                  WHERE x."id" = m."messageId"),
                      'lastStatusUpdate', m."lastStatusUpdate"
                                          IS NOT NULL)
          FROM meta_cloud_messages m},
    statuses => q{
        SELECT to_jsonb(s) - ARRAY['id', 'createdAt', 'updatedAt',
                                   'messageId', 'webhookEventId', 'statusAt']
               || jsonb_build_object(
                      'message', (SELECT m."wamid" FROM meta_cloud_messages m
                                   WHERE m."id" = s."messageId"),
                      'event', (SELECT w."webhookId"
                                  FROM meta_cloud_webhook_events w
                                 WHERE w."id" = s."webhookEventId"))
          FROM meta_cloud_message_statuses s},
    media => q{
        SELECT to_jsonb(d) - ARRAY['id', 'createdAt', 'updatedAt']
          FROM meta_cloud_media d},
    leads => q{
        SELECT to_jsonb(l) - ARRAY['id', 'createdAt', 'updatedAt']
          FROM "Lead" l},
    conversations => q{
        SELECT to_jsonb(c) - ARRAY['id', 'createdAt', 'updatedAt', 'leadId']
               || jsonb_build_object('lead', l."phone")
          FROM "Conversation" c JOIN "Lead" l ON l."id" = c."leadId"},
    tickets => q{
        SELECT jsonb_build_object('status', t."status",
                                  'conversation', count(*))
          FROM "Ticket" t GROUP BY t."status"},
    bridge_messages => q{
        SELECT to_jsonb(x) - ARRAY['id', 'createdAt', 'updatedAt', 'leadId',
                                   'conversationId', 'ticketId']
          FROM "Message" x},
    campaign => q{
        SELECT to_jsonb(r) - ARRAY['createdAt', 'updatedAt']
          FROM "CampaignRecipient" r},
    hook => q{SELECT to_jsonb(h) - 'status_id' FROM hook_log h},
);

for my $table (sort keys %dump) {
    my @rows = map {
        [map { $_->[0] } @{ $t->sql_in($_, "SELECT x::text FROM ($dump{$table})
                                              AS q(x) ORDER BY 1") }]
    } $set, $each;
    cmp_ok(scalar @{ $rows[0] }, '>', 0, "$table: rows written")
        unless $table eq 'campaign';
    is_deeply($rows[0], $rows[1], "$table: the same rows on both paths");
}

is($t->sql_in($set, q{
    SELECT "currentStatus" || ' ' || (SELECT count(*)
                                        FROM meta_cloud_message_statuses s
                                       WHERE s."messageId" = m."id")
      FROM meta_cloud_messages m WHERE "wamid" = 'wamid.LATE1'})->[0][0],
   'DELIVERED 2', 'statuses before their message applied when it came');
is($t->sql_in($set, q{SELECT "status" FROM "CampaignRecipient"})->[0][0],
   'FAILED', 'the campaign recipient followed its message (SENT, FAILED; '
   . 'not the PLAYED of the replaced hook)');

# the fallback: a failing event fails alone, through metacloud_ingest()
my $bad = $JSON->encode([message('wamid.OK1', 'INBOUND', 1700001000),
                         { %{ status('wamid.SET1', 'READ', 1, 7) },
                           status => 'not an object' },
                         message('wamid.OK2', 'INBOUND', 1700001001)]);
my $r = $JSON->decode($t->sql_in($set, q{
    SELECT metacloud_ingest(convert_to(:'v1', 'UTF8'), :'v1'::jsonb)},
    $bad)->[0][0]);
is("$r->{inserted} $r->{failed} $r->{messagesProcessed}", '3 1 2',
   'a failing event fails alone; its siblings are stored');
is($t->sql_in($set, q{
    SELECT string_agg("wamid", ' ' ORDER BY "wamid") FROM meta_cloud_messages
     WHERE "wamid" IN ('wamid.OK1', 'wamid.OK2')})->[0][0],
   'wamid.OK1 wamid.OK2', 'the siblings of the failing event');

$t->sql_in('postgres', qq{DROP DATABASE IF EXISTS "$each"});
done_testing();
