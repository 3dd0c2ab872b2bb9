#!/usr/bin/env bash
# The whole benchmark suite, on a release build and temporary SQLite databases (synchronous=FULL):
#   1. cold start: process start until /health/ready answers 200, on an already-migrated database (target < 1 s),
#      and idle RSS a few seconds after start (target < 60 MB);
#   2. wrk scenarios on one seeded server (1,000 skills, 1,000 executions, 100 workflows, schedules and users, 25 API
#      keys, 20 webhooks): health, /auth/me, the skill list, skill search, every other list, skill create, and the
#      login storm with health p99 measured during it;
#   3. the scenarios that wrk cannot express, by their own scripts: executions (create and end-to-end),
#      webhook deliveries, realtime fan-out.
# Every scenario records requests/s, p50/p99, errors and the server's peak RSS while it ran.
# Writes bench/results/<date>.json and regenerates the summary table in docs/benchmarks.md.
# Environment: DURATION (wrk scenarios, default 10s), STEWARD_BIN (a prebuilt binary), SKIP (space-separated:
# executions webhooks realtime) to leave out the long scenarios.
# BENCH_DB=postgres runs the PostgreSQL benchmarks instead (bench/postgres.sh): the HTTP scenarios and execution
# throughput on one instance and on two sharing one database.
set -euo pipefail
if [ "${BENCH_DB:-sqlite}" = postgres ]; then exec "$(dirname "$0")/postgres.sh"; fi
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}
SKIP=${SKIP:-}
seconds=${DURATION%s}

bench_require_wrk
BIN=$(bench_binary)
export STEWARD_BIN=$BIN
results="$bench_root/bench/results"
mkdir -p "$results"
work=$(mktemp -d /tmp/steward-run.XXXXXX)
trap 'bench_stop_server; rm -rf "$work"' EXIT

# bench_sample_rss FILE: samples the server's RSS (KiB) every 100 ms into FILE until killed.
bench_sample_rss() {
  while kill -0 "$BENCH_PID" 2>/dev/null; do
    awk '/VmRSS/ {print $2}' "/proc/$BENCH_PID/status" 2>/dev/null >> "$1" || true
    sleep 0.1
  done
}

# scenario NAME WRK-ARGS...: runs wrk while sampling RSS; writes $work/NAME.json.
scenario() {
  local name=$1; shift
  : > "$work/$name.rss"
  bench_sample_rss "$work/$name.rss" & local sampler=$!
  wrk "$@" > "$work/$name.txt"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  python3 - "$(bench_wrk_json "$work/$name.txt")" "$work/$name.rss" > "$work/$name.json" <<'PY'
import json, sys
result = json.loads(sys.argv[1])
samples = [int(line) for line in open(sys.argv[2]) if line.strip().isdigit()]
result["peakRssKB"] = max(samples) if samples else 0
print(json.dumps(result))
PY
  echo "  $name: $(cat "$work/$name.json")" >&2
}

echo "==> cold start and idle memory" >&2
cold="$work/cold"; mkdir -p "$cold"
STEWARD_DATA_DIR="$cold" STEWARD_LOG_LEVEL=warning "$BIN" migrate >/dev/null
starts=()
for attempt in 1 2 3 4 5; do
  port=$(bench_free_port)
  begin=$(date +%s%N)
  STEWARD_DATA_DIR="$cold" STEWARD_PORT="$port" STEWARD_LOG_LEVEL=warning STEWARD_ADMIN_PASSWORD=Bench-Password-42 \
    "$BIN" serve > "$cold/server.log" 2>&1 &
  pid=$!
  until curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$cold/server.log" >&2; exit 1; }
    sleep 0.005
  done
  starts+=("$(( ($(date +%s%N) - begin) / 1000000 ))")
  if [ "$attempt" -eq 5 ]; then
    sleep 5
    idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
echo "  cold starts (ms): ${starts[*]}; idle RSS ${idle_rss} KiB" >&2

echo "==> wrk scenarios" >&2
BENCH_SEED=1 bench_start_server "$BIN"
TOKEN=$(bench_login_token)
export STEWARD_BENCH_TOKEN=$TOKEN
# A catalogue worth listing and searching: 1,000 skills besides the samples.
python3 - "$BENCH_URL" "$TOKEN" <<'PY'
import concurrent.futures, json, sys, urllib.request
url, token = sys.argv[1:3]
words = ["invoice", "report", "deploy", "backup", "translate", "summarise", "resize", "notify", "scan", "archive"]
def create(i):
    body = {"slug": f"seed-{i}", "name": f"{words[i % 10].title()} {i}", "description": f"Seeded skill {i}: {words[i % 10]} and {words[(i * 3 + 1) % 10]}.",
            "category": ["ops", "data", "media", "ai"][i % 4], "tags": [words[i % 10], "seed"],
            "runner": {"type": "builtin", "name": "echo"}, "inputSchema": {"type": "object"}}
    request = urllib.request.Request(url + "/api/v1/skills", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    urllib.request.urlopen(request, timeout=30).read()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(create, range(1000)))
