# Shared helpers for the benchmark scripts: start a release server on a throwaway SQLite database, run wrk,
# parse its output. Source it; do not run it.

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Builds the release binary unless STEWARD_BIN names one.
bench_binary() {
  if [ -n "${STEWARD_BIN:-}" ]; then echo "$STEWARD_BIN"; return; fi
  (cd "$bench_root" && swift build -c release --product steward >&2)
  echo "$bench_root/.build/release/steward"
}

# bench_python_venv VENV PACKAGE VERSION: a virtual environment holding exactly that version of one PyPI package
# (the foreign clients of the interop and browser checks), made or updated only when it is not there yet.
bench_python_venv() {
  local venv=$1 package=$2 version=$3
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$package') != '$version')" 2>/dev/null; then
    echo "==> installing $package $version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "$package==$version"
  fi
}

bench_require_wrk() {
  command -v wrk >/dev/null && return
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
}

bench_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The scenarios measure the features, not the limiter: rate limits are off unless BENCH_RATE_LIMITS=1.
if [ -z "${BENCH_RATE_LIMITS:-}" ]; then
  for policy in LOGIN LOGIN_IP REGISTER MAIL MAIL_IP MFA API ANONYMOUS EXECUTIONS; do export "STEWARD_RATE_LIMIT_$policy=0"; done
fi

# bench_start_server BIN: starts it in the background on a fresh data directory; sets BENCH_PID, BENCH_URL, BENCH_DIR.
# BENCH_PORT names the port (default: a free one).
bench_start_server() {
  BENCH_DIR=$(mktemp -d /tmp/steward-bench.XXXXXX)
  local port=${BENCH_PORT:-}; [ -n "$port" ] || port=$(bench_free_port)
  BENCH_URL="http://127.0.0.1:$port"
  if [ -n "${BENCH_SEED:-}" ]; then
    STEWARD_DATA_DIR="$BENCH_DIR" STEWARD_LOG_LEVEL=warning "$1" migrate >/dev/null
    STEWARD_DATA_DIR="$BENCH_DIR" STEWARD_LOG_LEVEL=warning "$1" seed --samples >/dev/null
  fi
  STEWARD_DATA_DIR="$BENCH_DIR" STEWARD_PORT="$port" STEWARD_LOG_LEVEL=warning \
    STEWARD_ADMIN_EMAIL=bench@example.com STEWARD_ADMIN_PASSWORD=Bench-Password-42 \
    "$1" serve > "$BENCH_DIR/server.log" 2>&1 &
  BENCH_PID=$!
  bench_wait_ready
}

# bench_wait_ready: waits up to 30 s for /health/ready at BENCH_URL; prints the server log if it never answers.
bench_wait_ready() {
  for _ in $(seq 1 300); do
    curl -fs "$BENCH_URL/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not become ready; log:" >&2; cat "$BENCH_DIR/server.log" >&2; return 1
}

# bench_restart_server BIN [ENV=VALUE...]: stops the server and starts it again on the same data directory and a
# new port, with the extra environment; updates BENCH_PID and BENCH_URL.
bench_restart_server() {
  local bin=$1; shift
  kill "$BENCH_PID" 2>/dev/null && wait "$BENCH_PID" 2>/dev/null
  local port; port=$(bench_free_port)
  BENCH_URL="http://127.0.0.1:$port"
  env "$@" STEWARD_DATA_DIR="$BENCH_DIR" STEWARD_PORT="$port" STEWARD_LOG_LEVEL=warning "$bin" serve >> "$BENCH_DIR/server.log" 2>&1 &
  BENCH_PID=$!
  bench_wait_ready
}

bench_stop_server() {
  [ -n "${BENCH_PID:-}" ] && kill "$BENCH_PID" 2>/dev/null && wait "$BENCH_PID" 2>/dev/null
  [ -n "${BENCH_DIR:-}" ] && rm -rf "$BENCH_DIR"
  return 0
}

bench_login_token() {
  curl -fs -X POST "$BENCH_URL/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.com","password":"Bench-Password-42"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["accessToken"])'
}

# bench_rss_kb: the server's resident memory now.
bench_rss_kb() {
  awk '/VmRSS/ {print $2}' "/proc/$BENCH_PID/status" 2>/dev/null || echo 0
}

# bench_wrk_json FILE: {requestsPerSecond, p50Ms, p99Ms, errors} from wrk --latency output.
bench_wrk_json() {
  python3 - "$1" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
pct = {m.group(1): ms(m.group(2), m.group(3)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({
    "requestsPerSecond": round(float(rps.group(1)), 1) if rps else 0,
    "p50Ms": round(pct.get("50", 0), 2), "p99Ms": round(pct.get("99", 0), 2),
    "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
}))
PY
}

# bench_seed_executions URL TOKEN COUNT: runs the echo sample COUNT times through the API (waiting out the per-user
# cap when it answers 429), so the executions list has rows; the workers finish them as they come.
bench_seed_executions() {
  python3 - "$1" "$2" "$3" <<'PY'
import concurrent.futures, sys, time, urllib.error, urllib.request
url, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
def run(i):
    for _ in range(600):
        request = urllib.request.Request(url + "/api/v1/executions", data=b'{"skillId":"echo","input":{"n":1}}', method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
        try:
            urllib.request.urlopen(request, timeout=30).read()
            return
        except urllib.error.HTTPError as error:
            if error.code != 429: raise
            time.sleep(0.05)
    sys.exit("the per-user cap never let an execution in")
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(run, range(count)))
PY
}

# bench_seed_lists URL TOKEN: 100 workflows, 100 schedules and 100 more users (by sign-up), 25 API keys and 20
# webhooks (to an address nothing is sent to: no event they subscribe to happens while the lists are measured).
bench_seed_lists() {
  python3 - "$1" "$2" <<'PY'
import json, sys, urllib.error, urllib.request
url, token = sys.argv[1:3]
def post(path, body, auth=True):
    headers = {"Content-Type": "application/json"}
    if auth: headers["Authorization"] = "Bearer " + token
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        urllib.request.urlopen(request, timeout=30).read()
    except urllib.error.HTTPError as error:
        sys.exit(f"POST {path}: {error.code} {error.read()[:300]!r}")
for i in range(100):
    post("/api/v1/workflows", {"slug": f"flow-{i}", "name": f"Flow {i}", "steps": [{"id": "one", "skillId": "echo"}]})
    post("/api/v1/schedules", {"name": f"nightly-{i}", "target": {"skillId": "echo"}, "cron": "@daily", "enabled": False})
    post("/api/v1/auth/register", {"email": f"user{i}@example.com", "username": f"user{i}", "password": "Long-Enough-Pass-42"}, auth=False)
for i in range(25):
    post("/api/v1/api-keys", {"name": f"key-{i}", "scopes": ["skills:read"]})
for i in range(20):
    post("/api/v1/webhooks", {"url": f"https://hooks.example.com/{i}", "events": ["execution.*"]})
PY
}
