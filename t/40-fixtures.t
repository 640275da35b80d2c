#!/usr/bin/perl
# t/40-fixtures.t: every fixture of t/fixtures/*.json, posted through nginx
# and the module as Meta sends it (compact, "/" as "\/", non-ASCII as
# \uXXXX, signed with X-Hub-Signature-256), into an empty database (the
# module's tables are truncated before each fixture: several fixtures reuse
# one wamid and one phone number id), checked against the hand-written
# expectation t/fixtures/expect/<fixture>.pl (format: its README.md):
#
#   - the response: 200, outcome ok, inserted = the events, no duplicate,
#     no unrouted, no failed;
#   - the number of rows of the five tables;
#   - the raw request row (sha256, length, outcome, signature checked);
#   - per event: key (webhookId), eventType, scope and other columns; the
#     message row (type, direction, from / fromUserId, text, ...) and the
#     media row it points to; a status fixture gives an event only
#     (processed false, "message not found") and no status row;
#   - the same body again: all duplicates, no new row but the request;
#   - statuses against a known message: each status fixture is posted
#     before and after an outbound message (an echo) with its wamid, and
#     once against a message inserted by plain SQL: the status row and
#     "currentStatus";
#   - a status sequence on one wamid (duplicates by key, never downgraded),
#     and a history placeholder followed by its media.
#
# Run: make test T=t/40-fixtures.t   (PROVE_FLAGS=-v for every check)
# Discrepancies between the program and docs/EVENTS.md are TODO tests
# (%TODO below), so the suite passes while they are listed.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Digest::SHA qw(sha256_hex);
use File::Basename qw(basename);
use Scalar::Util qw(looks_like_number blessed);
use MCTest;

our $TODO;

my $t = MCTest->new(name => 'fixtures');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = '/webhook';
# MC_EXPECT_DIR: another expectation directory (to check that this suite
# fails on wrong expectations)
my $EXPECT_DIR = $ENV{MC_EXPECT_DIR} || "$FindBin::Bin/fixtures/expect";
my $JSON = JSON::PP->new->utf8->canonical;

# test names and diagnostics carry emoji
binmode(Test::More->builder->$_, ':encoding(UTF-8)')
    for qw(output failure_output todo_output);

# Known discrepancies: "<fixture>|<what>" => reason.  <what> is
# "event:<webhookId>:<column>", "message:<wamid>:<column>",
# "media:<mediaId>:<column>", "status:<wamid>:<column>", "rows:<table>",
# "response:<key>".  Filled from the runs; every entry is a program bug
# against docs/EVENTS.md (see the report of this suite).
my %TODO = (
);

$t->write_conf(<<'EOF');
metacloud_db "%%DB%%";
server {
    listen 127.0.0.1:%%PORT%%;
    location = /webhook {
        metacloud_webhook;
        metacloud_verify_token tok;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
    }
}
EOF
$t->run;

# the numbers of the demo organisation (events of other numbers would be
# kept "unrouted")
$t->sql(q{
    SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                      '102290129340398', 'token');
    SELECT metacloud_add_phone_number('org-test', '1122334455667',
                                      '1234567890987654321', 'token');
    SELECT metacloud_add_phone_number('org-test', '<BUSINESS_PHONE_NUMBER_ID>',
                                      '<WHATSAPP_BUSINESS_ACCOUNT_ID>', 'token');
});

my @TABLES = qw(requests events messages media statuses);

# ----------------------------------------------------------------------
# helpers

sub empty_db {
    $t->sql(q{TRUNCATE meta_cloud_message_statuses, meta_cloud_messages,
                       meta_cloud_media, meta_cloud_webhook_events,
                       meta_cloud_webhook_requests CASCADE});
}

