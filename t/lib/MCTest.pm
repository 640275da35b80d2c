package MCTest;

# MCTest: the prove harness of ngx_http_metacloud_module (nginx-tests style,
# on Test::More; core Perl modules only).
#
#   use lib 't/lib'; use MCTest; use Test::More;
#   my $t = MCTest->new(name => 'sig');    # temp dir, fresh database, port
#   $t->write_conf(<<'EOF');               # an http{} snippet (or full conf)
#   server {
#       listen 127.0.0.1:%%PORT%%;
#       location = /webhooks/whatsapp {
#           metacloud_webhook;
#           metacloud_app_secret demo-app-secret;
#       }
#   }
#   EOF
#   metacloud_db "%%DB%%";  (inside the snippet, http level)
#   $t->run;
#   my ($status, $headers, $body) = $t->post_signed('/webhooks/whatsapp',
#                                                   $t->wire('meta_text'));
#   is($t->sql1('SELECT count(*) FROM meta_cloud_messages'), 1);
#   done_testing;
#
# Environment (set by `make test`, scripts/test): PGHOST PGPORT PGUSER
# (superuser), MC_TEMPLATE_DB, MC_MODULE, MC_ROOT, MC_PG_DIR;
# TEST_NGINX_VALGRIND=1 runs nginx under valgrind; MC_KEEP=1 keeps the temp
# dir and database of passing suites too (failing ones are always kept).
#
# The full API, with return values, is listed in the POD at the end.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Digest::SHA qw(hmac_sha256_hex);
use Fcntl qw(SEEK_SET);
use File::Basename qw(basename dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Test::Builder;
use Time::HiRes qw(sleep time);

our $SECRET       = 'demo-app-secret';
our $VERIFY_TOKEN = 'demo-verify-token';
our $WEBHOOK_URI  = '/webhooks/whatsapp';

# the usual http snippet: the test database, one webhook location
our $WEBHOOK_CONF = <<'EOF';
metacloud_db "%%DB%%";
server {
    listen 127.0.0.1:%%PORT%%;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
    }
}
EOF

# psql's null marker: random, so that no data can look like it
my $NULL = sprintf('<mctest-null-%08x%08x>', rand(2**32), rand(2**32));
my @INSTANCES;          # weak refs, for END

my $TB = Test::Builder->new;

# Ctrl-C or a TERM: exit through END, which stops nginx (it runs in its own
# process group, so the signal does not reach it)
my %SIGNO = (HUP => 1, INT => 2, TERM => 15);
for my $sig (keys %SIGNO) {
    next if defined $SIG{$sig} && $SIG{$sig} ne '' && $SIG{$sig} ne 'DEFAULT';
    $SIG{$sig} = sub { $TB->diag("MCTest: SIG$sig"); exit 128 + $SIGNO{$sig} };
}

sub _root {
    return $ENV{MC_ROOT} if $ENV{MC_ROOT};
    return abs_path(dirname(__FILE__) . '/../..');
}

# ----------------------------------------------------------------------
# construction

sub new {
    my ($class, %o) = @_;

    my $name = $o{name};
    unless (defined $name) {
        $name = basename($0);
        $name =~ s/\.t$//;
    }
    (my $slug = lc $name) =~ s/[^a-z0-9]+/_/g;
    $slug = substr($slug, 0, 30);

    my $root = _root();
    my $self = bless {
        name     => $name,
        slug     => $slug,
        root     => $root,
        owner    => $$,
        nginx    => $ENV{MC_NGINX} || '/usr/sbin/nginx',
        module   => $ENV{MC_MODULE}
                    || "$root/build/nginx/ngx_http_metacloud_module.so",
        valgrind => $ENV{TEST_NGINX_VALGRIND} ? 1 : 0,
        workers  => 1,
        pid      => undef,
    }, $class;

    $self->{tf} = $self->{valgrind} ? 10 : 1;

    # the temp dir: workers run as nobody when nginx starts as root, so it
    # lives in /tmp and is world-readable
    my $dir = tempdir("mctest-$slug-XXXXXX", DIR => '/tmp', CLEANUP => 0);
    chmod 0755, $dir;
    for my $d ('conf', 'logs', 'valgrind') {
        make_path("$dir/$d");
    }
    chmod 0777, "$dir/valgrind";
    $self->{dir} = $dir;

    $self->{port} = $o{port} || _free_port();

    if (!exists $o{db} || $o{db}) {
        $self->_create_db($o{template});
    }

    push @INSTANCES, $self;
    weaken($INSTANCES[-1]);

    return $self;
}

