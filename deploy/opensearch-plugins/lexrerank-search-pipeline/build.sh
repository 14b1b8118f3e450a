#!/usr/bin/env bash
# Build the lexrerank-search-pipeline OpenSearch plugin zip with javac against OpenSearch's own jars.
#
#   build.sh OPENSEARCH_HOME OUT_ZIP     the plugin zip for the OpenSearch in OPENSEARCH_HOME
#   build.sh --test OPENSEARCH_HOME      compile and run the plugin's Java tests (no zip)
#
# Needs no jar beyond OPENSEARCH_HOME/lib (java.net.http is part of the JDK), so nothing is
# downloaded. The descriptor pins the exact OpenSearch version, as opensearch-plugin requires.
set -euo pipefail
trap 'echo "build.sh: error: command failed (line $LINENO)" >&2' ERR

PLUGIN_NAME=lexrerank-search-pipeline
OPENSEARCH_VERSION=2.19.6

die() { echo "build.sh: error: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

TEST=0
if [ "${1:-}" = "--test" ]; then TEST=1; shift; [ $# -eq 1 ] || die "usage: $0 --test OPENSEARCH_HOME"; else
  [ $# -eq 2 ] || die "usage: $0 OPENSEARCH_HOME OUT_ZIP   or   $0 --test OPENSEARCH_HOME"; fi
[ -d "$1/lib" ] || die "'$1' does not look like an OpenSearch home (no lib/ directory)"
OS_HOME=$(cd "$1" && pwd)
HERE="$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
[ -f "$OS_HOME/lib/opensearch-$OPENSEARCH_VERSION.jar" ] ||
  die "$OS_HOME/lib has no opensearch-$OPENSEARCH_VERSION.jar; this script builds for OpenSearch $OPENSEARCH_VERSION only"

find_jdk_tool() {
  local t=$1 c
  for c in ${JAVA_HOME:+"$JAVA_HOME/bin/$t"} "$(command -v "$t" 2>/dev/null || true)" \
           "/usr/lib/jvm/java-17-openjdk-amd64/bin/$t"; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}
JAVAC=$(find_jdk_tool javac) || die "javac not found: install a JDK 11-17 (Debian: apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
JAR=$(find_jdk_tool jar) || die "jar not found next to javac; install a full JDK or set JAVA_HOME"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/$PLUGIN_NAME.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/classes" "$WORK/plugin"
CP="$OS_HOME/lib/*"
find "$HERE/src/main/java" -name '*.java' | sort > "$WORK/sources.txt"
log "compiling with $JAVAC"
# --release 11: what OpenSearch 2.x targets (java.version=11 below).
"$JAVAC" --release 11 -encoding UTF-8 -Xlint:all,-processing,-serial -Werror \
  -cp "$CP" -d "$WORK/classes" "@$WORK/sources.txt"

if [ "$TEST" = 1 ]; then
  mkdir -p "$WORK/test-classes"
  find "$HERE/src/test/java" -name '*.java' | sort > "$WORK/tests.txt"
  "$JAVAC" --release 11 -encoding UTF-8 -Xlint:all,-processing,-serial \
    -cp "$CP:$WORK/classes" -d "$WORK/test-classes" "@$WORK/tests.txt"
  JAVA=$(find_jdk_tool java) || die "java not found"
  "$JAVA" -ea -cp "$CP:$WORK/classes:$WORK/test-classes" org.lexrerank.pipeline.PluginTests
  exit 0
fi

OUT_DIR=$(dirname -- "$2")
[ -d "$OUT_DIR" ] || die "output directory '$OUT_DIR' does not exist"
OUT_ZIP="$(cd "$OUT_DIR" && pwd)/$(basename -- "$2")"
"$JAR" --create --file "$WORK/plugin/$PLUGIN_NAME-$OPENSEARCH_VERSION.jar" -C "$WORK/classes" .
cp "$HERE/plugin-security.policy" "$WORK/plugin/"
cat > "$WORK/plugin/plugin-descriptor.properties" <<DESCRIPTOR
description=lexrerank search processors: rerank a search's window through the lexrerank rerank service
version=$OPENSEARCH_VERSION
name=$PLUGIN_NAME
classname=org.lexrerank.pipeline.LexrerankSearchPipelinePlugin
java.version=11
opensearch.version=$OPENSEARCH_VERSION
extended.plugins=
has.native.controller=false
DESCRIPTOR
# What the zip was built from (lexrerank up reinstalls the plugin when the sources change).
if [ -n "${LEXRERANK_BUILD_ID:-}" ]; then echo "$LEXRERANK_BUILD_ID" > "$WORK/plugin/lexrerank-build-id"; fi

rm -f "$WORK/out.zip"
if command -v zip >/dev/null 2>&1; then
  (cd "$WORK/plugin" && zip -q -X -r "$WORK/out.zip" .)
else
  "$JAR" --create --no-manifest --file "$WORK/out.zip" -C "$WORK/plugin" .
fi
mv -f "$WORK/out.zip" "$OUT_ZIP"
log "wrote $OUT_ZIP"