# every row of the five tables (big columns left out), one psql call
sub snapshot {
    my $doc = $t->sql1(q{
        SELECT json_build_object(
          'requests', (SELECT coalesce(json_agg(to_jsonb(r) - 'body' - 'sha256'
                              || jsonb_build_object(
                                   'sha256hex', encode(r."sha256", 'hex'),
                                   'bodyLength', length(r."body"))
                              ORDER BY r."receivedAt"), '[]')
                         FROM meta_cloud_webhook_requests r),
          'events', (SELECT coalesce(json_agg(to_jsonb(e) - 'payload' - 'event'
                            || jsonb_build_object('statusObject',
                                                  e."event" -> 'status')
                            ORDER BY e."receivedAt", e."webhookId"), '[]')
                       FROM meta_cloud_webhook_events e),
          'messages', (SELECT coalesce(json_agg(to_jsonb(m) - 'rawMessageData'
                              ORDER BY m."wamid"), '[]')
                         FROM meta_cloud_messages m),
          'media', (SELECT coalesce(json_agg(to_jsonb(d) ORDER BY d."mediaId"),
                                    '[]')
                      FROM meta_cloud_media d),
          'statuses', (SELECT coalesce(json_agg(to_jsonb(s)
                              || jsonb_build_object('conversationExpiresAt',
                                   extract(epoch FROM
                                     s."conversationExpiresAt")::bigint)
                              ORDER BY s."createdAt", s."id"), '[]')
                         FROM meta_cloud_message_statuses s))
    });
    return $JSON->decode($doc);
}

sub todo_for {
    my ($fx, $what) = @_;
    return $TODO{"$fx|$what"};
}

# compare one value: expected undef = NULL, hash = the named keys of a json
# object, numbers with a tolerance, booleans as 0/1
sub same {
    my ($got, $exp) = @_;
    return !defined $got if !defined $exp;
    return 0 if !defined $got;
    if (ref $exp eq 'HASH') {
        return 0 unless ref $got eq 'HASH';
        for my $k (keys %$exp) {
            return 0 unless exists $got->{$k} && same($got->{$k}, $exp->{$k});
        }
        return 1;
    }
    if (blessed $got && $got->isa('JSON::PP::Boolean')) {
        return ($got ? 1 : 0) eq "$exp";
    }
    if (ref $got) {
        return 0;
    }
    if (!ref $exp && looks_like_number($exp) && "$exp" =~ /[.eE]/
        && looks_like_number($got))
    {
        return abs($got - $exp) < 1e-9;
    }
    return "$got" eq "$exp";
}

sub show {
    my ($v) = @_;
    return 'NULL' unless defined $v;
    if (ref $v) {
        return JSON::PP->new->canonical->allow_blessed->convert_blessed
                   ->allow_nonref->encode($v)
            if ref $v eq 'HASH' || ref $v eq 'ARRAY';
        return $v ? 'true' : 'false';
    }
    return "'$v'";
}

# one test per expected column of a row ($absent_is_null: a sub-object of
# an event, where an absent key means NULL)
sub check_row {
    my ($fx, $kind, $id, $row, $exp, $label, $absent_is_null) = @_;
    for my $col (sort keys %$exp) {
        local $TODO = todo_for($fx, "$kind:$id:$col");
        my $name = "$label $kind.$col";
        if (!exists $row->{$col} && !$absent_is_null) {
            fail("$name: column exists");
            next;
        }
        ok(same($row->{$col}, $exp->{$col}), "$name = " . show($exp->{$col}))
            or diag("  got: " . show($row->{$col}));
    }
}

sub load_expect {
    my ($name) = @_;
    my $file = "$EXPECT_DIR/$name.pl";
    return undef unless -f $file;
    my $e = do $file;
    die "$file: $@" if $@;
    die "$file: $!" unless defined $e;
    return $e;
}

sub subst_key {
    my ($key, $sha) = @_;
    $key =~ s/\{sha\}/$sha/g;
    return $key;
}

sub post_body {
    my ($body) = @_;
    my ($status, $h, $resp) = $t->post_signed($URI, $body,
        headers => { 'User-Agent' => 'facebookexternalua' });
    my $r = eval { $JSON->decode($resp) };
    return ($status, $r, $resp);
}

sub count_rows {
    my ($snap) = @_;
    return { map { $_ => scalar @{ $snap->{$_} } } @TABLES };
}

sub find_event {
    my ($snap, $key) = @_;
    my @e = grep { $_->{webhookId} eq $key } @{ $snap->{events} };
    return $e[0];
}

sub find_message {
    my ($snap, $wamid, $phone) = @_;
    my @m = grep { $_->{wamid} eq $wamid
                   && (!defined $phone || $_->{phoneNumberId} eq $phone) }
            @{ $snap->{messages} };
    return $m[0];
}

sub find_media_pk {
    my ($snap, $pk) = @_;
    my @m = grep { $_->{id} eq $pk } @{ $snap->{media} };
    return $m[0];
}

# the columns of an expected event that are columns of the events table
my %EVENT_SKIP = map { $_ => 1 } qw(message media status current processed);

