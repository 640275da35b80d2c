# shellcheck shell=bash disable=SC2034
# bench/lib.sh: the parts scripts/bench and scripts/bench-rss share;
# sourced by them after they set ROOT (the project), DIR (their scratch
# directory, with DIR/logs) and SECRET, and cd'd to ROOT.
#
#   pg_fresh PGDIR PORT        a new cluster (fsync on), its PG* variables
#   db_new DB                  a database migrated by sql/migrate, with the
#                              bench's phone number registered
#   seed_outbound DB FIRST N   the outbound messages that status bodies
#                              FIRST .. FIRST+N-1 of gen-bodies.pl refer to
#   nginx_conf FILE EXTRA_HTTP EXTRA_SERVER, nginx_start, nginx_stop
#   cpu_ticks PID...           CPU clock ticks of those processes' trees
#   db_counts DB, settle DB    row counts; wait for in-flight transactions
#   check_rows ...             every 200 has its rows (see there)
#   wrk_run, wrk_once, wrk_ok  wrk with bench/wrk.lua (see there)
#   field NAME LINE            a NAME=value of a MCBENCH line

# ----------------------------------------------------------------------
# PostgreSQL

pg_fresh() {
    # a fresh cluster each run: the numbers must not depend on an earlier one
    scripts/pg-cluster destroy "$1" >/dev/null 2>&1 || true
    # max_wal_size as an operator sets it for this write rate: with the
    # default 1GB, WAL forced a checkpoint every 15 to 18 s of a run
    # ("checkpoints are occurring too frequently"), and every page first
    # touched after one went to the WAL whole.  Both receivers share it.
    MC_PG_CONF=${BENCH_PG_CONF-max_wal_size = 8GB} \
        scripts/pg-cluster start "$1" "$2" >/dev/null
    eval "$(scripts/pg-cluster env "$1")"
    fsync=$(psql -XAtc 'SHOW fsync' postgres)
    sync=$(psql -XAtc 'SHOW synchronous_commit' postgres)
    [ "$fsync" = on ] || { echo "bench: fsync is $fsync, must be on"; exit 1; }
    # the postmaster: every process of the cluster is it or its child
    pg_pid=$(head -1 "$(psql -XAtc 'SHOW data_directory' postgres)/postmaster.pid")
}

db_new() {
    createdb "$1"
    PGDATABASE=$1 sql/migrate >/dev/null
    psql -XAtq -d "$1" -c "SELECT metacloud_add_phone_number('bench-org',
        '106540352242922', '102290129340398', 'bench-token')" >/dev/null
}

# The outbound messages the statuses refer to, as the platform's sender
# would have recorded them (gen-bodies.pl statuses: body i holds the
# statuses of messages (i-1)*50+1 .. i*50); 5,000 a transaction, since the
# pending-status trigger takes an advisory lock per row
# (max_locks_per_transaction).
seed_outbound() {
    local lo=$(( ($2 - 1) * 50 + 1 )) hi=$(( ($2 + $3 - 1) * 50 ))
    psql -XAtq -v ON_ERROR_STOP=1 -d "$1" <<EOF
DO \$\$
BEGIN
    FOR c IN 0 .. ($hi - $lo) / 5000 LOOP
        INSERT INTO meta_cloud_messages ("wamid", "organizationId",
            "phoneNumberId", "direction", "to", "type", "rawType", "text",
            "timestamp", "sentAt")
        SELECT format('wamid.BENCHS%s', lpad(n::text, 12, '0')), 'bench-org',
               '106540352242922', 'OUTBOUND',
               '5511' || lpad((n % 1000000)::text, 9, '0'),
               'TEXT', 'text', 'bench', '1749416383', now()
          FROM generate_series($lo + c * 5000,
                               least($lo + (c + 1) * 5000 - 1, $hi)) AS n;
        COMMIT;
    END LOOP;
END
\$\$;
EOF
}

