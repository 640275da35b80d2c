package MCBridge;

# Helpers of the bridge suites (t/45-*.t, t/46-*.t) and t/48: bodies made
# from the fixtures with their ids changed, signed posts, a held lock and
# the held-lock race of t/50-idempotency.t on any table.  API at the end
# of the file.

use strict;
use warnings;

use Test::More;
use IO::Handle;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use MCTest;

our $PHONE = '106540352242922';
our $WABA = '102290129340398';
our $DISPLAY = '15550783881';
our $URI = $MCTest::WEBHOOK_URI;

my $JSON = JSON::PP->new->utf8->canonical;

sub new {
    my ($class, $t) = @_;
    return bless { t => $t, lock_pid => undef }, $class;
}

# start($pool): nginx with the webhook location, our number registered;
# no group commit: race() needs every delivery in a session of its own
sub start {
    my ($self, $pool) = @_;
    my $t = $self->{t};
    $t->write_conf(<<"EOF");
metacloud_db "%%DB%%";
metacloud_db_pool $pool;
metacloud_db_group 1;
metacloud_db_timeout 60s;
server {
    listen 127.0.0.1:%%PORT%%;
    location = $URI {
        metacloud_webhook;
        metacloud_verify_token %%VERIFY_TOKEN%%;
        metacloud_app_secret %%SECRET%%;
        client_max_body_size 4m;
        client_body_buffer_size 4m;
    }
}
EOF
    $t->run;
    $t->sql(q{SELECT metacloud_add_phone_number('org-test', :'v1', :'v2',
                                                'tok')}, $PHONE, $WABA);
}

sub json { return $JSON }

# body($fixture, item => sub { my ($item, $value) = @_; ... }, %envelope):
# the fixture decoded, moved to our number (phone, waba, display unless
# given), the first item of its first change passed to `item` (messages,
# message_echoes, statuses or state_sync), encoded again
sub body {
    my ($self, $fixture, %o) = @_;
    my $doc = $JSON->decode($self->{t}->fixture($fixture));
    my $entry = $doc->{entry}[0];
    my $value = $entry->{changes}[0]{value};
    $entry->{id} = $o{waba} // $WABA;
    $value->{metadata} = {
        display_phone_number => $o{display} // $DISPLAY,
        phone_number_id => $o{phone} // $PHONE,
    };
    $value->{contacts} = $o{contacts} if exists $o{contacts};
    delete $value->{contacts} if exists $o{contacts} && !$o{contacts};
    if ($o{item}) {
        for my $k (qw(messages message_echoes statuses state_sync)) {
            next unless $value->{$k};
            $o{item}->($value->{$k}[0], $value);
            last;
        }
    }
    return $JSON->encode($doc);
}

sub contact {
    my ($name, $wa_id, %o) = @_;
    return [{ profile => { name => $name }, wa_id => $wa_id, %o }];
}

# (status, decoded answer)
sub post {
    my ($self, $body) = @_;
    my ($st, $h, $b) = $self->{t}->post_signed($URI, $body);
    return ($st, eval { $JSON->decode($b) });
}