# ----------------------------------------------------------------------
# 1. every fixture into an empty database

my @fixtures = map { basename($_, '.json') } $t->fixtures;
ok(@fixtures >= 81, scalar(@fixtures) . ' fixtures');

my %expect;
for my $fx (@fixtures) {
    my $exp = load_expect($fx);
    ok($exp, "$fx: has a hand-written expectation") or next;
    $expect{$fx} = $exp;
}

for my $fx (@fixtures) {
    my $exp = $expect{$fx} or next;
    my @ev = @{ $exp->{events} };
    my $n = @ev;

    empty_db();
    my $wire = $t->wire($fx);
    my $sha = sha256_hex($wire);

    my ($status, $r, $raw) = post_body($wire);
    is($status, 200, "$fx: 200") or diag($raw);
    $r ||= {};
    {
        local $TODO = todo_for($fx, 'response:outcome');
        is($r->{outcome}, 'ok', "$fx: response outcome ok");
    }
    for my $k (qw(inserted duplicate unrouted failed events)) {
        my %want = (inserted => $n, duplicate => 0, unrouted => 0,
                    failed => 0, events => $n);
        local $TODO = todo_for($fx, "response:$k");
        is($r->{$k}, $want{$k}, "$fx: response $k = $want{$k}");
    }

    my $snap = snapshot();
    my $counts = count_rows($snap);
    for my $tb (@TABLES) {
        local $TODO = todo_for($fx, "rows:$tb");
        is($counts->{$tb}, $exp->{rows}{$tb}, "$fx: rows in $tb");
    }

    # the raw request
    if (my $req = $snap->{requests}[0]) {
        is($req->{sha256hex}, $sha, "$fx: request sha256 of the body as sent");
        is($req->{bodyLength}, length $wire, "$fx: request body length");
        is($req->{outcome}, 'ok', "$fx: request outcome");
        ok(same($req->{signatureChecked}, 1), "$fx: request signature checked");
        is($req->{eventCount}, $n, "$fx: request eventCount");
    }

    # no event that the expectation does not name
    {
        local $TODO = todo_for($fx, 'event:keys');
        is_deeply([sort map { $_->{webhookId} } @{ $snap->{events} }],
                  [sort map { subst_key($_->{webhookId}, $sha) } @ev],
                  "$fx: the event keys");
    }

    for my $e (@ev) {
        my $key = subst_key($e->{webhookId}, $sha);
        my $row = find_event($snap, $key);
        my $found = do {
            local $TODO = todo_for($fx, "event:$e->{webhookId}");
            ok($row, "$fx: event $key");
        };
        next unless $found && $row;
        my %cols = map { $_ => $e->{$_} }
                   grep { !$EVENT_SKIP{$_} && $_ ne 'webhookId' } keys %$e;
        check_row($fx, 'event', $e->{webhookId}, $row, \%cols, "$fx:");
        is($row->{organizationId}, 'org-test', "$fx: event routed to org-test");

        if ($e->{eventType} eq 'status') {
            # no message in an empty database: kept, not processed
            local $TODO = todo_for($fx, "event:$e->{webhookId}:pending");
            ok(!same($row->{processed}, 1), "$fx: status event not processed");
            like($row->{error} // '', qr/not (?:found|known)/i,
                 "$fx: status event error says the message is not found");
            # the status and its recipient, kept in the event until the
            # message comes
            check_row($fx, 'status', $e->{status}{wamid},
                      $row->{statusObject} || {}, $e->{status},
                      "$fx: waiting event:", 1);
        } elsif (exists $e->{processed}) {
            local $TODO = todo_for($fx, "event:$e->{webhookId}:processed");
            ok(same($row->{processed}, $e->{processed}),
               "$fx: event processed = $e->{processed}")
                or diag("  error: " . show($row->{error}));
        }

        next unless exists $e->{message};
        my $m = $e->{message};
        my $msg = find_message($snap, $m->{wamid}, $row->{scope});
        ok($msg, "$fx: message row $m->{wamid}") or next;
        check_row($fx, 'message', $m->{wamid}, $msg, $m, "$fx:");
        is($msg->{webhookEventId}, $row->{id}, "$fx: message -> its event");
        is($msg->{organizationId}, 'org-test', "$fx: message organisation");

        if (defined $e->{media}) {
            my $md = defined $msg->{mediaId}
                   ? find_media_pk($snap, $msg->{mediaId}) : undef;
            local $TODO = todo_for($fx, "message:$m->{wamid}:mediaId");
            ok($md, "$fx: message points to a media row") or next;
            check_row($fx, 'media', $e->{media}{mediaId}, $md, $e->{media},
                      "$fx:");
        } else {
            local $TODO = todo_for($fx, "message:$m->{wamid}:mediaId");
            ok(!defined $msg->{mediaId}, "$fx: message has no media");
        }
    }

    # Meta's retry: the same bytes again
    my ($status2, $r2) = post_body($wire);
    is($status2, 200, "$fx: retry 200");
    {
        local $TODO = todo_for($fx, 'response:retry');
        is($r2 && $r2->{duplicate}, $n, "$fx: retry: $n duplicate");
        is($r2 && $r2->{inserted}, 0, "$fx: retry: nothing inserted");
    }
    my $counts2 = count_rows(snapshot());
    is_deeply($counts2, { %$counts, requests => $counts->{requests} + 1 },
              "$fx: retry: only a request row more");
}