count() { psql -XAtc "$1" "${2:-$PGDATABASE}"; }

# db_counts DB: "requests events inbound-messages statuses"
db_counts() {
    psql -XAt -F ' ' -d "$1" -c "SELECT
        (SELECT count(*) FROM meta_cloud_webhook_requests),
        (SELECT count(*) FROM meta_cloud_webhook_events),
        (SELECT count(*) FROM meta_cloud_messages
          WHERE direction = 'INBOUND'),
        (SELECT count(*) FROM meta_cloud_message_statuses)"
}

# Counts are read once the server's last transactions have ended: when wrk
# stops, requests still in flight go on to commit.
settle() {
    for _ in $(seq 600); do
        [ "$(psql -XAtc "SELECT count(*) FROM pg_stat_activity
                          WHERE datname = '$1'
                            AND backend_type = 'client backend'
                            AND pid <> pg_backend_pid()
                            AND state <> 'idle'" postgres)" = 0 ] && return
        sleep 0.1
    done
    echo "bench: $1 still busy after 60 s"
}

# check_rows NAME PER OK CONNS BEFORE AFTER: the counts of db_counts before
# and after a run that had OK answers 200 for bodies of PER events (1: a
# text message, 50: statuses); fails the bench (fail=1) unless every 200
# has its request row, PER events and PER messages or status rows.  When
# wrk stops, up to one request per connection is still in flight: stored,
# but its answer is not counted.
check_rows() {
    local name=$1 per=$2 ok=$3 conns=$4 b a raw ev msg st
    read -r -a b <<<"$5"
    read -r -a a <<<"$6"
    raw=$(( a[0] - b[0] )) ev=$(( a[1] - b[1] ))
    msg=$(( a[2] - b[2] )) st=$(( a[3] - b[3] ))
    rows_raw=$raw
    printf '%-22s rows: %s requests, %s events, %s messages, %s statuses for %s answers 200\n' \
        "$name" "$raw" "$ev" "$msg" "$st" "$ok"
    if [ "$raw" -lt "$ok" ] || [ "$raw" -gt $((ok + conns)) ] \
       || [ "$ev" != $((raw * per)) ] \
       || { [ "$per" = 1 ] && [ "$msg" != "$raw" ]; } \
       || { [ "$per" != 1 ] && [ "$st" != $((raw * per)) ]; }
    then
        echo "bench: FAIL $name: rows do not match the 200s"
        fail=1
    fi
}

# ----------------------------------------------------------------------
# processes

# cpu_ticks PID...: user + system clock ticks (getconf CLK_TCK) spent by
# each PID and its children, those that exited and were reaped included
# (the PID's cutime + cstime): the difference of two calls is the CPU of a
# run, whatever processes came and went in it.
cpu_ticks() {
    local p kids total=0
    for p in "$@"; do
        kids=$(ps -o pid= --ppid "$p" | tr '\n' ' ')
        # fields after "comm)": state is 1, utime 12, stime 13, cutime 14,
        # cstime 15
        total=$(( total + $(
            { sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 + $14 + $15 }'
              for k in $kids; do
                  sed 's/.*) //' "/proc/$k/stat" 2>/dev/null \
                      | awk '{ print $12 + $13 }'
              done
            } | awk '{ s += $1 } END { print s + 0 }') ))
    done
    echo "$total"
}

# ms_per TICKS N: milliseconds of CPU per unit
ms_per() {
    awk -v t="$1" -v n="$2" -v hz="$HZ" \
        'BEGIN { if (n > 0) printf "%.3f", t * 1000 / hz / n; else print "-" }'
}
HZ=$(getconf CLK_TCK)

