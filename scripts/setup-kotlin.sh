#!/usr/bin/env bash
# Installs what the Kotlin/JVM binding tests need, idempotently, on a fresh Debian machine (as root):
#   - kotlinc, from the npm package `kotlin-compiler`, unpacked into <repo>/.tools/kotlin-compiler
#   - JNA and JUnit 4 from Debian (`libjna-java`, `junit4`) when /usr/share/java/jna.jar is missing.
# Needs only Java 17, Node/npm and apt. Prints the paths it found, as KEY=VALUE lines that
# bindings/scripts/test-kotlin.sh reads (`eval "$(scripts/setup-kotlin.sh --print-env)"`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"
KOTLIN_HOME="$TOOLS/kotlin-compiler"
# Pinned so every machine compiles the bindings with the same compiler; bump deliberately.
KOTLIN_NPM_VERSION="${KOTLIN_NPM_VERSION:-2.4.20}"
quiet=0
[[ "${1:-}" == "--print-env" ]] && quiet=1
log() { if [[ $quiet == 0 ]]; then echo "setup-kotlin: $*"; else echo "setup-kotlin: $*" >&2; fi; }

command -v java >/dev/null || { echo "setup-kotlin: java not found (need Java 17+)" >&2; exit 1; }
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [[ -z "$java_major" || "$java_major" -lt 17 ]]; then
  echo "setup-kotlin: need Java 17+, found '${java_major:-none}'" >&2; exit 1
fi

find_kotlinc() { find "$KOTLIN_HOME" -path '*/bin/kotlinc' -type f 2>/dev/null | head -1; }

kotlinc="$(find_kotlinc || true)"
stamp="$KOTLIN_HOME/.version"
if [[ -z "$kotlinc" || "$(cat "$stamp" 2>/dev/null)" != "$KOTLIN_NPM_VERSION" ]]; then
  command -v npm >/dev/null || { echo "setup-kotlin: npm not found" >&2; exit 1; }
  log "fetching kotlin-compiler@$KOTLIN_NPM_VERSION from npm"
  rm -rf "$KOTLIN_HOME" "$TOOLS/npm-pack"
  mkdir -p "$TOOLS/npm-pack" "$KOTLIN_HOME"
  (cd "$TOOLS/npm-pack" && npm pack --silent "kotlin-compiler@$KOTLIN_NPM_VERSION" >/dev/null 2>"$TOOLS/npm-pack/npm.log") \
    || { cat "$TOOLS/npm-pack/npm.log" >&2; exit 1; }
  tar -xzf "$TOOLS"/npm-pack/kotlin-compiler-*.tgz -C "$KOTLIN_HOME"
  rm -rf "$TOOLS/npm-pack"
  kotlinc="$(find_kotlinc)"
  [[ -n "$kotlinc" ]] || { echo "setup-kotlin: no bin/kotlinc in the npm package" >&2; exit 1; }
  # npm tarballs do not always keep the executable bit.
  chmod +x "$(dirname "$kotlinc")"/*
  echo "$KOTLIN_NPM_VERSION" > "$stamp"
fi
KOTLIN_LIB="$(cd "$(dirname "$kotlinc")/../lib" && pwd)"

if [[ ! -f /usr/share/java/jna.jar || ! -f /usr/share/java/junit4.jar ]]; then
  log "installing libjna-java and junit4 from Debian"
  if [[ $(id -u) -ne 0 ]]; then echo "setup-kotlin: run as root to apt-get install libjna-java junit4" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq libjna-java junit4 >&2
fi
JNA_JAR=/usr/share/java/jna.jar
JUNIT_JAR=/usr/share/java/junit4.jar
HAMCREST_JAR=$(ls /usr/share/java/hamcrest-core.jar /usr/share/java/hamcrest.jar 2>/dev/null | head -1 || true)

version=$("$kotlinc" -version 2>&1 | grep -o 'kotlinc-jvm [^ ]*' || true)
[[ -n "$version" ]] || { echo "setup-kotlin: kotlinc does not run" >&2; "$kotlinc" -version >&2; exit 1; }
log "$version on Java $java_major"

echo "KOTLINC=$kotlinc"
echo "KOTLIN_LIB=$KOTLIN_LIB"
echo "JNA_JAR=$JNA_JAR"
echo "JUNIT_JAR=$JUNIT_JAR"
echo "HAMCREST_JAR=$HAMCREST_JAR"