# ----------------------------------------------------------------------
# 2. statuses of a known message

# an outbound message with that wamid, as Meta sends it: an echo of the
# business's number
sub echo_body {
    my ($fxjson, $wamid, $to) = @_;
    my $entry = $fxjson->{entry}[0];
    my $meta = $entry->{changes}[0]{value}{metadata};
    my $doc = {
        object => 'whatsapp_business_account',
        entry  => [ {
            id      => $entry->{id},
            changes => [ {
                field => 'smb_message_echoes',
                value => {
                    messaging_product => 'whatsapp',
                    metadata          => $meta,
                    message_echoes    => [ {
                        from      => $meta->{display_phone_number},
                        to        => $to,
                        id        => $wamid,
                        timestamp => '1700000000',
                        type      => 'text',
                        text      => { body => 'sent by the business' },
                    } ],
                },
            } ],
        } ],
    };
    (my $s = JSON::PP->new->ascii->canonical->encode($doc)) =~ s{/}{\\/}g;
    return $s;
}

sub check_statuses {
    my ($fx, $exp, $how) = @_;
    my $snap = snapshot();
    my @st = grep { $_->{eventType} eq 'status' } @{ $exp->{events} };
    {
        local $TODO = todo_for($fx, 'rows:statuses');
        is(scalar @{ $snap->{statuses} }, scalar @st,
           "$fx ($how): status rows");
    }
    for my $e (@st) {
        my $s = $e->{status};
        my $key = $e->{webhookId};
        my $ev = find_event($snap, $key);
        my @rows = grep { $_->{webhookEventId} eq ($ev ? $ev->{id} : '') }
                   @{ $snap->{statuses} };
        ok($ev && same($ev->{processed}, 1),
           "$fx ($how): status event processed")
            or diag('  error: ' . show($ev && $ev->{error}));
        ok(@rows == 1, "$fx ($how): one status row for $key") or next;
        check_row($fx, 'status', $s->{wamid}, $rows[0], $s, "$fx ($how):");
        my $msg = find_message($snap, $s->{wamid}, $ev->{scope});
        is($rows[0]{messageId}, $msg && $msg->{id},
           "$fx ($how): status -> its message");
        local $TODO = todo_for($fx, "status:$s->{wamid}:current");
        is($msg && $msg->{currentStatus}, $e->{current},
           "$fx ($how): currentStatus $e->{current}");
    }
}

for my $fx (@fixtures) {
    my $exp = $expect{$fx} or next;
    my @st = grep { $_->{eventType} eq 'status' } @{ $exp->{events} };
    next unless @st;
    my $fxjson = JSON::PP->new->decode($t->fixture($fx));
    my $wamid = $st[0]{status}{wamid};
    my $to = $st[0]{status}{recipientId} // '16505551234';
    my $echo = echo_body($fxjson, $wamid, $to);
    my $wire = $t->wire($fx);

    # the message first, then the status
    empty_db();
    my ($s1) = post_body($echo);
    is($s1, 200, "$fx (message first): echo 200");
    my ($s2, $r2) = post_body($wire);
    is($s2, 200, "$fx (message first): status 200");
    check_statuses($fx, $exp, 'message first');

    # the status first (kept waiting), then the message
    empty_db();
    ($s2) = post_body($wire);
    is($s2, 200, "$fx (status first): status 200");
    is(scalar @{ snapshot()->{statuses} }, 0,
       "$fx (status first): no status row yet");
    ($s1) = post_body($echo);
    is($s1, 200, "$fx (status first): echo 200");
    check_statuses($fx, $exp, 'status first');
}

