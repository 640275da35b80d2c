#!/usr/bin/perl
# t/91-status-page.t: the HTML page of metacloud_status (?format=html) in
# headless Chromium (Debian package "chromium").
#
# After a known mix of deliveries, Chromium loads the page, lets its script
# poll ?format=json (--virtual-time-budget: the page's timers run, twice),
# and dumps the DOM: the figures it shows are the ones the server counted,
# not the "-" of a page whose script did not run.  A screenshot is saved
# in the test's temp dir (logs/status.png; kept with MC_KEEP=1).  The page
# is self-contained: no external script, style, font or image.
#
# Run: make test T=t/91-status-page.t
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;

my $t = MCTest->new(name => 'status_page');
plan skip_all => 'module not built' unless $t->has_module;

my ($chromium) = grep { -x } qw(/usr/bin/chromium /usr/bin/chromium-browser);
plan skip_all => 'no chromium (make deps)' unless $chromium;

my $URI = $MCTest::WEBHOOK_URI;
my $WAMID = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=';

$t->write_conf(<<'EOF');
metacloud_db "%%DB%%";
server {
    listen 127.0.0.1:%%PORT%%;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
    }
    location = /status {
        metacloud_status;
        allow 127.0.0.1;
        deny all;
    }
}
EOF

$t->sql(q{SELECT metacloud_add_phone_number('org-test', '106540352242922',
                                            '102290129340398', 'tok')});
$t->run;

# the page itself
my ($st, $h, $html) = $t->http_get('/status?format=html');
is($st, 200, 'html: 200');
like($h->{'content-type'}, qr{^text/html}, 'html: content type');
unlike($html, qr{(?:src|href)\s*=|\@import|url\(|https?://}i,
       'html: nothing external (no src, href, import, url)');
like($html, qr/\?format=json/, 'html: polls the JSON');

# traffic: 5 stored, 2 duplicates, 1 bad signature
my $text = $t->wire('meta_text');
for my $i (1 .. 5) {
    (my $b = $text) =~ s/\Q$WAMID\E/wamid.PAGE$$-$i/;
    is(scalar $t->post_signed($URI, $b), 200, "delivery $i");
    is(scalar $t->post_signed($URI, $b), 200, "delivery $i again")
        if $i <= 2;
}
is(scalar $t->post_signed($URI, $text, secret => 'wrong'), 401,
   'bad signature');

my $dir = $t->testdir;
my @flags = ('--headless', '--no-sandbox', '--disable-gpu',
             '--disable-dev-shm-usage', '--no-first-run',
             "--user-data-dir=$dir/chromium", '--window-size=1100,1500',
             '--virtual-time-budget=10000');
my $url = $t->url('/status?format=html');

my ($rc, $dom, $err) = MCTest::_run([$chromium, @flags, '--dump-dom', $url]);
is($rc, 0, 'chromium --dump-dom') or diag($err);

sub shown {
    my ($id) = @_;
    return $dom =~ m{id="\Q$id\E"[^>]*>([^<]*)<} ? $1 : undef;
}

is(shown('req-total'), 8, 'page: 8 requests');
is(shown('req-ok'), 7, 'page: 7 answered 200');
like(shown('req-rate'), qr/^\d+\.\d$/, 'page: a rate (two polls ran)');
like(shown('lat-p50'), qr/^\d+(?:\.\d+)?$/, 'page: a p50 latency');
like(shown('state'), qr/^updated /, 'page: updated by its script');
like($dom, qr{<tr id="events-message"><td>message</td><td>5</td><td>2</td>},
     'page: message events, 5 inserted, 2 duplicates');
like($dom, qr{<td>bad_signature</td><td>401</td><td>1</td>},
     'page: the bad signature');

($rc, undef, $err) = MCTest::_run([$chromium, @flags,
                                   "--screenshot=$dir/logs/status.png", $url]);
is($rc, 0, 'chromium --screenshot') or diag($err);
my $png = -f "$dir/logs/status.png"
          ? MCTest::_read_file("$dir/logs/status.png") : '';
like($png, qr/^\x89PNG\r\n/, "screenshot saved: $dir/logs/status.png");
cmp_ok(length $png, '>', 10000, 'screenshot: not blank');

done_testing;
