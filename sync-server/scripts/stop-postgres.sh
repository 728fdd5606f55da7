#!/usr/bin/env bash
# Stops the cluster started by start-postgres.sh and deletes its files.
set -euo pipefail
STATE=${GRIDWORK_PG_STATE:-/tmp/gridwork-pg.state}
if [[ ! -f "$STATE" ]]; then
    echo "stop-postgres: nothing to stop ($STATE missing)" >&2
    exit 0
fi
# shellcheck disable=SC1090
source "$STATE"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
case "$PGDIR" in
    /tmp/gridwork-pg.*) rm -rf "$PGDIR" ;;
esac
rm -f "$STATE"
echo "stop-postgres: stopped" >&2
