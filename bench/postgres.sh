#!/usr/bin/env bash
# The PostgreSQL benchmarks (issue 27), run by `BENCH_DB=postgres bench/run.sh` or directly. A release build against
# a throwaway PostgreSQL cluster on this machine with its durable defaults (fsync, synchronous_commit and
# full_page_writes on, as SQLite runs with synchronous=FULL), sharing the cores with Steward and wrk:
#   1. one instance: health, /auth/me, the skill list over 1,000 skills, skill creation, execution creation (echo),
#      and end-to-end echo (a backlog of executions from the first accepted to the last succeeded); then the reads
#      over what that left: skill search, and the executions, audit and events lists; then every other list, over
#      the rows bench/run.sh seeds for them on SQLite;
#   2. two instances on the same database, without workers as in 1: skill and execution creation driven against
#      both at once, summed;
#   3. commit to SSE (bench/commit_to_sse.py): from a skill creation's 201 to its event on a stream, on the same
#      instance, on the other instance, and on the other instance while both create skills under wrk;
#   4. NOTIFY statements per execution, counted by pg_stat_statements over execution creation and the drain.
# Writes bench/results/postgres-<time>.json and the "PostgreSQL" table in docs/benchmarks.md.
# Environment: DURATION (default 10s), STEWARD_BIN (a prebuilt binary).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$bench_root/scripts/lib-postgres.sh"
DURATION=${DURATION:-10s}
bench_require_wrk
BIN=$(bench_binary)
export STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER=100000
work=$(mktemp -d /tmp/steward-pgbench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  pg_cleanup
  rm -rf "$work"
}
trap cleanup EXIT
pg_start "-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c shared_preload_libraries=pg_stat_statements"
pg_psql postgres -qc "CREATE DATABASE bench" >/dev/null
pg_psql bench -qc "CREATE EXTENSION pg_stat_statements" >/dev/null
export DATABASE_URL=$(pg_url bench)
export STEWARD_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export STEWARD_ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
export STEWARD_AUDIT_KEY=$(head -c 32 /dev/urandom | base64)
STEWARD_DATA_DIR="$work" STEWARD_LOG_LEVEL=warning "$BIN" migrate >/dev/null
STEWARD_DATA_DIR="$work" STEWARD_LOG_LEVEL=warning "$BIN" seed --samples >/dev/null

