#!/usr/bin/env bash
# The skill list's cost by page (issue 23): over 1,000 skills on SQLite, requests/s of /auth/me, the first page
# (limit 20), the second page (the cursor the first one hands out) and a page near the end, for each binary given,
# one after the other on fresh databases. A page should cost the same wherever it falls.
#   bench/list_pages.sh BINARY [BINARY...]
# Environment: DURATION (default 8s).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_require_wrk
DURATION=${DURATION:-8s}
trap bench_stop_server EXIT
rate() { wrk -t2 -c32 -d"$DURATION" -H "Authorization: Bearer $TOKEN" "$1" | awk '/Requests\/sec/ {print $2}'; }
for BIN in "$@"; do
  bench_start_server "$BIN"
  TOKEN=$(bench_login_token)
  cursors=$(python3 - "$BENCH_URL" "$TOKEN" <<'PY'
import concurrent.futures, json, sys, urllib.parse, urllib.request
url, token = sys.argv[1:3]
headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
def create(i):
    body = {"slug": f"seed-{i}", "name": f"Seed {i}", "description": f"Seeded skill {i}.", "category": ["ops", "data"][i % 2],
            "tags": ["seed"], "runner": {"type": "builtin", "name": "echo"}, "inputSchema": {"type": "object"}}
    urllib.request.urlopen(urllib.request.Request(url + "/api/v1/skills", data=json.dumps(body).encode(), method="POST", headers=headers), timeout=30).read()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(create, range(1000)))
def page(cursor=None):
    query = "?limit=20" + ("&cursor=" + urllib.parse.quote(cursor) if cursor else "")
    return json.load(urllib.request.urlopen(urllib.request.Request(url + "/api/v1/skills" + query, headers=headers)))
first = page()
cursor, pages = first["nextCursor"], [first["nextCursor"]]
while cursor:
    cursor = page(cursor).get("nextCursor")
    if cursor: pages.append(cursor)
print(urllib.parse.quote(pages[0]), urllib.parse.quote(pages[-2]))
PY
)
  read -r second late <<< "$cursors"
  echo "$BIN: /me $(rate "$BENCH_URL/api/v1/auth/me")/s; first page $(rate "$BENCH_URL/api/v1/skills?limit=20")/s;" \
       "second page $(rate "$BENCH_URL/api/v1/skills?limit=20&cursor=$second")/s; near the end $(rate "$BENCH_URL/api/v1/skills?limit=20&cursor=$late")/s"
  bench_stop_server
done