PY
bench_seed_executions "$BENCH_URL" "$TOKEN" 1000
bench_seed_lists "$BENCH_URL" "$TOKEN"
auth=(-H "Authorization: Bearer $TOKEN")
scenario health -t2 -c32 -d"$DURATION" --latency "$BENCH_URL/health/live"
scenario me -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/auth/me"
scenario skillList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/skills?limit=20"
scenario skillSearch -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/skills?q=invoice%20report&limit=20"
scenario executionList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/executions?limit=20"
scenario auditList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/audit-logs?limit=20"
scenario eventList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/events?limit=20"
scenario userList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/users?limit=20"
scenario workflowList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/workflows?limit=20"
scenario scheduleList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/schedules?limit=20"
scenario apiKeyList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/api-keys"
scenario webhookList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$BENCH_URL/api/v1/webhooks"
scenario skillCreate -t2 -c32 -d"$DURATION" --latency -s "$bench_root/bench/skill_create.lua" "$BENCH_URL/api/v1/skills"
# The storm runs longer than the measurement, so health is measured only while logins are in flight.
wrk -t1 -c16 -d"$((seconds + 4))s" --timeout 10s --latency -s "$bench_root/bench/login.lua" "$BENCH_URL/api/v1/auth/login" > "$work/login.txt" &
storm=$!
sleep 2
scenario healthDuringLoginStorm -t1 -c4 -d"$DURATION" --latency "$BENCH_URL/health/live"
wait "$storm"
bench_wrk_json "$work/login.txt" > "$work/loginStorm.json"
bench_stop_server
BENCH_PID=""; BENCH_DIR=""

# newest RESULT-PREFIX: the newest result file a sub-script wrote.
newest() { ls -t "$results"/"$1"-*.json 2>/dev/null | head -1; }
run_script() { # run_script NAME SCRIPT: runs it unless skipped; prints the path of the result it wrote
  local name=$1 script=$2
  if [[ " $SKIP " == *" $name "* ]]; then echo ""; return; fi
  echo "==> $name ($script)" >&2
  local before; before=$(newest "$name")
  "$bench_root/bench/$script" >&2
  local after; after=$(newest "$name")
  [ "$after" != "$before" ] && echo "$after" || echo ""
}
executions=$(run_script executions executions.sh)
webhooks=$(run_script webhooks webhooks.sh)
realtime=$(run_script realtime realtime.sh)

stamp=$(date -u +%Y-%m-%d)
python3 - "$work" "$results/$stamp.json" "$bench_root/docs/benchmarks.md" "${starts[*]}" "$idle_rss" "$DURATION" \
  "$executions" "$webhooks" "$realtime" <<'PY'
import json, os, platform, re, statistics, subprocess, sys, time
work, out, doc, starts, idle_rss, duration, executions, webhooks, realtime = sys.argv[1:10]
load = lambda name: json.load(open(os.path.join(work, name + ".json")))
sub = lambda path: json.load(open(path)) if path else None
starts = [int(s) for s in starts.split()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip() != ""
swift = subprocess.run(["swift", "--version"], capture_output=True, text=True).stdout.splitlines()
wrk_scenarios = {name: load(name) for name in ["health", "me", "skillList", "skillSearch", "executionList", "auditList", "eventList",
                                               "userList", "workflowList", "scheduleList", "apiKeyList", "webhookList",
                                               "skillCreate", "loginStorm", "healthDuringLoginStorm"]}
result = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit + ("+dirty" if dirty else ""),
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "memoryGiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
                "os": platform.platform(), "swift": swift[0] if swift else ""},
    "wrkDuration": duration,
    "coldStart": {"runsMs": starts, "medianMs": statistics.median(starts), "targetMs": 1000},
    "idleRssKB": int(idle_rss),
    "scenarios": wrk_scenarios,
    "executions": sub(executions), "webhooks": sub(webhooks), "realtime": sub(realtime),
}
json.dump(result, open(out, "w"), indent=2)

def row(name, r, target=""):
    return f"| {name} | {r['requestsPerSecond']:,} | {r['p50Ms']} | {r['p99Ms']} | {r['errors']} | {r.get('peakRssKB', 0) // 1024 or '-'} | {target} |"
s = wrk_scenarios
ratio = s["me"]["requestsPerSecond"] / s["health"]["requestsPerSecond"] if s["health"]["requestsPerSecond"] else 0
verdict = lambda ok: "met" if ok else "**missed**"
def share(name, target):
    """A read's target: a share of /me's rate in the same run, and peak RSS under 120 MB."""
    part = s[name]["requestsPerSecond"] / s["me"]["requestsPerSecond"] if s["me"]["requestsPerSecond"] else 0
    rss_ok = s[name].get("peakRssKB", 0) * 1024 < 120_000_000
    return f"≥ {target:.0%} of /me: {verdict(part >= target)} ({part:.0%}); RSS < 120 MB: {verdict(rss_ok)}"
