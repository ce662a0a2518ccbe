#!/usr/bin/env bash
# The backplane past one Redis (issue 14): publications per second carried between two nodes
# through ONE Redis, then through THREE (`--redis-url` with three URLs), and each instance's
# share of the traffic from its own `INFO` (commands, history appends, bytes in and out).
#
# Two race nodes (release build) on loopback; `switchboard-load across` posts session updates
# flat out to node A (backends round-robin over SESSIONS sessions, so the streams spread over
# the instances) and follows every session with a v2 client on node B, so every update counted
# crossed the backplane, with the shared history on. One and three instances take turns ROUNDS
# times; medians are printed. Every Redis is started here (`--save '' --appendonly no`) on a
# free port below 32768 and stopped at the end. Bounded (about 2-3 min), stops by itself.
# Results: bench/results/shards-<stamp>/ (rows.jsonl, table.md, each node's log).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
SESSIONS=${SESSIONS:-300}
BACKENDS=${BACKENDS:-16}
DURATION=${DURATION:-12}
TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --release --locked -p switchboard-server -p switchboard-load >&2
BIN=${SWITCHBOARD_BIN:-$TARGET_DIR/release/switchboard}
LOAD=$TARGET_DIR/release/switchboard-load
command -v redis-server >/dev/null || { echo "shards.sh: redis-server is required (scripts/ensure-redis.sh)" >&2; exit 1; }
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/results/shards-$STAMP
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# A free TCP port on 127.0.0.1 below 32768.
free_port() {
  python3 - <<'PY'
import random, socket
while True:
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); s.close(); print(p); break
    except OSError:
        s.close()
PY
}

# INFO of every Redis on the given ports, as one JSON object {port: {field: value}}.
info() {
  python3 - "$@" <<'PY'
import json, socket, sys
def info(port):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
    s.sendall(b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n")
    data = b""
    while b"\r\n" not in data:
        data += s.recv(65536)
    head, rest = data.split(b"\r\n", 1)
    size = int(head[1:])
    while len(rest) < size:
        rest += s.recv(65536)
    s.close()
    out = {}
    for line in rest[:size].decode().splitlines():
        if ":" not in line or line.startswith("#"):
            continue
        k, v = line.split(":", 1)
        if k.startswith("cmdstat_"):
            calls = dict(x.split("=") for x in v.split(","))["calls"]
            out[k] = int(calls)
        elif k in ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes"):
            out[k] = int(v)
        elif k in ("used_cpu_user", "used_cpu_sys"):
            out["cpu_secs"] = out.get("cpu_secs", 0) + float(v)
    return out
print(json.dumps({p: info(p) for p in sys.argv[1:]}))
PY
}

# Wait (at most 20 s) until node $1's backplane is up on every instance.
until_up() {
  python3 - "$1" <<'PY'
import json, sys, time, urllib.request
deadline = time.time() + 20
while time.time() < deadline:
    try:
        h = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1))
        if h.get("backplane", {}).get("state") == "up":
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(f"node on {sys.argv[1]}: backplane never up")
PY
}