sub _free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or croak "MCTest: cannot find a free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub _create_db {
    my ($self, $template) = @_;

    $template ||= $ENV{MC_TEMPLATE_DB};
    unless ($ENV{PGHOST} && $template) {
        croak "MCTest: no test cluster (PGHOST, MC_TEMPLATE_DB unset): "
            . "run the suites with 'make test' (make test T=t/x.t for one)";
    }

    my $db = "mct_$self->{slug}_$$";
    $self->{template} = $template;

    my $err;
    for my $try (1 .. 10) {
        # CREATE DATABASE fails while another session is connected to the
        # template: retry a little
        my ($rc, $out, $e) = _run(['psql', '-X', '-q', '-d', 'postgres',
            '-v', 'ON_ERROR_STOP=1',
            '-c', qq{DROP DATABASE IF EXISTS "$db"},
            '-c', qq{CREATE DATABASE "$db" TEMPLATE "$template"}]);
        if ($rc == 0) {
            $self->{db} = $db;
            return;
        }
        $err = $e;
        sleep 0.3 * $try;
    }
    croak "MCTest: cannot create database $db from $template: $err";
}

# ----------------------------------------------------------------------
# accessors

sub testdir  { $_[0]{dir} }
sub port     { $_[0]{port} }
sub dbname   { $_[0]{db} }
sub module   { $_[0]{module} }
sub root     { $_[0]{root} }
sub pid      { $_[0]{pid} }
sub valgrind { $_[0]{valgrind} }
sub timeout_factor { $_[0]{tf} }
sub has_module { -f $_[0]{module} ? 1 : 0 }

sub conninfo {
    my ($self, %o) = @_;
    my $user = $o{user} || 'metacloud_module';
    my $db = $o{db} || $self->{db} || 'postgres';
    return "host=$ENV{PGHOST} port=$ENV{PGPORT} dbname=$db user=$user";
}