# a message inserted by the platform itself (plain SQL, as superuser) picks
# up the statuses that waited for it
{
    my $fx = 'meta_status_failed_131049';
    my $exp = $expect{$fx};
    empty_db();
    my ($s) = post_body($t->wire($fx));
    is($s, 200, "$fx (SQL insert): status 200");
    $t->sql(q{
        INSERT INTO meta_cloud_messages ("wamid", "organizationId",
            "phoneNumberId", "direction", "from", "to", "type", "text",
            "timestamp", "sentAt")
        VALUES (:'v1', 'org-test', '106540352242922', 'OUTBOUND',
                '15550783881', '16505551234', 'TEXT', 'sent by the API',
                '1751142880', to_timestamp(1751142880))
    }, $exp->{events}[0]{status}{wamid});
    check_statuses($fx, $exp, 'SQL insert');
}

# ----------------------------------------------------------------------
# 3. one wamid, statuses out of order and repeated
#
# wamid.HBgL...MUMxMAA= is the status wamid of five fixtures.  Keys:
# delivered by user id (two fixtures share it), sent by phone (two
# fixtures share it), failed by phone.  currentStatus never goes down the
# ladder PENDING < SENT < FAILED < DELIVERED < READ < PLAYED.
{
    my $W = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=';
    empty_db();
    my $fxjson = JSON::PP->new->decode(
        $t->fixture('meta_status_sent_marketing_pmp'));
    my ($s) = post_body(echo_body($fxjson, $W, '16505551234'));
    is($s, 200, 'sequence: echo');

    my @steps = (
        # fixture, inserted, duplicate, status rows, currentStatus
        ['meta_bsuid_status_delivered_parent_bsuid_username', 1, 0, 1, 'DELIVERED'],
        ['meta_status_sent_marketing_pmp',                    1, 0, 2, 'DELIVERED'],
        ['meta_status_v24_no_conversation_no_pricing',        0, 1, 2, 'DELIVERED'],
        ['meta_bsuid_status_delivered_no_phone',              0, 1, 2, 'DELIVERED'],
        ['meta_bsuid_status_failed_no_contacts',              1, 0, 3, 'DELIVERED'],
    );
    for my $st (@steps) {
        my ($fx, $ins, $dup, $rows, $cur) = @$st;
        my ($status, $r) = post_body($t->wire($fx));
        is($status, 200, "sequence: $fx 200");
        is($r && $r->{inserted}, $ins, "sequence: $fx inserted $ins");
        is($r && $r->{duplicate}, $dup, "sequence: $fx duplicate $dup");
        my $snap = snapshot();
        is(scalar @{ $snap->{statuses} }, $rows, "sequence: $fx: $rows status rows");
        my $msg = find_message($snap, $W, '106540352242922');
        is($msg && $msg->{currentStatus}, $cur, "sequence: $fx: currentStatus $cur");
    }
}

# ----------------------------------------------------------------------
# 4. a history placeholder, then its media (history_media attaches it)
{
    my $P = 'wamid.QyNUEHBgLMTY0NjcwNDM1OTUVAgARGBI1Rj3NEYxMzAzMzQ5MkEA';
    empty_db();
    my ($s1) = post_body($t->wire('meta_history_threads_phase0'));
    my ($s2, $r2) = post_body($t->wire('meta_history_media_asset_follow_up'));
    is($s1, 200, 'history: threads 200');
    is($s2, 200, 'history: media follow-up 200');
    is($r2 && $r2->{inserted}, 1, 'history: the follow-up is a new event');
    my $snap = snapshot();
    my $c = count_rows($snap);
    is($c->{events}, 5, 'history: 5 events');
    is($c->{messages}, 4, 'history: still 4 messages (media attached)');
    is($c->{media}, 1, 'history: 1 media');
    my $msg = find_message($snap, $P, '106540352242922');
    my $md = $msg && defined $msg->{mediaId}
           ? find_media_pk($snap, $msg->{mediaId}) : undef;
    is($md && $md->{mediaId}, '24230790383178626',
       'history: the placeholder now points to its media');
    is($msg && $msg->{historyStatus}, 'PLAYED',
       'history: the placeholder keeps its history status');
}

done_testing;
