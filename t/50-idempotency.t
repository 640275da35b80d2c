#!/usr/bin/perl
# t/50-idempotency.t: every delivery kept, every event stored once
# (docs/DESIGN.md sections 1 and 3, docs/SQL.md "Keys"):
#
#   1. the same body posted twice: two raw requests (each byte-exact, the
#      stored bytea equals what was sent), one event, one message; the
#      second answer says inserted 0, duplicate 1;
#   2. the same message (same wamid, same phone number id) inside two
#      different bodies (another envelope, an extra item): one message row,
#      the extra item stored;
#   3. the same wamid under two phone number ids: two events, two messages
#      (the key is per scope);
#   4. a race proven to overlap: a superuser session holds EXCLUSIVE on
#      meta_cloud_webhook_events, the same body is sent twice at once, the
#      test waits until it sees both module backends waiting on a Lock in
#      pg_stat_activity, then releases: both 200, two raw rows, one event,
#      one message; then two different bodies with the same three
#      messages in opposite orders, raced the same way: no deadlock, each
#      message once, both deliveries kept;
#   5. statuses of one outbound message: sent, delivered, read, then a late
#      re-delivery of delivered, a sent out of order in another envelope, a
#      failed (lower rank) and the read body again: currentStatus stays
#      READ, one status row per distinct event, no row for a duplicate.
#
# Run: make test T=t/50-idempotency.t   (PROVE_FLAGS=-v for every check)
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Handle;
use JSON::PP ();
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time sleep);
use MCTest;

our $TODO;

my $t = MCTest->new(name => 'idempotency');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $tf = $t->timeout_factor;
my $JSON = JSON::PP->new->canonical;

my $PHONE_A = '106540352242922';
my $WABA_A = '102290129340398';
my $DISPLAY_A = '15550783881';
my $PHONE_B = '1122334455667';
my $WABA_B = '1234567890987654321';
my $DISPLAY_B = '972123456789';

my ($lock_pid, $lock_fh);               # the psql session holding the lock

END {
    local $?;
    if ($lock_pid) {
        kill 'TERM', $lock_pid;
        waitpid($lock_pid, 0);
        $lock_pid = undef;
    }
}

$t->write_conf(<<'EOF');
metacloud_db "%%DB%%";
metacloud_db_pool 4;
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

$t->sql(q{
    SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                      '102290129340398', 'tok');
    SELECT metacloud_add_phone_number('org-test', '1122334455667',
                                      '1234567890987654321', 'tok');
});

# ----------------------------------------------------------------------
# helpers

