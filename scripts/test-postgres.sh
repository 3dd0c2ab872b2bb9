#!/usr/bin/env bash
# Runs the test suite against a throwaway PostgreSQL cluster on a loopback port, then removes it.
# Installs PostgreSQL from the OS packages when it is missing. Extra arguments go to `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-postgres.sh

trap pg_cleanup EXIT
pg_start
pg_psql postgres -qc "CREATE DATABASE steward_test" >/dev/null

export TEST_DATABASE_URL=$(pg_url steward_test)
# The same server through its Unix socket (pg_start puts it there), for the test that connects that way.
export TEST_DATABASE_SOCKET_DIR=$PG_WORK
export PATH="$PG_BIN:$PATH"
# One shared database: tests run one at a time, each starting from an empty schema.
swift test --no-parallel "$@"
