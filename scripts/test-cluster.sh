#!/usr/bin/env bash
# The cluster suite: three `steward serve` instances on one throwaway PostgreSQL, driven by a Python client
# (scripts/cluster_check.py) that checks the queue, cron, realtime, rate limits, idempotency and revocation across
# instances, then injects faults: kill -9 of an instance and of the sequencer's lease holder, a PostgreSQL restart,
# a dropped LISTEN connection; and runs the core flows through PgBouncer in transaction mode. Installs PostgreSQL and PgBouncer when missing.
#
# STEWARD_BIN names the binary (default: the debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-postgres.sh
BIN=${STEWARD_BIN:-.build/debug/steward}
[ -x "$BIN" ] || { echo "no steward binary at $BIN; build first" >&2; exit 1; }

command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { echo "==> installing PgBouncer"; pg_install pgbouncer; }
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

BOUNCER_PID=""
cleanup() {
  [ -z "$BOUNCER_PID" ] || kill "$BOUNCER_PID" 2>/dev/null || true
  pg_cleanup
}
trap cleanup EXIT
pg_start
pg_psql postgres -qc "CREATE DATABASE steward_cluster" >/dev/null

# PgBouncer in transaction mode in front of the same database (it refuses to run as root, like PostgreSQL).
BOUNCER_PORT=$(pg_free_port)
printf '"steward" "%s"\n' "$PG_PASSWORD" > "$PG_WORK/userlist.txt"
cat > "$PG_WORK/pgbouncer.ini" <<INI
[databases]
steward_cluster = host=127.0.0.1 port=$PG_PORT dbname=steward_cluster
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $PG_WORK/userlist.txt
pool_mode = transaction
max_client_conn = 400
default_pool_size = 20
logfile = $PG_WORK/pgbouncer.log
INI
chmod 644 "$PG_WORK/userlist.txt" "$PG_WORK/pgbouncer.ini"
"${PG_RUN_AS[@]}" "$PGBOUNCER" "$PG_WORK/pgbouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!

export CLUSTER_BIN=$BIN
export CLUSTER_DATABASE_URL=$(pg_url steward_cluster)
export CLUSTER_BOUNCER_URL="postgres://steward:$PG_PASSWORD@127.0.0.1:$BOUNCER_PORT/steward_cluster"
export CLUSTER_PSQL="$PG_BIN/psql"
export PGPASSWORD=$PG_PASSWORD
# How the client restarts PostgreSQL (fast shutdown: open sessions are cut, as in a failover or an upgrade).
export CLUSTER_PG_RESTART="${PG_RUN_AS[*]} $PG_BIN/pg_ctl -D $PG_WORK/data -l $PG_WORK/server.log -m fast -w -t 60 restart"
python3 scripts/cluster_check.py "$@"
