#!/usr/bin/perl
# t/92-alerts.t: contrib/prometheus/metacloud-alerts.yml is valid
# (`promtool check rules`) and each alert fires on the synthetic series of
# metacloud-alerts.test.yml that break its rule, and stays silent on those
# that do not (`promtool test rules`).  promtool: Debian package
# "prometheus" (scripts/deps).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MCTest;

my $t = MCTest->new(name => 'alerts', db => 0);
my $dir = $t->root . '/contrib/prometheus';
my $promtool = '/usr/bin/promtool';

plan skip_all => "no $promtool (make deps)" unless -x $promtool;

my ($rc, $out, $err) = MCTest::_run([$promtool, 'check', 'rules',
                                     "$dir/metacloud-alerts.yml"]);
is($rc, 0, 'promtool check rules') or diag($out . $err);
like($out . $err, qr/SUCCESS: 6 rules found/, 'six rules');

my %names = map { $_ => 1 }
            MCTest::_read_file("$dir/metacloud-alerts.yml")
            =~ /^\s*- alert: (\w+)/mg;
for my $a (qw(MetacloudWebhookFailureRate MetacloudMediaDownloadFailureRate
              MetacloudUnprocessedEvents MetacloudDatabaseErrors
              MetacloudDatabaseUnreachable))
{
    ok($names{$a}, "alert $a");
}

# every alert is tested: once silent, once firing
my $tests = MCTest::_read_file("$dir/metacloud-alerts.test.yml");
for my $a (sort keys %names) {
    my @evals = $tests =~ /alertname: \Q$a\E\n\s+exp_alerts:(.*?)(?=\n\s+- eval_time|\n\n|\z)/sg;
    ok((grep { /^\s*\[\]/ } @evals), "$a: tested silent");
    ok((grep { /exp_labels/ } @evals), "$a: tested firing");
}

# promtool resolves rule_files relative to the test file
($rc, $out, $err) = MCTest::_run([$promtool, 'test', 'rules',
                                  "$dir/metacloud-alerts.test.yml"]);
is($rc, 0, 'promtool test rules: every expectation met') or diag($out . $err);

done_testing;
