#!/usr/bin/perl
# t/48-group-commit.t: metacloud_db_group, deliveries that wait for a
# connection go together, in one transaction (sql/011, docs/SQL.md "Group
# commit").  One worker, a pool of 2, groups of up to 8.  In each section a
# superuser session holds EXCLUSIVE on meta_cloud_webhook_requests (every
# delivery ends with an INSERT into it), one delivery is sent and seen
# waiting on that lock in PostgreSQL, then more are sent and seen waiting
# in the worker's queue (the status page), then the lock is released:
#
#   1. five deliveries behind the first: all 200, each answer's rawId is
#      the raw row of its own body (byte-exact), the five rows were written
#      by one transaction, the first by another (a trigger of the suite
#      records txid_current() for each raw row: the top transaction's id); the access log's
#      $metacloud_organization names the organisation for each;
#   2. a delivery that fails on its own (a trigger raises for its text)
#      inside a group: it alone gets 503 "database error" and leaves no
#      row, the others 200 and committed together;
#   3. a group that fails as a whole (the trigger raises deadlock_detected
#      once, as a deadlock with another group would): a warning, then each
#      delivery is sent again alone: all 200, each stored once, each in a
#      transaction of its own;
#   4. a delivery of more than 10 events goes alone and nobody waits for
#      it: behind such a delivery held on the lock, a small one takes the
#      second connection (two backends on the lock, none in the queue);
#   5. the connection of a group is lost (pg_terminate_backend) while two
#      deliveries wait in the queue for it: its delivery gets 503, the two
#      go on to the idle connection at once (no new connection opened by
#      the retry timer), and are stored;
#   6. metacloud_db_group 0 and 65 are refused by nginx -t.
#
# After each of 1 to 4, the status page's group counters (JSON and
# Prometheus alike): groups sent, their queries, groups failed as a whole.
#
# Run: make test T=t/48-group-commit.t   (PROVE_FLAGS=-v for every check)
#
# mc-valgrind: this suite runs a second time under valgrind in `make test`
# (the group's arrays and the results split from its answer).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time sleep);
use MCTest;
use MCBridge;

my $t = MCTest->new(name => 'group_commit');
plan skip_all => 'module not built' unless $t->has_module;

my $b = MCBridge->new($t);
my $JSON = $b->json;
my $URI = $MCBridge::URI;
my $tf = $t->timeout_factor;
my $STATUS = '/metacloud/status';

$t->write_conf(<<"EOF");
metacloud_db "%%DB%%";
metacloud_db_pool 2;
metacloud_db_group 8;
metacloud_db_timeout 60s;
metacloud_metrics on;
log_format org '\$metacloud_organization \$status';
server {
    listen 127.0.0.1:%%PORT%%;
    location = $URI {
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        access_log %%TESTDIR%%/logs/org.log org;
    }
    location = $STATUS {
        metacloud_status;
    }
}
EOF
$t->run;
$t->sql(q{SELECT metacloud_add_phone_number('org-test', :'v1', :'v2', 'tok')},
        $MCBridge::PHONE, $MCBridge::WABA);

# the transaction of each raw row (the top one's: a group's deliveries are
# sub-transactions, each with an xmin of its own)
$t->sql(q{
    CREATE TABLE group_test_tx ("id" text PRIMARY KEY, tx bigint);
    CREATE FUNCTION group_test_tx() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO group_test_tx VALUES (NEW."id", txid_current());
        RETURN NULL;
    END $$;
    CREATE TRIGGER group_test_tx AFTER INSERT ON meta_cloud_webhook_requests
        FOR EACH ROW EXECUTE FUNCTION group_test_tx();
});

my $n = 0;

# a text message of its own (unique wamid and sender)
sub text_body {
    my ($text) = @_;
    $n++;
    my $from = sprintf('1650555%04d', $n);
    return $b->body('meta_text',
                    contacts => MCBridge::contact("Group $n", $from),
                    item => sub {
                        my ($item) = @_;
                        $item->{id} = "wamid.GROUP-COMMIT-$n";
                        $item->{from} = $from;
                        $item->{text}{body} = $text;
                    });
}

# the module's backends: [pid, 't' when it waits on a lock], by pid
sub module_backends {
    return $t->sql(q{SELECT pid, wait_event_type = 'Lock' FROM pg_stat_activity
        WHERE usename = 'metacloud_module'
          AND datname = current_database() ORDER BY pid});
}

