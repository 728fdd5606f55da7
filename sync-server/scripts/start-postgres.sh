#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the relay's tests and prints its URL on stdout (and nothing
# else: callers read the URL from it).
#   url=$(sync-server/scripts/start-postgres.sh)
#   GRIDWORK_TEST_POSTGRES_URL=$url cargo test -p gridwork-server
#   sync-server/scripts/stop-postgres.sh
# Installs PostgreSQL from Debian's packages when missing (needs root). The cluster lives in a temp
# directory owned by the postgres user, listens on 127.0.0.1 only, on a free port. It accepts plain and
# TLS connections: a throwaway CA and a server certificate for 127.0.0.1 and localhost are made with
# openssl; the CA's path is CA= in the state file (for GRIDWORK_TEST_POSTGRES_CA, sslrootcert=). The
# state file ${GRIDWORK_PG_STATE:-/tmp/gridwork-pg.state} also records the cluster for stop-postgres.sh.
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
if ! command -v openssl >/dev/null; then
    log "installing openssl from Debian packages (for the test TLS certificates)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y openssl >/dev/null 2>&1 \
        || { apt-get update >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y openssl >/dev/null; }
fi

# A free loopback port, chosen by the kernel.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d /tmp/gridwork-pg.XXXXXX)
chown postgres:postgres "$DIR"
chmod 700 "$DIR"
PGDATA_DIR="$DIR/data"
PASS=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')

runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1

# TLS: a CA valid for a day and a server certificate it signs (ECDSA P-256, SHA-256). The CA's key is
# deleted at once; the server's key stays with the postgres user (0600). $DIR stays 0700: it also holds
# the trust-authenticated Unix socket (the tests run as root, like this script).
TLS="$DIR/tls"
mkdir -p "$TLS"
openssl_() { openssl "$@" >>"$DIR/openssl.log" 2>&1; }
openssl_ req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 1 \
    -subj "/CN=gridwork test CA" -keyout "$TLS/ca.key" -out "$TLS/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl_ req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
    -subj "/CN=localhost" -keyout "$TLS/server.key" -out "$TLS/server.csr"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$TLS/server.ext"
openssl_ x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 1 -sha256 -extfile "$TLS/server.ext" -out "$TLS/server.crt"
rm -f "$TLS/ca.key" "$TLS/server.csr" "$TLS/server.ext"
chown -R postgres:postgres "$TLS"
chmod 600 "$TLS/server.key"
chmod 644 "$TLS/ca.crt" "$TLS/server.crt"

runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR -c fsync=on -c max_connections=200 -c ssl=on -c ssl_cert_file=$TLS/server.crt -c ssl_key_file=$TLS/server.key" \
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
CA=$TLS/ca.crt
STATE_EOF
chmod 600 "$STATE"
log "running on 127.0.0.1:$PORT (data in $DIR; TLS with the CA $TLS/ca.crt)"
echo "$URL"
