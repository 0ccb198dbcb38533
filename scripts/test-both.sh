#!/usr/bin/env bash
# The whole suite on SQLite and on PostgreSQL at once, one pytest process each (the
# machines have two cores; the runs share nothing but the CPUs): every line is prefixed
# with its database, and the exit code is non-zero if either run fails.
# Usage: scripts/test-both.sh PYTEST [PYTEST ARGUMENTS...]
set -uo pipefail
pytest=$1
shift
run() {
    local db=$1
    shift
    SECUREX_TEST_DB=$db "$pytest" -q -p no:cacheprovider "$@" 2>&1 | sed -u "s/^/[$db] /"
}
start=$(date +%s)
run sqlite "$@" &
sqlite=$!
# The PostgreSQL run takes the modules in reverse order (tests/conftest.py), so that
# the two runs' slow waiting tests do not coincide.
SECUREX_TEST_ORDER=reverse run postgresql "$@" &
postgresql=$!
wait $sqlite
sqlite_status=$?
wait $postgresql
postgresql_status=$?
echo "test-both: sqlite $sqlite_status, postgresql $postgresql_status, $(($(date +%s) - start)) s"
[ $sqlite_status -eq 0 ] && [ $postgresql_status -eq 0 ]
