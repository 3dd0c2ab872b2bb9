#!/usr/bin/env bash
# Executions benchmark (issue: skills and executions), on a release server with SQLite, synchronous=FULL:
#   0. the workers alone: a backlog drained by 4 workers with no API traffic (recorded, no target);
#   1. POST /api/v1/executions with echo under wrk: accepted/s (target >= 1,500/s);
#   2. end-to-end: the same executions, from the first accepted to the last succeeded (target >= 500/s);
#   3. queued->started latency at a steady 50 executions/s for 20 s: p50/p99 (target p99 < 100 ms).
# The per-user concurrency cap is lifted for the run. Writes bench/results/executions-<time>.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}

bench_require_wrk
BIN=$(bench_binary)
trap bench_stop_server EXIT
export STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER=100000

# 0. The workers alone: a backlog is created with no workers running, then a restarted server drains it with no
#    API traffic, so the rate is the job workers' own (and the single SQLite writer's), not shared with requests.
STEWARD_WORKERS=0 BENCH_SEED=1 bench_start_server "$BIN"
STEWARD_BENCH_TOKEN=$(bench_login_token) wrk -t2 -c32 -d5s -s "$(dirname "$0")/execution.lua" "$BENCH_URL/api/v1/executions" > /dev/null
bench_restart_server "$BIN" STEWARD_WORKERS=4
drain=$(python3 - "$BENCH_DIR/steward.sqlite" <<'PY'
import json, sqlite3, sys, time
def query(sql):
    with sqlite3.connect(sys.argv[1], timeout=30) as db:
        return db.execute(sql).fetchall()
started = time.time()
while query("SELECT count(*) FROM executions WHERE status IN ('queued', 'running')")[0][0] > 0:
    if time.time() - started > 600: sys.exit("the backlog did not drain within 10 minutes")
    time.sleep(0.2)
total, first, last = query("SELECT count(*), min(started_at), max(finished_at) FROM executions WHERE status = 'succeeded'")[0]
print(json.dumps({"executions": total, "perSecond": round(total / (last - first), 1) if total else 0}))
PY
)
bench_stop_server

BENCH_SEED=1 bench_start_server "$BIN"
export STEWARD_BENCH_TOKEN=$(bench_login_token)
db="$BENCH_DIR/steward.sqlite"

wrk -t2 -c32 -d"$DURATION" --latency -s "$(dirname "$0")/execution.lua" "$BENCH_URL/api/v1/executions" > "$BENCH_DIR/create.txt"
create=$(bench_wrk_json "$BENCH_DIR/create.txt")
peak_rss=$(bench_rss_kb)

python3 - "$db" "$BENCH_URL" "$STEWARD_BENCH_TOKEN" "$create" "$peak_rss" "$bench_root/bench/results" "$drain" <<'PY'
import json, os, sqlite3, subprocess, sys, threading, time, urllib.request
db_path, url, token, create, rss, results = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
drain = json.loads(sys.argv[7])

def query(sql, *args):
    with sqlite3.connect(db_path, timeout=30) as db:
        return db.execute(sql, args).fetchall()

# 2. Wait for the wrk batch to drain, then measure first-accepted to last-finished.
batch_started = time.time()
while query("SELECT count(*) FROM executions WHERE status IN ('queued', 'running')")[0][0] > 0:
    if time.time() - batch_started > 600: sys.exit("executions did not drain within 10 minutes")
    time.sleep(0.5)
total, first_queued, last_finished = query("SELECT count(*), min(queued_at), max(finished_at) FROM executions WHERE status = 'succeeded'")[0]
failed = query("SELECT count(*) FROM executions WHERE status != 'succeeded'")[0][0]
e2e_rate = total / (last_finished - first_queued) if total else 0
mark = query("SELECT max(queued_at) FROM executions")[0][0]

# 3. Paced load: 50 executions per second for 20 seconds, one request every 20 ms.
def submit():
    request = urllib.request.Request(url + "/api/v1/executions", data=b'{"skillId":"echo","input":{"n":2}}', method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    urllib.request.urlopen(request, timeout=10).read()
threads, start = [], time.time()
for i in range(1000):
    delay = start + i * 0.02 - time.time()
    if delay > 0: time.sleep(delay)
    thread = threading.Thread(target=submit); thread.start(); threads.append(thread)
for thread in threads: thread.join()
while query("SELECT count(*) FROM executions WHERE status IN ('queued', 'running')")[0][0] > 0: time.sleep(0.2)
latencies = sorted((started - queued) * 1000 for queued, started in query(
    "SELECT queued_at, started_at FROM executions WHERE queued_at > ? AND started_at IS NOT NULL", mark))
pct = lambda p: round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 1) if latencies else 0

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
result = {
    "commit": commit, "cores": os.cpu_count(),
    "create": create, "endToEnd": {"executions": total, "notSucceeded": failed, "perSecond": round(e2e_rate, 1)},
    "drainAlone": drain,
    "queuedToStartedAt50PerSecond": {"count": len(latencies), "p50Ms": pct(0.5), "p99Ms": pct(0.99)},
    "peakRssKB": rss,
    "targets": {"createAtLeast1500": create["requestsPerSecond"] >= 1500, "endToEndAtLeast500": e2e_rate >= 500,
                "startLatencyP99Under100ms": pct(0.99) < 100},
}
os.makedirs(results, exist_ok=True)
path = os.path.join(results, time.strftime("executions-%Y%m%dT%H%M%SZ.json", time.gmtime()))
json.dump(result, open(path, "w"), indent=2)
print("| scenario | result | target |")
print("|---|---|---|")
print(f"| POST /api/v1/executions (echo), accepted/s | {create['requestsPerSecond']} (p50 {create['p50Ms']} ms, p99 {create['p99Ms']} ms, errors {create['errors']}) | >= 1500 |")
print(f"| end-to-end echo completions/s | {round(e2e_rate, 1)} ({total} executions, {failed} not succeeded) | >= 500 |")
print(f"| workers alone: a backlog drained with no API traffic, completions/s | {drain['perSecond']} ({drain['executions']} executions) | recorded |")
print(f"| queued->started at 50/s | p50 {pct(0.5)} ms, p99 {pct(0.99)} ms ({len(latencies)} executions) | p99 < 100 ms |")
print(f"\nPeak RSS {rss // 1024} MiB. Written to {path}")
PY
