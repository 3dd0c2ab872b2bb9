#!/usr/bin/env bash
# CPU per login (issue 23's "login cost"): the server's own CPU time (utime + stime from /proc) divided by the
# logins it completed (steward_logins_total), once with one client logging in sequentially and once under a
# 16-connection storm. Under the storm the count is the server's, not wrk's: logins queued for the hashing pool when
# wrk stops are still hashed, and dividing their CPU by wrk's count overstates the cost per login by about a fifth.
# bcrypt cost 12, release build, a throwaway SQLite database. Prints one line per case.
# Environment: STEWARD_BIN (a prebuilt binary), LOGINS (sequential logins, default 20), DURATION (storm, default 10s).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_require_wrk
BIN=$(bench_binary)
trap bench_stop_server EXIT
bench_start_server "$BIN"
ticks=$(getconf CLK_TCK)
logins_done() { curl -fs "$BENCH_URL/metrics" | awk '/^steward_logins_total\{step="password",outcome="success"\}/ {print $2}'; }
cpu_ms() { awk -v t="$ticks" '{print ($14 + $15) * 1000 / t}' "/proc/$BENCH_PID/stat"; }
body='{"email":"bench@example.com","password":"Bench-Password-42"}'

logins=${LOGINS:-20}
bench_login_token >/dev/null
before=$(cpu_ms)
for _ in $(seq 1 "$logins"); do
  curl -fs -o /dev/null -X POST "$BENCH_URL/api/v1/auth/login" -H 'Content-Type: application/json' -d "$body"
done
after=$(cpu_ms)
python3 -c "print(f'sequential: {($after - $before) / $logins:.1f} ms of server CPU per login ($logins logins)')"

before=$(cpu_ms); done_before=$(logins_done)
wrk -t1 -c16 -d"${DURATION:-10s}" --timeout 10s -s "$bench_root/bench/login.lua" "$BENCH_URL/api/v1/auth/login" > "$BENCH_DIR/storm.txt"
# The logins still queued when wrk stops are hashed all the same: wait until the count stops moving.
previous=-1
while [ "$(logins_done)" != "$previous" ]; do previous=$(logins_done); sleep 1; done
after=$(cpu_ms); done_after=$(logins_done)
answered=$(awk '/requests in/ {print $1}' "$BENCH_DIR/storm.txt")
python3 -c "
cpu, done, answered = ($after - $before), ($done_after - $done_before), $answered
print(f'storm (16 connections): {cpu / done:.1f} ms of server CPU per login ({done:.0f} completed, {answered} answered to wrk; by wrk\'s count {cpu / answered:.1f} ms)')"
