#!/usr/bin/env bash
# FFI overhead: get() of one record 10,000 times from Kotlin (JVM + JNA + uniffi) vs. directly on the
# Rust core, both on release builds. Prints `ns/call` lines for BENCHMARKS.md.
# Usage: bindings/scripts/bench-ffi.sh [calls]   (default 10000)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
[[ "$TARGET" = /* ]] || TARGET="$REPO/$TARGET"
CALLS="${1:-10000}"
eval "$("$REPO/scripts/setup-kotlin.sh" --print-env)"
cargo build --release -p gridwork-ffi --lib --example core_get
cargo build -p gridwork-uniffi-bindgen
OUT="$TARGET/gridwork-bench"
rm -rf "$OUT" && mkdir -p "$OUT/kotlin"
"$TARGET/debug/uniffi-bindgen" generate --library "$TARGET/release/libgridwork_ffi.so" --language kotlin \
  --no-format --out-dir "$OUT/kotlin" >/dev/null
"$KOTLINC" -nowarn -jvm-target 17 -cp "$JNA_JAR" -d "$OUT/bench.jar" \
  "$OUT/kotlin/org/gridwork/core/gridwork_ffi.kt" "$REPO/bindings/benches/kotlin/FfiOverhead.kt"
echo "== $(uname -m), $(nproc) CPUs, $(java -version 2>&1 | head -1)"
"$TARGET/release/examples/core_get" "$CALLS"
java -Djna.library.path="$TARGET/release" -cp "$OUT/bench.jar:$KOTLIN_LIB/kotlin-stdlib.jar:$JNA_JAR" \
  org.gridwork.core.bench.FfiOverheadKt "$CALLS"
