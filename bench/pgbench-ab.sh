#!/usr/bin/env bash
# bench/pgbench-ab.sh: two databases of one cluster compared on
# bench/pgbench-ingest.sh's backend CPU per transaction, in alternating
# runs (A, B, A, B, ...), so that a machine that speeds up or slows down
# weighs on both alike.  For a change to the SQL: make A with the old
# sql/, B with the new (or B from A's template and migrate it again), then
#
#   PGHOST=... PGPORT=... BENCH_PGDATA=<data dir> \
#       bench/pgbench-ab.sh DB_A DB_B [PAIRS [CLIENTS [SECONDS]]]
#
# PAIRS 6, CLIENTS 1, SECONDS 6.  BENCH_SCRIPT, BENCH_CONTACTS and the
# other settings of bench/pgbench-ingest.sh apply to both sides
# (BENCH_CONTACTS defaults to 1000 here: mostly returning contacts).
# Prints each pair in us per transaction, then the means and the mean of
# the pairs' B/A ratios.  Measure with nothing else running: on a shared
# machine one pair can differ by 20%.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [ $# -lt 2 ] || [ -z "${BENCH_PGDATA:-}" ]; then
    echo "usage: BENCH_PGDATA=<data dir> $0 DB_A DB_B [PAIRS [CLIENTS [SECONDS]]]" >&2
    exit 2
fi
if [ ! -r "$BENCH_PGDATA/postmaster.pid" ]; then
    echo "$0: no running server in BENCH_PGDATA ($BENCH_PGDATA)" >&2
    exit 2
fi

A=$1
B=$2
PAIRS=${3:-6}
CLIENTS=${4:-1}
SECS=${5:-6}
export BENCH_CONTACTS=${BENCH_CONTACTS:-1000}

# us of backend CPU per transaction of one run on database $1 (nothing,
# and the run's output on stderr, when it failed)
run() {
    local out
    if out=$(PGDATABASE=$1 "$ROOT/bench/pgbench-ingest.sh" "$CLIENTS" \
                 "$SECS" 2>&1); then
        awk '/^backend CPU/ { print $(NF - 3) }' <<<"$out"
    else
        echo "$out" >&2
    fi
}

for _ in $(seq "$PAIRS"); do
    a=$(run "$A")
    b=$(run "$B")
    if [ "${a:-0}" = 0 ] || [ "${b:-0}" = 0 ]; then
        echo "$0: no CPU figure (is BENCH_PGDATA the cluster's?)" >&2
        exit 1
    fi
    echo "$a $b"
done | awk -v a_name="$A" -v b_name="$B" '
    { print; sa += $1; sb += $2; r += $2 / $1 }
    END {
        if (NR == 0) exit 1
        printf "means: %s %d us, %s %d us; B/A %.3f (mean of the pairs)\n",
               a_name, sa / NR, b_name, sb / NR, r / NR
    }'
