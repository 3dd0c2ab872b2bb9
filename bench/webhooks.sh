#!/usr/bin/env bash
# Webhook benchmark (issue: webhooks), release server on SQLite, a local receiver answering 200:
#   1. deliveries/s: 2,000 test pings enqueued through the API, measured as they arrive (target >= 300/s);
#   2. event-to-delivery latency p50/p99: executions at 10/s, each of their events timed from its commit
#      (events.at in the database) to its arrival at the receiver.
# Writes bench/results/webhooks-<time>.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
BIN=$(bench_binary)
receiver_port=$(bench_free_port)
work=$(mktemp -d /tmp/steward-hooks.XXXXXX)
cat > "$work/receiver.py" <<'PY'
import http.server, socketserver, sys, time, threading
log = open(sys.argv[2], "a", buffering=1)
lock = threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body go out as two writes; with Nagle on, the body waits for the client's delayed ACK
    # (40 ms on Linux), and the receiver, not the server, would set the pace.
    disable_nagle_algorithm = True
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        with lock: log.write(f"{time.time()} {self.headers['webhook-id']}\n")
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args): pass
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
PY
python3 "$work/receiver.py" "$receiver_port" "$work/received.log" & receiver=$!
cleanup() { kill "$receiver" 2>/dev/null || true; bench_stop_server; rm -rf "$work"; }
trap cleanup EXIT
export STEWARD_WEBHOOK_ALLOWED_HOSTS=127.0.0.1 STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER=100000
BENCH_SEED=1 bench_start_server "$BIN"
TOKEN=$(bench_login_token)
peak_rss=$(bench_rss_kb)

python3 - "$BENCH_URL" "$TOKEN" "$receiver_port" "$work/received.log" "$BENCH_DIR/steward.sqlite" "$bench_root/bench/results" "$peak_rss" <<'PY'
import concurrent.futures, json, os, sqlite3, subprocess, sys, time, urllib.request, uuid
url, token, port, log_path, db_path, results, rss = sys.argv[1:8]
def call(method, path, body=None):
    request = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    raw = urllib.request.urlopen(request, timeout=30).read()
    return json.loads(raw) if raw else None
def received():
    return [line.split() for line in open(log_path).read().splitlines()] if os.path.exists(log_path) else []

# 1. Throughput of the delivery path.
hook = call("POST", "/api/v1/webhooks", {"url": f"http://127.0.0.1:{port}/hook", "events": ["webhook.test"]})
created_from = time.time()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda _: call("POST", f"/api/v1/webhooks/{hook['id']}/test"), range(2000)))
created_rate = 2000 / (time.time() - created_from)
deadline = time.time() + 300
while len(received()) < 2000 and time.time() < deadline: time.sleep(0.2)
times = sorted(float(t) for t, _ in received())
rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0
call("DELETE", f"/api/v1/webhooks/{hook['id']}")

# 2. Event-to-delivery latency.
open(log_path, "w").close()
call("POST", "/api/v1/webhooks", {"url": f"http://127.0.0.1:{port}/hook", "events": ["execution.*"]})
for i in range(100):
    call("POST", "/api/v1/executions", {"skillId": "echo", "input": {"i": i}})
    time.sleep(0.1)
deadline = time.time() + 120
while len(received()) < 400 and time.time() < deadline: time.sleep(0.2)
arrivals = {event_id: float(t) for t, event_id in received()}
with sqlite3.connect(db_path) as db:
    committed = {uuid.UUID(bytes=row[0]).hex if isinstance(row[0], bytes) else str(row[0]).replace("-", "").lower(): row[1]
                 for row in db.execute("SELECT id, at FROM events WHERE type LIKE 'execution.%'")}
latencies = sorted((arrival - committed[event_id.replace("-", "").lower()]) * 1000
                   for event_id, arrival in arrivals.items() if event_id.replace("-", "").lower() in committed)
pct = lambda p: round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 1) if latencies else 0
result = {
    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "cores": os.cpu_count(), "deliveriesPerSecond": round(rate, 1), "delivered": len(times), "pingsCreatedPerSecond": round(created_rate, 1),
    "eventToDelivery": {"count": len(latencies), "p50Ms": pct(0.5), "p99Ms": pct(0.99)}, "peakRssKB": int(rss),
    "targets": {"deliveriesAtLeast300PerSecond": rate >= 300},
}
os.makedirs(results, exist_ok=True)
path = os.path.join(results, time.strftime("webhooks-%Y%m%dT%H%M%SZ.json", time.gmtime()))
json.dump(result, open(path, "w"), indent=2)
print(f"| deliveries/s (2,000 test pings) | {round(rate, 1)} ({len(times)} delivered; pings created at {round(created_rate, 1)}/s) | >= 300 |")
print(f"| event-to-delivery latency at 10 executions/s | p50 {pct(0.5)} ms, p99 {pct(0.99)} ms ({len(latencies)} deliveries) | recorded |")
print(f"Written to {path}")
PY
