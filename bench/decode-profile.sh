#!/usr/bin/env bash
# Where decoding runs: collab with many small rooms (CLIENTS clients in CLIENTS/2 projects, all
# sending edits) on a release `switchboard` with two tokio workers, profiled with `perf record`
# (software cpu-clock, so it works without hardware counters). Prints, per thread of the server,
# its share of all samples and of the samples in decoding (serde_json and the protocol's decode
# functions). Talks only to 127.0.0.1; stops by itself. Needs perf (Debian's linux-perf) and the
# Node relay's packages (bench/compare.sh installs them).
#
#   bash bench/decode-profile.sh                       # 2000 clients, 5 edits/s each, 20 s
#   CLIENTS=1000 RATE=10 SECS=15 bash bench/decode-profile.sh
#   SWITCHBOARD_BIN=/path/to/other/switchboard SWITCHBOARD_ARGS="" bash bench/decode-profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CLIENTS=${CLIENTS:-2000}
RATE=${RATE:-5}
SECS=${SECS:-20}
PORT=${PORT:-13001}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

command -v perf >/dev/null || { echo "decode-profile.sh: perf is required (apt install linux-perf)" >&2; exit 1; }
cargo build --release --locked -p switchboard-server >&2
(cd bench/peers/node-relay && npm ci --no-audit --no-fund --loglevel=error >&2)

OUT=$(mktemp -d)
SERVER_BIN=${SWITCHBOARD_BIN:-$TARGET_DIR/release/switchboard}
# shellcheck disable=SC2206
SERVER_ARGS=(${SWITCHBOARD_ARGS---transport tokio})
TOKIO_WORKER_THREADS=2 "$SERVER_BIN" "${SERVER_ARGS[@]}" --systems collab \
  --bind 127.0.0.1 --collab-port "$PORT" --rate-per-sec 0 --log-level warn \
  >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; [[ -n "${KEEP:-}" ]] || rm -rf "$OUT"' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
  sleep 0.1
done

URL="ws://127.0.0.1:$PORT/ws" CLIENTS=$CLIENTS RATE=$RATE SECS=$SECS \
  node bench/peers/node-relay/collab-load.js >"$OUT/load.json" &
LOAD=$!
sleep $((SECS / 3))
perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$SERVER" -o "$OUT/perf.data" -- sleep $((SECS / 2)) 2>/dev/null
wait $LOAD
echo "load: $(cat "$OUT/load.json")"
[[ -n "${KEEP:-}" ]] && echo "perf data: $OUT/perf.data"
perf script -i "$OUT/perf.data" 2>/dev/null |
  python3 "$ROOT/bench/decode_share.py"
