#!/usr/bin/env bash
# MCP benchmark (issue 24), on a release server with SQLite (synchronous=FULL), wrk on the same cores:
#   1. tools/call of echo over 2026-07-28 under wrk: calls/s and p99 (target >= 1,000/s, p99 < 50 ms). Each call
#      is a whole execution: created, run by a worker, its outcome followed through the event hub, and audited;
#   2. tools/list over 1,000 skills (the first page of 200 tools), under wrk and one at a time: p99 (target < 20 ms);
#   3. the whole catalogue, all five pages, read one request after another by one client: per-listing time.
# Writes bench/results/mcp-<time>.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}
bench_require_wrk
BIN=$(bench_binary)
trap bench_stop_server EXIT
export STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER=100000

BENCH_SEED=1 bench_start_server "$BIN"
export STEWARD_BENCH_TOKEN=$(bench_login_token)
work=$(mktemp -d /tmp/steward-mcpbench.XXXXXX)
run() { # run NAME ARGS...: one wrk run; prints its JSON
  local name=$1; shift
  wrk "$@" > "$work/$name.txt"
  bench_wrk_json "$work/$name.txt" | tee "$work/$name.json" | sed "s/^/  $name: /" >&2
}

echo "==> tools/call echo (2026-07-28)" >&2
run call -t2 -c32 -d"$DURATION" --latency -s "$bench_root/bench/mcp_call.lua" "$BENCH_URL/mcp"
calls=$(python3 - "$BENCH_DIR/steward.sqlite" <<'PY'
import sqlite3, sys
with sqlite3.connect(sys.argv[1], timeout=30) as db:
    print(db.execute("SELECT count(*) FROM executions WHERE origin = 'mcp' AND status = 'succeeded'").fetchone()[0])
PY
)
echo "  executions from MCP that succeeded: $calls" >&2

echo "==> 1,000 skills" >&2
python3 - "$BENCH_URL" "$STEWARD_BENCH_TOKEN" <<'PY'
import concurrent.futures, json, sys, urllib.request
url, token = sys.argv[1:3]
def create(i):
    body = {"slug": f"tool-{i:04d}", "name": f"Tool {i}", "description": f"Seeded tool {i}.", "tags": ["seed"],
            "runner": {"type": "builtin", "name": "echo"}, "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    request = urllib.request.Request(url + "/api/v1/skills", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    urllib.request.urlopen(request, timeout=30).read()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(create, range(1000)))
PY
echo "==> tools/list, first page of 200 tools" >&2
run list -t2 -c32 -d"$DURATION" --latency -s "$bench_root/bench/mcp_list.lua" "$BENCH_URL/mcp"
run listOne -t1 -c1 -d"$DURATION" --latency -s "$bench_root/bench/mcp_list.lua" "$BENCH_URL/mcp"
whole=$(python3 - "$BENCH_URL" "$STEWARD_BENCH_TOKEN" <<'PY'
import json, sys, time, urllib.request
url, token = sys.argv[1:3]
meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
times, count = [], 0
for _ in range(20):
    started, cursor, count = time.perf_counter(), None, 0
    while True:
        params = {"_meta": meta, **({"cursor": cursor} if cursor else {})}
        request = urllib.request.Request(url + "/mcp", method="POST", data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}).encode(),
                                         headers={"Content-Type": "application/json", "Accept": "application/json", "MCP-Protocol-Version": "2026-07-28",
                                                  "Mcp-Method": "tools/list", "Authorization": "Bearer " + token})
        result = json.load(urllib.request.urlopen(request, timeout=30))["result"]
        count += len(result["tools"])
        cursor = result.get("nextCursor")
        if not cursor: break
    times.append((time.perf_counter() - started) * 1000)
times.sort()
print(json.dumps({"tools": count, "p50Ms": round(times[len(times) // 2], 1), "maxMs": round(times[-1], 1)}))
PY
)
echo "  whole catalogue: $whole" >&2
rss=$(bench_rss_kb)
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$bench_root/bench/results"
python3 - "$work" "$whole" "$rss" "$calls" > "$bench_root/bench/results/mcp-$stamp.json" <<'PY'
import json, sys
work, whole, rss, calls = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
load = lambda name: json.load(open(f"{work}/{name}.json"))
print(json.dumps({"toolsCall": load("call"), "mcpExecutionsSucceeded": calls, "toolsList": load("list"),
                  "toolsListOneClient": load("listOne"), "wholeCatalogue": whole, "rssKb": rss}, indent=2))
PY
rm -rf "$work"
echo "bench/results/mcp-$stamp.json" >&2
