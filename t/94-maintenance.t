#!/usr/bin/perl
# t/94-maintenance.t: the metacloud_maintenance timer.
#
#   nginx -t refuses a zero interval, an unknown parameter, a bad age, and
#   the directive without metacloud_db;
#   with "metacloud_maintenance 1s raw=30d events=90d" and two workers, one
#   worker calls metacloud_maintain() through the pool: old raw requests and
#   processed events are purged (in batches, rounds following each other
#   while there is work), a failed event is retried after its fix, and the
#   error log's maintenance lines all come from one worker.
#
# Run: make test T=t/94-maintenance.t
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use MCTest;

my $t = MCTest->new(name => 'maintenance');
plan skip_all => 'module not built' unless $t->has_module;

my $PHONE = '106540352242922';
my $WABA = '102290129340398';
my $tf = $t->timeout_factor;

# --- nginx -t --------------------------------------------------------------

for my $case (['metacloud_maintenance 0;', qr/invalid interval "0"/],
              ['metacloud_maintenance 1s foo=1d;', qr/invalid or repeated/],
              ['metacloud_maintenance 1s raw=x;', qr/invalid age "raw=x"/],
              ['metacloud_maintenance 1s raw=1d raw=2d;',
               qr/invalid or repeated/],
              ['metacloud_maintenance off raw=1d;', qr/no ages/]) {
    my ($rc, $out) = $t->nginx_t("metacloud_db \"%%DB%%\";\n$case->[0]\n");
    isnt($rc, 0, "nginx -t refuses '$case->[0]'");
    like($out, $case->[1], "... and says why") or diag($out);
}
{
    my ($rc, $out) = $t->nginx_t("metacloud_maintenance 1m;\n");
    isnt($rc, 0, 'nginx -t refuses metacloud_maintenance without a database');
    like($out, qr/"metacloud_maintenance" needs "metacloud_db"/, '... named');
    ($rc, $out) = $t->nginx_t(
        "metacloud_db \"%%DB%%\";\nmetacloud_maintenance 1m raw=30d "
        . "events=180d expire=7d;\n");
    is($rc, 0, 'nginx -t accepts interval and ages') or diag($out);
}

# --- old data, a failed event ------------------------------------------------

$t->sql(qq{SELECT metacloud_add_phone_number('org-maint', '$PHONE', '$WABA',
                                             'tok')});
$t->old_deliveries(n => 1200, phone => $PHONE, waba => $WABA, prefix => 'M');
$t->sql(qq{
    -- a failed event whose cause is fixed since
    INSERT INTO meta_cloud_webhook_events
           ("webhookId", "eventType", "phoneNumberId", "organizationId",
            processed, error, payload, scope, event, "updatedAt")
    VALUES ('msg:wamid.FIXED', 'message', '$PHONE', 'org-maint', false,
            'platform bug', '{"id": "wamid.FIXED"}', '$PHONE',
            jsonb_build_object('v', 1, 'eventType', 'message',
                'scope', '$PHONE', 'webhookId', 'msg:wamid.FIXED',
                'phoneNumberId', '$PHONE',
                'message', jsonb_build_object('wamid', 'wamid.FIXED',
                    'direction', 'INBOUND', 'from', '5511900000001',
                    'type', 'TEXT', 'rawType', 'text', 'text', 'fixed')),
            now() - interval '1 hour')});

$t->write_conf($MCTest::WEBHOOK_CONF
               . "metacloud_maintenance 1s raw=30d events=90d;\n",
               workers => 2, error_log_level => 'info');
$t->run;

my $deadline = time + 30 * $tf;
my ($raw, $fixed);
while (time < $deadline) {
    $raw = $t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_requests});
    $fixed = $t->sql1(q{SELECT processed FROM meta_cloud_webhook_events
                         WHERE "webhookId" = 'msg:wamid.FIXED'});
    last if $raw == 0 && $fixed eq 't';
    sleep 0.5;
}
is($raw, 0, 'the timer purged the 1,200 old raw requests');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_events
               WHERE processed AND "webhookId" LIKE 'msg:wamid.M%'}), 0,
   'and their processed events');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
               WHERE wamid LIKE 'wamid.M%'}), 1200, 'messages kept');
is($fixed, 't', 'the failed event was retried and processed');
is($t->sql1(q{SELECT text FROM meta_cloud_messages
               WHERE wamid = 'wamid.FIXED'}), 'fixed', 'its message stored');

my @lines = grep { /metacloud: maintenance:/ } split /\n/, $t->error_log;
cmp_ok(scalar @lines, '>=', 3, 'several rounds (500 rows a batch)');
my %pids = map { /\[info\] (\d+)#/ ? ($1 => 1) : () } @lines;
is(scalar keys %pids, 1, 'all from one worker');

# still serving
my ($st) = $t->deliver($t->wire('meta_text'));
is($st, 200, 'the webhook answers meanwhile');

$t->stop;
done_testing;
