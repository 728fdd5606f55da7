#!/usr/bin/env bash
# Builds the Android library's native part and bindings, from ONE cargo invocation:
#   src/main/jniLibs/<abi>/libgridwork_ffi.so   for arm64-v8a, armeabi-v7a, x86_64
#   src/main/uniffi/org/gridwork/core/gridwork_ffi.kt   generated from the arm64 library just built
# then, if Gradle is there, assembles the AAR (./gradlew or gradle assembleRelease).
#
# Needs: rustup, cargo-ndk (`cargo install cargo-ndk`), an Android NDK r26+ (ANDROID_NDK_HOME), and
# perl + make (SQLCipher's vendored OpenSSL is built from source for each ABI).
# Usage: android/build.sh [--debug] [--no-gradle]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
[[ "$TARGET" = /* ]] || TARGET="$REPO/$TARGET"
PROFILE=release
GRADLE=1
for arg in "$@"; do
  case "$arg" in
    --debug) PROFILE=debug ;;
    --no-gradle) GRADLE=0 ;;
    *) echo "usage: $0 [--debug] [--no-gradle]" >&2; exit 2 ;;
  esac
done
# Android API level the .so files are linked against; keep in step with minSdk in build.gradle.kts.
API=24
ABIS=(arm64-v8a armeabi-v7a x86_64)
TRIPLES=(aarch64-linux-android armv7-linux-androideabi x86_64-linux-android)

command -v cargo-ndk >/dev/null || { echo "cargo-ndk missing: cargo install cargo-ndk" >&2; exit 1; }
[[ -n "${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}" ]] || { echo "set ANDROID_NDK_HOME to an NDK r26+" >&2; exit 1; }
rustup target add "${TRIPLES[@]}" >/dev/null

# Android 15+ devices may use 16 KB memory pages; Google Play requires 16 KB-aligned ELF segments
# for apps targeting Android 15 from Nov 2025. NDK r28+ aligns by default; older NDKs need the flag.
# Set for the Android targets only, so host builds sharing the target dir are not rebuilt.
for t in "${TRIPLES[@]}"; do
  var="CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
  export "$var"="${!var:-} -C link-arg=-Wl,-z,max-page-size=16384"
done

cd "$REPO"
cargo_args=(-p gridwork-ffi --lib)
[[ $PROFILE == release ]] && cargo_args+=(--release)
ndk_targets=()
for abi in "${ABIS[@]}"; do ndk_targets+=(-t "$abi"); done
# One cargo-ndk run builds every ABI and copies each libgridwork_ffi.so into jniLibs/<abi>/.
rm -rf "$HERE/src/main/jniLibs" "$HERE/src/main/uniffi"
cargo ndk "${ndk_targets[@]}" --platform "$API" -o "$HERE/src/main/jniLibs" build "${cargo_args[@]}"

# Bindings come from a library of THIS build (library mode reads the interface from the .so's
# metadata), so they cannot drift from the shipped .so files: mismatched pairs are what trips
# "UniFFI API checksum mismatch". The interface is the same on every ABI; use arm64.
cargo build -p gridwork-uniffi-bindgen
"$TARGET/debug/uniffi-bindgen" generate \
  --library "$TARGET/aarch64-linux-android/$PROFILE/libgridwork_ffi.so" \
  --language kotlin --no-format --config "$HERE/uniffi-android.toml" --out-dir "$HERE/src/main/uniffi"

# Check the alignment of what we ship (llvm-readelf from the NDK).
readelf="$(find "${ANDROID_NDK_HOME:-$ANDROID_NDK_ROOT}/toolchains/llvm/prebuilt" -name llvm-readelf | head -1)"
if [[ -n "$readelf" ]]; then
  for abi in arm64-v8a x86_64; do
    so="$HERE/src/main/jniLibs/$abi/libgridwork_ffi.so"
    if "$readelf" -lW "$so" | awk '$1=="LOAD" && $NF!="0x4000" {bad=1} END {exit bad}'; then
      echo "$abi: LOAD segments aligned to 16 KB"
    else
      echo "$abi: LOAD segments NOT aligned to 16 KB" >&2; exit 1
    fi
  done
fi

if [[ $GRADLE == 1 ]]; then
  if [[ -x "$HERE/gradlew" ]]; then (cd "$HERE" && ./gradlew assembleRelease)
  elif command -v gradle >/dev/null; then (cd "$HERE" && gradle assembleRelease)
  else echo "no Gradle here: open android/ in Android Studio, or run gradle assembleRelease"; fi
fi
echo "done: $HERE/src/main/jniLibs and $HERE/src/main/uniffi"
