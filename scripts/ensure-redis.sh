#!/usr/bin/env bash
# Print the path of a redis-server binary, installing Debian's `redis-server` package with
# apt-get when none is on PATH. Idempotent: a second run only prints the path. The backplane's
# tests (crates/backplane-redis/tests) start their own redis-server from PATH; scripts/test.sh
# calls this first.
set -euo pipefail

if path=$(command -v redis-server 2>/dev/null); then
  printf '%s\n' "$path"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "ensure-redis: redis-server is not on PATH and apt-get needs root (no sudo found)" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-redis: redis-server is not on PATH and apt-get is not available; install Redis >= 6" >&2
  exit 1
fi

echo "ensure-redis: installing redis-server with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends redis-server >&2
# The package starts a system-wide service where an init system runs; the tests do not use it.
# (In containers without one there is nothing to stop.)

path=$(command -v redis-server 2>/dev/null || true)
if [[ -z "$path" ]]; then
  echo "ensure-redis: redis-server still not on PATH after installing the package" >&2
  exit 1
fi
printf '%s\n' "$path"