sub module_backends_on_lock {
    return scalar grep { $_->[1] eq 't' } @{ module_backends() };
}

sub queue_waiting {
    my ($st, $h, $body) = $t->http_get("$STATUS?format=json");
    my $j = $st == 200 ? eval { $JSON->decode($body) } : undef;
    return $j ? $j->{db}{waiting} : -1;
}

# the group counters: [sent, queries, failed] from the status page's JSON,
# and the same three from its Prometheus text
sub groups {
    my ($st, $h, $body) = $t->http_get("$STATUS?format=json");
    my $j = $st == 200 ? eval { $JSON->decode($body) } : undef;
    my $g = $j ? $j->{db}{groups} : {};
    my @json = map { $g->{$_} // -1 } qw(sent queries failed);

    ($st, $h, $body) = $t->http_get($STATUS);
    my @prom = map { $body =~ /^metacloud_db_${_}_total (\d+)$/m ? $1 : -1 }
               qw(groups grouped_queries groups_failed);

    is_deeply(\@prom, \@json, 'the Prometheus counters are the JSON ones');
    return \@json;
}

sub wait_for {
    my ($what, $want, $label) = @_;
    my $got;
    my $deadline = time + 30 * $tf;
    while (time < $deadline) {
        $got = $what->();
        last if $got == $want;
        sleep 0.05;
    }
    is($got, $want, $label);
}

# held($label, $first, [@rest]): the held-lock sequence of the header;
# returns the answers [status, decoded, raw], the first's first
sub held {
    my ($label, $first, $rest) = @_;

    $b->hold($label, 'meta_cloud_webhook_requests');

    my @socks = ($t->post_signed($URI, $first, nowait => 1, timeout => 60));
    wait_for(\&module_backends_on_lock, 1,
             "$label: the first delivery waits on the lock in PostgreSQL");

    push @socks, map { $t->post_signed($URI, $_, nowait => 1, timeout => 60) }
                 @$rest;
    wait_for(\&queue_waiting, scalar @$rest,
             "$label: the others wait in the worker's queue");
    is(module_backends_on_lock(), 1,
       "$label: still one delivery in PostgreSQL (the second connection "
       . "stays idle)");

    $b->release($label);

    return map {
        my ($st, $h, $body) = $t->response($_);
        [$st, eval { $JSON->decode($body) }, $t->last_response]
    } @socks;
}

# the raw row of an answer: (sha256 hex, its transaction)
sub raw_row {
    my ($doc) = @_;
    my $r = $t->sql(q{SELECT encode(r."sha256", 'hex'), x.tx
                        FROM meta_cloud_webhook_requests r
                        JOIN group_test_tx x USING ("id")
                       WHERE r."id" = :'v1'},
                    $doc && $doc->{rawId} // '');
    return @{ $r->[0] // [] };
}

sub messages_with_text {
    my ($text) = @_;
    return $t->sql1(q{SELECT count(*) FROM meta_cloud_messages
                       WHERE "text" = :'v1'}, $text);
}

# ======================================================================
# 1. a group of five behind a first delivery

my @bodies = map { text_body("group one $_") } 0 .. 5;
my @ans = held('group', $bodies[0], [@bodies[1 .. 5]]);

my (%tx, $first_tx);
for my $i (0 .. 5) {
    my ($st, $doc, $raw) = @{ $ans[$i] };
    is($st, 200, "group: delivery $i 200") or diag($raw);
    is($doc && $doc->{inserted}, 1, "group: delivery $i inserted its event");
    my ($sha, $tx) = raw_row($doc);
    is($sha, sha256_hex($bodies[$i]),
       "group: delivery $i answered with the raw row of its own body");
    if ($i == 0) {
        $first_tx = $tx;
    } else {
        $tx{$tx // ''}++;
    }
    is(messages_with_text("group one $i"), 1,
       "group: delivery ${i}'s message stored once");
}
is(scalar keys %tx, 1, 'group: the five were written by one transaction');
ok(defined $first_tx && !$tx{$first_tx},
   'group: the first by a transaction of its own');
is_deeply($t->sql(q{SELECT "body" = convert_to(:'v1', 'UTF8')
                      FROM meta_cloud_webhook_requests
                     WHERE "sha256" = sha256(convert_to(:'v1', 'UTF8'))},
                  $bodies[3]),
          [['t']], 'group: a grouped body stored byte-exact');
is($t->sql1(q{SELECT count(*) FROM "Message" m
               JOIN meta_cloud_messages c ON c."messageId" = m."id"
              WHERE c."text" LIKE 'group one %'}), 6,
   'group: each message bridged');

my $org_log = $t->testdir . '/logs/org.log';
my @org = -f $org_log ? grep { /\S/ } split /\n/, MCTest::_read_file($org_log)
                      : ();
is_deeply(\@org, [('org-test 200') x 6],
          'group: $metacloud_organization for every delivery of the group');
is_deeply(groups(), [1, 5, 0],
          'group: counted as one group of five (the first went alone)');

# ======================================================================
# 2. one delivery of the group fails on its own

$t->sql(q{
    CREATE FUNCTION group_test_boom() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF position('group boom' IN convert_from(NEW."body", 'UTF8')) > 0
        THEN
            RAISE EXCEPTION 'group test: this delivery fails';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER group_test_boom BEFORE INSERT
        ON meta_cloud_webhook_requests
        FOR EACH ROW EXECUTE FUNCTION group_test_boom();
});

@bodies = (text_body('group two 0'), text_body('group two 1'),
           text_body('group boom'), text_body('group two 3'));
@ans = held('one fails', $bodies[0], [@bodies[1 .. 3]]);

is($ans[2][0], 503, 'one fails: that delivery 503');
like($ans[2][2], qr/database error/, 'one fails: "database error"');
is(messages_with_text('group boom'), 0, 'one fails: none of its rows');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_requests
               WHERE "sha256" = sha256(convert_to(:'v1', 'UTF8'))},
            $bodies[2]), 0, 'one fails: no raw row');

%tx = ();
for my $i (0, 1, 3) {
    my ($st, $doc, $raw) = @{ $ans[$i] };
    is($st, 200, "one fails: delivery $i 200") or diag($raw);
    my ($sha, $tx) = raw_row($doc);
    is($sha, sha256_hex($bodies[$i]), "one fails: delivery $i its own row");
    $tx{$tx // ''}++ if $i;
    is(messages_with_text("group two $i"), 1, "one fails: delivery $i stored");
}
is(scalar keys %tx, 1, 'one fails: the other two committed together');
ok($t->_wait_log(qr/\[error\].*group test: this delivery fails/, 1, 10 * $tf),
   'one fails: its error logged');
is_deeply(groups(), [2, 8, 0],
          'one fails: a group of three, none failed as a whole');

# ======================================================================
# 3. the group fails as a whole, once: each goes again alone

$t->sql(q{
    CREATE SEQUENCE group_test_once;
    CREATE OR REPLACE FUNCTION group_test_boom() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF position('group deadlock' IN convert_from(NEW."body", 'UTF8')) > 0
           AND nextval('group_test_once') = 1
        THEN
            RAISE EXCEPTION 'group test: a deadlock'
                USING ERRCODE = 'deadlock_detected';
        END IF;
        RETURN NEW;
    END $$;
});

@bodies = (text_body('group three 0'), text_body('group three 1'),
           text_body('group deadlock'), text_body('group three 3'));
@ans = held('whole group fails', $bodies[0], [@bodies[1 .. 3]]);

%tx = ();
for my $i (0 .. 3) {
    my ($st, $doc, $raw) = @{ $ans[$i] };
    is($st, 200, "whole group fails: delivery $i 200") or diag($raw);
    my ($sha, $tx) = raw_row($doc);
    is($sha, sha256_hex($bodies[$i]),
       "whole group fails: delivery $i its own row");
    $tx{$tx // ''}++ if $i;
}
is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
               WHERE "text" IN ('group three 1', 'group deadlock',
                                'group three 3')}), 3,
   'whole group fails: each message once');
