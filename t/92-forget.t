#!/usr/bin/perl
# t/92-forget.t: export and erasure of a person, on data stored through
# nginx.  Zoë (phone, business-scoped user id, a name with a non-ASCII
# letter, a username) writes alone, sends an image, receives a message and
# its status, shares one delivery with Bruno, and writes once by user id
# only.  Bruno writes alone and in that shared delivery.
#
#   metacloud_export_contact(): everything about Zoë, nothing of Bruno's;
#   metacloud_forget_contact(): afterwards no column, payload or raw body
#   of the organisation holds Zoë's phone, user id, name or username (as
#   stored or as Meta escapes it), her file is queued for removal, her
#   platform rows are emptied, and every row of Bruno's is byte for byte
#   what it was (his text still in the shared raw body).
#
# Run: make test T=t/92-forget.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Encode qw(encode_utf8);
use MCTest;

my $t = MCTest->new(name => 'forget');
plan skip_all => 'module not built' unless $t->has_module;

my $WIRE = JSON::PP->new->canonical->ascii;     # \u00eb, as Meta sends it
my $JSON = JSON::PP->new->canonical;
my $PHONE = '106540352242922';
my $WABA = '102290129340398';
my $ORG = 'org-forget';

my %A = (phone => '5511911110001', uid => 'US.55119111100010001',
         name => "Zo\x{eb} Apagada", user => '@zoe.apagada');
my %B = (phone => '5511922220002', name => 'Bruno Fica');

$t->sql(qq{SELECT metacloud_add_phone_number('$ORG', '$PHONE', '$WABA',
                                             'tok')});

sub body {
    my (%v) = @_;
    return $WIRE->encode({
        object => 'whatsapp_business_account',
        entry => [{ id => $WABA, changes => [{ field => 'messages',
            value => { messaging_product => 'whatsapp',
                       metadata => { display_phone_number => '15550783881',
                                     phone_number_id => $PHONE },
                       %v } }] }] });
}

sub contact_a {
    return { profile => { name => $A{name}, username => $A{user} },
             wa_id => $A{phone}, user_id => $A{uid} };
}

sub text_of {
    my ($p, $wamid, $text) = @_;
    return { from => $p->{phone}, id => $wamid, timestamp => '1749416383',
             type => 'text', text => { body => $text },
             ($p->{uid} ? (from_user_id => $p->{uid}) : ()) };
}

$t->write_conf($MCTest::WEBHOOK_CONF);
$t->run;

# the platform sent Zoë a message (its own INSERT), with a Message row
$t->sql(qq{INSERT INTO "Message" (id, "organizationId", body)
           VALUES ('pm-a', '$ORG', 'Ola Zoe, seu pedido chegou');
           INSERT INTO meta_cloud_messages
                  (wamid, "organizationId", "phoneNumberId", direction,
                   "from", "to", type, text, "sentAt", "messageId")
           VALUES ('wamid.FA-OUT', '$ORG', '$PHONE', 'OUTBOUND',
                   '15550783881', '$A{phone}', 'TEXT',
                   'Ola Zoe, seu pedido chegou', now(), 'pm-a');
           INSERT INTO "Lead" (id, "organizationId", name, phone, "userId")
           VALUES ('lead-a', '$ORG', :'v1', '$A{phone}', '$A{uid}'),
                  ('lead-b', '$ORG', '$B{name}', '$B{phone}', NULL)},
        encode_utf8($A{name}));

