#!/usr/bin/env bash
# Every test of the project, on a fresh Debian machine with only Rust, Node/npm, Java 17 and gcc:
#   1. builds the workspace once (debug, shared target dir);
#   2. starts a throwaway PostgreSQL on 127.0.0.1 (installed from Debian's packages when missing), plain
#      and TLS, so the relay's suites run against both backends (with CI set, as .ci/run does, a
#      PostgreSQL test without its database fails instead of skipping);
#   3. runs the Rust tests: core (store, merge, search, encryption, migration, property, crash), relay
#      (SQLite + PostgreSQL), end-to-end (real relay process + devices), CLI;
#   4. checks sync-server/openapi.yaml against a running relay with schemathesis (pinned, from PyPI,
#      into .tools/);
#   5. (before 3) installs Chromium and its WebDriver from Debian for the web console's browser test,
#      whose screenshots land in $CARGO_TARGET_DIR/screenshots;
#   6. generates the Kotlin and Swift bindings and runs the Kotlin tests on the JVM (kotlinc from npm,
#      JNA from Debian).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "build the workspace"
cargo build --workspace --all-targets --locked

step "start PostgreSQL on loopback"
GRIDWORK_TEST_POSTGRES_URL=$(sync-server/scripts/start-postgres.sh)
export GRIDWORK_TEST_POSTGRES_URL
trap 'sync-server/scripts/stop-postgres.sh >/dev/null 2>&1 || true' EXIT
# The CA of the cluster's TLS certificate, for the sslmode=verify-full tests.
GRIDWORK_TEST_POSTGRES_CA=$(sed -n 's/^CA=//p' "${GRIDWORK_PG_STATE:-/tmp/gridwork-pg.state}")
export GRIDWORK_TEST_POSTGRES_CA

step "a browser for the web console's tests (Debian's chromium and chromedriver)"
scripts/setup-browser.sh >/dev/null
# The console's screenshots, for a look after the run.
export GRIDWORK_SCREENSHOTS=${GRIDWORK_SCREENSHOTS:-$CARGO_TARGET_DIR/screenshots}

step "Rust tests"
cargo test --workspace --locked

step "the OpenAPI document against a running relay (schemathesis)"
GRIDWORK_SERVER_BIN=$CARGO_TARGET_DIR/debug/gridwork-server sync-server/scripts/check-openapi.sh

step "Kotlin bindings on the JVM, Swift bindings generated"
# The relay the Kotlin sync tests start encrypts its store: a throwaway key for this run.
GRIDWORK_RELAY_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') bindings/scripts/test-kotlin.sh

step "all tests passed"
