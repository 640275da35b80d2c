#!/usr/bin/perl
# t/91-replay.t: metacloud-replay (tools/metacloud-replay.c) against a live
# database.  An older release stored a text message's body, but understood
# it only as a `generic` event (the whole value kept, nothing else); another
# delivery, a status, was fully understood.  The replay, with this build's
# normaliser:
#
#   --dry-run   prints the conversion, and every table stays byte for byte;
#   a real run  turns the generic event into the message (same event row,
#               same raw row, no second raw row) and touches nothing else;
#   again       changes nothing (idempotent);
#   --outcome   a body stored as invalid_json by an older pre-pass gets its
#               events.
#
# Run: make test T=t/91-replay.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Digest::SHA qw(sha256_hex);
use MCTest;

my $t = MCTest->new(name => 'replay');
my $root = $t->root;
my $REPLAY = "$root/build/core/metacloud-replay";

{
    my $out = `make -s -C $root replay normalize 2>&1`;
    plan skip_all => "metacloud-replay does not build: $out" if $?;
}

my $JSON = JSON::PP->new->canonical;
my $PHONE = '106540352242922';
my $WABA = '102290129340398';
my $WAMID = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=';

$t->sql(qq{SELECT metacloud_add_phone_number('org-replay', '$PHONE',
                                             '$WABA', 'tok')});

# What an older release stored for meta_text: the raw body, and one
# generic event keyed by the body's hash and the item's position.
my $body = $t->wire('meta_text');
my $value = $JSON->decode($body)->{entry}[0]{changes}[0]{value};
my $generic = {
    v => 1, field => 'messages', eventType => 'generic', scope => $PHONE,
    webhookId => 'item:' . sha256_hex($body) . ':0:0:0', wabaId => $WABA,
    phoneNumberId => $PHONE, entryIndex => 0, changeIndex => 0,
    itemIndex => 0, payload => $value,
};

sub ingest {
    my ($bytes, $events, $info) = @_;
    return $t->sql1(q{SELECT metacloud_ingest(decode(:'v1', 'hex'),
                                              :'v2'::jsonb, :'v3'::jsonb)},
                    unpack('H*', $bytes), $JSON->encode($events),
                    $JSON->encode($info || {}));
}

ingest($body, [$generic]);

# a delivery the old release understood: an outbound message and its status
my $status_body = $t->wire('meta_status_delivered_cbp_legacy');
my $OUT = $JSON->decode($status_body)->{entry}[0]{changes}[0]{value}
              {statuses}[0]{id};
$t->sql(qq{INSERT INTO meta_cloud_messages
                  (wamid, "organizationId", "phoneNumberId", direction,
                   "from", "to", type, "sentAt")
           VALUES (:'v1', 'org-replay', '$PHONE', 'OUTBOUND',
                   '15550783881', '16505551234', 'TEXT', now())}, $OUT);
{
    my $norm = "$root/build/core/metacloud-normalize";
    my $events = `$norm --compact 2>/dev/null <<'EOF'
$status_body
EOF`;
    ingest($status_body, $JSON->decode($events));
}

is($t->sql1('SELECT count(*) FROM meta_cloud_messages'), 1,
   'before: the generic event made no message');
is($t->sql1(q{SELECT "eventType" FROM meta_cloud_webhook_events
               WHERE "webhookId" LIKE 'item:%'}), 'generic',
   'before: stored as generic');

# every row of every table, as text: "byte for byte" below
my @TABLES = qw(meta_cloud_webhook_requests meta_cloud_webhook_events
                meta_cloud_messages meta_cloud_message_statuses
                meta_cloud_media);
sub snapshot {
    my ($where) = @_;
    my %s;
    for my $tb (@TABLES) {
        $s{$tb} = $t->sql1(qq{SELECT md5(coalesce(string_agg(x::text, '|'
                                                  ORDER BY x.id), ''))
                                FROM $tb x});
    }
    return \%s;
}

sub replay {
    my $cmd = join ' ', map { "'$_'" } $REPLAY, '--db',
              $t->conninfo(user => $ENV{PGUSER} || scalar getpwuid($<)), @_;
    my $out = `$cmd 2>&1`;
    my $rc = $? >> 8;
    my @lines = map { eval { $JSON->decode($_) } || { text => $_ } }
                split /\n/, $out;
    return ($rc, \@lines, $out);
}

# --- dry run ------------------------------------------------------------

my $before = snapshot();
my ($rc, $lines, $out) = replay('--dry-run');
is($rc, 0, 'dry run: exit 0') or diag($out);
my ($sum) = grep { $_->{summary} } @$lines;
is($sum && $sum->{converted}, 1, 'dry run: one event would be converted')
    or diag($out);
is($sum && $sum->{dryRun}, JSON::PP::true, 'dry run: says so');
my ($line) = grep { $_->{changes} && @{$_->{changes}} } @$lines;
is($line && $line->{changes}[0]{eventType}, 'message',
   'dry run: prints the generic event becoming a message');