my @bodies = (
    body(contacts => [contact_a()],
         messages => [text_of(\%A, 'wamid.FA-1', 'Quero apagar meus dados')]),
    body(contacts => [contact_a()],
         messages => [{ from => $A{phone}, from_user_id => $A{uid},
                        id => 'wamid.FA-IMG', timestamp => '1749416390',
                        type => 'image',
                        image => { id => 'MEDIA-FA-1',
                                   mime_type => 'image/jpeg',
                                   sha256 => 'abc',
                                   caption => 'minha casa' } }]),
    body(statuses => [{ id => 'wamid.FA-OUT', status => 'delivered',
                        timestamp => '1749416400',
                        recipient_id => $A{phone} }]),
    body(contacts => [contact_a(),
                      { profile => { name => $B{name} }, wa_id => $B{phone} }],
         messages => [text_of(\%A, 'wamid.FA-2', 'Mensagem compartilhada'),
                      text_of(\%B, 'wamid.FB-2', 'Mensagem do Bruno')]),
    body(contacts => [{ profile => { name => $B{name} }, wa_id => $B{phone} }],
         messages => [text_of(\%B, 'wamid.FB-1', 'Bruno sozinho')]),
    body(contacts => [{ profile => { name => $A{name} },
                        user_id => $A{uid} }],
         messages => [{ from_user_id => $A{uid}, id => 'wamid.FA-UID',
                        timestamp => '1749416500', type => 'text',
                        text => { body => 'so pelo user id' } }]),
);

for my $i (0 .. $#bodies) {
    my ($st, $doc, $raw) = $t->deliver($bodies[$i]);
    is($st, 200, "delivery $i: 200") or diag($raw);
    is($doc->{failed} // 0, 0, "delivery $i: nothing failed") or diag($raw);
}

# the image was downloaded (as the media work will do)
$t->sql(q{UPDATE meta_cloud_media
             SET status = 'DOWNLOADED', "storageProvider" = 'local',
                 "storageKey" = 'org-forget/MEDIA-FA-1.jpg'
           WHERE "mediaId" = 'MEDIA-FA-1'});
$t->sql(qq{UPDATE meta_cloud_messages SET "leadId" = 'lead-a'
            WHERE wamid = 'wamid.FA-1'});

is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
               WHERE wamid LIKE 'wamid.FA-%'}), 5, 'Zoë: five messages');
is($t->sql1(q{SELECT "currentStatus" FROM meta_cloud_messages
               WHERE wamid = 'wamid.FA-OUT'}), 'DELIVERED',
   'Zoë: the status reached the outbound message');

# --- export --------------------------------------------------------------

my $export = $JSON->decode($t->sql1(
    q{SELECT metacloud_export_contact(:'v1', :'v2')}, $ORG, $A{phone}));
is(scalar @{$export->{messages}}, 5, 'export: her five messages');
is(scalar @{$export->{statuses}}, 1, 'export: the status');
is(scalar @{$export->{media}}, 1, 'export: the media reference');
is($export->{media}[0]{storageKey}, 'org-forget/MEDIA-FA-1.jpg',
   'export: where the file is');
