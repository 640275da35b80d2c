#!/usr/bin/perl
# t/90-upgrade.t: a database the PRD's Node service ran on (Prisma Migrate's
# tables for PRD.md's models, t/fixtures/prisma_prd_database.sql, database
# TimeZone America/Sao_Paulo) is upgraded with `sql/migrate
# --skip-platform`, twice, and then serves the module through nginx:
#
#   - old rows keep their UTC meaning as timestamptz, old keys become
#     today's (a late retry of an old message is a duplicate);
#   - a new text, an image, a status for an old message: 200, stored, with
#     generated ids on tables that had no id default;
#   - an unknown number: unrouted, until the platform INSERTs its credential
#     itself (as Prisma does, no helper function): processed at once.
#
# Run: make test T=t/90-upgrade.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Time::HiRes qw(sleep);
use MCTest;

my $t = MCTest->new(name => 'upgrade', db => 0);
plan skip_all => 'module not built' unless $t->has_module;

my $JSON = JSON::PP->new->canonical;
my $PHONE = '106540352242922';
my $WABA = '102290129340398';
my $ORG = 'clorg0000000000000000prd1';
my $db = 'mct_upgrade_prd_' . $$;

$t->sql_in('postgres', qq{DROP DATABASE IF EXISTS "$db";
                          CREATE DATABASE "$db";
                          ALTER DATABASE "$db" SET TimeZone
                              TO 'America/Sao_Paulo'});
$t->{db} = $db;

{
    my $cmd = "psql -X -q -v ON_ERROR_STOP=1 -d $db -f "
              . $t->fixture_path('prisma_prd_database.sql') . ' 2>&1';
    my $out = `$cmd`;
    is($?, 0, 'the Prisma-made PRD database is built') or diag($out);
}

is($t->sql1('SHOW TimeZone'), 'America/Sao_Paulo', 'database TimeZone');

sub migrate {
    local $ENV{PGDATABASE} = $db;
    my $out = `$ENV{MC_ROOT}/sql/migrate --skip-platform 2>&1`;
    return ($? >> 8, $out);
}

my ($rc, $out) = migrate();
is($rc, 0, 'sql/migrate --skip-platform upgrades it') or diag($out);
($rc, $out) = migrate();
is($rc, 0, 'a second sql/migrate') or diag($out);
like($out, qr/^nothing to apply/m, 'the second run applies nothing');

# --- the old rows ------------------------------------------------------

is($t->sql1(q{SELECT extract(epoch FROM "sentAt")::bigint
                FROM meta_cloud_messages WHERE wamid = 'wamid.PRDOLD1'}),
   1700000000, 'old sentAt keeps its UTC meaning (TimeZone Sao Paulo)');
is($t->sql1(q{SELECT to_char("receivedAt" AT TIME ZONE 'UTC',
                             'YYYY-MM-DD HH24:MI:SS.MS')
                FROM meta_cloud_webhook_events
               WHERE id = 'clevt0000000000000000prd1'}),
   '2023-11-14 22:13:21.125', 'old receivedAt kept to the millisecond');
is($t->sql1(q{SELECT count(*) FROM information_schema.columns
               WHERE table_name LIKE 'meta\_cloud\_%'
                 AND data_type = 'timestamp without time zone'}),
   0, 'no timestamp without time zone left in the module tables');
is($t->sql1(q{SELECT "webhookId" FROM meta_cloud_webhook_events
               WHERE id = 'clevt0000000000000000prd1'}),
   'msg:wamid.PRDOLD1', 'old message key rewritten');
is($t->sql1(q{SELECT "webhookId" FROM meta_cloud_webhook_events
               WHERE id = 'clevt0000000000000000prd2'}),
   'status:wamid.PRDOLD2:sent:5511999990002', 'old status key rewritten');
