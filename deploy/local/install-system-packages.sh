#!/usr/bin/env bash
# Debian packages the embedded stack needs: a JDK 17 (runs OpenSearch 2.19 and compiles the
# analysis plugin), Redis, curl, zip, and Chromium (with a Japanese font) for the page tests. Idempotent: installs
# only what is missing.
set -euo pipefail

need=()
command -v java >/dev/null && command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
command -v redis-server >/dev/null || need+=(redis-server)
command -v curl >/dev/null || need+=(curl)
command -v zip >/dev/null || need+=(zip)
command -v runuser >/dev/null || need+=(util-linux)
# promtool (in Debian's prometheus package): tests check deploy/prometheus with it.
command -v promtool >/dev/null || need+=(prometheus)
# Headless Chromium and its WebDriver: the page tests (tests/integration/test_pages_e2e.py).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# A Japanese font, so the page tests' screenshots of Japanese statutes show text, not boxes.
[ -e /usr/share/fonts/opentype/ipafont-gothic/ipag.ttf ] || need+=(fonts-ipafont-gothic)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]}; install them (sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts redis-server as a system service on install; the stack runs its own.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl stop redis-server || true
fi
# Likewise prometheus: only its promtool is used here.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