sub url {
    my ($self, $uri) = @_;
    return "http://127.0.0.1:$self->{port}" . ($uri // '/');
}

# ----------------------------------------------------------------------
# configuration

sub _subst {
    my ($self, $text) = @_;
    my %v = (
        PORT    => $self->{port},
        DB      => $self->{db} ? $self->conninfo : '',
        TESTDIR => $self->{dir},
        MODULE  => $self->{module},
        DBNAME  => $self->{db} // '',
        PGHOST  => $ENV{PGHOST} // '',
        PGPORT  => $ENV{PGPORT} // '',
        ROOT    => $self->{root},
        SECRET  => $SECRET,
        VERIFY_TOKEN => $VERIFY_TOKEN,
    );
    $text =~ s/%%([A-Z_]+)%%/exists $v{$1} ? $v{$1} : "%%$1%%"/ge;
    return $text;
}

sub _conf_text {
    my ($self, $conf, %o) = @_;

    # a full configuration: used as it is (it must set neither `daemon`
    # nor `pid`: the harness passes both with -g)
    return $self->_subst($conf) if $conf =~ /^\s*events\s*\{/m;

    my $load = exists $o{module} ? $o{module} : $self->has_module;
    my $workers = $o{workers} || 1;
    my $level = $o{error_log_level} || 'info';
    my $main = $o{main} // '';
    my $events = $o{events} // '';

    my $text = '';
    $text .= "load_module %%MODULE%%;\n" if $load;
    $text .= <<"EOF";
master_process on;
worker_processes $workers;
error_log %%TESTDIR%%/logs/error.log $level;
$main
events {
    worker_connections 1024;
    $events
}

http {
    access_log %%TESTDIR%%/logs/access.log;
    client_body_temp_path %%TESTDIR%%/client_body_temp;
    proxy_temp_path %%TESTDIR%%/proxy_temp;
    fastcgi_temp_path %%TESTDIR%%/fastcgi_temp;
    uwsgi_temp_path %%TESTDIR%%/uwsgi_temp;
    scgi_temp_path %%TESTDIR%%/scgi_temp;

$conf
}
EOF
    return $self->_subst($text);
}

sub write_conf {
    my ($self, $conf, %o) = @_;
    my $text = $self->_conf_text($conf, %o);
    # how many "start worker process" lines mean started (notice level)
    $self->{workers} = $text =~ /^\s*worker_processes\s+(\d+)/m ? $1 : 1;
    $self->{log_workers} =
        $text =~ /^\s*error_log\s+\S+\s+(?:debug|info|notice)\s*;/m ? 1 : 0;
    my $file = "$self->{dir}/conf/nginx.conf";
    _write_file($file, $text);
    $self->{conf} = $file;
    return $file;
}

sub _nginx_cmd {
    my ($self, $conf) = @_;
    return ($self->{nginx}, '-p', "$self->{dir}/", '-c', $conf,
            '-g', "daemon off; pid $self->{dir}/logs/nginx.pid;");
}

sub nginx_t {
    my ($self, $conf, %o) = @_;
    my $file;
    if (defined $conf) {
        $file = "$self->{dir}/conf/nginx-t.conf";
        _write_file($file, $self->_conf_text($conf, %o));
    } else {
        $file = $self->{conf} or croak "MCTest: nginx_t: no configuration";
    }
    my ($rc, $out, $err) = _run([$self->_nginx_cmd($file), '-t']);
    return ($rc, $out . $err);
}

# ----------------------------------------------------------------------
# nginx lifecycle

sub run {
    my ($self) = @_;
    croak "MCTest: run: write_conf first" unless $self->{conf};
    croak "MCTest: run: nginx already running" if $self->{pid};

    my $dir = $self->{dir};
    my @cmd = $self->_nginx_cmd($self->{conf});
    if ($self->{valgrind}) {
        my @vg = ('valgrind', '--trace-children=yes', '--vgdb=no',
                  '--leak-check=full',
                  '--show-leak-kinds=definite',
                  '--errors-for-leak-kinds=definite', '--num-callers=40',
                  "--suppressions=$self->{root}/t/lib/valgrind.supp",
                  "--log-file=$dir/valgrind/vg.%p.log");
        push @vg, split ' ', $ENV{TEST_NGINX_VALGRIND_OPTS}
            if $ENV{TEST_NGINX_VALGRIND_OPTS};
        @cmd = (@vg, @cmd);
    }

    my $start_lines = $self->_count_log(qr/start worker process \d+/);

    my $pid = fork;
    croak "MCTest: fork: $!" unless defined $pid;
    if ($pid == 0) {
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$dir/logs/stderr.log";
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    $self->{masters}{$pid} = 1;

    # scripts/test stops what a killed suite left behind
    if ($ENV{MC_NGINX_PIDS} && open my $pf, '>>', $ENV{MC_NGINX_PIDS}) {
        print $pf "$pid $dir\n";
        close $pf;
    }

    my $deadline = time + 10 * $self->{tf};
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) {
            my $rc = $?;
            $self->{pid} = undef;
            croak "MCTest: nginx exited at start (status $rc):\n"
                . $self->_tail("$dir/logs/stderr.log")
                . $self->_tail("$dir/logs/error.log");
        }
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $self->{port},
                                      Proto => 'tcp', Timeout => 1);
        if ($s) {
            close $s;
            last;
        }
        if (time > $deadline) {
            $self->stop;
            croak "MCTest: nginx does not listen on $self->{port}:\n"
                . $self->_tail("$dir/logs/error.log");
        }
        sleep 0.05;
    }

    # wait for the workers too (slow under valgrind)
    if ($self->{log_workers}) {
        $self->_wait_log(qr/start worker process \d+/,
                         $start_lines + $self->{workers}, 10 * $self->{tf});
    }
    return 1;
}

sub reload {
    my ($self) = @_;
    croak "MCTest: reload: nginx not running" unless $self->{pid};
    my $n = $self->_count_log(qr/start worker process \d+/);
    kill 'HUP', $self->{pid};
    unless ($self->{log_workers}) {
        sleep 1 * $self->{tf};
        return 1;
    }
    return $self->_wait_log(qr/start worker process \d+/, $n + $self->{workers},
                            10 * $self->{tf});
}

sub worker_pids {
    my ($self) = @_;
    return () unless $self->{pid};
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh>;
        close $fh;
        next unless defined $line && $line =~ /^(\d+) \((.*)\) \S+ (\d+)/s;
        push @pids, $1 if $3 == $self->{pid};
    }
    return sort { $a <=> $b } @pids;
}

sub stop {
    my ($self) = @_;
    return 1 unless $self->{pid};
    return 1 unless $$ == $self->{owner};

    my $pid = $self->{pid};
    my $killed = 0;
    kill 'QUIT', $pid;
    unless (_reap($pid, 15 * $self->{tf})) {
        kill 'TERM', $pid;
        unless (_reap($pid, 5 * $self->{tf})) {
            kill 'KILL', -$pid;
            _reap($pid, 5);
            $killed = 1;
        }
    }
    # anything left in the process group (workers of a killed master)
    kill 'KILL', -$pid;
    $self->{pid} = undef;

    $TB->diag("MCTest: nginx did not stop: killed") if $killed;
    $self->_check_valgrind if $self->{valgrind};
    return !$killed;
}