is($t->sql1(q{SELECT count(*) FROM meta_cloud_webhook_requests
               WHERE convert_from("body", 'UTF8') LIKE '%group three 1%'}), 1,
   'whole group fails: one raw row each (the group left none)');
is(scalar keys %tx, 3, 'whole group fails: then one transaction each')
    or diag($JSON->encode($t->sql(q{SELECT x.tx,
                   substring(convert_from(r."body", 'UTF8')
                             FROM 'group (three .|deadlock)')
              FROM meta_cloud_webhook_requests r JOIN group_test_tx x USING ("id")
             WHERE convert_from(r."body", 'UTF8') ~ 'group (three|deadlock)'
             ORDER BY 1})));
ok($t->_wait_log(qr/\[warn\].*group test: a deadlock.*\(a group of 3, sent again one by one\)/,
                 1, 10 * $tf),
   'whole group fails: a warning names the group');
is_deeply(groups(), [3, 11, 1],
          'whole group fails: a group of three, failed; not its retries');

# ======================================================================
# 4. a big delivery goes alone

{
    my $big_from = '16505559999';
    my $big = $b->body('meta_text',
                       contacts => MCBridge::contact('Big', $big_from),
                       item => sub {
                           my ($item, $value) = @_;
                           $value->{messages} = [ map { {
                               %$item, id => "wamid.GROUP-BIG-$_",
                               from => $big_from,
                               text => { body => "group big $_" } } } 1 .. 11 ];
                       });
    my $small = text_body('group four');

    $b->hold('big', 'meta_cloud_webhook_requests');

    my @socks = ($t->post_signed($URI, $big, nowait => 1, timeout => 60));
    wait_for(\&module_backends_on_lock, 1, 'big: the big delivery on the lock');
    push @socks, $t->post_signed($URI, $small, nowait => 1, timeout => 60);
    wait_for(\&module_backends_on_lock, 2,
             'big: the small one did not wait for it: on the lock too');
    is(queue_waiting(), 0, 'big: nothing in the queue');

    $b->release('big');

    my @a = map { my ($st) = $t->response($_); $st } @socks;
    is_deeply(\@a, [200, 200], 'big: both 200');
    is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
                   WHERE "text" LIKE 'group big %'}), 11,
       'big: its 11 messages');
    is(messages_with_text('group four'), 1, 'big: the small one stored');
    is_deeply(groups(), [3, 11, 1], 'big: no group');
}

