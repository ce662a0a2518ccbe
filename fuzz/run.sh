#!/usr/bin/env bash
# Build every fuzz target and run each for ${FUZZ_SECONDS:-20} seconds; exit non-zero on the first
# crash, panic, leak or hang (a single input running over 10 s counts as a hang).
#
#   FUZZ_SECONDS=300 fuzz/run.sh            # longer runs
#   FUZZ_TARGETS="hub_ops" fuzz/run.sh      # a subset
#
# Needs the nightly toolchain; installs cargo-fuzz when missing. Corpora live in fuzz/corpus/<target>
# (not committed); the `system` target is seeded with the JSON examples of docs/protocol/*-v1.md.
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

# Seed the `system` target with every fenced JSON block of every docs/protocol/*-v1.md. Its first
# input byte picks the system (SYSTEMS[byte % len]); the order of SYSTEMS is not known here, so
# each block is written once behind every byte below the number of documents (one document per
# system, as the doc-vector test requires): one of them reaches the block's own system, the
# others feed it to the rest. A new system's document is picked up with nothing added here.
seed() {
  local target=$1 corpus=$2
  [[ "$target" == system ]] || return 0
  local docs=("$ROOT"/docs/protocol/*-v1.md)
  local n=${#docs[@]} i=0
  for doc in "${docs[@]}"; do
    i=$((i + 1))
    awk -v dir="$corpus" -v doc="$i" -v n="$n" '
      /^```json/ { grab = 1; text = ""; next }
      /^```/     {
        if (grab) {
          blocks++
          for (b = 0; b < n; b++) {
            file = sprintf("%s/doc-%02d-%03d-%02d", dir, doc, blocks, b)
            printf "%c%s", b, text > file
            close(file)
          }
        }
        grab = 0; next
      }
      grab       { text = text $0 "\n" }
    ' "$doc"
  done
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
