#!/usr/bin/env bash
# Every core (issue 14): the flat-out fan-out (1000 subscribers, 2 publishers, 10 s) against the
# server with one tokio worker and with one per core, taking turns ROUNDS times; prints CPU per
# delivery, deliveries per second and each worker thread's share of the server's CPU (from
# /proc/<pid>/task/*/stat). On 2 cores the load tool shares the machine, so the figure that
# counts is efficiency (CPU per delivery), not speed-up. Three modes (MODES picks some):
#   free   one worker (TOKIO_WORKER_THREADS=1), nothing pinned: the load tool shares both cores
#          with the server, as it does with two workers. Against it, two workers differ from one
#          in the worker count alone: the goal's comparison.
#   one    one worker on a core of its own (`taskset -c 0`), the load tool pinned to the other
#          (TOOL_PIN=0 leaves it free): the best case one worker can have here, for context.
#   every  a worker per core, nothing pinned.
# WINDOW (default 4) is how many publications the load keeps in flight. Loopback only, bounded,
# stops by itself. Needs the release binaries (built here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
TOOL_PIN=${TOOL_PIN:-1}
WINDOW=${WINDOW:-4}
MODES=${MODES:-free one every}
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
  for mode in $MODES; do
    port=$((13600 + RANDOM % 300))
    pin=(env); tool=()
    [[ $mode == one ]] && pin=(taskset -c 0)
    [[ $mode == one && $TOOL_PIN == 1 ]] && tool=(taskset -c 1)
    [[ $mode == free ]] && pin=(env TOKIO_WORKER_THREADS=1)
    "${pin[@]}" "$BIN" --transport tokio --systems laptimes --bind 127.0.0.1 \
      --laptimes-port "$port" --rate-per-sec 0 >/dev/null 2>&1 &
    pid=$!
    sleep 1
    threads "$pid" >"$OUT/before"
    timeout 120 "${tool[@]}" "$LOAD" --json fanout --url "ws://127.0.0.1:$port/" --subscribers 1000 \
      --publishers 2 --rate 0 --window "$WINDOW" --duration 10 --pid "$pid" >"$OUT/run.json"
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
modes = [m for m in ("free", "one", "every") if any(r["mode"] == m for r in rows)]
names = {"free": "1 worker, shared cores", "one": "1 worker, a core of its own",
         "every": "a worker per core"}
med = lambda mode, k: statistics.median(r[k] for r in rows if r["mode"] == mode)
ratios = [m for m in ("free", "one") if m in modes and "every" in modes]
print("| figure | " + " | ".join(names[m] for m in modes) + "".join(f" | every / {m}" for m in ratios) + " |")
print("|---" * (1 + len(modes) + len(ratios)) + "|")
for k, name, fmt in [("cpu_us", "server CPU-us per delivery", "{:.3f}"),
                     ("deliveries_per_sec", "deliveries per second", "{:,.0f}")]:
    cells = [fmt.format(med(m, k)) for m in modes]
    cells += [f"{med('every', k) / med(m, k):.2f}" for m in ratios]
    print(f"| {name} | " + " | ".join(cells) + " |")
print()
for r in rows:
    print(f"- round {r['round']}, {r['mode']}: {r['cpu_us']} CPU-us per delivery, "
          f"{r['deliveries_per_sec']:,.0f} deliveries/s, worker shares {r['worker_shares']}, lost {r['lost']}")
print("Goal (issue 14): CPU per delivery with a worker per core at most 1.1x that of one worker "
      "(every / free: the same machine, the worker count alone), each worker at least 0.35 of "
      "the server's CPU. every / one adds the single worker's privilege of a core to itself.")
PY
rm -rf "$OUT"
