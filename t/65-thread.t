#!/usr/bin/perl
# t/65-thread.t: large bodies normalised in an nginx thread pool
# (metacloud_thread_pool, metacloud_thread_min_size):
#
#   - a body over metacloud_thread_min_size goes to the pool (nginx's debug
#     log shows the task), one under it and any body of a location without
#     a pool are normalised inline;
#   - the pool gives the same rows as inline normalisation: two ~600 kB
#     batches of 400 messages that differ only in their wamids, one through
#     each path (the pool's read from a temporary file, the inline one from
#     memory), store the same messages and event payloads;
#   - a client that sends a large body and closes at once: the task
#     finishes, the worker (the same pid) goes on serving, the body is
#     stored (Meta's retry would be a duplicate), and under valgrind
#     nothing leaks.
#
# Run: make test T=t/65-thread.t
# mc-valgrind
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use MCTest;

my $t = MCTest->new(name => 'thread');
plan skip_all => 'module not built' unless $t->has_module;

my $URI = $MCTest::WEBHOOK_URI;
my $tf = $t->timeout_factor;
my $JSON = JSON::PP->new;
my $N = 400;

$t->write_conf(<<'EOF', main => 'thread_pool mcnorm threads=2;',
metacloud_db "%%DB%%";
metacloud_db_timeout 30s;
server {
    listen 127.0.0.1:%%PORT%%;
    client_max_body_size 4m;

    location = /pool {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
        metacloud_thread_pool mcnorm;
        metacloud_thread_min_size 256k;
    }
    location = /inline {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
        client_body_buffer_size 4m;
    }
}
EOF
    error_log_level => 'debug');
$t->run;

$t->sql(q{SELECT metacloud_add_phone_number('org-test', '106540352242922',
    '102290129340398', 'tok')});

# a batch of $N text messages of ~1.4 kB each, wamids wamid.<prefix>-<i>
sub batch {
    my ($prefix) = @_;
    my (@msgs, @contacts);
    for my $i (1 .. $N) {
        my $from = sprintf('5511%09d', $i);
        push @contacts, { profile => { name => "User $i" }, wa_id => $from };
        push @msgs, { from => $from, id => "wamid.$prefix-$i",
            timestamp => '' . (1749416383 + $i), type => 'text',
            text => { body => "pedido $i: " . ('\u00e9' x 1) . ('x' x 1400) } };
    }
    return $JSON->canonical->encode({ object => 'whatsapp_business_account',
        entry => [{ id => '102290129340398', changes => [{ field => 'messages',
            value => { messaging_product => 'whatsapp',
                metadata => { display_phone_number => '15550783881',
                              phone_number_id => '106540352242922' },
                contacts => \@contacts, messages => \@msgs } }] }] });
}

sub tasks {
    my @n = $t->error_log =~ /task #\d+ added to thread pool "mcnorm"/g;
    return scalar @n;
}

sub rows {
    my ($prefix) = @_;
    return $t->sql(qq{SELECT replace(wamid, 'wamid.$prefix-', ''), type,
        "from", text, "timestamp" FROM meta_cloud_messages
        WHERE wamid LIKE 'wamid.$prefix-%' ORDER BY 1});
}

sub payloads {
    my ($prefix) = @_;
    return $t->sql(qq{SELECT replace("webhookId", 'wamid.$prefix-', ''),
        replace(payload::text, 'wamid.$prefix-', '') FROM
        meta_cloud_webhook_events WHERE "webhookId" LIKE
        'msg:wamid.$prefix-%' ORDER BY 1});
}

my $pool_body = batch('POOL');
my $inline_body = batch('INLINE');
cmp_ok(length $pool_body, '>', 512 * 1024, 'the batch is over 512 kB ('
    . length($pool_body) . ' bytes)');

# --- through the pool, and inline

my ($st, $h, $b) = $t->post_signed('/pool', $pool_body, timeout => 60 * $tf);
is($st, 200, 'large body in the thread pool: 200') or diag($b);
my $doc = eval { $JSON->decode($b) } // {};
is($doc->{inserted}, $N, "thread pool: $N events inserted");
is(tasks(), 1, 'one task went to the thread pool');

($st, $h, $b) = $t->post_signed('/inline', $inline_body, timeout => 60 * $tf);
is($st, 200, 'large body inline (no pool in the location): 200') or diag($b);
is(eval { $JSON->decode($b)->{inserted} }, $N, "inline: $N events inserted");
is(tasks(), 1, 'no task for a location without a pool');

my $small = $t->wire('meta_text');
is(scalar $t->post_signed('/pool', $small), 200,
    'small body in a location with a pool: 200');
is(tasks(), 1, 'no task for a body under metacloud_thread_min_size');

my $pool_rows = rows('POOL');
is(scalar @$pool_rows, $N, "thread pool: $N messages");
is_deeply($pool_rows, rows('INLINE'),
    'the pool and inline normalisation store the same messages');
is_deeply(payloads('POOL'), payloads('INLINE'),
    'and the same event payloads');

# a retry of the pool's body through the pool: all duplicates
($st, $h, $b) = $t->post_signed('/pool', $pool_body, timeout => 60 * $tf);
is(eval { $JSON->decode($b)->{duplicate} }, $N,
    'the same body again through the pool: all duplicates');

# --- a client that goes away while its body is normalised

my ($worker) = $t->worker_pids;
my $gone = batch('GONE');
my $raw = "POST /pool HTTP/1.1\r\nHost: localhost\r\n"
    . "Content-Type: application/json\r\n"
    . 'X-Hub-Signature-256: ' . $t->sign($gone) . "\r\n"
    . 'Content-Length: ' . length($gone) . "\r\nConnection: close\r\n\r\n"
    . $gone;
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
    PeerPort => $t->port, Proto => 'tcp') or die "connect: $!";
print $sock $raw;
close $sock;

my $deadline = time + 60 * $tf;
my $stored = 0;
while (time < $deadline) {
    $stored = $t->sql1(q{SELECT count(*) FROM meta_cloud_messages
        WHERE wamid LIKE 'wamid.GONE-%'});
    last if $stored == $N;
    sleep 0.2;
}
is($stored, $N, 'client gone mid-task: the body was still stored');
is(scalar $t->post_signed('/pool', $small), 200,
    'client gone mid-task: the worker goes on serving');
is(join(',', $t->worker_pids), $worker, 'the same worker (no crash)');
is(tasks(), 3, 'every large body to /pool was a task');
unlike($t->error_log, qr/\[(alert|emerg|crit)\]/, 'no alert in the log');

done_testing;
