#!/usr/bin/env bash
# Runs the test suite against a throwaway PostgreSQL cluster on a loopback port, then removes it.
# Installs PostgreSQL from the OS packages when it is missing. Extra arguments go to `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."

find_pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -Vr); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  return 1
}

if ! PG_BIN=$(find_pg_bin); then
  echo "==> installing PostgreSQL from the OS packages"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql postgresql-client >/dev/null
  PG_BIN=$(find_pg_bin) || { echo "PostgreSQL installed but initdb not found" >&2; exit 1; }
fi

# PostgreSQL refuses to run as root; use the postgres account the package creates.
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  RUN_AS=(runuser -u postgres --)
fi

WORK=$(mktemp -d /tmp/steward-pg.XXXXXX)
chmod 755 "$WORK"
[ ${#RUN_AS[@]} -eq 0 ] || chown postgres "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
PASSWORD="steward-test-$(date +%s)"

cleanup() {
  "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "$PASSWORD" > "$WORK/pwfile"
chmod 644 "$WORK/pwfile"
"${RUN_AS[@]}" "$PG_BIN/initdb" -D "$WORK/data" -U steward --pwfile="$WORK/pwfile" --auth=scram-sha-256 \
  --encoding=UTF8 --locale=C >/dev/null
"${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $WORK -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  start >/dev/null
PGPASSWORD="$PASSWORD" "$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U steward -d postgres -qc "CREATE DATABASE steward_test" >/dev/null
echo "==> PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT"

export TEST_DATABASE_URL="postgres://steward:$PASSWORD@127.0.0.1:$PORT/steward_test"
export PATH="$PG_BIN:$PATH"
# One shared database: tests run one at a time, each starting from an empty schema.
swift test --no-parallel "$@"