# ======================================================================
# 5. the connection of a group lost while more wait for it: they go to the
# other connection at once, not when the pool's retry timer fires (which
# would open a new connection for them)

{
    is(scalar @{ module_backends() }, 2,
       'lost: both connections open (section 4 used two at once)');

    my @bodies = map { text_body("group lost $_") } 0 .. 2;

    $b->hold('lost', 'meta_cloud_webhook_requests');

    my @socks = ($t->post_signed($URI, $bodies[0], nowait => 1, timeout => 60));
    wait_for(\&module_backends_on_lock, 1, 'lost: the first on the lock');
    push @socks, map { $t->post_signed($URI, $_, nowait => 1, timeout => 60) }
                 @bodies[1, 2];
    wait_for(\&queue_waiting, 2, 'lost: two wait in the queue for it');

    my ($held) = map { $_->[0] } grep { $_->[1] eq 't' } @{ module_backends() };
    my ($other) = map { $_->[0] } grep { $_->[1] ne 't' } @{ module_backends() };
    ok($held && $other, "lost: the held backend ($held) and the idle one "
                        . "($other)");
    is($t->sql1(q{SELECT pg_terminate_backend(:'v1')}, $held), 't',
       'lost: the held backend terminated');

    my ($st) = $t->response(shift @socks);
    is($st, 503, 'lost: its delivery 503');

    wait_for(\&module_backends_on_lock, 1,
             'lost: the two waiting went on to PostgreSQL');
    is(queue_waiting(), 0, 'lost: nothing left in the queue');
    sleep 0.5 * $tf;   # past the first retry (100 ms), had it been needed
    is_deeply(module_backends(), [[$other, 't']],
              'lost: on the idle connection, no new one opened');

    $b->release('lost');

    my @a = map { my ($s) = $t->response($_); $s } @socks;
    is_deeply(\@a, [200, 200], 'lost: both 200');
    is($t->sql1(q{SELECT count(*) FROM meta_cloud_messages
                   WHERE "text" IN ('group lost 1', 'group lost 2')}), 2,
       'lost: both stored');
    is(messages_with_text('group lost 0'), 0,
       'lost: nothing of the lost delivery (Meta retries it)');
    ok($t->_wait_log(qr/\[error\].*terminating connection due to administrator command/,
                     1, 10 * $tf), 'lost: the loss logged');
}

# ======================================================================
# 6. bounds

for my $v (0, 65) {
    my ($rc, $out) = $t->nginx_t("metacloud_db_group $v;\n");
    isnt($rc, 0, "metacloud_db_group $v: refused");
}

$t->stop;
is($t->_count_log(qr/\[(?:alert|emerg|crit)\]/), 0, 'no alert in the error log');

done_testing();
