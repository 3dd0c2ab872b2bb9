#!/usr/bin/env bash
# Interleaved pairs of two release binaries on the request scenarios: a single run does not separate two builds
# on this machine (its speed drifts by tens of percent over minutes), pairs run back to back do.
#   bench/compare.sh BEFORE-BINARY AFTER-BINARY
# For each pair and each binary: a fresh seeded server with 1,000 skills, then wrk on GET /health/live,
# GET /api/v1/auth/me, GET /api/v1/skills?limit=20, POST /api/v1/skills and POST /api/v1/executions (no workers, so
# the create path alone). Prints one markdown row per run: requests/s of each scenario.
# Environment: PAIRS (default 3), DURATION (default 8s).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || { echo "usage: $0 BEFORE-BINARY AFTER-BINARY" >&2; exit 2; }
PAIRS=${PAIRS:-3}
DURATION=${DURATION:-8s}
bench_require_wrk
work=$(mktemp -d /tmp/steward-compare.XXXXXX)
trap 'bench_stop_server; rm -rf "$work"' EXIT

rps() { bench_wrk_json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["requestsPerSecond"])'; }

run_one() { # run_one LABEL BINARY
  STEWARD_WORKERS=0 BENCH_SEED=1 bench_start_server "$2"
  local token; token=$(bench_login_token)
  export STEWARD_BENCH_TOKEN=$token
  python3 - "$BENCH_URL" "$token" <<'PY'
import concurrent.futures, json, sys, urllib.request
url, token = sys.argv[1:3]
def create(i):
    body = {"slug": f"seed-{i}", "name": f"Seed {i}", "description": f"Seeded skill {i}.", "tags": ["seed"],
            "runner": {"type": "builtin", "name": "echo"}, "inputSchema": {"type": "object"}}
    request = urllib.request.Request(url + "/api/v1/skills", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    urllib.request.urlopen(request, timeout=30).read()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(create, range(1000)))
PY
  local auth=(-H "Authorization: Bearer $token")
  wrk -t2 -c32 -d"$DURATION" --latency "$BENCH_URL/health/live" > "$work/health.txt"
  wrk -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/auth/me" > "$work/me.txt"
  wrk -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/skills?limit=20" > "$work/list.txt"
  wrk -t2 -c32 -d"$DURATION" --latency -s "$bench_root/bench/skill_create.lua" "$BENCH_URL/api/v1/skills" > "$work/create.txt"
  wrk -t2 -c32 -d"$DURATION" --latency -s "$bench_root/bench/execution.lua" "$BENCH_URL/api/v1/executions" > "$work/exec.txt"
  echo "| $1 | $(rps "$work/health.txt") | $(rps "$work/me.txt") | $(rps "$work/list.txt") | $(rps "$work/create.txt") | $(rps "$work/exec.txt") |"
  bench_stop_server
  BENCH_PID=""; BENCH_DIR=""
}

echo "| run | /health/live | /auth/me | skills list (1,000, limit 20) | skill create | execution create |"
echo "|---|---|---|---|---|---|"
for pair in $(seq 1 "$PAIRS"); do
  run_one "before, pair $pair" "$1"
  run_one "after, pair $pair" "$2"
done
