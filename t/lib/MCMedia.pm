package MCMedia;

# t/lib/MCMedia.pm: the media suites' fake servers, started on free ports
# and stopped (by their pid) when the suite ends.
#
#   my $meta = MCMedia::Meta->start($dir);     t/lib/fake-meta.js
#   $meta->port  $meta->graph_url ('http://127.0.0.1:<port>/v21.0')
#   $meta->add(id => .., size => .., mime => .., token => .., %options)
#         -> {id, url, sha256 (hex), sha256_b64, size}; a list of specs
#            (arrayref) returns an arrayref
#   $meta->bytes($id)   the file's bytes        $meta->counts  {key => n}
#   $meta->seen         Authorization headers   $meta->release  free stalls
#
#   my $s3 = MCMedia::S3->start($dir, bucket => 'media', key_id => ..,
#                               secret => .., region => ..);
#   $s3->endpoint  $s3->object($key) (bytes or undef)  $s3->meta($key)
#   $s3->refused   requests refused by the SigV4 check
#
# s3rver comes from npm into build/npm (MC_NPM_DIR), once, under a lock.
#
#   MCMedia::webhook($phone_number_id, @items)   a signed-ready body: one
#         message per item {id (media id), type (image), mime, sha256, url,
#         wamid}; keys left out are left out of the body
#   MCMedia::wait_until($seconds, sub { ... })    polls every 0.1 s; returns
#         the sub's last value
#   my ($meta, $store) = MCMedia::setup($t, org => .., phone => ..,
#                                       token => ..)
#         a store directory the workers (nobody) can write, the fake Graph
#         API started, the number registered with its token
#   $MCMedia::SERVER   the server block: the webhook location on %%PORT%%

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Fcntl qw(:flock);
use File::Basename qw(dirname);
use HTTP::Tiny;
use JSON::PP ();
use Time::HiRes qw(sleep);

our $ROOT = $ENV{MC_ROOT} || abs_path(dirname(__FILE__) . '/../..');
our $NPM_DIR = $ENV{MC_NPM_DIR} || "$ROOT/build/npm";
our $S3RVER = '3.7.1';
my $JSON = JSON::PP->new->canonical;
my @PIDS;

sub _spawn {
    my ($log, @cmd) = @_;

    pipe(my $r, my $w) or croak "MCMedia: pipe: $!";
    my $pid = fork;
    croak "MCMedia: fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $r;
        open STDOUT, '>&', $w or die;
        open STDERR, '>>', $log or die;
        exec @cmd or die "exec $cmd[0]: $!";
    }
    close $w;
    push @PIDS, $pid;

    # the server prints "PORT <n>" once it listens
    my $line;
    my $rin = '';
    vec($rin, fileno($r), 1) = 1;
    if (select(my $rout = $rin, undef, undef, 30)) {
        $line = <$r>;
    }
    croak "MCMedia: @cmd did not start (see $log)"
        unless defined $line && $line =~ /^PORT (\d+)/;
    return ($pid, $1, $r);
}