sub _reap {
    my ($pid, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $r = waitpid($pid, WNOHANG);
        return 1 if $r == $pid || $r == -1;
        sleep 0.05;
    }
    return 0;
}

sub _count_log {
    my ($self, $re) = @_;
    my $log = $self->error_log;
    my $n = () = $log =~ /$re/g;
    return $n;
}

sub _wait_log {
    my ($self, $re, $count, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        return 1 if $self->_count_log($re) >= $count;
        sleep 0.05;
    }
    return 0;
}

# ----------------------------------------------------------------------
# valgrind

sub _check_valgrind {
    my ($self) = @_;
    my @logs = grep { !$self->{vg_seen}{$_}++ }
               glob "$self->{dir}/valgrind/vg.*.log";
    my $msg = '';
    for my $f (@logs) {
        my ($pid) = $f =~ /vg\.(\d+)\.log$/;
        # the master is the process we forked and exec'd; workers are its
        # forks (each has its own log: --log-file=...%p)
        my $is_master = $self->{masters}{$pid} ? 1 : 0;
        my $text = _read_file($f);
        my @hits = valgrind_problems($text, $is_master);
        next unless @hits;
        $msg .= ($is_master ? 'master' : 'worker') . " $f:\n  "
              . join("\n  ", @hits) . "\n";
        # the first error with its stack
        if ($text =~ /^(==\d+== (?!(?:Memcheck|Copyright|Using|Command|Parent)\b)\S.*\n(?:==\d+==    .*\n){1,25})/m) {
            $msg .= $1;
        }
    }
    $self->{valgrind_checked} += @logs;
    if ($msg ne '') {
        $TB->ok(0, "valgrind: no errors in nginx ($self->{name})");
        $TB->diag($msg);
        $self->{failed} = 1;
        return 0;
    }
    return 1;
}

# valgrind_problems($log_text, $is_master): the lines of one valgrind log
# that fail a test.  The master leaks by design (it never frees its cycle)
# and passes its channel with uninitialised padding: only crashes and
# invalid accesses count there.  In a worker everything counts: invalid
# accesses, uses of uninitialised values, definite leaks (nginx's own are
# in t/lib/valgrind.supp), crashes, and a log without ERROR SUMMARY (the
# process was killed before it could report).
sub valgrind_problems {
    my ($text, $is_master) = @_;
    my $bad_access = join '|', 'Invalid (?:read|write|free)',
        'Mismatched free', 'Jump to the invalid address',
        'Process terminating with default action',
        'Source and destination overlap';
    my @hits;
    if ($is_master) {
        push @hits, $& while $text =~ /^==\d+== .*(?:$bad_access).*$/mg;
        return @hits;
    }
    my $worker_bad = "$bad_access|uninitialised|definitely lost: [1-9]";
    push @hits, $& while $text =~ /^==\d+== .*(?:$worker_bad).*$/mg;
    if ($text =~ /ERROR SUMMARY: ([\d,]+) errors/) {
        (my $n = $1) =~ tr/,//d;
        push @hits, "ERROR SUMMARY: $n errors" if $n > 0;
    } else {
        push @hits, 'no ERROR SUMMARY (killed?)';
    }
    return @hits;
}

# ----------------------------------------------------------------------
# HTTP client (raw sockets, so tests can send broken requests)

sub request {
    my ($self, $raw, %o) = @_;
    my $h = $self->_send($raw, %o);
    return $o{nowait} ? $h : $self->_receive($h);
}

# the request written, the answer not read yet: a handle for _receive
sub _send {
    my ($self, $raw, %o) = @_;
    my $timeout = ($o{timeout} || 30) * $self->{tf};
    local $SIG{PIPE} = 'IGNORE';    # the server may answer and close early

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $o{port} || $self->{port},
                                  Proto => 'tcp', Timeout => $timeout)
        or croak "MCTest: connect 127.0.0.1:$self->{port}: $!";
    binmode $s;

    my $off = 0;
    my $sel = IO::Select->new($s);
    my $deadline = time + $timeout;
    while ($off < length $raw) {
        if (!$sel->can_write($deadline - time)) {
            croak "MCTest: request: write timeout";
        }
        my $n = syswrite($s, $raw, 65536, $off);
        if (!defined $n) {
            last if $!{EPIPE} || $!{ECONNRESET};  # server answered early
            croak "MCTest: request: write: $!";
        }
        $off += $n;
    }
    shutdown($s, 1) if $o{half_close};
    return { s => $s, sel => $sel, deadline => $deadline };
}

