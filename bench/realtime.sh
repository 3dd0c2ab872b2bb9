#!/usr/bin/env bash
# Realtime benchmark (issue: realtime), on a release server with SQLite, synchronous=FULL:
#   holds SUBSCRIBERS concurrent event streams (half SSE, half WebSocket) while executions run and report
#   progress (RATE echo executions per second for DURATION seconds, four events each), and records
#   - fan-out latency p50/p99: from the event's `at` (written by the server) to its arrival at each subscriber
#     (target p99 < 250 ms on a 2-core machine);
#   - the server's memory per connection: RSS with every stream open minus RSS before, divided by the count.
# The client (bench/realtime_client.py, Python asyncio + aiohttp) runs on the same machine and shares its cores.
# Writes bench/results/realtime-<time>.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SUBSCRIBERS=${SUBSCRIBERS:-1000}
RATE=${RATE:-5}
DURATION=${DURATION:-30}

python3 -c 'import aiohttp' 2>/dev/null || pip install -q aiohttp >/dev/null
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
BIN=$(bench_binary)
trap bench_stop_server EXIT
# Every subscriber comes from 127.0.0.1: the per-address connection limit (256 by default) must admit them all.
export STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER=100000 STEWARD_MAX_STREAMS_PER_USER=$((SUBSCRIBERS + 10)) \
  STEWARD_HTTP_MAX_CONNECTIONS_PER_ADDRESS=$((SUBSCRIBERS + 64))
BENCH_SEED=1 bench_start_server "$BIN"
token=$(bench_login_token)
python3 "$(dirname "$0")/realtime_client.py" --url "$BENCH_URL" --token "$token" --pid "$BENCH_PID" \
  --subscribers "$SUBSCRIBERS" --rate "$RATE" --duration "$DURATION" --results "$bench_root/bench/results" --db "$BENCH_DIR/steward.sqlite"
