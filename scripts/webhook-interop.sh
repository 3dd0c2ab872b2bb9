#!/usr/bin/env bash
# Interop check: real deliveries from a running steward are verified by the reference Python library
# (`standardwebhooks` from PyPI), unchanged. Each delivery must verify, and a tampered copy must not.
# STEWARD_BIN names the binary (default: the debug build, else a release build is made).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
if [ -z "${STEWARD_BIN:-}" ] && [ -x .build/debug/steward ]; then export STEWARD_BIN=.build/debug/steward; fi
python3 -c 'import standardwebhooks' 2>/dev/null || python3 -m pip install -q standardwebhooks
BIN=$(bench_binary)

work=$(mktemp -d /tmp/steward-interop.XXXXXX)
receiver_port=$(bench_free_port)
cat > "$work/receiver.py" <<'PY'
import http.server, json, os, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
work, port = sys.argv[1], int(sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        secret = open(os.path.join(work, "secret")).read().strip()
        verifier = Webhook(secret)
        try:
            verifier.verify(body, headers)
            verdict = "verified"
        except WebhookVerificationError as error:
            verdict = "rejected: " + str(error)
        try:
            verifier.verify(body + b" ", headers)
            tamper = "tampered copy ACCEPTED"
        except WebhookVerificationError:
            tamper = "tampered copy rejected"
        with open(os.path.join(work, "log"), "a") as log:
            log.write(json.dumps({"verdict": verdict, "tamper": tamper, "type": json.loads(body)["type"]}) + "\n")
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
touch "$work/secret"
python3 "$work/receiver.py" "$work" "$receiver_port" & receiver=$!
cleanup() { kill "$receiver" 2>/dev/null || true; bench_stop_server; rm -rf "$work"; }
trap cleanup EXIT

export STEWARD_WEBHOOK_ALLOWED_HOSTS=127.0.0.1
BENCH_SEED=1 bench_start_server "$BIN"
TOKEN=$(bench_login_token)
python3 - "$BENCH_URL" "$TOKEN" "$receiver_port" "$work" <<'PY'
import json, os, sys, time, urllib.request
url, token, port, work = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
def call(method, path, body=None):
    request = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    return json.load(urllib.request.urlopen(request, timeout=10))
hook = call("POST", "/api/v1/webhooks", {"url": f"http://127.0.0.1:{port}/hook", "events": ["execution.*", "webhook.test"]})
open(os.path.join(work, "secret"), "w").write(hook["secret"])
call("POST", f"/api/v1/webhooks/{hook['id']}/test")
for n in range(3):
    call("POST", "/api/v1/executions", {"skillId": "echo", "input": {"n": n}})
expected = 1 + 3 * 4
deadline = time.time() + 60
log = os.path.join(work, "log")
while time.time() < deadline:
    lines = open(log).read().splitlines() if os.path.exists(log) else []
    if len(lines) >= expected: break
    time.sleep(0.3)
entries = [json.loads(line) for line in lines]
verified = sum(1 for e in entries if e["verdict"] == "verified")
bad = [e for e in entries if e["verdict"] != "verified" or e["tamper"] != "tampered copy rejected"]
print(f"webhook interop: {verified} of {len(entries)} deliveries verified by standardwebhooks; tampered copies rejected: {len(entries) - len(bad)}")
if len(entries) < expected or bad:
    sys.exit(f"interop failed: expected {expected} verified deliveries; problems: {bad[:3]}")
PY