sub _receive {
    my ($self, $h) = @_;
    my $resp = '';
    while (1) {
        my $left = $h->{deadline} - time;
        if ($left <= 0 || !$h->{sel}->can_read($left)) {
            croak "MCTest: request: read timeout after "
                . length($resp) . " bytes";
        }
        my $n = sysread($h->{s}, $resp, 65536, length $resp);
        last if !$n;    # EOF or reset
    }
    close $h->{s};
    $self->{last_response} = $resp;
    return $resp;
}

# the answer of a request sent with nowait => 1
sub response {
    my ($self, $h) = @_;
    my @r = _parse_response($self->_receive($h));
    return wantarray ? @r : $r[0];
}

sub last_response { $_[0]{last_response} }

sub _parse_response {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    $head //= '';
    $body //= '';
    my @lines = split /\r\n/, $head;
    my $statusline = shift(@lines) // '';
    my ($status) = $statusline =~ m{^HTTP/\d\.\d (\d{3})};
    my %h;
    for my $l (@lines) {
        my ($k, $v) = $l =~ /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
    }
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($body, 0, $n);
            substr($body, 0, $n + 2) = '';
        }
        $body = $out;
    }
    return ($status, \%h, $body);
}

sub http {
    my ($self, $method, $uri, %o) = @_;
    my $body = $o{body};
    my @hdr;
    my $hs = $o{headers} || {};
    @hdr = ref $hs eq 'ARRAY' ? @$hs : map { ($_, $hs->{$_}) } sort keys %$hs;

    my %have;
    for (my $i = 0; $i < @hdr; $i += 2) {
        $have{ lc $hdr[$i] } = 1;
    }
    my $req = "$method $uri HTTP/1.1\r\n";
    $req .= "Host: localhost\r\n" unless $have{host};
    $req .= "Connection: close\r\n" unless $have{connection};
    if (defined $body && !$have{'content-length'}
        && !$have{'transfer-encoding'} && !$o{no_content_length})
    {
        $req .= "Content-Length: " . length($body) . "\r\n";
    }
    while (my ($k, $v) = splice @hdr, 0, 2) {
        $req .= "$k: $v\r\n";
    }
    $req .= "\r\n";
    $req .= $body if defined $body;

    my $r = $self->request($req, %o);
    return $r if $o{nowait};
    my @r = _parse_response($r);
    return wantarray ? @r : $r[0];
}

sub http_get {
    my ($self, $uri, %o) = @_;
    return $self->http('GET', $uri, %o);
}

sub post {
    my ($self, $uri, $body, %o) = @_;
    my $hs = { 'Content-Type' => 'application/json', %{ $o{headers} || {} } };
    return $self->http('POST', $uri, %o, body => $body, headers => $hs);
}

sub sign {
    my ($self, $body, $secret) = @_;
    $secret = $SECRET unless defined $secret;
    return 'sha256=' . hmac_sha256_hex($body, $secret);
}

sub post_signed {
    my ($self, $uri, $body, %o) = @_;
    my $sig = $self->sign($body, $o{secret});
    my $hs = { 'X-Hub-Signature-256' => $sig, %{ $o{headers} || {} } };
    return $self->post($uri, $body, %o, headers => $hs);
}

# a signed POST to the webhook: (status, decoded summary or {}, raw body)
sub deliver {
    my ($self, $body, %o) = @_;
    my ($st, $h, $resp) = $self->post_signed($WEBHOOK_URI, $body, %o);
    require JSON::PP;
    my $doc = eval { JSON::PP->new->decode($resp) } || {};
    return ($st, $doc, $resp);
}

# ----------------------------------------------------------------------
# fixtures

sub fixture_path {
    my ($self, $f) = @_;
    return $f if -f $f;
    for my $p ("$self->{root}/t/fixtures/$f", "$self->{root}/t/fixtures/$f.json") {
        return $p if -f $p;
    }
    croak "MCTest: no fixture $f";
}

sub fixtures {
    my ($self) = @_;
    my @f = sort glob "$self->{root}/t/fixtures/*.json";
    return wantarray ? @f : scalar @f;
}

sub fixture {
    my ($self, $f) = @_;
    return _read_file($self->fixture_path($f));
}