sub _stop {
    my ($pid) = @_;
    return unless $pid && kill 0, $pid;
    kill 'TERM', $pid;
    for (1 .. 50) {
        return if waitpid($pid, 1) == $pid;    # WNOHANG
        sleep 0.1;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

END {
    my $rc = $?;
    _stop($_) for @PIDS;
    $? = $rc;
}

my $WAMID = 0;

our $SERVER = <<'EOF';
server {
    listen 127.0.0.1:%%PORT%%;
    location = /webhooks/whatsapp {
        metacloud_webhook;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
    }
}
EOF

sub setup {
    my ($t, %o) = @_;
    my $store = $t->testdir . '/store';
    mkdir $store;
    chmod 0777, $store;
    my $meta = MCMedia::Meta->start($t->testdir);
    $t->sql(q{SELECT metacloud_add_phone_number(:'v1', :'v2', :'v3', :'v4')},
            $o{org}, $o{phone}, "WABA-$o{phone}", $o{token});
    return ($meta, $store);
}

sub webhook {
    my ($phone, @items) = @_;
    my @messages;
    for my $it (@items) {
        my $type = $it->{type} || 'image';
        my %media = (id => $it->{id});
        $media{mime_type} = $it->{mime} if defined $it->{mime};
        $media{sha256} = $it->{sha256} if defined $it->{sha256};
        $media{url} = $it->{url} if defined $it->{url};
        push @messages, {
            from => '16505551234',
            id => $it->{wamid} || sprintf('wamid.MEDIA%d.%d.%d', $$, time,
                                          ++$WAMID),
            timestamp => '' . time,
            type => $type,
            $type => \%media,
        };
    }
    return $JSON->encode({
        object => 'whatsapp_business_account',
        entry => [{ id => "WABA-$phone", changes => [{ field => 'messages',
            value => { messaging_product => 'whatsapp',
                       metadata => { display_phone_number => '15550001111',
                                     phone_number_id => $phone },
                       contacts => [{ profile => { name => 'Media Tester' },
                                      wa_id => '16505551234' }],
                       messages => \@messages } }] }] });
}

sub wait_until {
    my ($secs, $code) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    my $v;
    while (1) {
        $v = $code->();
        return $v if $v || Time::HiRes::time() > $deadline;
        sleep 0.1;
    }
}

sub npm_s3rver {
    return if -d "$NPM_DIR/node_modules/s3rver";
    system('mkdir', '-p', $NPM_DIR) == 0 or croak "MCMedia: mkdir $NPM_DIR";
    open my $lock, '>', "$NPM_DIR/.lock" or croak "MCMedia: lock: $!";
    flock($lock, LOCK_EX);
    unless (-d "$NPM_DIR/node_modules/s3rver") {
        my $out = `npm install --no-audit --no-fund --no-save --prefix '$NPM_DIR' s3rver\@$S3RVER 2>&1`;
        croak "MCMedia: npm install s3rver failed:\n$out" if $?;
    }
    close $lock;
}


package MCMedia::Meta;

use Carp qw(croak);

sub start {
    my ($class, $dir) = @_;
    my ($pid, $port, $fh) = MCMedia::_spawn("$dir/fake-meta.log", 'node',
        "$MCMedia::ROOT/t/lib/fake-meta.js");
    return bless { pid => $pid, port => $port, fh => $fh,
                   http => HTTP::Tiny->new(timeout => 30) }, $class;
}

sub port      { $_[0]{port} }
sub base      { "http://127.0.0.1:$_[0]{port}" }
sub graph_url { $_[0]->base . '/v21.0' }

sub _get {
    my ($self, $path) = @_;
    my $res = $self->{http}->get($self->base . $path);
    croak "MCMedia: GET $path: $res->{status} $res->{content}"
        unless $res->{success};
    return $res->{content};
}

sub add {
    my ($self, @spec) = @_;
    my $body = @spec == 1 ? $spec[0] : {@spec};
    my $res = $self->{http}->post($self->base . '/_fake/media', {
        content => $JSON->encode($body),
        headers => { 'Content-Type' => 'application/json' } });
    croak "MCMedia: add: $res->{status} $res->{content}"
        unless $res->{success};
    return $JSON->decode($res->{content});
}

sub bytes   { $_[0]->_get('/_fake/bytes/' . $_[1]) }
sub counts  { $JSON->decode($_[0]->_get('/_fake/counts')) }
sub seen    { $JSON->decode($_[0]->_get('/_fake/seen')) }
sub release { $_[0]->_get('/_fake/release') }
sub stop    { MCMedia::_stop($_[0]{pid}) }


package MCMedia::S3;

use Carp qw(croak);

sub start {
    my ($class, $dir, %o) = @_;
    MCMedia::npm_s3rver();
    my $data = "$dir/s3";
    mkdir $data;
    my %s = (bucket => 'media', key_id => 'AKIATESTMEDIA',
             secret => 'test-secret-key', region => 'us-east-1', %o);
    local $ENV{MC_NPM_DIR} = $MCMedia::NPM_DIR;
    my ($pid, $port, $fh) = MCMedia::_spawn("$dir/fake-s3.log", 'node',
        "$MCMedia::ROOT/t/lib/fake-s3.js", '--dir', $data,
        '--bucket', $s{bucket}, '--key', $s{key_id}, '--secret', $s{secret},
        '--region', $s{region});
    return bless { %s, pid => $pid, port => $port, fh => $fh, dir => $data,
                   http => HTTP::Tiny->new(timeout => 30) }, $class;
}

sub port     { $_[0]{port} }
sub endpoint { "http://127.0.0.1:$_[0]{port}" }
sub bucket   { $_[0]{bucket} }
sub key_id   { $_[0]{key_id} }
sub secret   { $_[0]{secret} }
sub region   { $_[0]{region} }

# s3rver's file store: <dir>/<bucket>/<key>._S3rver_object (+ _metadata.json)
sub _file { "$_[0]{dir}/$_[0]{bucket}/$_[1]._S3rver_$_[2]" }

sub object {
    my ($self, $key) = @_;
    my $f = $self->_file($key, 'object');
    return undef unless -f $f;
    open my $fh, '<:raw', $f or return undef;
    local $/;
    return scalar <$fh>;
}

sub meta {
    my ($self, $key) = @_;
    my $f = $self->_file($key, 'metadata.json');
    return undef unless -f $f;
    open my $fh, '<', $f or return undef;
    local $/;
    return $JSON->decode(scalar <$fh>);
}

sub refused {
    my ($self) = @_;
    my $res = $self->{http}->get($self->endpoint . '/_fake/refused');
    return $res->{success} ? $JSON->decode($res->{content})->{refused} : undef;
}

sub stop { MCMedia::_stop($_[0]{pid}) }

1;