is_deeply(snapshot(), $before, 'dry run: every table byte for byte the same');

# --- the replay -----------------------------------------------------------

my $event_id = $t->sql1(q{SELECT id FROM meta_cloud_webhook_events
                           WHERE "webhookId" LIKE 'item:%'});
my $raw_id = $t->sql1(q{SELECT "rawRequestId" FROM meta_cloud_webhook_events
                         WHERE id = :'v1'}, $event_id);
my $others = $t->sql1(q{SELECT md5(string_agg(x::text, '|' ORDER BY x.id))
                          FROM meta_cloud_webhook_events x
                         WHERE x.id <> :'v1'}, $event_id);
my $others_st = $t->sql1(q{SELECT md5(string_agg(x::text, '|' ORDER BY x.id))
                             FROM meta_cloud_message_statuses x});
my $raws = $t->sql1(q{SELECT md5(string_agg(x.id || encode(x.body, 'hex'),
                                            '|' ORDER BY x.id))
                        FROM meta_cloud_webhook_requests x});

($rc, $lines, $out) = replay();
is($rc, 0, 'replay: exit 0') or diag($out);
($sum) = grep { $_->{summary} } @$lines;
is($sum && $sum->{converted}, 1, 'replay: one event converted');
is($sum && $sum->{requests}, 2, 'replay: both raw requests read');

my $row = $t->sql(q{SELECT w.id, w."webhookId", w."eventType", w.processed,
                           w."rawRequestId", m.text, m."webhookEventId"
                      FROM meta_cloud_webhook_events w
                      LEFT JOIN meta_cloud_messages m
                        ON m."webhookEventId" = w.id
                     WHERE w.id = :'v1'}, $event_id)->[0];
is($row->[1], "msg:$WAMID", 'the same event row now has the message key');
is($row->[2], 'message', 'and the message type');
is($row->[3], 't', 'processed');
is($row->[4], $raw_id, 'against the same raw row');
is($row->[5], 'Does it come in another color?', 'the message exists now');
is($t->sql1('SELECT count(*) FROM meta_cloud_webhook_requests'), 2,
   'no second raw row');
is($t->sql1(q{SELECT md5(string_agg(x::text, '|' ORDER BY x.id))
                FROM meta_cloud_webhook_events x WHERE x.id <> :'v1'},
            $event_id), $others, 'every other event row unchanged');
is($t->sql1(q{SELECT md5(string_agg(x::text, '|' ORDER BY x.id))
                FROM meta_cloud_message_statuses x}), $others_st,
   'statuses unchanged');
is($t->sql1(q{SELECT md5(string_agg(x.id || encode(x.body, 'hex'), '|'
                                    ORDER BY x.id))
                FROM meta_cloud_webhook_requests x}), $raws,
   'raw bodies unchanged');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
               WHERE wamid = :'v1'
                 AND "currentStatus" = 'DELIVERED'}, $OUT), 1,
   'the other message unchanged');

# --- again ------------------------------------------------------------------

$before = snapshot();
($rc, $lines, $out) = replay();
($sum) = grep { $_->{summary} } @$lines;
is($rc, 0, 'second replay: exit 0');
is($sum && $sum->{changed}, 0, 'second replay: nothing changed')
    or diag($out);
is($sum && $sum->{unchanged}, 2, 'second replay: both events unchanged');
is_deeply(snapshot(), $before, 'second replay: tables byte for byte');

# --- a body an older pre-pass refused ---------------------------------------

(my $body2 = $body) =~ s/wamid\.HBgL[^"]+/wamid.REPLAYINVALID/;
my $res = $JSON->decode(ingest($body2, [],
                               { outcome => 'invalid_json',
                                 error => 'old pre-pass' }));
my $raw2 = $res->{rawId};
($rc, $lines, $out) = replay('--outcome', 'invalid_json');
($sum) = grep { $_->{summary} } @$lines;
is($rc, 0, '--outcome invalid_json: exit 0') or diag($out);
is($sum && $sum->{requests}, 1, '--outcome: only that raw request read');
is($sum && $sum->{added}, 1, '--outcome: its event added');
is($t->sql1(q{SELECT outcome FROM meta_cloud_webhook_requests
               WHERE id = :'v1'}, $raw2), 'ok', 'its outcome is ok now');
is($t->sql1(q{SELECT "rawRequestId" FROM meta_cloud_webhook_events
               WHERE "webhookId" = 'msg:wamid.REPLAYINVALID'}), $raw2,
   'the event points at the same raw row');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
               WHERE wamid = 'wamid.REPLAYINVALID'}), 1,
   'and its message exists');

($rc, $lines, $out) = replay('--id', $raw2);
($sum) = grep { $_->{summary} } @$lines;
is($sum && $sum->{requests}, 1, '--id: one raw request');
is($sum && $sum->{changed}, 0, '--id: nothing left to change');

done_testing;
