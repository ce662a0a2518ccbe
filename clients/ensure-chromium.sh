#!/usr/bin/env bash
# Makes sure Debian's `chromium` is installed (for the JavaScript clients' browser test).
#
#   clients/ensure-chromium.sh
#
# Installs the apt package `chromium` when /usr/bin/chromium is missing (as root, or through sudo
# otherwise). It never downloads a browser from anywhere but the system's apt sources. Exits
# non-zero, with a message, when chromium cannot be installed: the browser test then fails.
set -uo pipefail

bin=/usr/bin/chromium
if [ -x "$bin" ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "ensure-chromium.sh: $bin is missing, and installing it needs root (no sudo here)" >&2
  exit 1
fi

echo "ensure-chromium.sh: installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get install -y --no-install-recommends chromium; then
  # The package lists may be missing or stale: refresh them once and retry.
  "${as_root[@]}" apt-get update || true
  if ! "${as_root[@]}" apt-get install -y --no-install-recommends chromium; then
    echo "ensure-chromium.sh: apt-get could not install chromium" >&2
    exit 1
  fi
fi
[ -x "$bin" ] || { echo "ensure-chromium.sh: chromium installed, but $bin is missing" >&2; exit 1; }
