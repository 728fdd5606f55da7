#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the relay's tests and prints its URL on stdout.
#   url=$(sync-server/scripts/start-postgres.sh)
#   GRIDWORK_TEST_POSTGRES_URL=$url cargo test -p gridwork-server
#   sync-server/scripts/stop-postgres.sh
# Installs PostgreSQL from Debian's packages when missing (needs root). The cluster lives in a temp
# directory owned by the postgres user, listens on 127.0.0.1 only, on a free port. Its location is
# recorded in ${GRIDWORK_PG_STATE:-/tmp/gridwork-pg.state} for stop-postgres.sh.
set -euo pipefail

STATE=${GRIDWORK_PG_STATE:-/tmp/gridwork-pg.state}
log() { echo "start-postgres: $*" >&2; }

if [[ -f "$STATE" ]]; then
    # shellcheck disable=SC1090
    source "$STATE"
    if [[ -n "${PGDATA_DIR:-}" ]] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
        log "already running"
        echo "$URL"
        exit 0
    fi
fi

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
PGBIN=$(find_bin || true)
if [[ -z "$PGBIN" || ! -x "$PGBIN/initdb" ]]; then
    log "installing postgresql from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y postgresql >/dev/null 2>&1; then
        apt-get update >/dev/null
        apt-get install -y postgresql >/dev/null
    fi
    PGBIN=$(find_bin)
fi
id postgres >/dev/null 2>&1 || { log "no postgres user after install"; exit 1; }

# A free loopback port, chosen by the kernel.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d /tmp/gridwork-pg.XXXXXX)
chown postgres:postgres "$DIR"
chmod 700 "$DIR"
PGDATA_DIR="$DIR/data"
PASS=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')

runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR -c fsync=on -c max_connections=200" \
    start >/dev/null

psql_() { runuser -u postgres -- "$PGBIN/psql" -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -q "$@"; }
psql_ -c "CREATE ROLE gridwork LOGIN PASSWORD '$PASS' CREATEDB"
psql_ -c "CREATE DATABASE gridwork_test OWNER gridwork"

URL="postgres://gridwork:$PASS@127.0.0.1:$PORT/gridwork_test"
cat >"$STATE" <<STATE_EOF
PGBIN=$PGBIN
PGDATA_DIR=$PGDATA_DIR
PGDIR=$DIR
URL=$URL
STATE_EOF
chmod 600 "$STATE"
log "running on 127.0.0.1:$PORT (data in $DIR)"
echo "$URL"