sub wire {
    my ($self, $f) = @_;
    my $path = $self->fixture_path($f);
    my $norm = $ENV{MC_NORMALIZE} || "$self->{root}/build/core/metacloud-normalize";
    my @cmd = -x $norm ? ($norm, '--wire') : ("$self->{root}/scripts/json-wire");
    my ($rc, $out, $err) = _run(\@cmd, stdin_file => $path);
    croak "MCTest: wire $f: @cmd: $err" if $rc != 0;
    return $out;
}

# ----------------------------------------------------------------------
# PostgreSQL

sub sql_in {
    my ($self, $db, $query, @binds) = @_;
    croak "MCTest: sql: no database" unless $db;
    my $file = "$self->{dir}/query.sql";
    _write_file($file, $query);
    my @cmd = ('psql', '-X', '-q', '-t', '--csv', '-v', 'ON_ERROR_STOP=1',
               '-P', "null=$NULL", '-d', $db);
    for my $i (0 .. $#binds) {
        push @cmd, '-v', 'v' . ($i + 1) . '=' . $binds[$i];
    }
    push @cmd, '-f', $file;
    my ($rc, $out, $err) = _run(\@cmd);
    croak "MCTest: sql failed ($rc): $err\nquery: $query" if $rc != 0;
    return _parse_csv($out);
}

sub sql {
    my ($self, $query, @binds) = @_;
    return $self->sql_in($self->{db}, $query, @binds);
}

# n outbound text messages wamid.<prefix>1..n of one number, each its own
# delivery through metacloud_ingest(), then backdated by `days` (raw
# requests and events): old data for retention tests
sub old_deliveries {
    my ($self, %o) = @_;
    my ($n, $phone, $prefix) = @o{qw(n phone prefix)};
    my $waba = $o{waba} // 'WABA-' . $phone;
    my $days = $o{days} // 100;
    $self->sql(qq{
        SELECT count(metacloud_ingest(convert_to(e::text, 'UTF8'),
                                      jsonb_build_array(e)))
          FROM (SELECT jsonb_build_object(
                    'v', 1, 'field', 'messages', 'eventType', 'message',
                    'scope', '$phone', 'webhookId', 'msg:wamid.$prefix' || i,
                    'phoneNumberId', '$phone', 'wabaId', '$waba',
                    'payload', jsonb_build_object('id', 'wamid.$prefix' || i),
                    'message', jsonb_build_object(
                        'wamid', 'wamid.$prefix' || i,
                        'direction', 'OUTBOUND', 'from', '15550783881',
                        'to', '5511900000000', 'type', 'TEXT',
                        'rawType', 'text', 'timestamp', 1700000000,
                        'text', 'old ' || i)) e
                  FROM generate_series(1, $n) i) s;
        UPDATE meta_cloud_webhook_events
           SET "receivedAt" = now() - interval '$days days';
        UPDATE meta_cloud_webhook_requests
           SET "receivedAt" = now() - interval '$days days'});
}

sub sql1 {
    my ($self, $query, @binds) = @_;
    my $rows = $self->sql($query, @binds);
    return @$rows ? $rows->[0][0] : undef;
}

sub _parse_csv {
    my ($s) = @_;
    my @rows;
    my @row;
    my $i = 0;
    my $len = length $s;
    return [] unless $len;
    while ($i < $len) {
        my $field;
        if (substr($s, $i, 1) eq '"') {
            $i++;
            $field = '';
            while ($i < $len) {
                my $j = index($s, '"', $i);
                $j = $len if $j < 0;
                $field .= substr($s, $i, $j - $i);
                $i = $j + 1;
                if ($i < $len && substr($s, $i, 1) eq '"') {
                    $field .= '"';
                    $i++;
                } else {
                    last;
                }
            }
        } else {
            my $j = $i;
            $j++ while $j < $len && substr($s, $j, 1) !~ /[,\n]/;
            $field = substr($s, $i, $j - $i);
            $field = undef if $field eq $NULL;
            $i = $j;
        }
        push @row, $field;
        my $sep = $i < $len ? substr($s, $i, 1) : "\n";
        $i++;
        if ($sep eq "\n") {
            push @rows, [@row];
            @row = ();
        }
    }
    return \@rows;
}

sub pg_stop {
    my ($self) = @_;
    my ($rc, $out, $err) = _run(["$self->{root}/scripts/pg-cluster", 'stop',
                                 $self->_pg_dir]);
    croak "MCTest: pg_stop: $out$err" if $rc != 0;
    $self->{pg_stopped} = 1;
    return 1;
}

