#!/usr/bin/env bash
# Every core (issue 14): the flat-out fan-out (1000 subscribers, 2 publishers, 10 s) against the
# server on one core (one tokio worker, `taskset -c 0`) and on every core, taking turns ROUNDS
# times; prints CPU per delivery, deliveries per second and each worker thread's share of the
# server's CPU (from /proc/<pid>/task/*/stat). On 2 cores the load tool shares the machine, so
# the figure that counts is efficiency (CPU per delivery), not speed-up. With the server on one
# core, the load tool is pinned to the other (TOOL_PIN=0 leaves it free): left free, its threads
# sometimes land on the server's core too, and the server's figure then swings between two
# values (fewer frames per write). With the server on every core the tool cannot have one of
# its own. Loopback only, bounded, stops by itself. Needs the release binaries (built here when
# missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
TOOL_PIN=${TOOL_PIN:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --release --locked -p switchboard-server -p switchboard-load >&2
BIN=${SWITCHBOARD_BIN:-$TARGET_DIR/release/switchboard}
LOAD=$TARGET_DIR/release/switchboard-load
ulimit -n 20000 2>/dev/null || true
command -v taskset >/dev/null || { echo "cores.sh: taskset is required" >&2; exit 1; }

# Every thread of $1: name and CPU ticks (utime + stime), one per line.
threads() {
  for t in /proc/"$1"/task/*; do
    printf '%s\t%s\n' "$(cat "$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done
}

OUT=$(mktemp -d)
for round in $(seq "$ROUNDS"); do
  for mode in one every; do
    port=$((13600 + RANDOM % 300))
    pin=(); tool=()
    [[ $mode == one ]] && pin=(taskset -c 0)
    [[ $mode == one && $TOOL_PIN == 1 ]] && tool=(taskset -c 1)
    "${pin[@]}" "$BIN" --transport tokio --systems laptimes --bind 127.0.0.1 \
      --laptimes-port "$port" --rate-per-sec 0 >/dev/null 2>&1 &
    pid=$!
    sleep 1
    threads "$pid" >"$OUT/before"
    timeout 120 "${tool[@]}" "$LOAD" --json fanout --url "ws://127.0.0.1:$port/" --subscribers 1000 \
      --publishers 2 --rate 0 --window 4 --duration 10 --pid "$pid" >"$OUT/run.json"
    threads "$pid" >"$OUT/after"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$mode" "$round" "$OUT" <<'PY' >>"$OUT/rows.jsonl"
import json, sys
mode, rnd, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
run = json.load(open(f"{out}/run.json"))
rows = lambda p: [l.rstrip("\n").split("\t") for l in open(p)]
used = [(a[0], (float(b[1]) - float(a[1])) / 100) for a, b in zip(rows(f"{out}/before"), rows(f"{out}/after"))]
total = sum(u for _, u in used)
workers = [u for name, u in used if "worker" in name and u > 0.01]
print(json.dumps({"mode": mode, "round": rnd, "deliveries_per_sec": run["deliveries_per_sec"],
  "cpu_us": run["server"]["cpu_secs_per_million"], "lost": run["lost"],
  "worker_shares": [round(w / total, 2) for w in workers]}))
PY
  done
done
python3 - "$OUT/rows.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda mode, k: statistics.median(r[k] for r in rows if r["mode"] == mode)
print("| figure | one core (1 worker) | every core | every / one |")
print("|---|---|---|---|")
for k, name, fmt in [("cpu_us", "server CPU-us per delivery", "{:.3f}"),
                     ("deliveries_per_sec", "deliveries per second", "{:,.0f}")]:
    a, b = med("one", k), med("every", k)
    print(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f} |")
print()
for r in rows:
    print(f"- round {r['round']}, {r['mode']}: {r['cpu_us']} CPU-us per delivery, "
          f"{r['deliveries_per_sec']:,.0f} deliveries/s, worker shares {r['worker_shares']}, lost {r['lost']}")
print("Goal (issue 14): every / one CPU per delivery at most 1.1, each worker at least 0.35 of the server's CPU.")
PY
rm -rf "$OUT"
