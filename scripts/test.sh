#!/usr/bin/env bash
# The README's test command: build once, run the suite on SQLite, then on a throwaway PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building (debug, with tests)"
swift build --build-tests

echo "==> suite on SQLite (one database file per test, in parallel)"
swift test --skip-build

echo "==> suite on PostgreSQL"
scripts/test-postgres.sh --skip-build