# nginx_conf FILE HTTP SERVER: the bench's nginx (BENCH_WORKERS workers,
# pool BENCH_POOL, metacloud_db_group BENCH_GROUP when set), with the lines HTTP in http{} and SERVER in server{};
# /done answers 204 for wrk.lua's MC_BENCH_ONCE mode
nginx_conf() {
    cat > "$1" <<EOF
load_module $MODULE;
worker_processes $WORKERS;
thread_pool mcnorm threads=4;
error_log $DIR/logs/error.log warn;
pid $DIR/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $DIR/body;
    metacloud_db "host=$PGHOST port=$PGPORT dbname=metacloud user=metacloud_module";
    metacloud_db_pool $POOL;${GROUP:+
    metacloud_db_group $GROUP;}
    metacloud_db_timeout 60s;
$2
    server {
        listen 127.0.0.1:$PORT;
        client_max_body_size 4m;
        client_body_buffer_size 64k;
        location = /webhook {
            metacloud_webhook;
            metacloud_app_secret $SECRET;
            metacloud_verify_token bench-verify;
        }
        location = /done {
            return 204;
        }
$3
    }
}
EOF
}

nginx_pid=
nginx_start() {
    /usr/sbin/nginx -p "$DIR" -c "$DIR/nginx.conf" -g 'daemon off;' &
    nginx_pid=$!
    wait_port "$PORT" || { echo "bench: nginx did not start"; exit 1; }
}

nginx_stop() {
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        # graceful first: requests still in flight finish
        kill -QUIT "$nginx_pid"
        for _ in $(seq 300); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
}

wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# the nginx workers' pids (the master's children)
nginx_workers() { ps -o pid= --ppid "$nginx_pid" | tr -d ' ' | sort -n; }

# wrk_run FILE URL [THREADS CONNS DURATION TIMEOUT]: the MCBENCH line of
# wrk.lua; an answer later than TIMEOUT (30s) is an error, not a latency
wrk_run() {
    local t=${3:-$THREADS}
    MC_BENCH_BODIES=$1 MC_BENCH_THREADS=$t \
        wrk -t"$t" -c"${4:-$CONNS}" -d"${5:-$DURATION}" --timeout "${6:-30s}" \
        -s bench/wrk.lua "$2" | grep '^MCBENCH'
}

# wrk_once FILE URL [LIMIT]: each body of FILE sent once (wrk.lua's
# MC_BENCH_ONCE), for LIMIT seconds at most (3600: an answer lost to a
# socket error would keep its thread waiting)
wrk_once() {
    local tag=$DIR/once-mark pid
    rm -f "$tag".*
    MC_BENCH_ONCE=$tag MC_BENCH_BODIES=$1 MC_BENCH_THREADS=$THREADS \
        wrk -t"$THREADS" -c"$CONNS" -d"${3:-3600}s" --timeout 30s \
        -s bench/wrk.lua "$2" > "$DIR/once.out" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(find "$DIR" -maxdepth 1 -name 'once-mark.*' | wc -l)" -ge "$THREADS" ]; then
            kill -INT "$pid"
            break
        fi
        sleep 0.2
    done
    wait "$pid" || true
    rm -f "$tag".*
    grep '^MCBENCH' "$DIR/once.out"
}

# wrk_ok NAME LINE [BODIES]: no non-200, no socket error; with BODIES, no
# body sent twice
wrk_ok() {
    if [ "$(field non200 "$2")" != 0 ] || [ "$(field errors "$2")" != 0 ]; then
        echo "bench: FAIL $1: answers other than 200 or socket errors"
        fail=1
    fi
    if [ -n "${3:-}" ] && [ "$(field wrapped "$2")" != 0 ]; then
        echo "bench: FAIL $1: ran out of unique bodies (raise BENCH_*_RATE_MAX; bench-compare: BENCH_TEXT_BODIES)"
        fail=1
    fi
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# seconds SPEC: wrk's duration (20s, 2m, 1h, 20) in seconds
seconds() {
    case $1 in
        *h) echo $(( ${1%h} * 3600 )) ;;
        *m) echo $(( ${1%m} * 60 )) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
