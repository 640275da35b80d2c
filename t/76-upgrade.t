#!/usr/bin/perl
# t/76-upgrade.t: function fixes reach a database migrated before them.
# sql/migrate applies a file again when its text changed since it was
# recorded (docs/SQL.md, "Upgrades").  The database here is what a
# deployment at schema version 3 has: 001, 002 and 003 as they were then
# (t/fixtures/sql-v3/, `git show 529180b:sql/...`), applied by the migrate
# of that time (no checksum column).  Then today's sql/migrate:
#   - 003's functions are today's (the status / message race lock), 004 is
#     applied, version 4, a second run applies nothing;
#   - a text message through metacloud_ingest() gets its bridge rows, and a
#     status that came first meets its message;
#   - a changed file is applied again; a platform's hook survives that.
#
# Run: make test T=t/76-upgrade.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;

my $t = MCTest->new(name => 'upgrade', db => 0);
my $db = 'mct_upgrade_' . $$;
my $v3 = "$FindBin::Bin/fixtures/sql-v3";

sub q1 {
    my ($query) = @_;
    my $rows = $t->sql_in($db, $query);
    return @$rows ? $rows->[0][0] : undef;
}

sub migrate {
    local $ENV{PGDATABASE} = $db;
    my $out = `$ENV{MC_ROOT}/sql/migrate 2>&1`;
    return ($? >> 8, $out);
}

$t->sql_in('postgres', qq{DROP DATABASE IF EXISTS "$db";
                          CREATE DATABASE "$db"});
for my $f (sort glob "$v3/*.sql") {
    system('psql', '-X', '-q', '-o', '/dev/null', '-v', 'ON_ERROR_STOP=1',
           '-c', 'SET client_min_messages = warning', '--single-transaction',
           '-d', $db, '-f', $f) == 0
        or BAIL_OUT("cannot apply $f");
}
is(q1('SELECT max(version) FROM metacloud_schema_migrations'), 3,
   'the old files make a version 3 database');
is(q1(q{SELECT prosrc LIKE '%pg_advisory_xact_lock%' FROM pg_proc
         WHERE oid = 'metacloud_apply_status(text, text, jsonb)'::regprocedure}),
   'f', 'its metacloud_apply_status() has no race lock');

my ($rc, $out) = migrate();
is($rc, 0, 'sql/migrate') or diag($out);
like($out, qr/applied 003_metacloud_ingest\.sql/, '003 applied again');
my ($latest) = sort { $b <=> $a }
               map { m{/0*(\d+)_[^/]*\.sql$} ? $1 : () }
               glob("$ENV{MC_ROOT}/sql/[0-9][0-9][0-9]_*.sql");
like($out, qr/applied 004_metacloud_bridge\.sql.*schema version $latest/s,
     "004 and the later files applied: version $latest");
($rc, $out) = migrate();
like($out, qr/^nothing to apply \(schema version $latest\)$/m,
     'a second run applies nothing');

for my $f ('metacloud_apply_statuses(text[], text[], jsonb[])',
           'metacloud_apply_pending(text, text, text)') {
    is(q1(qq{SELECT prosrc LIKE '%pg_advisory_xact_lock%' FROM pg_proc
              WHERE oid = '$f'::regprocedure}),
       't', "$f: today's version, with the race lock");
}

# the bridge through the upgraded ingest: a status first, then its message
$t->sql_in($db, q{
    SELECT metacloud_add_phone_number('org-up', 'PUP', 'WABA-UP', 't');
    SELECT metacloud_ingest('x', '[{"v":1,"field":"messages",
        "eventType":"status","scope":"PUP","webhookId":"status:wamid.UP:read",
        "phoneNumberId":"PUP","payload":{},
        "status":{"wamid":"wamid.UP","status":"READ","statusRaw":"read",
                  "timestamp":1749416390,"recipientId":"16505550001"}}]',
        '{}');
    SELECT metacloud_ingest('x', '[{"v":1,"field":"messages",
        "eventType":"message","scope":"PUP","webhookId":"msg:wamid.UP",
        "phoneNumberId":"PUP","payload":{},
        "message":{"wamid":"wamid.UP","direction":"INBOUND",
                   "source":"webhook","from":"16505550001","type":"TEXT",
                   "rawType":"text","timestamp":1749416383,"text":"hi",
                   "contactName":"Upton"}}]', '{}');
});
is(q1(q{SELECT l."name" || ' ' || m."body" || ' ' || m."status" || ' '
               || t."status" || ' ' || c."currentStatus"
          FROM meta_cloud_messages c
          JOIN "Lead" l ON l."id" = c."leadId"
          JOIN "Conversation" v ON v."id" = c."conversationId"
          JOIN "Ticket" t ON t."id" = c."ticketId"
          JOIN "Message" m ON m."id" = c."messageId"
         WHERE c."wamid" = 'wamid.UP'}),
   'Upton hi READ open READ',
   'upgraded: lead, conversation, ticket, Message linked; the early '
   . 'status applied');

# a platform's hook, then a file that changed: applied again, hook kept
$t->sql_in($db, q{
    CREATE OR REPLACE FUNCTION metacloud_bridge_ticket(p_org text,
        p_conversation text, p_open boolean)
    RETURNS text LANGUAGE sql AS $f$ SELECT NULL::text $f$;
    UPDATE metacloud_schema_migrations SET checksum = 'changed'
     WHERE version = 4;
});
($rc, $out) = migrate();
like($out, qr/applied 004_metacloud_bridge\.sql/,
     'a changed file is applied again');
like($out, qr/applied 010_metacloud_set_ingest\.sql/,
     'and every file after it, so that the last definition wins');
is(q1(q{SELECT prosrc LIKE '%metacloud_ingest_one%' FROM pg_proc
         WHERE oid = 'metacloud_ingest(bytea, jsonb, jsonb)'::regprocedure}),
   't', "metacloud_ingest() is still 010's (it calls metacloud_ingest_one)");
is(q1(q{SELECT prosrc FROM pg_proc
         WHERE oid = 'metacloud_bridge_ticket(text, text, boolean)'
                     ::regprocedure}),
   ' SELECT NULL::text ', "the platform's hook survives");
$t->sql_in($db, q{
    SELECT metacloud_ingest('x', '[{"v":1,"field":"messages",
        "eventType":"message","scope":"PUP","webhookId":"msg:wamid.UP2",
        "phoneNumberId":"PUP","payload":{},
        "message":{"wamid":"wamid.UP2","direction":"INBOUND",
                   "source":"webhook","from":"16505550002","type":"TEXT",
                   "rawType":"text","timestamp":1749416383,"text":"ho"}}]',
        '{}');
});
is(q1(q{SELECT (c."leadId" IS NOT NULL)::text || ' '
               || (c."ticketId" IS NULL)::text
          FROM meta_cloud_messages c WHERE c."wamid" = 'wamid.UP2'}),
   'true true', "and is the one called (a lead, no ticket)");

$t->sql_in('postgres', qq{DROP DATABASE IF EXISTS "$db"})
    if Test::More->builder->is_passing && !$ENV{MC_KEEP};

done_testing;