cmp_ok(scalar @{$export->{events}}, '>=', 4, 'export: her events');
is(scalar @{$export->{leads}}, 1, 'export: her lead');
my @shared = grep { $_->{sharedWithOthers} } @{$export->{rawRequests}};
my @alone = grep { !$_->{sharedWithOthers} } @{$export->{rawRequests}};
is(scalar @shared, 1, 'export: the shared delivery is named');
ok(!defined $shared[0]{body}, 'export: without the body (Bruno is in it)');
is(scalar @alone, 4, 'export: her own deliveries, with their bodies');
is(scalar(grep { ($_->{body} // '') =~ /Quero apagar/ } @alone), 1,
   'export: a body as text');
ok((grep { $_ eq $A{uid} } @{$export->{identifiers}}),
   'export: the user id found through her phone');
my $etext = $JSON->encode($export);
unlike($etext, qr/Bruno|\Q$B{phone}\E/, 'export: nothing of Bruno');

# --- what Bruno has, before --------------------------------------------------

sub bruno {
    my %s;
    $s{messages} = $t->sql1(qq{SELECT md5(string_agg(m::text, '|'
                                                     ORDER BY m.id))
                                 FROM meta_cloud_messages m
                                WHERE m."from" = '$B{phone}'});
    $s{events} = $t->sql1(qq{SELECT md5(string_agg(w::text, '|'
                                                   ORDER BY w.id))
                               FROM meta_cloud_webhook_events w
                              WHERE w.event -> 'message' ->> 'from'
                                    = '$B{phone}'});
    $s{lead} = $t->sql1(q{SELECT md5(string_agg(l::text, '|'
                                                ORDER BY l.id))
                            FROM "Lead" l WHERE l::text LIKE '%Bruno%'});
    $s{pmsg} = $t->sql1(q{SELECT md5(string_agg(m::text, '|'
                                                ORDER BY m.id))
                            FROM "Message" m WHERE m::text LIKE '%Bruno%'});
    $s{alone_raw} = $t->sql1(q{SELECT md5(string_agg(encode(body, 'hex'),
                                                     '|' ORDER BY id))
                                 FROM meta_cloud_webhook_requests
                                WHERE position('Bruno sozinho'::bytea
                                               IN body) > 0});
    return \%s;
}
my $bruno = bruno();
is($t->sql1(qq{SELECT count(*) FROM meta_cloud_messages
                WHERE "from" = '$B{phone}'}), 2, 'Bruno: two messages');

# --- forget ----------------------------------------------------------------

my $res = $JSON->decode($t->sql1(
    q{SELECT metacloud_forget_contact(:'v1', :'v2')}, $ORG, $A{phone}));
is($res->{messages}, 5, 'forget: five messages deleted');
is($res->{media}, 1, 'forget: the media row');
is($res->{rawDeleted}, 4, 'forget: her own deliveries deleted');
is($res->{rawRedacted}, 1, 'forget: the shared delivery redacted');
is($res->{leads}, 1, 'forget: her lead emptied');
# (1 here; with the bridge, the "Message" rows it made for her too)
cmp_ok($res->{platformMessages}, '>=', 1,
       'forget: the platform messages emptied');

my @needles = ($A{phone}, $A{uid}, encode_utf8($A{name}), 'Apagada', $A{user},
               'Zo\\u00eb');
for my $tb (qw(meta_cloud_webhook_events meta_cloud_messages
               meta_cloud_message_statuses meta_cloud_media
               meta_cloud_media_deletions "Lead" "Message"
               meta_cloud_webhook_requests)) {
    for my $n (@needles) {
        is($t->sql1(qq{SELECT count(*) FROM $tb x
                        WHERE strpos(x::text, :'v1') > 0}, $n), 0,
           "no $tb row holds '$n'");
    }
}
for my $n ('Quero apagar', 'Mensagem compartilhada', 'so pelo user id') {
    is($t->sql1(q{SELECT count(*) FROM "Message" x
                   WHERE strpos(x::text, :'v1') > 0}, $n), 0,
       "no platform message holds her text '$n'");
}
for my $n (@needles, 'Mensagem compartilhada') {
    is($t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_requests
                   WHERE position(convert_to(:'v1', 'UTF8') IN body) > 0},
                $n), 0, "no raw body holds '$n'");
}

is_deeply(bruno(), $bruno, 'Bruno: messages, events, leads, platform '
                           . 'messages and his own raw body byte for byte '
                           . 'unchanged');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_requests
               WHERE position('Mensagem do Bruno'::bytea IN body) > 0
                 AND position(convert_to(:'v1', 'UTF8') IN body) > 0
                 AND "redactedAt" IS NOT NULL
                 AND sha256 = sha256(body)}, $B{phone}), 1,
   'the shared raw body keeps Bruno, is marked redacted, hash of its bytes');
is($t->sql1(q{SELECT "storageKey" || ' ' || reason
                FROM meta_cloud_media_deletions}),
   'org-forget/MEDIA-FA-1.jpg forgotten', 'her file is queued for removal');
is($t->sql1(q{SELECT body FROM "Message" WHERE id = 'pm-a'}), undef,
   'the platform message has no body');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_events
               WHERE "webhookId" = 'msg:wamid.FA-1'}), 1,
   'her event key stays (a retry stays a duplicate)');

# forgetting again finds nothing
$res = $JSON->decode($t->sql1(
    q{SELECT metacloud_forget_contact(:'v1', :'v2')}, $ORG, $A{phone}));
is($res->{messages} + $res->{rawRedacted} + $res->{rawDeleted}, 0,
   'a second erasure finds nothing');

$t->stop;
done_testing;
