# Throwaway PostgreSQL clusters for the test scripts. Source it; do not run it.
#
# pg_start [EXTRA_SERVER_OPTIONS]: installs PostgreSQL from the OS packages when missing, starts a fresh cluster on
# a free loopback port and sets PG_BIN, PG_WORK, PG_PORT, PG_PASSWORD and PG_RUN_AS (the command prefix that runs
# as the postgres account when we are root). The cluster is removed by pg_cleanup (install it as an EXIT trap).

pg_find_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -Vr); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  return 1
}

# pg_install PACKAGE...: installs OS packages, as root or through sudo.
pg_install() {
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pg_start() {
  if ! PG_BIN=$(pg_find_bin); then
    echo "==> installing PostgreSQL from the OS packages"
    pg_install postgresql postgresql-client
    PG_BIN=$(pg_find_bin) || { echo "PostgreSQL installed but initdb not found" >&2; return 1; }
  fi
  # PostgreSQL refuses to run as root; use the postgres account the package creates.
  PG_RUN_AS=()
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    PG_RUN_AS=(runuser -u postgres --)
  fi
  PG_WORK=$(mktemp -d /tmp/steward-pg.XXXXXX)
  chmod 755 "$PG_WORK"
  [ ${#PG_RUN_AS[@]} -eq 0 ] || chown postgres "$PG_WORK"
  PG_PORT=$(pg_free_port)
  PG_PASSWORD="steward-test-$(date +%s)"
  echo "$PG_PASSWORD" > "$PG_WORK/pwfile"
  chmod 644 "$PG_WORK/pwfile"
  "${PG_RUN_AS[@]}" "$PG_BIN/initdb" -D "$PG_WORK/data" -U steward --pwfile="$PG_WORK/pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C >/dev/null
  "${PG_RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_WORK/data" -l "$PG_WORK/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_WORK -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 ${1:-}" \
    start >/dev/null
  echo "==> PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
}

# pg_psql DATABASE ARGS...: psql as the steward role.
pg_psql() {
  local database=$1; shift
  PGPASSWORD="$PG_PASSWORD" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U steward -d "$database" "$@"
}

pg_url() { echo "postgres://steward:$PG_PASSWORD@127.0.0.1:$PG_PORT/$1"; }

pg_cleanup() {
  [ -n "${PG_WORK:-}" ] || return 0
  "${PG_RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_WORK"
}
