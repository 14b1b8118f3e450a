#!/usr/bin/env bash
# Builds the lexrerank-analysis-intl OpenSearch plugin zip (ICU + kuromoji analysis, see README.md).
#
# usage: build.sh OPENSEARCH_HOME OUT_ZIP
#
# Needs only a JDK (javac + jar, 11..17), curl and coreutils; `zip` is used if present, otherwise
# the JDK's `jar` tool writes the zip. Jars are downloaded once from Maven Central into
# ${LEXRERANK_CACHE:-$HOME/.cache/lexrerank}/maven and checked against Maven Central's .sha1 files
# on every run, so re-running is cheap, offline and idempotent.
set -euo pipefail
trap 'echo "build.sh: error: command failed (line $LINENO)" >&2' ERR

# Versions are pinned together: the plugin descriptor must name the exact OpenSearch version, and
# the Lucene modules must match the Lucene that OpenSearch ships (lucene-core in OPENSEARCH_HOME/lib).
PLUGIN_NAME=lexrerank-analysis-intl
OPENSEARCH_VERSION=2.19.6
LUCENE_VERSION=9.12.3
ICU4J_VERSION=74.2 # the icu4j version lucene-analysis-icu 9.12.3's pom depends on
MAVEN_URL=${MAVEN_URL:-https://repo1.maven.org/maven2}
CACHE_DIR=${LEXRERANK_CACHE:-$HOME/.cache/lexrerank}/maven

die() { echo "build.sh: error: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

[ $# -eq 2 ] || die "usage: $0 OPENSEARCH_HOME OUT_ZIP"
[ -d "$1/lib" ] || die "'$1' does not look like an OpenSearch home (no lib/ directory)"
OS_HOME=$(cd "$1" && pwd)
OUT_DIR=$(dirname -- "$2")
[ -d "$OUT_DIR" ] || die "output directory '$OUT_DIR' does not exist"
OUT_ZIP="$(cd "$OUT_DIR" && pwd)/$(basename -- "$2")"
SRC_DIR="$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)/src/main/java"

[ -f "$OS_HOME/lib/opensearch-$OPENSEARCH_VERSION.jar" ] ||
  die "$OS_HOME/lib has no opensearch-$OPENSEARCH_VERSION.jar; this script builds for OpenSearch $OPENSEARCH_VERSION only"
[ -f "$OS_HOME/lib/lucene-core-$LUCENE_VERSION.jar" ] ||
  die "$OS_HOME/lib has no lucene-core-$LUCENE_VERSION.jar; Lucene version mismatch"

# --- tools ------------------------------------------------------------------------------------
# Prefer $JAVA_HOME, then PATH, then the Debian JDK 17 location.
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
command -v curl >/dev/null 2>&1 || die "curl not found (Debian: apt-get install curl)"
command -v sha1sum >/dev/null 2>&1 || die "sha1sum not found (coreutils)"

# --- dependencies -----------------------------------------------------------------------------
# fetch GROUP_PATH ARTIFACT VERSION -> prints the cached jar path. Verifies the SHA-1 every time.
fetch() {
  local gpath=$1 artifact=$2 version=$3
  local dir="$CACHE_DIR/$gpath/$artifact/$version"
  local jar="$dir/$artifact-$version.jar"
  local url="$MAVEN_URL/$gpath/$artifact/$version/$artifact-$version.jar"
  mkdir -p "$dir"
  if [ ! -s "$jar.sha1" ]; then
    curl -fsSL --retry 3 -o "$jar.sha1.tmp" "$url.sha1" || die "download failed: $url.sha1"
    mv -f "$jar.sha1.tmp" "$jar.sha1"
  fi
  # Maven Central .sha1 files hold the bare hex digest (some old ones append the file name).
  local want have
  want=$(awk '{print tolower($1); exit}' "$jar.sha1")
  [[ $want =~ ^[0-9a-f]{40}$ ]] || { rm -f "$jar.sha1"; die "malformed checksum file from $url.sha1"; }
  if [ -f "$jar" ]; then
    have=$(sha1sum "$jar" | cut -d' ' -f1)
    [ "$have" = "$want" ] && { echo "$jar"; return 0; }
    log "cached $jar has a wrong checksum, downloading again"
  fi
  log "downloading $url"
  curl -fsSL --retry 3 -o "$jar.tmp" "$url" || die "download failed: $url"
  have=$(sha1sum "$jar.tmp" | cut -d' ' -f1)
  [ "$have" = "$want" ] || { rm -f "$jar.tmp"; die "checksum mismatch for $url (expected $want, got $have); delete $dir to start over"; }
  mv -f "$jar.tmp" "$jar"
  echo "$jar"
}

# Plain assignments (not an array literal) so that a failing fetch stops the script under set -e.
ICU_JAR=$(fetch org/apache/lucene lucene-analysis-icu "$LUCENE_VERSION")
KUROMOJI_JAR=$(fetch org/apache/lucene lucene-analysis-kuromoji "$LUCENE_VERSION")
ICU4J_JAR=$(fetch com/ibm/icu icu4j "$ICU4J_VERSION")
DEPS=("$ICU_JAR" "$KUROMOJI_JAR" "$ICU4J_JAR")

# --- compile & package ------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$PLUGIN_NAME.XXXXXX")
trap 'rm -rf "$WORK"' EXIT # the ERR trap above stays in place
mkdir -p "$WORK/classes" "$WORK/plugin"

# OpenSearch's classpath (its lib/*.jar) + our dependencies. --release 11 matches java.version=11 in
# the descriptor and what OpenSearch 2.x itself targets; it runs on any JVM OpenSearch 2.19 supports.
CP="$OS_HOME/lib/*"
for d in "${DEPS[@]}"; do CP="$CP:$d"; done
find "$SRC_DIR" -name '*.java' | sort > "$WORK/sources.txt"
log "compiling with $JAVAC"
"$JAVAC" --release 11 -encoding UTF-8 -Xlint:all,-processing,-serial \
  -cp "$CP" -d "$WORK/classes" "@$WORK/sources.txt"

"$JAR" --create --file "$WORK/plugin/$PLUGIN_NAME-$OPENSEARCH_VERSION.jar" -C "$WORK/classes" .
cp "${DEPS[@]}" "$WORK/plugin/"

# Keys read by OpenSearch's PluginInfo. No plugin-security.policy: the code only reads its own jars'
# resources (ICU data, IPADIC dictionary) and files under the config dir, which need no extra grants.
cat > "$WORK/plugin/plugin-descriptor.properties" <<EOF
description=ICU and Japanese (kuromoji) analysis built from Lucene $LUCENE_VERSION; drop-in for analysis-icu/analysis-kuromoji
version=$OPENSEARCH_VERSION
name=$PLUGIN_NAME
classname=org.lexrerank.analysis.IntlAnalysisPlugin
java.version=11
opensearch.version=$OPENSEARCH_VERSION
extended.plugins=
has.native.controller=false
EOF

# Flat zip (files at the root), which is what opensearch-plugin install expects. `zip` if present,
# otherwise the JDK's jar tool (--no-manifest makes it a plain zip).
rm -f "$WORK/out.zip"
if command -v zip >/dev/null 2>&1; then
  (cd "$WORK/plugin" && zip -q -X -r "$WORK/out.zip" .)
else
  log "zip not found, using $JAR to write the zip"
  "$JAR" --create --no-manifest --file "$WORK/out.zip" -C "$WORK/plugin" .
fi
mv -f "$WORK/out.zip" "$OUT_ZIP"
log "wrote $OUT_ZIP"
