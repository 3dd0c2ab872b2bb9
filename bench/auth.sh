#!/usr/bin/env bash
# Auth benchmark (issue: accounts and authentication). On one run of a release server on SQLite:
#   1. GET /health/live and GET /api/v1/auth/me with a bearer token: requests/s, p50, p99;
#   2. GET /health/live p99 while 16 connections hammer POST /api/v1/auth/login (bcrypt cost 12).
# Targets: /me reaches 40% of /health/live requests/s; health p99 stays under 25 ms during the storm.
# Writes bench/results/auth-<UTC time>.json and prints a markdown table for docs/benchmarks.md.
# Environment: DURATION (default 15s), CONNECTIONS (32), THREADS (2), STEWARD_BIN (a prebuilt binary).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
seconds=${DURATION%s}

bench_require_wrk
BIN=$(bench_binary)
trap bench_stop_server EXIT
bench_start_server "$BIN"
TOKEN=$(bench_login_token)
out="$BENCH_DIR/out"; mkdir -p "$out"

wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$BENCH_URL/health/live" > "$out/health.txt"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "$BENCH_URL/api/v1/auth/me" > "$out/me.txt"

# The storm runs longer than the measurement so that health is measured only while logins are in flight.
wrk -t1 -c16 -d"$((seconds + 4))s" --timeout 10s --latency -s "$(dirname "$0")/login.lua" "$BENCH_URL/api/v1/auth/login" > "$out/login.txt" &
storm=$!
sleep 2
wrk -t1 -c4 -d"$DURATION" --latency "$BENCH_URL/health/live" > "$out/health-storm.txt"
peak_rss=$(bench_rss_kb)
wait "$storm"

health=$(bench_wrk_json "$out/health.txt")
me=$(bench_wrk_json "$out/me.txt")
login=$(bench_wrk_json "$out/login.txt")
storm_health=$(bench_wrk_json "$out/health-storm.txt")
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$bench_root/bench/results"
python3 - "$health" "$me" "$login" "$storm_health" "$peak_rss" "$bench_root/bench/results/auth-$stamp.json" "$DURATION" "$CONNECTIONS" <<'PY'
import json, os, platform, subprocess, sys
health, me, login, storm, rss, path, duration, connections = sys.argv[1:9]
health, me, login, storm = map(json.loads, (health, me, login, storm))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
ratio = me["requestsPerSecond"] / health["requestsPerSecond"] if health["requestsPerSecond"] else 0
result = {
    "commit": commit, "cpu": cpu, "cores": os.cpu_count(), "duration": duration, "connections": int(connections),
    "health": health, "me": me, "loginStorm": login, "healthDuringLoginStorm": storm,
    "meToHealthRatio": round(ratio, 3), "peakRssKB": int(rss),
    "targets": {"meAtLeast40PercentOfHealth": ratio >= 0.40, "healthP99Under25msDuringStorm": storm["p99Ms"] < 25},
}
json.dump(result, open(path, "w"), indent=2)
print(f"| scenario | requests/s | p50 ms | p99 ms | errors |")
print(f"|---|---|---|---|---|")
for name, r in [("GET /health/live", health), ("GET /api/v1/auth/me (bearer)", me),
                ("POST /api/v1/auth/login (16 conns, bcrypt 12)", login), ("GET /health/live during the login storm", storm)]:
    print(f"| {name} | {r['requestsPerSecond']} | {r['p50Ms']} | {r['p99Ms']} | {r['errors']} |")
print(f"\n/me is {ratio:.0%} of /health/live (target 40%: {'met' if ratio >= 0.4 else 'MISSED'}); "
      f"health p99 during the storm {storm['p99Ms']} ms (target < 25 ms: {'met' if storm['p99Ms'] < 25 else 'MISSED'}); "
      f"peak RSS {int(rss) // 1024} MiB. Written to {path}")
PY
