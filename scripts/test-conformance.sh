#!/usr/bin/env bash
# Contract conformance: schemathesis (a schema-driven fuzzer from PyPI, not Swift) sends generated requests to a
# running steward and checks every answer against openapi.yaml, three times: as an admin, as a viewer and
# anonymously. Any finding fails the run and prints the request that reproduces it.
#
# STEWARD_BIN names the binary (default: the debug build, else a release build is made). CONFORMANCE_DB=postgres runs
# the same walk and fuzz against servers on a throwaway PostgreSQL (a fresh database for each), where text that SQLite
# takes (the NUL character, a negative offset) can fail a statement.
# CONFORMANCE_EXAMPLES bounds the generated cases per operation and phase (default 50), CONFORMANCE_SEED fixes the
# generator's seed (default 20261203, so a CI failure reproduces; set another to explore).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh # rate limits off: the fuzzer sends thousands of requests; the limiter has its own tests
if [ -z "${STEWARD_BIN:-}" ] && [ -x .build/debug/steward ]; then export STEWARD_BIN=.build/debug/steward; fi
BIN=$(bench_binary)

SCHEMATHESIS_VERSION=4.32.5
VENV=.build/conformance-venv
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

# bcrypt at the lowest cost a server accepts: the fuzzer logs in and registers hundreds of times.
export STEWARD_BCRYPT_COST=10
# One token lasts the whole run.
export STEWARD_ACCESS_TOKEN_TTL=3600

# Each server starts on a database of its own: a fresh data directory on SQLite, a fresh database on PostgreSQL.
if [ "${CONFORMANCE_DB:-sqlite}" = postgres ]; then
  source scripts/lib-postgres.sh
  pg_start
  databases=0
  fresh_database() {
    databases=$((databases + 1))
    pg_psql postgres -qc "CREATE DATABASE conformance_$databases" >/dev/null
    export DATABASE_URL; DATABASE_URL=$(pg_url "conformance_$databases")
  }
else
  pg_cleanup() { :; }
  fresh_database() { :; }
fi

login() {
  curl -fs -X POST "$BENCH_URL/api/v1/auth/login" -H 'Content-Type: application/json' -d "{\"email\":\"$1\",\"password\":\"$2\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["accessToken"])'
}
register_viewer() {
  curl -fs -X POST "$BENCH_URL/api/v1/auth/register" -H 'Content-Type: application/json' \
    -d '{"email":"viewer@example.com","username":"viewer","password":"Viewer-Password-42"}' >/dev/null
}

# The walk: one of each resource, every GET and action with real ids. Jobs run, so executions finish and webhook
# deliveries are tried, against a loopback port where nothing listens: nothing leaves the machine.
echo "==> a Python client's walk with real ids"
failed=0
trap 'bench_stop_server; pg_cleanup' EXIT
fresh_database
STEWARD_WORKERS=2 STEWARD_WEBHOOK_ALLOWED_HOSTS=127.0.0.1 bench_start_server "$BIN"
register_viewer
"$VENV/bin/python" scripts/conformance_walk.py "$BENCH_URL" bench@example.com Bench-Password-42 viewer@example.com Viewer-Password-42 || failed=1
# curl with `Expect: 100-continue`, then the body once the server says 100: curl adds the header by itself to bodies
# past 1 MB (Debian's 7.88; older versions past 1 KB), other clients to every POST, so it is named here for a small
# one. The skill must be created, and the server must go on serving.
echo "==> curl with Expect: 100-continue"
python3 -c 'import json; print(json.dumps({"slug": "curl-expect", "name": "Curl", "description": "x" * 3000, "category": "ops",
  "runner": {"type": "builtin", "name": "echo"}, "inputSchema": {"type": "object"}}))' > "$BENCH_DIR/curl-body.json"
curl -fs -o /dev/null -H "Expect: 100-continue" -H 'Content-Type: application/json' -H "Authorization: Bearer $(login bench@example.com Bench-Password-42)" \
  --data @"$BENCH_DIR/curl-body.json" "$BENCH_URL/api/v1/skills" && curl -fs "$BENCH_URL/health/ready" >/dev/null ||
  { echo "curl's POST with Expect: 100-continue failed, or the server stopped answering" >&2; failed=1; }
bench_stop_server

# The fuzz: no job runs, since the fuzzer invents webhook and HTTP-skill URLs and nothing may be sent to them.
# What is checked is the API's answers.
fresh_database
STEWARD_WORKERS=0 bench_start_server "$BIN"
register_viewer
ADMIN=$(login bench@example.com Bench-Password-42)
VIEWER=$(login viewer@example.com Viewer-Password-42)

# Operations left out, each with its reason:
#   POST /api/v1/auth/logout            ends the session the run is authenticated with.
#   POST /api/v1/auth/change-password   changes the fuzzing account's password and revokes its other sessions.
#   GET  /api/v1/events/stream          a Server-Sent Events stream never ends, so no answer is ever complete;
#                                       the realtime tests check its frames.
EXCLUDE=(--exclude-path /api/v1/auth/logout --exclude-path /api/v1/auth/change-password --exclude-path /api/v1/events/stream)
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
REPORTS=$(mktemp -d /tmp/steward-conformance.XXXXXX)

run() { # run NAME [schemathesis options...]
  local name=$1; shift
  echo "==> schemathesis as $name (${CONFORMANCE_DB:-sqlite})"
  local status=0
  "$VENV/bin/schemathesis" run openapi.yaml --url "$BENCH_URL" --checks "$CHECKS" \
    --phases examples,coverage,fuzzing --max-examples "${CONFORMANCE_EXAMPLES:-50}" --seed "${CONFORMANCE_SEED:-20261203}" \
    --workers 2 --request-timeout 10 --suppress-health-check all --warnings off --no-color \
    --report ndjson --report-ndjson-path "$REPORTS/$name.ndjson" "${EXCLUDE[@]}" "$@" || status=$?
  python3 - "$REPORTS/$name.ndjson" "$name" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
requests = 0
for line in open(path):
    event = json.loads(line)
    for value in event.values():
        if isinstance(value, dict) and "recorder" in value:
            requests += sum(len(interaction) if isinstance(interaction, list) else 1
                            for interaction in value["recorder"].get("interactions", {}).values())
print(f"conformance ({name}): {requests} requests sent")
PY
  return $status
}

run admin -H "Authorization: Bearer $ADMIN" || failed=1
run viewer -H "Authorization: Bearer $VIEWER" || failed=1
run anonymous || failed=1
# The server must still be serving after all of it.
curl -fs "$BENCH_URL/health/ready" >/dev/null || { echo "the server stopped answering" >&2; failed=1; }
rm -rf "$REPORTS"
if [ "$failed" -ne 0 ]; then
  echo "conformance: schemathesis found answers that differ from openapi.yaml (reproducing requests above)" >&2
  exit 1
fi
echo "conformance (${CONFORMANCE_DB:-sqlite}): no findings as admin, viewer or anonymous"
