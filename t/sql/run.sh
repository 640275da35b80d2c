#!/bin/sh
#
# t/sql/run.sh: the SQL tests, as TAP.  Creates a scratch database on the
# server the PG* environment names (PGHOST, PGPORT, PGUSER; a role that may
# create databases and roles), migrates it with sql/migrate, runs every
# t/sql/*.sql with psql -X -v ON_ERROR_STOP=1 -f, drops the database.
# t/sql.t does the same under prove.

set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
db="metacloud_test_$$"
maint="${PGMAINTDB:-postgres}"
tmp=$(mktemp)

cleanup() {
    psql -X -q -d "$maint" -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1
    rm -f "$tmp"
}
trap cleanup EXIT INT TERM

n=0
set -- "$here"/*.sql
echo "1..$(($# + 2))"

report() {   # report <rc> <name>: one TAP line, the log as diagnostics
    n=$((n + 1))
    if [ "$1" = 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        sed 's/^/# /' "$tmp"
    fi
}

if ! psql -X -q -d "$maint" -c "CREATE DATABASE \"$db\"" >"$tmp" 2>&1; then
    echo "Bail out! cannot create a database: $(head -n 1 "$tmp")"
    exit 1
fi

PGDATABASE=$db "$root/sql/migrate" >"$tmp" 2>&1
report $? "sql/migrate"

# the newest migration's number, without its leading zeros
latest=$(ls "$root"/sql/[0-9][0-9][0-9]_*.sql | sed 's|.*/||; s|_.*||; s|^0*||' \
         | sort -n | tail -n 1)
PGDATABASE=$db "$root/sql/migrate" >"$tmp" 2>&1 \
    && grep -q "^nothing to apply (schema version $latest)\$" "$tmp"
report $? "sql/migrate again applies nothing"

for file in "$@"; do
    psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d "$db" -f "$file" >"$tmp" 2>&1
    report $? "t/sql/$(basename "$file")"
done
