#!/usr/bin/env bash
# Build every fuzz target and run each for ${FUZZ_SECONDS:-20} seconds; exit non-zero on the first
# crash, panic, leak or hang (a single input running over 10 s counts as a hang).
#
#   FUZZ_SECONDS=300 fuzz/run.sh            # longer runs
#   FUZZ_TARGETS="hub_ops" fuzz/run.sh      # a subset
#
# Needs the nightly toolchain; installs cargo-fuzz when missing. Corpora live in fuzz/corpus/<target>
# (not committed); the decode targets are seeded with the JSON examples of docs/protocol/*.md.
# A crash leaves its input in fuzz/artifacts/<target>/; replay it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_EACH=${FUZZ_SECONDS:-20}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build

TARGETS=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}

# Seed a decode target's corpus with every fenced JSON block of its system's protocol doc.
seed() {
  local target=$1 corpus=$2
  local system=${target#decode_}
  local doc="$ROOT/docs/protocol/${system}-v1.md"
  [[ "$target" == decode_* && -f "$doc" ]] || return 0
  awk -v dir="$corpus" '
    /^```json/ { n++; file = sprintf("%s/doc-%03d.json", dir, n); grab = 1; next }
    /^```/     { if (grab) close(file); grab = 0; next }
    grab       { print > file }
  ' "$doc"
}

for target in $TARGETS; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  seed "$target" "$corpus"
  echo "==> fuzzing $target for ${SECONDS_EACH}s"
  cargo +nightly fuzz run "$target" "$corpus" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "fuzz: every target ran ${SECONDS_EACH}s without a crash"