# serve NAME [ENV=VALUE...]: starts an instance on a free port; sets SERVED (its URL) and SERVED_PID.
serve() {
  local name=$1; shift
  local port; port=$(bench_free_port)
  mkdir -p "$work/$name"
  env "$@" STEWARD_DATA_DIR="$work/$name" STEWARD_PORT="$port" STEWARD_LOG_LEVEL=warning \
    STEWARD_ADMIN_EMAIL=bench@example.com STEWARD_ADMIN_PASSWORD=Bench-Password-42 "$BIN" serve > "$work/$name/server.log" 2>&1 &
  SERVED_PID=$!
  pids+=("$SERVED_PID")
  SERVED="http://127.0.0.1:$port"
  BENCH_URL=$SERVED BENCH_DIR="$work/$name" bench_wait_ready
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
run_wrk() { # run_wrk NAME ARGS...: one wrk run; writes $work/NAME.json
  local name=$1; shift
  wrk "$@" > "$work/$name.txt"
  bench_wrk_json "$work/$name.txt" > "$work/$name.json"
  echo "  $name: $(cat "$work/$name.json")" >&2
}

serve a; A=$SERVED; a_pid=$SERVED_PID
BENCH_URL=$A
TOKEN=$(bench_login_token)
export STEWARD_BENCH_TOKEN=$TOKEN
python3 - "$A" "$TOKEN" <<'PY'
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
auth=(-H "Authorization: Bearer $TOKEN")
echo "==> one instance" >&2
run_wrk health -t2 -c32 -d"$DURATION" --latency "$A/health/live"
run_wrk me -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/auth/me"
run_wrk skillList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/skills?limit=20"
run_wrk skillCreate -t2 -c32 -d"$DURATION" --latency -s "$bench_root/bench/skill_create.lua" "$A/api/v1/skills"
python3 "$bench_root/bench/commit_to_sse.py" "$A" "$A" "$TOKEN" 300 > "$work/sseSame.json"
echo "  commit to SSE, same instance: $(cat "$work/sseSame.json")" >&2
# Executions are created with no worker running, then one instance's workers drain them: the end-to-end rate.
stop "$a_pid"
serve a STEWARD_WORKERS=0; A=$SERVED; a_pid=$SERVED_PID
notifies() { "$PG_BIN/psql" "$DATABASE_URL" -XAtqc "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ILIKE '%pg_notify%' OR query ILIKE 'NOTIFY%'"; }
notifies_before=$(notifies)
run_wrk executionCreate -t2 -c32 -d"$DURATION" --latency -s "$bench_root/bench/execution.lua" "$A/api/v1/executions"
stop "$a_pid"
PG_PSQL="$PG_BIN/psql" python3 - "$work/drain.json" <<'PY' &
import json, os, subprocess, sys, time
def query(sql):
    out = subprocess.run([os.environ["PG_PSQL"], os.environ["DATABASE_URL"], "-XAtq", "-c", sql], capture_output=True, text=True, check=True)
    return out.stdout.strip()
started = time.time()
while int(query("SELECT count(*) FROM executions WHERE status IN ('queued', 'running')")) > 0:
    if time.time() - started > 600: sys.exit("the backlog did not drain within 10 minutes")
    time.sleep(0.2)
total, span = query("SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at)) FROM executions WHERE status = 'succeeded'").split("|")
json.dump({"executions": int(total), "perSecond": round(int(total) / float(span), 1) if float(span) else 0}, open(sys.argv[1], "w"))
PY
drainer=$!
serve a; A=$SERVED; a_pid=$SERVED_PID
wait "$drainer"
echo "  endToEnd: $(cat "$work/drain.json")" >&2
# The reads, now that there are executions, audit entries and events to list.
run_wrk skillSearch -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/skills?q=invoice%20report&limit=20"
run_wrk executionList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/executions?limit=20"
run_wrk auditList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/audit-logs?limit=20"
run_wrk eventList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/events?limit=20"
# The other lists, over what bench/run.sh lists on SQLite: 100 workflows, 100 schedules, 100 more users, 25 API keys
# and 20 webhooks.
bench_seed_lists "$A" "$TOKEN"
run_wrk userList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/users?limit=20"
run_wrk workflowList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/workflows?limit=20"
run_wrk scheduleList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/schedules?limit=20"
run_wrk apiKeyList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/api-keys"
run_wrk webhookList -t2 -c32 -d"$DURATION" --latency "${auth[@]}" "$A/api/v1/webhooks"
python3 - "$work/drain.json" "$(notifies)" "$notifies_before" > "$work/notify.json" <<'PY'
import json, sys
drained, after, before = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
print(json.dumps({"statements": after - before, "executions": drained["executions"],
                  "perExecution": round((after - before) / max(1, drained["executions"]), 3)}))
PY
echo "  NOTIFY statements: $(cat "$work/notify.json")" >&2

echo "==> two instances on the same database" >&2
# Both without workers, as the one instance was when it created executions: the two then do the same work as the
# one did (accept and write), not also run what they create.
stop "$a_pid"
serve a STEWARD_WORKERS=0; A=$SERVED; a_pid=$SERVED_PID
serve b STEWARD_WORKERS=0; B=$SERVED
python3 "$bench_root/bench/commit_to_sse.py" "$A" "$B" "$TOKEN" 300 > "$work/sseOther.json"
echo "  commit to SSE, other instance: $(cat "$work/sseOther.json")" >&2
for scenario in skillCreate:skill_create.lua:skills executionCreate:execution.lua:executions; do
  IFS=: read -r name script path <<< "$scenario"
  BENCH_SLUG_PREFIX=a wrk -t1 -c16 -d"$DURATION" --latency -s "$bench_root/bench/$script" "$A/api/v1/$path" > "$work/${name}Two-a.txt" &
  first=$!
  probe=""
  if [ "$name" = skillCreate ]; then
    python3 "$bench_root/bench/commit_to_sse.py" "$A" "$B" "$TOKEN" 200 20 > "$work/sseLoaded.json" &
    probe=$!
  fi
  BENCH_SLUG_PREFIX=b wrk -t1 -c16 -d"$DURATION" --latency -s "$bench_root/bench/$script" "$B/api/v1/$path" > "$work/${name}Two-b.txt"
  wait "$first"
  [ -z "$probe" ] || { wait "$probe"; echo "  commit to SSE under load: $(cat "$work/sseLoaded.json")" >&2; }
  python3 - "$(bench_wrk_json "$work/${name}Two-a.txt")" "$(bench_wrk_json "$work/${name}Two-b.txt")" > "$work/${name}Two.json" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"requestsPerSecond": round(a["requestsPerSecond"] + b["requestsPerSecond"], 1), "p99Ms": max(a["p99Ms"], b["p99Ms"]),
                  "errors": a["errors"] + b["errors"], "perInstance": [a["requestsPerSecond"], b["requestsPerSecond"]]}))
PY
  echo "  ${name} on two: $(cat "$work/${name}Two.json")" >&2
done

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{print $3}') python3 - "$work" "$bench_root/bench/results/postgres-$stamp.json" "$bench_root/docs/benchmarks.md" "$DURATION" <<'PY'
import json, os, re, subprocess, sys, time
work, out, doc, duration = sys.argv[1:5]
load = lambda name: json.load(open(os.path.join(work, name + ".json")))
names = ["health", "me", "skillList", "skillSearch", "executionList", "auditList", "eventList",
         "userList", "workflowList", "scheduleList", "apiKeyList", "webhookList", "skillCreate", "executionCreate", "drain",
         "skillCreateTwo", "executionCreateTwo",
         "sseSame", "sseOther", "sseLoaded", "notify"]
r = {name: load(name) for name in names}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit, "postgres": os.environ["PG_VERSION"],
          "cpu": cpu, "cores": os.cpu_count(), "wrkDuration": duration, "scenarios": r}