# posts and checks 200, no failed event
sub post_ok {
    my ($self, $body, $name) = @_;
    my ($st, $doc) = $self->post($body);
    is($st, 200, "$name: 200");
    is($doc && $doc->{failed}, 0, "$name: no failed event")
        or diag($JSON->encode($doc // {}) . "\n"
                . $JSON->encode($self->{t}->sql(q{SELECT "webhookId", "error"
                      FROM meta_cloud_webhook_events WHERE "error" IS NOT NULL})));
    return $doc;
}

sub empty_db {
    my ($self) = @_;
    $self->{t}->sql(q{TRUNCATE meta_cloud_message_statuses,
        meta_cloud_messages, meta_cloud_media, meta_cloud_webhook_events,
        meta_cloud_webhook_requests, "Message", "Ticket", "Conversation",
        "Lead", "CampaignRecipient"});
}

# ----------------------------------------------------------------------
# the held-lock race

# hold($label, $table): a superuser session takes EXCLUSIVE on the table
# (every delivery ends with an INSERT into meta_cloud_webhook_requests) and
# keeps it, in a transaction, until release($label)
sub hold {
    my ($self, $label, $table) = @_;
    my $t = $self->{t};
    my $tf = $t->timeout_factor;

    my $fh;
    $self->{lock_pid} = open($fh, '|-', 'psql', '-X', '-q',
                             '-v', 'ON_ERROR_STOP=1', '-d', $t->dbname);
    ok($self->{lock_pid}, "$label: a superuser psql session")
        or BAIL_OUT("psql: $!");
    $fh->autoflush(1);
    print $fh "BEGIN;\nLOCK TABLE $table IN EXCLUSIVE MODE;\n";
    $self->{lock_fh} = $fh;

    my $locked = 0;
    my $deadline = time + 10 * $tf;
    while (time < $deadline) {
        $locked = $t->sql1(q{SELECT count(*) FROM pg_locks l
            JOIN pg_class c ON c.oid = l.relation
            WHERE c.relname = :'v1'
              AND l.database = (SELECT oid FROM pg_database
                                 WHERE datname = current_database())
              AND l.mode = 'ExclusiveLock' AND l.granted
              AND l.pid <> pg_backend_pid()}, $table);
        last if $locked;
        sleep 0.05;
    }
    is($locked, 1, "$label: EXCLUSIVE held on $table");
}

sub release {
    my ($self, $label) = @_;
    my $fh = delete $self->{lock_fh};
    print $fh "COMMIT;\n";
    close $fh;
    my $rc = $?;
    $self->{lock_pid} = undef;
    is($rc, 0, "$label: the lock session ended cleanly");
}

# race($label, table => $t, bodies => [...]): hold() on the table, the
# bodies are sent at once, the suite waits until every delivery's backend
# waits on a lock (the table, or a lock the bridge takes before it), and
# releases: every delivery has done its work before any commits.  With
# in_order => 1, each body is sent once the ones before it wait: the
# locks they take are theirs first.  Returns the answers [status,
# decoded, raw].
sub race {
    my ($self, $label, %o) = @_;
    my $t = $self->{t};
    my $tf = $t->timeout_factor;
    my $table = $o{table} // 'meta_cloud_webhook_requests';
    my @bodies = @{ $o{bodies} };

    $self->hold($label, $table);

    my $before = $t->sql1('SELECT count(*) FROM meta_cloud_webhook_requests');
    my (@socks, $waiting);
    for my $k (0 .. $#bodies) {
        push @socks, $t->post_signed($URI, $bodies[$k], nowait => 1,
                                     timeout => 60);
        next if !$o{in_order} && $k < $#bodies;
        $waiting = 0;
        my $deadline = time + 30 * $tf;
        while (time < $deadline) {
            $waiting = $t->sql1(q{SELECT count(DISTINCT pid)
                  FROM pg_stat_activity
                 WHERE usename = 'metacloud_module'
                   AND datname = current_database()
                   AND wait_event_type = 'Lock'
                   AND query LIKE '%metacloud_ingest%'});
            last if $waiting >= $k + 1;
            sleep 0.05;
        }
    }
    is($waiting, scalar @bodies,
       "$label: every delivery seen waiting on a lock, none committed")
        or diag($JSON->encode($t->sql(q{SELECT usename, wait_event_type,
                   wait_event, state, left(query, 60) FROM pg_stat_activity
                   WHERE datname = current_database()})));
    is($t->sql1('SELECT count(*) FROM meta_cloud_webhook_requests'), $before,
       "$label: nothing committed while the lock is held");

    $self->release($label);

    my @answers = map {
        my ($rst, $rh, $rb) = $t->response($_);
        [$rst, eval { $JSON->decode($rb) }, $t->last_response]
    } @socks;
    my $i = 0;
    for my $a (@answers) {
        $i++;
        is($a->[0], 200, "$label: answer $i 200") or diag($a->[2]);
    }
    return @answers;
}

sub DESTROY {
    my ($self) = @_;
    if ($self->{lock_pid}) {
        kill 'TERM', $self->{lock_pid};
        waitpid($self->{lock_pid}, 0);
    }
}

1;

__END__

=head1 API

  my $b = MCBridge->new($t);
  $b->start($pool)   nginx (metacloud_db_pool $pool, metacloud_db_group 1)
                     and the number of org-test registered
  $b->body($fixture, item => sub { my ($item, $value) = @_ },
           contacts => [...] | undef, phone => .., waba => .., display => ..)
  MCBridge::contact($name, $wa_id, %more)   a value.contacts array
  $b->post($body)  $b->post_ok($body, $name)
  $b->empty_db     truncates the module's and the platform's tables
  $b->hold($label, $table)  $b->release($label)   EXCLUSIVE on $table in a
                     superuser session, until release
  $b->race($label, table => 'meta_cloud_webhook_requests', bodies => [...])

=cut
