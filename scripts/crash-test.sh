#!/usr/bin/env bash
# Crash safety: submits 1,000 executions (each sleeps 50 ms), kill -9s the server while they run, restarts it,
# and checks that every accepted execution reaches a terminal state and none is lost. Exits non-zero otherwise.
# Uses a release build unless STEWARD_BIN names a binary.
set -euo pipefail
source "$(dirname "$0")/../bench/lib.sh"
BIN=$(bench_binary)
trap bench_stop_server EXIT
export STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER=100000 STEWARD_JOB_LEASE_SECONDS=3 STEWARD_JOB_HEARTBEAT_SECONDS=1
BENCH_SEED=1 bench_start_server "$BIN"
TOKEN=$(bench_login_token)
port=${BENCH_URL##*:}

python3 - "$BENCH_URL" "$TOKEN" "$BENCH_DIR/accepted.txt" <<'PY'
import json, sys, urllib.request
url, token, out = sys.argv[1:4]
ids = []
for i in range(1000):
    request = urllib.request.Request(url + "/api/v1/executions", method="POST",
        data=json.dumps({"skillId": "wait", "input": {"seconds": 0.05}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    response = urllib.request.urlopen(request, timeout=10)
    assert response.status == 202, response.status
    ids.append(json.load(response)["id"])
open(out, "w").write("\n".join(ids))
print(f"accepted {len(ids)} executions")
PY

sleep 2
echo "kill -9 the server while executions run"
kill -9 "$BENCH_PID"; wait "$BENCH_PID" 2>/dev/null || true
running=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT count(*) FROM executions WHERE status IN ('queued','running')\").fetchone()[0])" "$BENCH_DIR/steward.sqlite")
echo "unfinished at the crash: $running"

echo "restart"
STEWARD_DATA_DIR="$BENCH_DIR" STEWARD_PORT="$port" STEWARD_LOG_LEVEL=warning "$BIN" serve > "$BENCH_DIR/server2.log" 2>&1 &
BENCH_PID=$!
for _ in $(seq 1 300); do curl -fs "$BENCH_URL/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done

python3 - "$BENCH_DIR/steward.sqlite" "$BENCH_DIR/accepted.txt" <<'PY'
import sqlite3, sys, time, uuid
db_path, accepted_path = sys.argv[1:3]
accepted = [line.strip() for line in open(accepted_path) if line.strip()]
deadline = time.time() + 300
while True:
    with sqlite3.connect(db_path, timeout=30) as db:
        rows = dict(db.execute("SELECT id, status FROM executions").fetchall())
    statuses = {}
    for id in accepted:
        key = uuid.UUID(id).bytes
        statuses[id] = rows.get(key) or rows.get(id) or rows.get(id.upper()) or rows.get(id.lower())
    missing = [id for id, status in statuses.items() if status is None]
    open_ = [id for id, status in statuses.items() if status in ("queued", "running")]
    if missing: sys.exit(f"LOST: {len(missing)} accepted executions are not in the database")
    if not open_: break
    if time.time() > deadline: sys.exit(f"{len(open_)} executions never finished")
    time.sleep(0.5)
counts = {}
for status in statuses.values(): counts[status] = counts.get(status, 0) + 1
print(f"all {len(accepted)} accepted executions are terminal: {counts}")
PY
