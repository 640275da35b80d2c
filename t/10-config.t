#!/usr/bin/perl
# t/10-config.t: every directive's bad values are refused by `nginx -t`
# with a message naming the directive; good configurations pass; the
# client_max_body_size warning.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;

my $t = MCTest->new(name => 'config', db => 0);

plan skip_all => 'module not built' unless $t->has_module;

# a working location; %s is replaced by the directives under test
my $good_loc = 'metacloud_webhook; metacloud_verify_token tok; '
    . 'metacloud_app_secret s1; client_max_body_size 4m;';

sub conf {
    my (%o) = @_;
    my $http = $o{http} // 'metacloud_db "host=/tmp dbname=x";';
    my $loc = $o{loc} // $good_loc;
    return "$http\nserver { listen 127.0.0.1:%%PORT%%;\n"
        . "location = /w { $loc } }\n";
}

sub refused {
    my ($conf, $re, $name) = @_;
    my ($rc, $out) = $t->nginx_t($conf);
    isnt($rc, 0, "$name: refused") or diag($out);
    like($out, $re, "$name: message") or diag($out);
}

sub accepted {
    my ($conf, $name) = @_;
    my ($rc, $out) = $t->nginx_t($conf);
    is($rc, 0, "$name: accepted") or diag($out);
    return $out;
}

# --- good configurations

my $out = accepted(conf(), 'minimal');
unlike($out, qr/client_max_body_size/, 'no body size warning at 4m');

accepted(conf(http => 'metacloud_db "host=127.0.0.1 port=5432 dbname=x"; '
    . 'metacloud_db_pool 8; metacloud_db_queue 0; metacloud_db_timeout 500ms;'),
    'numeric host, all http directives');
accepted(conf(http => 'metacloud_db "host=db.example.com '
    . 'hostaddr=127.0.0.1 dbname=x";'), 'host name with hostaddr');
accepted(conf(http => 'metacloud_db "postgresql:///x?host=/tmp";'),
    'URI with a socket directory');
accepted(conf(http => 'metacloud_db "host=::1 dbname=x";'), 'IPv6 host');
accepted(conf(loc => 'metacloud_webhook; metacloud_app_secret off; '
    . 'client_max_body_size 4m;'), 'metacloud_app_secret off');
accepted(conf(loc => 'metacloud_webhook; metacloud_app_secret a; '
    . 'metacloud_app_secret b; client_max_body_size 4m;'),
    'two secrets (rotation)');

accepted(conf(http => 'metacloud_db "host=/tmp"; '
    . 'metacloud_db_idle_timeout 90s;'), 'metacloud_db_idle_timeout');
{
    my ($rc, $o) = $t->nginx_t(conf(loc => "$good_loc metacloud_thread_pool "
        . 'mc; metacloud_thread_min_size 512k;'),
        main => 'thread_pool mc threads=2;');
    is($rc, 0, 'metacloud_thread_pool with a defined pool: accepted')
        or diag($o);
}
accepted(conf(loc => "$good_loc metacloud_thread_pool default;"),
    'metacloud_thread_pool default (defined by nginx)');
accepted(conf(loc => "$good_loc metacloud_thread_pool off;"),
    'metacloud_thread_pool off');

my $dir = $t->testdir;
open my $fh, '>', "$dir/secrets" or die $!;
print $fh "# current and previous\nnew-secret\r\n\n  old-secret  \n";
close $fh;
accepted(conf(loc => "metacloud_webhook; metacloud_app_secret_file "
    . "$dir/secrets; client_max_body_size 4m;"), 'secret file');

# inherited from the server level
accepted("metacloud_db \"host=/tmp\";\nserver { listen 127.0.0.1:%%PORT%%;"
    . " metacloud_app_secret s; metacloud_verify_token t;"
    . " client_max_body_size 4m; location = /w { metacloud_webhook; } }",
    'secret and token inherited');

# --- warnings

$out = accepted(conf(loc => 'metacloud_webhook; metacloud_verify_token t; '
    . 'metacloud_app_secret s;'), 'default client_max_body_size');
like($out, qr/\[warn\].*"client_max_body_size" is 1048576 .*3 MB/,
    'warning for a body limit under 3m');

$out = accepted(conf(loc => 'metacloud_webhook; metacloud_app_secret s; '
    . 'client_max_body_size 4m;'), 'no verify token');
like($out, qr/\[warn\].*metacloud_verify_token/, 'warning without a token');

# --- refused

refused(conf(loc => 'metacloud_webhook; client_max_body_size 4m;'),
    qr/metacloud_app_secret/, 'no secret');
