#!/usr/bin/perl

# Writes signed, unique webhook bodies for the benchmark, one a line:
# "<X-Hub-Signature-256 value> <body>".  Each body carries new wamids, so
# what the benchmark measures is the insert path, not the duplicate one.
#
#   gen-bodies.pl text|statuses|large|big COUNT SECRET [FIRST] > FILE
#
# large: bodies of about 3 MB (Meta's limit), 2,000 text messages of 1.4 kB
# each, for the large-body case of scripts/bench.
# big: 1,000 short text messages a body (about 330 kB), for the 1,000-event
# case of scripts/bench.
# FIRST (1) is the number of the first body: runs that share a database
# take disjoint ranges (scripts/bench-compare, one range per round).

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);

my ($kind, $count, $secret, $first) = @ARGV;
die "usage: $0 text|statuses|large|big COUNT SECRET [FIRST]\n"
    unless defined $secret && $kind =~ /^(text|statuses|large|big)$/;
$first //= 1;

my $pnid = '106540352242922';
my $ts = 1749416383;

sub wamid {
    my ($n) = @_;
    return sprintf('wamid.BENCH%s%012d', uc substr($kind, 0, 1), $n);
}

sub envelope {
    my ($value) = @_;
    return '{"object":"whatsapp_business_account","entry":[{"id":'
        . '"102290129340398","changes":[{"value":{"messaging_product":'
        . '"whatsapp","metadata":{"display_phone_number":"15550783881",'
        . '"phone_number_id":"' . $pnid . '"},' . $value
        . '},"field":"messages"}]}]}';
}

$| = 0;

for my $i ($first .. $first + $count - 1) {
    my $body;

    if ($kind eq 'text') {
        my $from = sprintf('5511%09d', $i % 1000000);
        $body = envelope('"contacts":[{"profile":{"name":"Bench User '
            . $i . '"},"wa_id":"' . $from . '"}],"messages":[{"from":"'
            . $from . '","id":"' . wamid($i) . '","timestamp":"'
            . ($ts + $i) . '","type":"text","text":{"body":"Ol\u00e1, '
            . 'pedido ' . $i . ' \/ does it come in another color?"}}]');

    } elsif ($kind eq 'large' || $kind eq 'big') {
        my ($per, $pad) = $kind eq 'large' ? (2000, 'x' x 1400) : (1000, '');
        my (@c, @m);
        for my $j (1 .. $per) {
            my $n = ($i - 1) * $per + $j;
            my $from = sprintf('5511%09d', $n % 1000000);
            push @c, '{"profile":{"name":"Bench User ' . $n . '"},"wa_id":"'
                . $from . '"}';
            push @m, '{"from":"' . $from . '","id":"' . wamid($n)
                . '","timestamp":"' . ($ts + $n) . '","type":"text",'
                . '"text":{"body":"pedido ' . $n . ' ' . $pad . '"}}';
        }
        $body = envelope('"contacts":[' . join(',', @c) . '],"messages":['
            . join(',', @m) . ']');

    } else {
        my @st;
        for my $j (1 .. 50) {
            my $n = ($i - 1) * 50 + $j;
            push @st, '{"id":"' . wamid($n) . '","status":"delivered",'
                . '"timestamp":"' . ($ts + $n) . '","recipient_id":"'
                . sprintf('5511%09d', $n % 1000000) . '","pricing":'
                . '{"billable":true,"pricing_model":"PMP","category":'
                . '"utility","type":"regular"}}';
        }
        $body = envelope('"statuses":[' . join(',', @st) . ']');
    }

    print 'sha256=', hmac_sha256_hex($body, $secret), ' ', $body, "\n";
}