os.makedirs(os.path.dirname(out), exist_ok=True)
json.dump(result, open(out, "w"), indent=2)
verdict = lambda ok: "met" if ok else "**missed**"
h = r["health"]["requestsPerSecond"] or 1
def share(name, target):
    """A read's target: a share of /me's rate in the same run."""
    part = r[name]["requestsPerSecond"] / (r["me"]["requestsPerSecond"] or 1)
    return f"≥ {target:.0%} of /me: {verdict(part >= target)} ({part:.0%})"
row = lambda name, x, target="": f"| {name} | {x['requestsPerSecond']:,} | {x.get('p50Ms', '')} | {x['p99Ms']} | {x['errors']} | {target} |"
lines = [
    f"Commit `{commit}`, {result['date']}. {cpu}, {os.cpu_count()} cores; PostgreSQL {result['postgres']} with fsync, synchronous_commit",
    f"and full_page_writes on; release build; wrk {duration} per scenario on the same cores. Raw: `bench/results/{os.path.basename(out)}`.",
    "",
    "| scenario | requests/s | p50 ms | p99 ms | errors | target |",
    "|---|---|---|---|---|---|",
    row("GET /health/live", r["health"]),
    row("GET /api/v1/auth/me", r["me"], f"≥ 30% of health: {verdict(r['me']['requestsPerSecond'] / h >= 0.3)} ({r['me']['requestsPerSecond'] / h:.1%})"),
    row("GET /api/v1/skills (1,000 skills, limit 20)", r["skillList"], share("skillList", 0.5)),
    row("GET /api/v1/skills?q=invoice report", r["skillSearch"], share("skillSearch", 0.4)),
    row(f"GET /api/v1/executions ({r['drain']['executions']:,} executions, limit 20)", r["executionList"], share("executionList", 0.4)),
    row("GET /api/v1/audit-logs (limit 20)", r["auditList"], share("auditList", 0.4)),
    row("GET /api/v1/events (limit 20)", r["eventList"], share("eventList", 0.4)),
    row("GET /api/v1/users (101 users, limit 20)", r["userList"], share("userList", 0.4)),
    row("GET /api/v1/workflows (100 workflows, limit 20)", r["workflowList"], share("workflowList", 0.4)),
    row("GET /api/v1/schedules (100 schedules, limit 20)", r["scheduleList"], share("scheduleList", 0.4)),
    row("GET /api/v1/api-keys (25 keys, unpaged)", r["apiKeyList"], share("apiKeyList", 0.4)),
    row("GET /api/v1/webhooks (20 webhooks, unpaged)", r["webhookList"], share("webhookList", 0.4)),
    row("POST /api/v1/skills", r["skillCreate"]),
    row("POST /api/v1/executions (echo, no workers)", r["executionCreate"], f"≥ 1,000/s: {verdict(r['executionCreate']['requestsPerSecond'] >= 1000)}"),
    f"| end-to-end echo: {r['drain']['executions']:,} queued executions drained by one instance's 4 workers | {r['drain']['perSecond']:,} | | | | ≥ 400/s: {verdict(r['drain']['perSecond'] >= 400)} |",
    f"| POST /api/v1/skills on two instances at once (sum; each {r['skillCreateTwo']['perInstance']}) | {r['skillCreateTwo']['requestsPerSecond']:,} | | {r['skillCreateTwo']['p99Ms']} | {r['skillCreateTwo']['errors']} | ≥ one instance: {verdict(r['skillCreateTwo']['requestsPerSecond'] >= r['skillCreate']['requestsPerSecond'])} |",
    f"| POST /api/v1/executions on two instances at once (sum; each {r['executionCreateTwo']['perInstance']}) | {r['executionCreateTwo']['requestsPerSecond']:,} | | {r['executionCreateTwo']['p99Ms']} | {r['executionCreateTwo']['errors']} | ≥ one instance: {verdict(r['executionCreateTwo']['requestsPerSecond'] >= r['executionCreate']['requestsPerSecond'])} |",
]
sse = lambda name, label: f"| commit to SSE, {label} ({r[name]['count']} writes{', ' + str(r[name]['missing']) + ' never arrived' if r[name]['missing'] else ''}) | | {r[name]['p50Ms']} | {r[name]['p99Ms']} | | max {r[name]['maxMs']} ms |"
lines += [
    sse("sseSame", "same instance"),
    sse("sseOther", "other instance"),
    sse("sseLoaded", "other instance, both creating skills under wrk"),
    f"| NOTIFY statements per execution (creation, run, outcome; {r['notify']['statements']:,} for {r['notify']['executions']:,}) | {r['notify']['perExecution']} | | | | O(1) |",
]
table = "\n".join(lines)
text = open(doc).read()
start, end = "<!-- bench/postgres.sh:start -->", "<!-- bench/postgres.sh:end -->"
block = f"{start}\n{table}\n{end}"
if start in text:
    text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
else:
    text = text.rstrip("\n") + f"\n\n## PostgreSQL (`BENCH_DB=postgres bench/run.sh`)\n\n{block}\n"
open(doc, "w").write(text)
print(table)
PY