sub pg_running {
    my ($self) = @_;
    my ($rc) = _run(["$self->{root}/scripts/pg-cluster", 'status',
                     $self->_pg_dir]);
    return $rc == 0 ? 1 : 0;
}

sub pg_start {
    my ($self) = @_;
    my ($rc, $out, $err) = _run(["$self->{root}/scripts/pg-cluster", 'start',
                                 $self->_pg_dir, $ENV{PGPORT}]);
    croak "MCTest: pg_start: $out$err" if $rc != 0;
    return 1;
}

sub _pg_dir {
    croak "MCTest: MC_PG_DIR unset (run via make test)" unless $ENV{MC_PG_DIR};
    return $ENV{MC_PG_DIR};
}

# ----------------------------------------------------------------------
# logs

sub error_log {
    my ($self) = @_;
    my $f = "$self->{dir}/logs/error.log";
    return -f $f ? _read_file($f) : '';
}

sub _tail {
    my ($self, $f, $n) = @_;
    return '' unless -f $f;
    my @l = split /\n/, _read_file($f);
    $n ||= 20;
    @l = @l[-$n .. -1] if @l > $n;
    return join('', map { "  $_\n" } @l);
}

# ----------------------------------------------------------------------
# teardown

sub _teardown {
    my ($self) = @_;
    return if $self->{torn_down} || $$ != $self->{owner};
    $self->{torn_down} = 1;

    $self->stop;

    # the shared cluster is up when a suite that stopped it ends
    if ($self->{pg_stopped} && !eval { $self->pg_running }) {
        eval { $self->pg_start }
            or $TB->diag("MCTest: cannot restart the test cluster: $@");
    }

    my $passing = $TB->is_passing && !$self->{failed};
    if ($passing && !$ENV{MC_KEEP}) {
        if ($self->{db}) {
            _run(['psql', '-X', '-q', '-d', 'postgres',
                  '-c', qq{DROP DATABASE IF EXISTS "$self->{db}"}]);
        }
        remove_tree($self->{dir});
    } else {
        $TB->diag("MCTest: kept $self->{dir}"
                  . ($self->{db} ? " and database $self->{db}" : ''));
    }
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $!, $@);
    $self->_teardown;
}

END {
    local $?;
    for my $t (grep { defined } @INSTANCES) {
        $t->_teardown;
    }
}

# ----------------------------------------------------------------------
# helpers

sub _read_file {
    my ($f) = @_;
    open my $fh, '<:raw', $f or croak "MCTest: $f: $!";
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s // '';
}

sub _write_file {
    my ($f, $s) = @_;
    open my $fh, '>:raw', $f or croak "MCTest: $f: $!";
    print $fh $s;
    close $fh or croak "MCTest: $f: $!";
}

# _run([cmd...], stdin_file => f): (exit code, stdout, stderr)
sub _run {
    my ($cmd, %o) = @_;
    my $errf = File::Temp->new;
    my $pid = open(my $fh, '-|');
    croak "MCTest: fork: $!" unless defined $pid;
    if ($pid == 0) {
        if ($o{stdin_file}) {
            open STDIN, '<', $o{stdin_file} or POSIX::_exit(126);
        } else {
            open STDIN, '<', '/dev/null';
        }
        open STDERR, '>', $errf->filename or POSIX::_exit(126);
        exec @$cmd or do {
            print STDERR "exec $cmd->[0]: $!\n";
            POSIX::_exit(127);
        };
    }
    binmode $fh;
    local $/;
    my $out = <$fh> // '';
    close $fh;
    my $rc = $? >> 8;
    $rc = 128 + ($? & 127) if $? & 127;
    my $err = _read_file($errf->filename);
    return ($rc, $out, $err);
}

1;

__END__

=head1 NAME

MCTest - prove harness for ngx_http_metacloud_module

=head1 API

Construction and state:

  MCTest->new(name => 'sig', db => 1, port => N, template => 'tmpl')
        temp dir /tmp/mctest-<name>-XXXXXX, a database
        mct_<name>_<pid> created from $MC_TEMPLATE_DB (db => 0: none),
        a free port.  Dies without the `make test` environment.
  $t->testdir  $t->port  $t->dbname  $t->module  $t->root  $t->pid
  $t->valgrind (1 under TEST_NGINX_VALGRIND)  $t->timeout_factor (10/1)
  $t->has_module              1 if the .so exists
  $t->conninfo(user => .., db => ..)
        "host=$PGHOST port=$PGPORT dbname=<db> user=metacloud_module"
  $t->url($uri)               "http://127.0.0.1:<port><uri>"

