#!/usr/bin/env bash
# bench/pgbench-ingest.sh: PostgreSQL alone, without nginx: pgbench calls
# metacloud_ingest() with one unique text message per transaction
# (bench/pgbench-ingest.sql), as the module's role, with a prepared
# statement like the module's pooled connections.
#
#   PGHOST=... PGPORT=... PGDATABASE=... bench/pgbench-ingest.sh [CLIENTS [SECONDS]]
#
# The database must be migrated (sql/migrate) and the fixture's number
# registered:
#   SELECT metacloud_add_phone_number('org', '106540352242922',
#                                     '102290129340398', 't');
# Environment: BENCH_JOBS (pgbench -j, 2), BENCH_USER (metacloud_module),
# BENCH_CONTACTS (how many different senders, 1000000: nearly every message
# a new contact; 1000: mostly returning ones),
# BENCH_PGOPTIONS (extra server settings for the session, e.g.
# "-c synchronous_commit=off" for a CPU-bound figure without the WAL flush),
# BENCH_PGDATA (the server's data directory, readable by this user: then the
# CPU time of the pgbench backends is reported too, per transaction; taken
# from the postmaster's cutime + cstime, which sum up its exited children).
# BENCH_SCRIPT (text: bench/pgbench-ingest.sql, one text message a call;
# status: bench/pgbench-status.sql, 50 statuses a call, for BENCH_MESSAGES
# outbound messages (100000) that this script seeds when they are missing).
# Prints tps, average latency and the latency percentiles.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${1:-8}
SECONDS_=${2:-20}
JOBS=${BENCH_JOBS:-2}
USER_=${BENCH_USER:-metacloud_module}

command -v pgbench >/dev/null || PATH=/usr/lib/postgresql/15/bin:$PATH

# user + system CPU seconds of the postmaster's exited children
children_cpu() {
    [ -n "${BENCH_PGDATA:-}" ] || return 0
    local pid
    pid=$(head -1 "$BENCH_PGDATA/postmaster.pid")
    # fields after the ")": state is field 3; cutime, cstime are 16, 17
    sed 's/.*) //' "/proc/$pid/stat" |
        awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }'
}

SCRIPT=$ROOT/bench/pgbench-ingest.sql
if [ "${BENCH_SCRIPT:-text}" = status ]; then
    SCRIPT=$ROOT/bench/pgbench-status.sql
    MESSAGES=${BENCH_MESSAGES:-100000}
    # the outbound messages the statuses refer to, as the platform's
    # sender records them (no bridge row: only the campaign lookup runs)
    psql -XAtq -v n="$MESSAGES" <<'EOF'
SELECT count(*) < :n AS seed
  FROM meta_cloud_messages WHERE "wamid" LIKE 'wamid.BENCHS%' \gset
\if :seed
SET bench.n = :n;
-- 5,000 a transaction: the pending-status trigger locks per row
DO $$
BEGIN
    FOR c IN 0 .. (current_setting('bench.n')::int - 1) / 5000 LOOP
        INSERT INTO meta_cloud_messages ("wamid", "organizationId",
               "phoneNumberId", "direction", "to", "type", "rawType",
               "text", "timestamp", "sentAt")
        SELECT format('wamid.BENCHS%s', lpad(n::text, 12, '0')),
               (SELECT "organizationId" FROM "MetaWhatsAppCredential"
                 WHERE "phoneNumberId" = '106540352242922'),
               '106540352242922', 'OUTBOUND', '5511000000001', 'TEXT',
               'text', 'bench', '1749416383', now()
          FROM generate_series(c * 5000 + 1,
                   least((c + 1) * 5000,
                         current_setting('bench.n')::int)) AS n
        ON CONFLICT DO NOTHING;
        COMMIT;
    END LOOP;
END
$$;
VACUUM ANALYZE meta_cloud_messages;
\endif
EOF
fi

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

cpu0=$(children_cpu)

PGOPTIONS="${PGOPTIONS:-} ${BENCH_PGOPTIONS:-}" \
pgbench -n -M prepared -c "$CLIENTS" -j "$JOBS" -T "$SECONDS_" \
    -D contacts="${BENCH_CONTACTS:-1000000}" \
    -D messages="${MESSAGES:-0}" \
    -U "$USER_" -f "$SCRIPT" \
    -l --log-prefix="$log/tx" >"$log/out" 2>&1 || { cat "$log/out"; exit 1; }

grep -E '^(number of (transactions actually processed|failed)|latency average|tps)' \
    "$log/out"

# per-transaction log: client tx_no time_us script_no epoch epoch_us
cat "$log"/tx* | awk '{ print $3 }' | sort -n | awk '
    { v[NR] = $1 }
    END {
        if (NR == 0) exit
        printf "latency p50 = %.3f ms, p90 = %.3f ms, p99 = %.3f ms, max = %.3f ms\n",
               v[int(NR * 0.50) + 1] / 1000, v[int(NR * 0.90) + 1] / 1000,
               v[int(NR * 0.99) + 1] / 1000, v[NR] / 1000
    }'

if [ -n "$cpu0" ]; then
    sleep 0.5   # the backends exit after pgbench
    cpu1=$(children_cpu)
    awk -v a="$cpu0" -v b="$cpu1" '
        /^number of transactions actually processed/ { n = $NF + 0 }
        END { if (n) printf "backend CPU = %.1f s, %.0f us per transaction\n",
                            b - a, (b - a) * 1e6 / n }' "$log/out"
fi