is($t->sql1(q{SELECT count(*) FROM pg_indexes
               WHERE indexname IN ('meta_cloud_webhook_events_webhookId_key',
                                   'meta_cloud_messages_wamid_key',
                      'meta_cloud_messages_organizationId_wamid_key')}),
   0, 'the global uniques are gone');

# --- bodies --------------------------------------------------------------

sub body {
    my ($phone, $value) = @_;
    return $JSON->encode({
        object => 'whatsapp_business_account',
        entry => [{ id => $WABA, changes => [{ field => 'messages',
            value => { messaging_product => 'whatsapp',
                       metadata => { display_phone_number => '15550783881',
                                     phone_number_id => $phone },
                       %$value } }] }] });
}

sub text_body {
    my ($phone, $wamid, $from, $name, $text) = @_;
    return body($phone, {
        contacts => [{ profile => { name => $name }, wa_id => $from }],
        messages => [{ from => $from, id => $wamid, timestamp => '1749416383',
                       type => 'text', text => { body => $text } }] });
}

sub status_body {
    my ($phone, $wamid, $status, $to) = @_;
    return body($phone, {
        statuses => [{ id => $wamid, status => $status,
                       timestamp => '1749416400', recipient_id => $to }] });
}

$t->write_conf($MCTest::WEBHOOK_CONF);
$t->run;

# --- a late retry of an old message ---------------------------------------

my ($st, $doc, $raw) = $t->deliver(text_body($PHONE, 'wamid.PRDOLD1',
                                      '5511999990001', 'Maria Old',
                                      'Oi, ainda tem?'));
is($st, 200, 'late retry of an old message: 200') or diag($raw);
is($doc->{duplicate}, 1, 'late retry of an old message: a duplicate');
is($doc->{messagesProcessed}, 0, 'a duplicate is not processed again');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
               WHERE wamid = 'wamid.PRDOLD1'}), 1, 'still one old message');

# --- a new text ------------------------------------------------------------

($st, $doc, $raw) = $t->deliver($t->wire('meta_text'));
is($st, 200, 'new text: 200') or diag($raw);
is($doc->{inserted}, 1, 'new text: inserted');
is($doc->{failed}, 0, 'new text: not failed');
# the PRD's summary fields, for the platform's existing checks
is($doc->{received}, JSON::PP::true, 'new text: "received": true');
is($doc->{messagesProcessed}, 1, 'new text: "messagesProcessed": 1');
is($doc->{statusesProcessed}, 0, 'new text: "statusesProcessed": 0');
my $row = $t->sql(q{SELECT m.id, m."organizationId", m.text,
                           extract(epoch FROM m."sentAt")::bigint,
                           m."updatedAt" IS NOT NULL
                      FROM meta_cloud_messages m
                     WHERE m."from" = '16505551234'})->[0] || [];
like($row->[0] // '', qr/^[0-9a-f-]{36}$/, 'new text: a generated id');
is($row->[1], $ORG, 'new text: routed to the PRD organisation');
is($row->[2], 'Does it come in another color?', 'new text: its text');
is($row->[3], 1749416383, 'new text: sentAt from Meta\'s timestamp');
# the bridge (004) on the platform's Prisma tables: the columns it needs
# were added by the upgrade
is($t->sql1(q{SELECT name FROM "Lead" WHERE phone = '16505551234'}),
   'Sheena Nelson', 'new text: the bridge made its Lead');
is($t->sql1(q{SELECT body FROM "Message" WHERE id =
                  (SELECT "messageId" FROM meta_cloud_messages
                    WHERE "from" = '16505551234')}),
   'Does it come in another color?', 'new text: and its platform Message');

# --- an image ---------------------------------------------------------------

# (the fixture shares its wamid with meta_text: give it its own)
(my $img = $t->wire('meta_image_with_url'))
    =~ s/"wamid\.[^"]+"/"wamid.PRDIMG1"/;