Configuration (%%PORT%% %%DB%% %%TESTDIR%% %%MODULE%% %%DBNAME%%
%%PGHOST%% %%PGPORT%% %%ROOT%% %%SECRET%% %%VERIFY_TOKEN%% are replaced):

  $t->write_conf($http_snippet, module => 1, workers => 1, main => '',
                 events => '', error_log_level => 'info')
        wraps the snippet in a full configuration (load_module when the .so
        exists, unless module => 0; logs and temp paths in the temp dir);
        a text with an `events {` block is taken as a full configuration
        (without `daemon` and `pid`).  Returns the file name.
  $t->nginx_t($conf?, %same_options)
        (exit code, output) of `nginx -t` on $conf (wrapped as above), or
        on the written configuration.

Lifecycle:

  $t->run      starts nginx (daemon off, its own process group), waits
               until it listens and its workers started; dies with the
               logs if it cannot start.  Returns 1.
  $t->reload   SIGHUP (= nginx -s reload); 1 once the new workers started,
               0 on timeout (a refused configuration).
  $t->stop     SIGQUIT, then TERM, then KILL; under valgrind, checks the
               logs (a failing test is added if workers reported errors).
               Returns 1 unless it had to kill.
  $t->worker_pids   pids of the current workers
  teardown (DESTROY and END): stop; a passing suite's database and temp
  dir are dropped (MC_KEEP=1 keeps them), a failing one's are kept.

HTTP (raw IO::Socket::INET; HTTP/1.1, Connection: close):

  $t->http($method, $uri, body => $b, headers => {..} or [k, v, ...],
           no_content_length => 1, timeout => 30, half_close => 1)
  $t->http_get($uri, %o)
  $t->post($uri, $body, headers => {..})      Content-Type: application/json
  $t->post_signed($uri, $body, secret => $s, headers => {..})
  $t->deliver($body, %same)   post_signed to $WEBHOOK_URI: (status,
        decoded JSON summary or {}, raw answer)
        all return (status, \%headers, $body) in list context (header
        names lower-cased, repeated ones joined with ", ", chunked bodies
        decoded), the status in scalar context.
  $t->request($raw_bytes, timeout => 30)  sends raw bytes, returns the raw
        response; MCTest::_parse_response($raw) splits it as above.
  nowait => 1 (to any of the above): returns once the request is written,
        a handle; $t->response($handle) reads the answer (same return as
        http), $t->last_response the raw bytes.  For requests that must be
        in flight together (the held-lock races).
  $t->sign($body, $secret = 'demo-app-secret')   "sha256=<hex>"

Fixtures:

  $t->fixture_path('meta_text')   t/fixtures/meta_text.json (name, name.json
                                  or a path)
  $t->fixtures                    all t/fixtures/*.json paths, sorted
  $t->fixture('meta_text')        the file's bytes
  $t->wire('meta_text')           the body as Meta sends it: through
        build/core/metacloud-normalize --wire (MC_NORMALIZE) when built,
        else scripts/json-wire

PostgreSQL (psql as the superuser, bytes not decoded):

  $t->sql($query, @binds)   arrayref of rows (arrayrefs), NULL = undef;
        binds are psql variables :'v1', :'v2', ...; several statements
        allowed (the rows of all are returned); dies on an SQL error.
  $t->sql1($query, @binds)  first column of the first row (or undef)
  $t->sql_in($db, $query, @binds)   same, in another database
  $t->old_deliveries(n => $n, phone => $p, prefix => 'OLD', waba => ..,
                     days => 100)
        n outbound texts wamid.OLD1..n, one delivery each through
        metacloud_ingest(), raw requests and events backdated by `days`
  $t->pg_stop / $t->pg_start        stop / start the whole test cluster
        (scripts/pg-cluster; suites using them must not run in parallel);
        a suite that stopped it gets it started again at its teardown
  $t->pg_running                    1 while the test cluster runs

Logs: $t->error_log    the contents of logs/error.log

Valgrind: MCTest::valgrind_problems($log_text, $is_master) returns the
lines of one valgrind log that make the teardown fail (used by stop()).

Variables: $MCTest::SECRET ('demo-app-secret'), $MCTest::VERIFY_TOKEN
('demo-verify-token'), $MCTest::WEBHOOK_URI ('/webhooks/whatsapp'),
$MCTest::WEBHOOK_CONF (an http snippet: the test database, a webhook
location with the secret and token above, client_max_body_size 4m).

=cut