refused(conf(http => ''), qr/"metacloud_webhook" needs "metacloud_db"/,
    'no metacloud_db');
refused(conf(http => 'metacloud_db "host=db.example.com dbname=x";'),
    qr/"metacloud_db" host "db.example.com" is a name/, 'host name');
refused(conf(http => 'metacloud_db "host=/tmp,db.example.com";'),
    qr/"metacloud_db" host "db.example.com"/, 'host name in a list');
refused(conf(http => 'metacloud_db "dbname=x nosuchoption=1";'),
    qr/invalid "metacloud_db" conninfo: .*nosuchoption/, 'bad conninfo');
refused(conf(http => 'metacloud_db "host=/tmp"; metacloud_db "host=/tmp";'),
    qr/"metacloud_db" directive is duplicate/, 'metacloud_db twice');
refused(conf(http => 'metacloud_db "host=/tmp"; metacloud_db_pool 0;'),
    qr/"metacloud_db_pool" must be between 1 and 1024/,
    'pool 0');
refused(conf(http => 'metacloud_db "host=/tmp"; metacloud_db_pool many;'),
    qr/"metacloud_db_pool" directive invalid number/, 'pool not a number');
refused(conf(http => 'metacloud_db "host=/tmp"; metacloud_db_queue -1;'),
    qr/"metacloud_db_queue" directive invalid number/, 'negative queue');
refused(conf(http => 'metacloud_db "host=/tmp"; metacloud_db_timeout soon;'),
    qr/"metacloud_db_timeout" directive invalid value/, 'bad timeout');
refused(conf(http => 'metacloud_db "host=/tmp"; metacloud_db_timeout 0;'),
    qr/"metacloud_db_timeout" must be more than 0/, 'zero timeout');
refused(conf(http => 'metacloud_db "host=/tmp"; '
    . 'metacloud_db_idle_timeout never;'),
    qr/"metacloud_db_idle_timeout" directive invalid value/,
    'bad idle timeout');
refused(conf(http => 'metacloud_db "host=/tmp"; metacloud_db_idle_timeout 0;'),
    qr/"metacloud_db_idle_timeout" must be more than 0/, 'zero idle timeout');
refused(conf(loc => "$good_loc metacloud_thread_pool nosuchpool;"),
    qr/unknown thread pool "nosuchpool"/, 'undefined thread pool');
refused(conf(loc => "$good_loc metacloud_thread_pool default; "
    . 'metacloud_thread_pool default;'),
    qr/"metacloud_thread_pool" directive is duplicate/, 'thread pool twice');
refused(conf(loc => "$good_loc metacloud_thread_min_size big;"),
    qr/"metacloud_thread_min_size" directive invalid value/,
    'bad thread min size');
refused(conf(loc => 'metacloud_webhook; metacloud_app_secret s; '
    . 'metacloud_app_secret off;'), qr/"metacloud_app_secret" directive/,
    'secret and off');
refused(conf(loc => 'metacloud_webhook; metacloud_verify_token ""; '
    . 'metacloud_app_secret s;'),
    qr/"metacloud_verify_token" directive must not be empty/, 'empty token');
refused(conf(loc => 'metacloud_webhook; metacloud_app_secret "";'),
    qr/"metacloud_app_secret" directive empty secret/, 'empty secret');
refused(conf(loc => 'metacloud_webhook; metacloud_app_secret_file '
    . "$dir/nonexistent;"), qr/"metacloud_app_secret_file": open\(\) ".*nonexistent" failed/,
    'missing secret file');

open $fh, '>', "$dir/empty" or die $!;
print $fh "# nothing here\n\n";
close $fh;
refused(conf(loc => "metacloud_webhook; metacloud_app_secret_file "
    . "$dir/empty;"), qr/"metacloud_app_secret_file" ".*empty" holds no secret/,
    'secret file without a secret');
refused(conf(loc => 'metacloud_webhook; metacloud_webhook; '
    . 'metacloud_app_secret s;'), qr/"metacloud_webhook" directive is dup/,
    'metacloud_webhook twice');
refused(conf(loc => 'metacloud_webhook on; metacloud_app_secret s;'),
    qr/invalid number of arguments in "metacloud_webhook"/,
    'metacloud_webhook takes no argument');
refused("server { listen 127.0.0.1:%%PORT%%; location / {"
    . " metacloud_db \"host=/tmp\"; } }",
    qr/"metacloud_db" directive is not allowed here/, 'db in a location');

done_testing;
