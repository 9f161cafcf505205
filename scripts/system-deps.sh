#!/usr/bin/env bash
# System packages the test suite uses that PyPI does not ship: Debian's Chromium
# (headless browser tests of the admin console) and promtool (PromQL of the
# dashboard and alert rules). Installed only when missing, and only where apt-get
# can run as root; otherwise the tests that need them say why they skip.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: cannot install ${missing[*]} (needs root and apt-get); tests that need them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
