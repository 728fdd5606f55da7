#!/usr/bin/env bash
# Builds ios/GridworkFFI.xcframework (needs a Mac with Xcode and rustup):
#   1. cargo build of the static library for aarch64-apple-ios (devices), aarch64-apple-ios-sim and
#      x86_64-apple-ios (simulators on Apple silicon and Intel);
#   2. lipo of the two simulator slices into one;
#   3. the Swift bindings, C header and modulemap, generated from the library of THIS build;
#   4. xcodebuild -create-xcframework with the header and modulemap as each slice's Headers.
# Then `swift build` / `xcodebuild test -scheme Gridwork -destination 'platform=iOS Simulator,name=iPhone 15'`.
# Usage: ios/build-xcframework.sh [--debug]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
[[ "$TARGET" = /* ]] || TARGET="$REPO/$TARGET"
PROFILE=release
[[ "${1:-}" == "--debug" ]] && PROFILE=debug
[[ "$(uname)" == Darwin ]] || { echo "build-xcframework.sh needs macOS + Xcode (Linux: ios/generate-swift.sh)" >&2; exit 1; }

TRIPLES=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)
rustup target add "${TRIPLES[@]}" >/dev/null
export IPHONEOS_DEPLOYMENT_TARGET=15.0
cd "$REPO"
for t in "${TRIPLES[@]}"; do
  args=(-p gridwork-ffi --lib --target "$t")
  [[ $PROFILE == release ]] && args+=(--release)
  cargo build "${args[@]}"
done

WORK="$TARGET/gridwork-xcframework"
rm -rf "$WORK" && mkdir -p "$WORK/ios" "$WORK/sim" "$WORK/headers"
cp "$TARGET/aarch64-apple-ios/$PROFILE/libgridwork_ffi.a" "$WORK/ios/"
lipo -create \
  "$TARGET/aarch64-apple-ios-sim/$PROFILE/libgridwork_ffi.a" \
  "$TARGET/x86_64-apple-ios/$PROFILE/libgridwork_ffi.a" \
  -output "$WORK/sim/libgridwork_ffi.a"

# Bindings from the device library of this build (library mode reads the interface from it), so the
# Swift checksums match the static libraries shipped next to them.
cargo build -p gridwork-uniffi-bindgen
"$HERE/generate-swift.sh" "$TARGET/aarch64-apple-ios/$PROFILE/libgridwork_ffi.a" "$TARGET/debug/uniffi-bindgen"
cp "$HERE/Sources/GridworkFFI/include/GridworkFFI.h" "$HERE/Sources/GridworkFFI/include/module.modulemap" "$WORK/headers/"

rm -rf "$HERE/GridworkFFI.xcframework"
xcodebuild -create-xcframework \
  -library "$WORK/ios/libgridwork_ffi.a" -headers "$WORK/headers" \
  -library "$WORK/sim/libgridwork_ffi.a" -headers "$WORK/headers" \
  -output "$HERE/GridworkFFI.xcframework"
echo "done: $HERE/GridworkFFI.xcframework and $HERE/Sources/Gridwork/Gridwork.swift"