lines = [
    f"Commit `{result['commit']}`, {result['date']}. {cpu}, {os.cpu_count()} cores, Swift release build, SQLite `synchronous=FULL`;",
    f"wrk {duration} per scenario (2 threads, 32 connections unless noted) on the same cores. Raw: `bench/results/{os.path.basename(out)}`.",
    "",
    "| scenario | requests/s | p50 ms | p99 ms | errors | peak RSS MiB | target |",
    "|---|---|---|---|---|---|---|",
    row("GET /health/live", s["health"]),
    row("GET /api/v1/auth/me", s["me"], f"≥ 40% of health: {verdict(ratio >= 0.4)} ({ratio:.0%})"),
    row("GET /api/v1/skills (1,000 skills, limit 20)", s["skillList"], share("skillList", 0.5)),
    row("GET /api/v1/skills?q=invoice report", s["skillSearch"], share("skillSearch", 0.4)),
    row("GET /api/v1/executions (1,000 executions, limit 20)", s["executionList"], share("executionList", 0.4)),
    row("GET /api/v1/audit-logs (limit 20)", s["auditList"], share("auditList", 0.4)),
    row("GET /api/v1/events (limit 20)", s["eventList"], share("eventList", 0.4)),
    row("GET /api/v1/users (101 users, limit 20)", s["userList"], share("userList", 0.4)),
    row("GET /api/v1/workflows (100 workflows, limit 20)", s["workflowList"], share("workflowList", 0.4)),
    row("GET /api/v1/schedules (100 schedules, limit 20)", s["scheduleList"], share("scheduleList", 0.4)),
    row("GET /api/v1/api-keys (25 keys, unpaged)", s["apiKeyList"], share("apiKeyList", 0.4)),
    row("GET /api/v1/webhooks (20 webhooks, unpaged)", s["webhookList"], share("webhookList", 0.4)),
    row("POST /api/v1/skills", s["skillCreate"]),
    row("POST /api/v1/auth/login, 16 connections, bcrypt 12", s["loginStorm"]),
    row("GET /health/live during the login storm (4 connections)", s["healthDuringLoginStorm"],
        f"p99 < 25 ms: {verdict(s['healthDuringLoginStorm']['p99Ms'] < 25)}"),
]
if result["executions"]:
    e = result["executions"]
    lines.append(row("POST /api/v1/executions (echo)", dict(e["create"], peakRssKB=e.get("peakRssKB", 0)),
                     f"≥ 1,500/s: {verdict(e['create']['requestsPerSecond'] >= 1500)}"))
    lines.append(f"| end-to-end echo completions | {e['endToEnd']['perSecond']:,} | | | {e['endToEnd']['notSucceeded']} | | ≥ 500/s: {verdict(e['endToEnd']['perSecond'] >= 500)} |")
    if "drainAlone" in e:
        lines.append(f"| workers alone: a backlog drained with no API traffic | {e['drainAlone']['perSecond']:,} | | | | | recorded |")
    q = e["queuedToStartedAt50PerSecond"]
    lines.append(f"| queued → started at 50/s | 50 | {q['p50Ms']} | {q['p99Ms']} | | | p99 < 100 ms: {verdict(q['p99Ms'] < 100)} |")
if result["webhooks"]:
    w = result["webhooks"]
    lines.append(f"| webhook deliveries (2,000 test pings) | {w['deliveriesPerSecond']:,} | | | {2000 - w['delivered']} undelivered | {w.get('peakRssKB', 0) // 1024} | ≥ 300/s: {verdict(w['deliveriesPerSecond'] >= 300)} |")
    lines.append(f"| event → webhook delivery at 10 executions/s | | {w['eventToDelivery']['p50Ms']} | {w['eventToDelivery']['p99Ms']} | | | recorded |")
if result["realtime"]:
    r = result["realtime"]
    fan = r["fanOutLatencyMs"]
    rate = round(r["deliveries"] / r["durationSeconds"]) if r.get("durationSeconds") else 0
    lines.append(f"| realtime fan-out: {r['subscribers']:,} streams, {r['executionsPerSecond']:g} executions/s | {rate:,} deliveries/s | {fan['p50']} | {fan['p99']} | "
                 f"{len(r['errors']) + r['expectedDeliveries'] - r['deliveries']} | {r['rssKB']['peak'] // 1024} | "
                 f"p99 < 250 ms: {verdict(fan['p99'] is not None and fan['p99'] < 250 and r['connected'] == r['subscribers'])} |")
median = statistics.median(starts)
lines += [
    f"| cold start to `/health/ready` 200 (migrated database, median of 5) | | {median} | {max(starts)} (max) | | | < 1 s: {verdict(median < 1000)} |",
    f"| idle RSS, 5 s after start | | | | | {int(idle_rss) // 1024} | < 60 MB: {verdict(int(idle_rss) * 1024 < 60_000_000)} |",
]
table = "\n".join(lines)
text = open(doc).read()
start, end = "<!-- bench/run.sh:start -->", "<!-- bench/run.sh:end -->"
block = f"{start}\n{table}\n{end}"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S) if start in text else text.replace("\n## ", f"\n## Summary (`bench/run.sh`)\n\n{block}\n\n## ", 1)
open(doc, "w").write(text)
print(table)
print(f"\nWritten to {out} and docs/benchmarks.md")
PY
