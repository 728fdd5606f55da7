#!/usr/bin/env bash
# Generates the Swift bindings from a built gridwork-ffi library, on any OS (Linux included):
#   ios/Sources/Gridwork/Gridwork.swift               the Swift API (`import Gridwork`)
#   ios/Sources/GridworkFFI/include/GridworkFFI.h      the C declarations of the FFI
#   ios/Sources/GridworkFFI/include/module.modulemap   the `GridworkFFI` clang module
# The header and modulemap are what build-xcframework.sh puts in each slice's Headers/.
# Usage: ios/generate-swift.sh [path/to/libgridwork_ffi.{so,dylib,a}] [path/to/uniffi-bindgen]
# Without arguments it builds the debug library and the bindgen with cargo first.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
[[ "$TARGET" = /* ]] || TARGET="$REPO/$TARGET"
LIB="${1:-}"
BINDGEN="${2:-}"
if [[ -z "$LIB" || -z "$BINDGEN" ]]; then
  (cd "$REPO" && cargo build -p gridwork-ffi -p gridwork-uniffi-bindgen)
  case "$(uname)" in Darwin) ext=dylib ;; *) ext=so ;; esac
  LIB="${LIB:-$TARGET/debug/libgridwork_ffi.$ext}"
  BINDGEN="${BINDGEN:-$TARGET/debug/uniffi-bindgen}"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Library mode: the interface comes from the metadata inside the library, so the Swift matches
# exactly the library it was generated from. bindings/uniffi.toml names the modules.
(cd "$REPO" && "$BINDGEN" generate --library "$LIB" --language swift --no-format --out-dir "$tmp")
mkdir -p "$REPO/ios/Sources/Gridwork" "$REPO/ios/Sources/GridworkFFI/include"
cp "$tmp/Gridwork.swift" "$REPO/ios/Sources/Gridwork/Gridwork.swift"
cp "$tmp/GridworkFFI.h" "$REPO/ios/Sources/GridworkFFI/include/GridworkFFI.h"
cp "$tmp/GridworkFFI.modulemap" "$REPO/ios/Sources/GridworkFFI/include/module.modulemap"
echo "generated Swift bindings from $LIB into ios/Sources"