($st, $doc, $raw) = $t->deliver($img);
is($st, 200, 'image: 200') or diag($raw);
is($doc->{inserted}, 1, 'image: inserted');
is($doc->{failed}, 0, 'image: not failed');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_media md
                JOIN meta_cloud_messages m ON m."mediaId" = md.id
               WHERE md."mediaId" = '1003383421387256'
                 AND md.status = 'PENDING' AND md.id ~ '^[0-9a-f-]{36}$'}),
   1, 'image: a media row with a generated id, linked to its message');

# --- a status for an old message -------------------------------------------

($st, $doc, $raw) = $t->deliver(status_body($PHONE, 'wamid.PRDOLD2',
                                            'delivered', '5511999990002'));
is($st, 200, 'status of an old message: 200') or diag($raw);
is($doc->{pending}, 0, 'status of an old message: found its message');
is($doc->{statusesProcessed}, 1, 'status: "statusesProcessed": 1');
is($doc->{messagesProcessed}, 0, 'status: "messagesProcessed": 0');
is($t->sql1(q{SELECT "currentStatus" FROM meta_cloud_messages
               WHERE id = 'clmsg0000000000000000prd2'}),
   'DELIVERED', 'the old message is DELIVERED now');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_message_statuses
               WHERE "messageId" = 'clmsg0000000000000000prd2'}),
   2, 'the old status and the new one');

# a retry of the old "sent" status (already stored by the Node service)
($st, $doc) = $t->deliver(status_body($PHONE, 'wamid.PRDOLD2', 'sent',
                                      '5511999990002'));
is($doc->{duplicate}, 1, 'retry of an old status: a duplicate');

# --- an unknown number, then the platform registers it itself -------------

my $NEW = '109999999999999';
($st, $doc, $raw) = $t->deliver(text_body($NEW, 'wamid.PRDNEW1',
                                          '5511999990003', 'Ana New',
                                          'Bom dia'));
is($st, 200, 'unknown number: 200') or diag($raw);
is($doc->{unrouted}, 1, 'unknown number: kept unrouted');

$t->sql(q{INSERT INTO "MetaWhatsAppCredential"
                 ("id", "organizationId", "phoneNumberId", "wabaId",
                  "accessToken", "updatedAt")
          VALUES ('clcred000000000000000prd2', 'clorg0000000000000000prd1',
                  '109999999999999', '102290129340399', 'EAAG-new',
                  CURRENT_TIMESTAMP)});
is($t->sql1(q{SELECT processed::text || ' ' || unrouted::text
                FROM meta_cloud_webhook_events
               WHERE scope = '109999999999999'}),
   'true false', 'the platform\'s own INSERT replayed the event');
is($t->sql1(q{SELECT "organizationId" FROM meta_cloud_messages
               WHERE wamid = 'wamid.PRDNEW1'}),
   $ORG, 'and its message is stored');

($st, $doc) = $t->deliver(text_body($NEW, 'wamid.PRDNEW2', '5511999990003',
                                    'Ana New', 'Tudo bem?'));
is($doc->{unrouted}, 0, 'the next message of that number is routed');

# metacloud_add_phone_number() on a Prisma "Organization" (name NOT NULL)
my $err = eval {
    $t->sql(q{SELECT metacloud_add_phone_number('org-missing', '1', 'w',
                                                't')});
    '';
} // $@;
like($err, qr/standalone schema/,
     'metacloud_add_phone_number() says it creates organisations only in '
     . 'the standalone schema');
is($t->sql1(q{SELECT metacloud_add_phone_number(
                  'clorg0000000000000000prd1', '108888888888888',
                  '102290129340398', 'tok') ->> 'organizationId'}),
   $ORG, 'and registers a number of an existing organisation');

$t->stop;

END {
    $t->sql_in('postgres', qq{DROP DATABASE IF EXISTS "$db"})
        if $t && Test::More->builder->is_passing && !$ENV{MC_KEEP};
}

done_testing;
