#!/usr/bin/env bash
# The mobile-bindings check, end to end, on a Linux machine with Rust, Java 17 and Node/npm:
#   1. builds the workspace in one cargo invocation (debug): the gridwork-ffi cdylib, its uniffi-bindgen
#      and the gridwork-server relay;
#   2. generates the Kotlin bindings, and the Swift bindings (Swift, C header, modulemap) into ios/,
#      from that same library, and checks them;
#   3. compiles the generated Kotlin with the JVM tests (bindings/tests/kotlin) using kotlinc, and
#      runs them on the JVM with JNA loading the freshly built libgridwork_ffi.so.
# Prints one line per check and test, then `N passed, M failed`; exits non-zero on any failure.
#
# Env: CARGO_TARGET_DIR (default <repo>/target), GRIDWORK_TESTS (space-separated test class names,
# e.g. "StoreTest"; default all), CI=true also fails when the committed Swift bindings are stale.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
[[ "$TARGET" = /* ]] || TARGET="$REPO/$TARGET"
OUT="$TARGET/gridwork-bindings"
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS  $*"; }
fail() { failed=$((failed + 1)); echo "FAIL  $*"; }
finish() { echo "$passed passed, $failed failed"; [[ $failed -eq 0 && $passed -gt 0 ]]; exit $?; }
die() { fail "$*"; finish; }

# ---------------------------------------------------------------------------------------- toolchain
env_lines="$("$REPO/scripts/setup-kotlin.sh" --print-env)" || die "setup: scripts/setup-kotlin.sh"
eval "$env_lines"
CP_LIBS="$JNA_JAR:$JUNIT_JAR:$HAMCREST_JAR:$KOTLIN_LIB/kotlin-test.jar:$KOTLIN_LIB/kotlin-test-junit.jar:$KOTLIN_LIB/kotlinx-coroutines-core-jvm.jar"
CP_RUN="$KOTLIN_LIB/kotlin-stdlib.jar:$CP_LIBS"

# -------------------------------------------------------------------------------------------- build
# The same invocation as scripts/test-all.sh's build: building a subset of the workspace (`-p a -p b`), or
# without `--all-targets` (no dev-dependencies), resolves other features, and dozens of dependencies are
# built again.
echo "building the workspace: gridwork-ffi, uniffi-bindgen, gridwork-server (target dir $TARGET)"
cargo build --workspace --all-targets || die "build: cargo build --workspace --all-targets"
LIB="$TARGET/debug/libgridwork_ffi.so"
SERVER="$TARGET/debug/gridwork-server"
BINDGEN="$TARGET/debug/uniffi-bindgen"
for built in "$LIB" "$SERVER" "$BINDGEN"; do
  [[ -x "$built" || -f "$built" ]] || die "build: $built is missing after cargo build --workspace --all-targets"
done
pass "build: libgridwork_ffi.so, uniffi-bindgen, gridwork-server"
TESTS="${GRIDWORK_TESTS:-}"

# ------------------------------------------------------------------------------------- generation
rm -rf "$OUT" && mkdir -p "$OUT/kotlin" "$OUT/swift"
"$BINDGEN" generate --library "$LIB" --language kotlin --no-format --out-dir "$OUT/kotlin" >/dev/null \
  || die "generate: Kotlin bindings"
KT="$OUT/kotlin/org/gridwork/core/gridwork_ffi.kt"
[[ -s "$KT" ]] && pass "generate: Kotlin bindings ($(wc -l <"$KT") lines, package org.gridwork.core)" \
  || die "generate: Kotlin bindings missing at $KT"
# Keep API checksums on only while the generated check masks JNA's Int carrier (the armeabi-v7a
# sign-extension fix of uniffi 0.32); a uniffi change that drops it must be looked at.
if grep -q 'and 0xFFFF) !=' "$KT"; then
  pass "generate: Kotlin checksum checks are masked to 16 bits (safe on 32-bit ARM)"
else
  fail "generate: Kotlin checksum checks lack the 0xFFFF mask: set omit_checksums in bindings/uniffi.toml"
fi

"$REPO/ios/generate-swift.sh" "$LIB" "$BINDGEN" >/dev/null || die "generate: Swift bindings (ios/generate-swift.sh)"
SWIFT="$REPO/ios/Sources/Gridwork/Gridwork.swift"
HEADER="$REPO/ios/Sources/GridworkFFI/include/GridworkFFI.h"
MODMAP="$REPO/ios/Sources/GridworkFFI/include/module.modulemap"
if [[ -s "$SWIFT" && -s "$HEADER" && -s "$MODMAP" ]] && grep -q 'open class GridworkStore' "$SWIFT" \
   && grep -q 'module GridworkFFI' "$MODMAP" && grep -q 'import GridworkFFI' "$SWIFT"; then
  pass "generate: Swift bindings (Gridwork.swift, GridworkFFI.h, module.modulemap)"
else
  fail "generate: Swift bindings incomplete under ios/Sources"
fi
# Every FFI function the Swift header declares must be exported by the library it was made from.
missing=$(comm -23 \
  <(grep -o 'uniffi_gridwork_ffi_[a-z0-9_]*\|ffi_gridwork_ffi_[a-z0-9_]*' "$HEADER" | sort -u) \
  <(nm -D --defined-only "$LIB" | awk '{print $3}' | sort -u))
[[ -z "$missing" ]] && pass "generate: every symbol in GridworkFFI.h is exported by libgridwork_ffi.so" \
  || fail "generate: header symbols missing from the library: $(echo $missing | head -c 300)"
if [[ "${CI:-}" == "true" ]] && git ls-files --error-unmatch ios/Sources >/dev/null 2>&1; then
  if git diff --quiet -- ios/Sources; then
    pass "generate: committed Swift bindings are up to date"
  else
    git diff --stat -- ios/Sources
    fail "generate: committed Swift bindings are stale: run bindings/scripts/test-kotlin.sh and commit ios/Sources"
  fi
fi

# ---------------------------------------------------------------------------------------- compile
echo "compiling generated Kotlin + tests with $(basename "$KOTLINC")"
JAR="$OUT/gridwork-kotlin-tests.jar"
if "$KOTLINC" -nowarn -jvm-target 17 -cp "$CP_LIBS" -d "$JAR" "$KT" "$REPO"/bindings/tests/kotlin/*.kt \
     "$REPO"/bindings/benches/kotlin/*.kt "$REPO"/android/src/main/kotlin/org/gridwork/android/*.kt \
     2>"$OUT/kotlinc.log"; then
  pass "compile: generated bindings + bindings/tests/kotlin + bindings/benches/kotlin + android/src/main/kotlin"
else
  cat "$OUT/kotlinc.log"
  die "compile: kotlinc failed"
fi

# -------------------------------------------------------------------------------------------- run
log="$OUT/kotlin-tests.log"
# A fixed, pre-touched heap keeps JVM heap growth out of the RSS figures of the memory test.
# shellcheck disable=SC2086
timeout 900 java -Xms256m -Xmx256m -XX:+AlwaysPreTouch -Djna.library.path="$(dirname "$LIB")" -Dgridwork.server="$SERVER" \
  -cp "$JAR:$CP_RUN" org.gridwork.core.test.RunAllKt $TESTS | tee "$log"
status=${PIPESTATUS[0]}
summary=$(grep -E '^kotlin: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
if [[ -n "$summary" ]]; then
  read -r kp kf < <(sed -E 's/^kotlin: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/' <<<"$summary")
  passed=$((passed + kp))
  failed=$((failed + kf))
fi
if [[ $status -ne 0 && ( -z "$summary" || ${kf:-0} -eq 0 ) ]]; then
  fail "run: the JVM test run exited with status $status"
fi
finish