sub envelope {
    my (%o) = @_;
    my $value = {
        messaging_product => 'whatsapp',
        metadata => {
            display_phone_number => $o{display} // $DISPLAY_A,
            phone_number_id => $o{phone} // $PHONE_A,
        },
        %{ $o{value} || {} },
    };
    return $JSON->encode({
        object => 'whatsapp_business_account',
        entry => [{
            id => $o{waba} // $WABA_A,
            changes => [{ value => $value, field => $o{field} // 'messages' }],
        }],
    });
}

sub text_item {
    my ($wamid, $text, %o) = @_;
    return {
        from => $o{from} // '16505551234',
        id => $wamid,
        timestamp => $o{ts} // '1749416383',
        type => 'text',
        text => { body => $text },
    };
}

sub contacts {
    my ($name) = @_;
    return [{ profile => { name => $name // 'Sheena Nelson' },
              wa_id => '16505551234' }];
}

sub text_body {
    my (%o) = @_;
    return envelope(%o, value => {
        contacts => contacts($o{name}),
        messages => [ map { text_item(@$_) } @{ $o{items} } ],
    });
}

# (status, decoded answer or undef, raw body)
sub post {
    my ($body) = @_;
    my ($st, $h, $b) = $t->post_signed($URI, $body);
    my $doc = eval { $JSON->decode($b) };
    return ($st, $doc, $b);
}

sub answer_is {
    my ($doc, $exp, $name) = @_;
    my %got = map { $_ => ($doc ? $doc->{$_} : undef) } keys %$exp;
    is_deeply(\%got, $exp, $name) or diag('answer: ' . $JSON->encode($doc // {}));
}

# the stored bodies whose SHA-256 is the one of $body, as hex strings
sub stored_hex {
    my ($body) = @_;
    my $rows = $t->sql(q{SELECT encode("body", 'hex')
                           FROM meta_cloud_webhook_requests
                          WHERE "sha256" = decode(:'v1', 'hex')
                          ORDER BY "receivedAt", "id"}, sha256_hex($body));
    return [ map { $_->[0] } @$rows ];
}

sub count {
    my ($table, $where, @binds) = @_;
    return $t->sql1("SELECT count(*) FROM $table"
                    . ($where ? " WHERE $where" : ''), @binds);
}

sub empty_db {
    $t->sql(q{TRUNCATE meta_cloud_message_statuses, meta_cloud_messages,
                       meta_cloud_media, meta_cloud_webhook_events,
                       meta_cloud_webhook_requests CASCADE});
}

# ======================================================================
# 1. the same body twice

my $W1 = 'wamid.IDEM-SAME-BODY-0001';
my $body1 = text_body(items => [[$W1, 'same body twice']]);

my ($st, $doc) = post($body1);
is($st, 200, 'same body, first delivery: 200');
answer_is($doc, { status => 'ok', outcome => 'ok', inserted => 1,
                  duplicate => 0, failed => 0, unrouted => 0, events => 1 },
          'same body, first: inserted 1, duplicate 0');
my $raw1 = $doc && $doc->{rawId};

($st, $doc) = post($body1);
is($st, 200, 'same body, second delivery: 200');
answer_is($doc, { status => 'ok', outcome => 'ok', inserted => 0,
                  duplicate => 1, failed => 0, unrouted => 0, events => 1 },
          'same body, second: inserted 0, duplicate 1');
isnt($doc && $doc->{rawId}, $raw1, 'same body: a new rawId for each delivery');

is(count('meta_cloud_webhook_requests'), 2, 'same body: two raw requests');
is_deeply(stored_hex($body1), [unpack('H*', $body1), unpack('H*', $body1)],
          'same body: both raw rows byte-exact (bytea = what was sent)');
is_deeply($t->sql(q{SELECT "outcome", "signatureChecked", "eventCount",
                           "inserted", "duplicate"
                      FROM meta_cloud_webhook_requests
                     ORDER BY "inserted" DESC}),
          [['ok', 't', 1, 1, 0], ['ok', 't', 1, 0, 1]],
          'same body: raw rows count 1 new, then 1 duplicate');
is(count('meta_cloud_webhook_events'), 1, 'same body: one event');
is_deeply($t->sql(q{SELECT "webhookId", "scope", "eventType", "processed"
                      FROM meta_cloud_webhook_events}),
          [["msg:$W1", $PHONE_A, 'message', 't']],
          'same body: the event key msg:<wamid> in the number\'s scope');
is(count('meta_cloud_messages'), 1, 'same body: one message');
is_deeply($t->sql(q{SELECT "wamid", "phoneNumberId", "text", "direction"
                      FROM meta_cloud_messages}),
          [[$W1, $PHONE_A, 'same body twice', 'INBOUND']],
          'same body: the message row');
is($t->sql1(q{SELECT e."rawRequestId" = :'v1'
                FROM meta_cloud_webhook_events e}, $raw1 // ''), 't',
   'same body: the event points at the first delivery');

# ======================================================================
# 2. the same message inside two different bodies

empty_db();
my $W2 = 'wamid.IDEM-TWO-BODIES-0002';
my $W3 = 'wamid.IDEM-TWO-BODIES-0003';
my $b2a = text_body(items => [[$W2, 'one message, two bodies']]);
# another envelope (contact name) and an extra, unrelated item
my $b2b = text_body(name => 'Other Envelope',
                    items => [[$W3, 'an extra item'],
                              [$W2, 'one message, two bodies']]);
# only the envelope differs (display number, contacts)
my $b2c = text_body(display => '15550000000', name => 'Third',
                    items => [[$W2, 'one message, two bodies']]);
isnt($b2a, $b2b, 'two bodies differ');

($st, $doc) = post($b2a);
is($st, 200, 'two bodies, first: 200');
answer_is($doc, { inserted => 1, duplicate => 0, events => 1 },
          'two bodies, first: inserted 1');
($st, $doc) = post($b2b);
is($st, 200, 'two bodies, second (extra item): 200');
answer_is($doc, { inserted => 1, duplicate => 1, events => 2 },
          'two bodies, second: the extra item new, the message a duplicate');
($st, $doc) = post($b2c);
is($st, 200, 'two bodies, third (other envelope only): 200');
answer_is($doc, { inserted => 0, duplicate => 1, events => 1 },
          'two bodies, third: a duplicate');

is(count('meta_cloud_webhook_requests'), 3, 'two bodies: three raw requests');
is_deeply(stored_hex($b2b), [unpack('H*', $b2b)],
          'two bodies: the second body stored byte-exact');
is(count('meta_cloud_messages', q{"wamid" = :'v1'}, $W2), 1,
   'two bodies: one message row for the wamid');
is(count('meta_cloud_webhook_events', q{"webhookId" = :'v1'}, "msg:$W2"), 1,
   'two bodies: one event for the wamid');
is_deeply($t->sql(q{SELECT "wamid", "contactName" FROM meta_cloud_messages
                     ORDER BY "wamid"}),
          [[$W2, 'Sheena Nelson'], [$W3, 'Other Envelope']],
          'two bodies: the extra item stored; the first delivery\'s row kept');

# ======================================================================
# 3. the same wamid under two phone number ids

empty_db();
my $W4 = 'wamid.IDEM-TWO-NUMBERS-0004';
my $b3a = text_body(items => [[$W4, 'to number A']]);
my $b3b = text_body(phone => $PHONE_B, waba => $WABA_B, display => $DISPLAY_B,
                    items => [[$W4, 'to number B']]);
($st, $doc) = post($b3a);
is($st, 200, 'two numbers, A: 200');
answer_is($doc, { inserted => 1, duplicate => 0 }, 'two numbers, A: new');
($st, $doc) = post($b3b);
is($st, 200, 'two numbers, B: 200');
answer_is($doc, { inserted => 1, duplicate => 0, unrouted => 0 },
          'two numbers, B: new too (not a duplicate of A)');
is_deeply($t->sql(q{SELECT "scope", "webhookId" FROM meta_cloud_webhook_events
                     ORDER BY "scope" COLLATE "C"}),
          [[$PHONE_A, "msg:$W4"], [$PHONE_B, "msg:$W4"]],
          'two numbers: two events, one per scope');
is_deeply($t->sql(q{SELECT "phoneNumberId", "wamid", "text"
                      FROM meta_cloud_messages
                     ORDER BY "phoneNumberId" COLLATE "C"}),
          [[$PHONE_A, $W4, 'to number A'], [$PHONE_B, $W4, 'to number B']],
          'two numbers: two message rows');
# and each is idempotent on its own
($st, $doc) = post($b3b);
answer_is($doc, { inserted => 0, duplicate => 1 },
          'two numbers, B again: a duplicate');
is(count('meta_cloud_messages'), 2, 'two numbers: still two messages');

# ======================================================================
# 4. a race proven to overlap

sub send_raw {
    my ($body) = @_;
    return $t->post_signed($URI, $body, nowait => 1, timeout => 40);
}

sub read_answer {
    my ($h) = @_;
    my ($rst, $rh, $rb) = $t->response($h);
    return [$rst, eval { $JSON->decode($rb) }, $t->last_response];
}

# race($label, $body1, $body2): takes the lock, sends both bodies at once,
# waits until both module backends wait on the lock, releases; returns the
# two answers [status, decoded, raw]
sub race {
    my ($label, @bodies) = @_;

    $lock_pid = open($lock_fh, '|-', 'psql', '-X', '-q',
                     '-v', 'ON_ERROR_STOP=1', '-d', $t->dbname);
    ok($lock_pid, "$label: a superuser psql session")
        or BAIL_OUT("psql: $!");
    $lock_fh->autoflush(1);
    print $lock_fh "BEGIN;\n"
        . "LOCK TABLE meta_cloud_webhook_events IN EXCLUSIVE MODE;\n";

    my $locked = 0;
    my $deadline = time + 10 * $tf;
    while (time < $deadline) {
        $locked = $t->sql1(q{SELECT count(*) FROM pg_locks l
            JOIN pg_class c ON c.oid = l.relation
            WHERE c.relname = 'meta_cloud_webhook_events'
              AND l.database = (SELECT oid FROM pg_database
                                 WHERE datname = current_database())
              AND l.mode = 'ExclusiveLock' AND l.granted
              AND l.pid <> pg_backend_pid()});
        last if $locked;
        sleep 0.05;
    }
    is($locked, 1, "$label: the lock is held (EXCLUSIVE on the events table)");

    my @socks = map { send_raw($_) } @bodies;

    my $waiting = 0;
    my $w_rows = [];
    $deadline = time + 20 * $tf;
    while (time < $deadline) {
        $w_rows = $t->sql(q{SELECT pid, wait_event_type, wait_event, state
            FROM pg_stat_activity
            WHERE usename = 'metacloud_module'
              AND datname = current_database()
              AND wait_event_type = 'Lock'
              AND query LIKE '%metacloud_ingest%'});
        $waiting = scalar @$w_rows;
        last if $waiting >= 2;
        sleep 0.05;
    }
    is($waiting, 2, "$label: both deliveries seen waiting on the lock "
                  . '(two metacloud_module backends, wait_event_type Lock)')
        or diag($JSON->encode($t->sql(q{SELECT usename, wait_event_type,
                   wait_event, state, left(query, 60) FROM pg_stat_activity
                   WHERE datname = current_database()})));
    isnt($w_rows->[0] && $w_rows->[0][0], $w_rows->[1] && $w_rows->[1][0],
         "$label: two different backends");
    is(count('meta_cloud_webhook_requests'), 0,
       "$label: nothing stored while the lock is held");

    print $lock_fh "COMMIT;\n";
    close $lock_fh;
    my $lock_rc = $?;
    $lock_pid = undef;
    is($lock_rc, 0, "$label: the lock session ended cleanly");

    my @answers = map { read_answer($_) } @socks;
    is($answers[0][0], 200, "$label: first answer 200")
        or diag($answers[0][2]);
    is($answers[1][0], 200, "$label: second answer 200")
        or diag($answers[1][2]);
    return @answers;
}

empty_db();
my $W5 = 'wamid.IDEM-RACE-0005';
my $b4 = text_body(items => [[$W5, 'raced']]);

my @answers = race('race', $b4, $b4);
my @ins = sort map { $_->[1] ? $_->[1]{inserted} // 'undef' : 'none' } @answers;
my @dup = sort map { $_->[1] ? $_->[1]{duplicate} // 'undef' : 'none' } @answers;
is_deeply(\@ins, [0, 1], 'race: one answer inserted 1, the other 0');
is_deeply(\@dup, [0, 1], 'race: one answer duplicate 1, the other 0');
is(count('meta_cloud_webhook_requests'), 2, 'race: two raw requests');
is_deeply(stored_hex($b4), [unpack('H*', $b4), unpack('H*', $b4)],
          'race: both raw rows byte-exact');
is(count('meta_cloud_webhook_events'), 1, 'race: one event');
is(count('meta_cloud_messages'), 1, 'race: one message');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_events
               WHERE "processed" AND "error" IS NULL}), 1,
   'race: the event processed, no error');

# 4b. two different bodies carrying the same three messages in opposite
# orders, raced: no deadlock (events are taken in key order), each message
# once, every delivery kept
empty_db();
my @W6 = map { "wamid.IDEM-RACE-ORDER-$_" } 1 .. 3;
my $b4x = text_body(items => [ map { [$_, "order $_"] } @W6 ]);
my $b4y = text_body(name => 'Reversed',
                    items => [ map { [$_, "order $_"] } reverse @W6 ]);
@answers = race('race, opposite orders', $b4x, $b4y);
my $sum_ins = 0;
my $sum_dup = 0;
for my $ans (@answers) {
    $sum_ins += $ans->[1] ? $ans->[1]{inserted} // 0 : 0;
    $sum_dup += $ans->[1] ? $ans->[1]{duplicate} // 0 : 0;
}
is($sum_ins, 3, 'race, opposite orders: 3 events inserted in all');
is($sum_dup, 3, 'race, opposite orders: 3 duplicates in all');
is(count('meta_cloud_webhook_requests'), 2,
   'race, opposite orders: two raw requests');
is_deeply([ stored_hex($b4x), stored_hex($b4y) ],
          [ [unpack('H*', $b4x)], [unpack('H*', $b4y)] ],
          'race, opposite orders: both raw rows byte-exact');
is_deeply($t->sql(q{SELECT "wamid", count(*) FROM meta_cloud_messages
                     GROUP BY "wamid" ORDER BY "wamid"}),
          [ map { [$_, 1] } @W6 ],
          'race, opposite orders: each message once');
is(count('meta_cloud_webhook_events', q{"processed" AND "error" IS NULL}), 3,
   'race, opposite orders: three events, processed');
unlike($t->error_log, qr/deadlock/i, 'race, opposite orders: no deadlock');

# ======================================================================
# 5. statuses of one outbound message

empty_db();
my $WO = 'wamid.IDEM-OUTBOUND-0006';
my $echo = envelope(field => 'smb_message_echoes', value => {
    message_echoes => [{
        from => $DISPLAY_A, to => '16505551234', id => $WO,
        timestamp => '1749400000', type => 'text',
        text => { body => 'outbound' },
    }],
});
($st, $doc) = post($echo);
is($st, 200, 'statuses: the echo (outbound message): 200');
is_deeply($t->sql(q{SELECT "direction", "currentStatus"
                      FROM meta_cloud_messages WHERE "wamid" = :'v1'}, $WO),
          [['OUTBOUND', 'PENDING']], 'statuses: the outbound message, PENDING');

sub status_body {
    my ($status, $ts, %o) = @_;
    my $item = { id => $WO, status => $status, timestamp => $ts,
                 recipient_id => '16505551234', %{ $o{extra} || {} } };
    return envelope(value => {
        contacts => contacts($o{name}),
        statuses => [$item],
    });
}

sub current {
    my $r = $t->sql(q{SELECT "currentStatus",
                             extract(epoch FROM "lastStatusUpdate")::bigint
                        FROM meta_cloud_messages WHERE "wamid" = :'v1'}, $WO);
    return $r->[0] || [];
}

sub status_rows {
    return $t->sql(q{SELECT s."status", s."statusRaw", s."timestamp"
                       FROM meta_cloud_message_statuses s
                       JOIN meta_cloud_messages m ON m."id" = s."messageId"
                      WHERE m."wamid" = :'v1'
                      ORDER BY s."timestamp", s."status"}, $WO);
}

my $s_sent = status_body('sent', '1749400010');
my $s_deliv = status_body('delivered', '1749400020');
my $s_read = status_body('read', '1749400030');

for my $step ([$s_sent, 'sent', 'SENT', 1749400010],
              [$s_deliv, 'delivered', 'DELIVERED', 1749400020],
              [$s_read, 'read', 'READ', 1749400030])
{
    my ($b, $name, $cur, $at) = @$step;
    ($st, $doc) = post($b);
    is($st, 200, "statuses: $name: 200");
    answer_is($doc, { inserted => 1, duplicate => 0, failed => 0,
                      pending => 0 }, "statuses: $name: a new event");
    is_deeply(current(), [$cur, $at],
              "statuses: after $name, currentStatus $cur, "
              . 'lastStatusUpdate = its time');
}
is_deeply(status_rows(),
          [['SENT', 'sent', '1749400010'],
           ['DELIVERED', 'delivered', '1749400020'],
           ['READ', 'read', '1749400030']],
          'statuses: three status rows');

# a late re-delivery of the delivered body
($st, $doc) = post($s_deliv);
is($st, 200, 'statuses: delivered re-delivered late: 200');
answer_is($doc, { inserted => 0, duplicate => 1 },
          'statuses: late delivered: a duplicate');
# a "sent" out of order, in another envelope (same key)
my $s_sent2 = status_body('sent', '1749400011', name => 'Another Name',
    extra => { pricing => { billable => JSON::PP::true,
                            pricing_model => 'PMP',
                            category => 'utility' } });
($st, $doc) = post($s_sent2);
is($st, 200, 'statuses: sent out of order (other envelope): 200');
answer_is($doc, { inserted => 0, duplicate => 1 },
          'statuses: sent out of order: a duplicate (same key)');
is_deeply(current(), ['READ', 1749400030], 'statuses: still READ');

# a distinct status of a lower rank: a new row, no downgrade
my $s_failed = status_body('failed', '1749400040', extra => {
    errors => [{ code => 131049, title => 'Not delivered' }] });
($st, $doc) = post($s_failed);
is($st, 200, 'statuses: failed after read: 200');
answer_is($doc, { inserted => 1, duplicate => 0, failed => 0 },
          'statuses: failed after read: a new event');
is_deeply(current(), ['READ', 1749400030],
          'statuses: failed after read: currentStatus stays READ, '
          . 'lastStatusUpdate unchanged');

# the read body again
($st, $doc) = post($s_read);
is($st, 200, 'statuses: read re-sent: 200');
answer_is($doc, { inserted => 0, duplicate => 1 },
          'statuses: read re-sent: a duplicate');

is_deeply(status_rows(),
          [['SENT', 'sent', '1749400010'],
           ['DELIVERED', 'delivered', '1749400020'],
           ['READ', 'read', '1749400030'],
           ['FAILED', 'failed', '1749400040']],
          'statuses: one row per distinct event (4), none for duplicates');
is_deeply(current(), ['READ', 1749400030], 'statuses: finally READ');
is_deeply($t->sql(q{SELECT "webhookId" FROM meta_cloud_webhook_events
                     WHERE "eventType" = 'status' ORDER BY "webhookId"}),
          [["status:$WO:delivered:16505551234"],
           ["status:$WO:failed:16505551234"],
           ["status:$WO:read:16505551234"],
           ["status:$WO:sent:16505551234"]],
          'statuses: the four status events, keyed status:<wamid>:<status>:<who>');
is(count('meta_cloud_webhook_requests'), 8,
   'statuses: every delivery kept (echo + 7 status bodies)');
is(count('meta_cloud_webhook_events', q{NOT "processed"}), 0,
   'statuses: every event processed');

$t->stop;
done_testing;