run() { # $1: instances, $2: round
  local n=$1 round=$2 ports=() urls=() pids=()
  for _ in $(seq "$n"); do
    local p; p=$(free_port)
    redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
    PIDS+=($!); pids+=($!); ports+=("$p"); urls+=("redis://127.0.0.1:$p")
  done
  sleep 0.5
  local list; list=$(IFS=,; echo "${urls[*]}")
  local a b; a=$(free_port); b=$(free_port)
  for port in "$a" "$b"; do
    RACE_API_KEY=bench-key LOG_LEVEL=warn "$BIN" --systems race --bind 127.0.0.1 \
      --race-port "$port" --admin-bind off --redis-url "$list" \
      --publish-rate-per-ip 0 --publish-rate-per-key 0 \
      >>"$OUT/node-$n-$round-$port.log" 2>&1 &
    PIDS+=($!); pids+=($!)
  done
  until_up "$a"; until_up "$b"
  info "${ports[@]}" >"$OUT/info-before.json"
  timeout 120 "$LOAD" --json --label "redis x$n" across --publish "http://127.0.0.1:$a" \
    --url "ws://127.0.0.1:$b/ws" --sessions "$SESSIONS" --backends "$BACKENDS" \
    --duration "$DURATION" --v2 >"$OUT/run.json"
  info "${ports[@]}" >"$OUT/info-after.json"
  python3 - "$n" "$round" "$OUT" <<'PY' >>"$OUT/rows.jsonl"
import json, sys
n, rnd, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
run = json.load(open(f"{out}/run.json"))
before, after = json.load(open(f"{out}/info-before.json")), json.load(open(f"{out}/info-after.json"))
fields = ["total_commands_processed", "cmdstat_xadd", "cmdstat_publish", "cmdstat_evalsha",
          "total_net_input_bytes", "total_net_output_bytes", "cpu_secs"]
inst = [{f: after[p].get(f, 0) - before[p].get(f, 0) for f in fields} for p in before]
print(json.dumps({"instances": n, "round": rnd, "accepted_per_sec": run["accepted_per_sec"],
                  "carried_per_sec": run["carried_per_sec"], "lost": run["lost"],
                  "refused": run["refused"], "failed": run["failed"], "per_instance": inst}))
PY
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}

for round in $(seq "$ROUNDS"); do
  run 1 "$round"
  run 3 "$round"
done

python3 - "$OUT/rows.jsonl" "$SESSIONS" "$BACKENDS" "$DURATION" <<'PY' | tee "$OUT/table.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sessions, backends, duration = sys.argv[2:5]
med = lambda n, k: statistics.median(r[k] for r in rows if r["instances"] == n)
print(f"{sessions} race sessions, {backends} backends posting flat out to node A for {duration} s, "
      f"one v2 follower per session on node B, history on; medians of {len(rows) // 2} rounds.\n")
def busiest(r):  # The busiest instance's CPU share of the window (seconds of CPU per second).
    return max(i["cpu_secs"] for i in r["per_instance"]) / float(duration)
print("| Redis instances | updates/s accepted on A | publications/s carried A → B | busiest Redis's CPU (cores) | lost |")
print("|---|---|---|---|---|")
for n in (1, 3):
    cpu = statistics.median(busiest(r) for r in rows if r["instances"] == n)
    print(f"| {n} | {med(n, 'accepted_per_sec'):,.0f} | {med(n, 'carried_per_sec'):,.0f} | {cpu:.2f} | "
          f"{sum(r['lost'] for r in rows if r['instances'] == n)} |")
print(f"\nthree / one, carried: {med(3, 'carried_per_sec') / med(1, 'carried_per_sec'):.2f}\n")
print("Each instance's share of the traffic with three (INFO deltas over the run, summed over the rounds):\n")
print("| instance | commands | share | XADD (appends) | share | bytes in | share | bytes out | share | CPU s | share |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
three = [r["per_instance"] for r in rows if r["instances"] == 3]
keys = ["total_commands_processed", "cmdstat_xadd", "total_net_input_bytes", "total_net_output_bytes", "cpu_secs"]
sums = [{k: sum(run[i][k] for run in three) for k in keys} for i in range(3)]
tot = {k: sum(s[k] for s in sums) or 1 for k in keys}
for i, s in enumerate(sums):
    cells = " | ".join(f"{s[k]:,.0f} | {s[k] / tot[k]:.0%}" if k != "cpu_secs" else f"{s[k]:.2f} | {s[k] / tot[k]:.0%}" for k in keys)
    print(f"| {i} | {cells} |")
print()
for r in rows:
    print(f"- round {r['round']}, {r['instances']} instance(s): {r['accepted_per_sec']:,.0f} accepted/s, "
          f"{r['carried_per_sec']:,.0f} carried/s, lost {r['lost']}, refused {r['refused']}, failed {r['failed']}")
PY
echo "results: $OUT" >&2
