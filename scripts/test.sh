#!/usr/bin/env bash
# The project's whole test suite: what CI runs (.ci/run calls this) and what README tells a new
# user to run. Installs what it needs when missing (a rustup target, cargo-fuzz, redis-server,
# a Python venv, npm packages); needs only the Rust toolchains (stable + nightly), Python 3.11,
# Node 20 and apt.
#
# Stages can be skipped for a quick local loop: SKIP_FUZZ=1, SKIP_CLIENTS=1, SKIP_LINT=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

stage() { printf '\n==> %s\n' "$*"; }

NOSTD_TARGET=thumbv7em-none-eabihf

if [[ "${SKIP_LINT:-0}" != 1 ]]; then
  stage "format and lints"
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
  # The fuzz crate lives outside the workspace (it needs nightly to fuzz, not to build): lint
  # it here so an API change in the core breaks this stage, not the last one.
  cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings
fi

stage "no_std build of protocol, hub and ws for $NOSTD_TARGET"
if ! rustup target list --installed | grep -qx "$NOSTD_TARGET"; then
  rustup target add "$NOSTD_TARGET"
fi
cargo build --locked -p switchboard-hub -p switchboard-protocol -p switchboard-ws --no-default-features --target "$NOSTD_TARGET"

stage "docs (deny missing docs and broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps

stage "redis-server for the cluster tests"
bash scripts/ensure-redis.sh

stage "cargo test --workspace"
cargo test --locked --workspace
cargo test --locked --manifest-path fuzz/Cargo.toml

if [[ "${SKIP_CLIENTS:-0}" != 1 ]]; then
  stage "Python and JavaScript clients against the real binary"
  bash clients/run-tests.sh
fi

if [[ "${SKIP_FUZZ:-0}" != 1 ]]; then
  stage "fuzz targets (nightly, ${FUZZ_SECONDS:=20}s each)"
  FUZZ_SECONDS=$FUZZ_SECONDS bash fuzz/run.sh
fi

stage "all tests passed"
