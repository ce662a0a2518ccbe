#!/usr/bin/env bash
# A scale run (issue 14): connections past one process, as users run them. Starts Redis and NODES
# switchboard nodes of one cluster (AFC system, `--redis-url`, each under its socket budget), and
# NODES load processes (`switchboard-load hold`), each on its own source address 127.0.0.(11+i)
# and holding PER_NODE idle sockets on its node. Then:
#   memory     each node's RSS growth over its baseline (no clients) per socket it holds; the
#              kernel's share from /proc/slabinfo (the socket caches, when readable: root),
#              /proc/meminfo (Slab, SUnreclaim) and /proc/net/sockstat (TCP mem pages), before
#              and after, over the TCP sockets opened meanwhile, times two (both ends of each
#              connection are on this machine; other jobs' sockets are divided out)
#   handshakes connect + upgrade completed per second, the whole cluster and each node
#   fan-out    PUBLICATIONS single posts to node 0 (`switchboard-load post`), one at a time:
#              post to the last receipt over every socket of every node (the full fan-out),
#              receipts p50/p99, on the wall clock every process shares
#   CPU        PACED posts at a rate that offers PACED_RATE deliveries a second (40 000: one
#              publication at a time at every size; by default as many posts as make ~400 000
#              deliveries, at least 8), then BURST posts back to back (as many, at least 20):
#              the nodes' CPU per delivery (user and kernel) over each, Redis CPU
# and asserts deliveries == connections x publications (exits non-zero otherwise). Prints its
# table; raw data and the table in bench/results/<stamp>-cluster/ (OUT sets another directory);
# `python3 bench/cluster.py reference OUT bench/reference/<stamp>-cluster` copies it for
# committing without the receipt lists.
#
# One command: bash bench/cluster.sh     (default 6 nodes x 17 000 = 102 000 connections; about
#              1.5 minutes after the build)
#              NODES=1 PER_NODE=1000 bash bench/cluster.sh      (a small look)
# Needs cargo, python3, redis-server. Loopback only (nodes and Redis on 127.0.0.1, ports below
# 32768; clients from 127.0.0.11 up). Stops by itself: every wait has a timeout, the whole run
# is killed after RUN_TIMEOUT seconds, and every child is killed on exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

NODES=${NODES:-6}
PER_NODE=${PER_NODE:-17000}
PUBLICATIONS=${PUBLICATIONS:-5}
BURST=${BURST:-0}
PACED=${PACED:-0}
PACED_RATE=${PACED_RATE:-40000}
SETTLE=${SETTLE:-3}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-64}
RAMP_TIMEOUT=${RAMP_TIMEOUT:-240}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
LABEL=${LABEL:-"${NODES}x${PER_NODE}"}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }
for tool in cargo python3 redis-server; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
[[ "$NODES" -ge 1 && "$NODES" -le 200 ]] || die "NODES must be 1 to 200 (one source address each)"
if [[ "$BURST" -le 0 ]]; then
  BURST=$(( 400000 / (NODES * PER_NODE) ))
  [[ "$BURST" -lt 20 ]] && BURST=20
fi
if [[ "$PACED" -le 0 ]]; then
  PACED=$(( 400000 / (NODES * PER_NODE) ))
  [[ "$PACED" -lt 8 ]] && PACED=8
fi
PACED_POSTS_PER_SEC=$(python3 -c "print(f'{$PACED_RATE / ($NODES * $PER_NODE):.6g}')")

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-"$ROOT/bench/results/$STAMP-cluster"}
mkdir -p "$OUT"

say "building release binaries (switchboard, switchboard-load)"
cargo build --release --locked -p switchboard-server -p switchboard-load >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER_BIN=${SWITCHBOARD_BIN:-$TARGET_DIR/release/switchboard}
LOAD_BIN="$TARGET_DIR/release/switchboard-load"

# Every socket is a file, on both sides; each process has its own limit.
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
if [[ "$hard" != unlimited ]]; then
  budget=$(( hard - 64 - hard / 20 ))   # the node's default socket budget (--max-sockets)
  [[ "$PER_NODE" -le "$budget" ]] || die "PER_NODE=$PER_NODE is over a node's socket budget ($budget at ulimit -n $hard)"
fi

# Children, killed on any exit; a watchdog ends the whole run after RUN_TIMEOUT seconds.
CHILDREN=()
cleanup() {
  local pid
  for pid in "${CHILDREN[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${CHILDREN[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
(
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  sleep "$RUN_TIMEOUT" &
  nap=$!
  wait "$nap"
  say "run timeout (${RUN_TIMEOUT}s): stopping"
  kill -TERM $$
) </dev/null >/dev/null &
CHILDREN+=($!)

# NODES + 1 free ports below 32768 (outside the ephemeral range the clients' ports come from).
mapfile -t PORTS < <(python3 - "$((NODES + 1))" <<'PY'
import random, socket, sys
n, got = int(sys.argv[1]), []
while len(got) < n:
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        got.append(p) if p not in got else None
    except OSError:
        pass
    finally:
        s.close()
print("\n".join(map(str, got)))
PY
)
REDIS_PORT=${PORTS[0]}
NODE_PORTS=("${PORTS[@]:1}")

wait_port() {
  local port=$1 pid=$2 what=$3
  for _ in $(seq 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || die "$what exited at start; see $OUT"
    sleep 0.1
  done
  die "$what did not listen on port $port within 15 s"
}

py() { python3 "$ROOT/bench/cluster.py" "$@"; }
# wait_for WHAT SECONDS CHECK...: poll until the check passes.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local until=$((SECONDS + secs))
  until "$@"; do
    [[ $SECONDS -lt $until ]] || die "timed out after ${secs}s waiting for $what"
    for pid in "${HOLD_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || "$@" || die "a load process exited early; see $OUT/hold-*.err"
    done
    sleep 0.1
  done
}

limits() {
  echo "Limits: open files $(ulimit -n) per process (hard $hard); somaxconn $(cat /proc/sys/net/core/somaxconn);" \
    "tcp_max_syn_backlog $(cat /proc/sys/net/ipv4/tcp_max_syn_backlog);" \
    "ip_local_port_range $(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range);" \
    "nf_conntrack_max $(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo 'n/a')," \
    "nf_conntrack_count $(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 'n/a');" \
    "tcp_mem $(tr '\t' ' ' </proc/sys/net/ipv4/tcp_mem) pages."
}
{
  echo "Scale run $STAMP ($LABEL) on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
  echo "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r), load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "switchboard $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(redis-server --version | cut -d' ' -f1-3)."
  echo "$NODES node(s) x $PER_NODE sockets, $PUBLICATIONS single publications, $PACED paced at $PACED_POSTS_PER_SEC/s, a burst of $BURST; no CPU pinning."
  limits
} >"$OUT/context.txt"

say "starting Redis on $REDIS_PORT and $NODES node(s) on ${NODE_PORTS[*]}"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --loglevel warning >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
CHILDREN+=("$REDIS_PID")
wait_port "$REDIS_PORT" "$REDIS_PID" redis-server
NODE_PIDS=()
for i in $(seq 0 $((NODES - 1))); do
  "$SERVER_BIN" --systems afc --bind 127.0.0.1 --afc-port "${NODE_PORTS[$i]}" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT/" --rate-per-sec 0 --publish-rate-per-ip 0 \
    --publish-rate-per-key 0 --admin-bind off --log-level warn >"$OUT/node-$i.log" 2>&1 &
  NODE_PIDS+=($!)
  CHILDREN+=($!)
done
for i in "${!NODE_PIDS[@]}"; do wait_port "${NODE_PORTS[$i]}" "${NODE_PIDS[$i]}" "node $i"; done
sleep 1

HOLD_PIDS=()
SINGLE_SEQS=$(seq -s, 1 "$PUBLICATIONS")
BURST_SEQS=$(seq -s, 1001 $((1000 + BURST)))
PACED_SEQS=$(seq -s, 5001 $((5000 + PACED)))
WANTED=$((PUBLICATIONS + PACED + BURST))
py snapshot baseline "$OUT" "${NODE_PIDS[@]}" "$REDIS_PID"

say "opening $((NODES * PER_NODE)) sockets from $NODES load processes"
for i in $(seq 0 $((NODES - 1))); do
  "$LOAD_BIN" --threads 1 --label "node$i" hold \
    --url "ws://127.0.0.1:${NODE_PORTS[$i]}/ws" --connections "$PER_NODE" \
    --source "127.0.0.$((11 + i))" --connect-concurrency "$CONNECT_CONCURRENCY" \
    --publications "$WANTED" --deadline "$RUN_TIMEOUT" --linger 2 \
    >"$OUT/hold-$i.jsonl" 2>"$OUT/hold-$i.err" &
  HOLD_PIDS+=($!)
  CHILDREN+=($!)
done
wait_for "every socket to open" "$RAMP_TIMEOUT" py ready "$OUT" "$NODES"
ALL=("${NODE_PIDS[@]}" "$REDIS_PID" "${HOLD_PIDS[@]}")
py snapshot ramped "$OUT" "${ALL[@]}"
sleep "$SETTLE"
py snapshot held "$OUT" "${ALL[@]}"
grep -c . /proc/net/nf_conntrack >"$OUT/conntrack-lines.txt" 2>/dev/null || true

cat >"$OUT/config.json" <<JSON
{"label": "$LABEL", "nodes": $NODES, "per_node": $PER_NODE, "node_pids": [$(IFS=,; echo "${NODE_PIDS[*]}")],
 "redis_pid": $REDIS_PID, "hold_pids": [$(IFS=,; echo "${HOLD_PIDS[*]}")],
 "node_ports": [$(IFS=,; echo "${NODE_PORTS[*]}")], "redis_port": $REDIS_PORT,
 "single_seqs": [$SINGLE_SEQS], "burst_seqs": [$BURST_SEQS], "paced_seqs": [$PACED_SEQS],
 "paced_posts_per_sec": $PACED_POSTS_PER_SEC}
JSON

POST=(timeout 120 "$LOAD_BIN" --threads 1 --label post post --http "http://127.0.0.1:${NODE_PORTS[0]}")
say "$PUBLICATIONS single publications to node 0, one at a time"
for j in $(seq 1 "$PUBLICATIONS"); do
  "${POST[@]}" --first-seq "$j" >>"$OUT/posts.jsonl"
  wait_for "publication $j everywhere" 30 py published "$OUT" "$NODES" "$j"
  sleep 0.5
done
say "$PACED publications at $PACED_POSTS_PER_SEC a second"
py snapshot paced-start "$OUT" "${ALL[@]}"
"${POST[@]}" --first-seq 5001 --count "$PACED" --rate "$PACED_POSTS_PER_SEC" >>"$OUT/posts.jsonl"
wait_for "the paced publications everywhere" 120 py published "$OUT" "$NODES" $((PUBLICATIONS + PACED))
py snapshot paced-end "$OUT" "${ALL[@]}"
say "a burst of $BURST publications, back to back"
py snapshot burst-start "$OUT" "${ALL[@]}"
"${POST[@]}" --first-seq 1001 --count "$BURST" >>"$OUT/posts.jsonl"
wait_for "the burst everywhere" 120 py published "$OUT" "$NODES" "$WANTED"
py snapshot burst-end "$OUT" "${ALL[@]}"
for pid in "${HOLD_PIDS[@]}"; do wait "$pid" || say "warning: load process $pid exited with $?"; done

echo "Load average at end $(cut -d' ' -f1-3 /proc/loadavg); conntrack: $(limits | grep -o 'nf_conntrack_count [^;]*'), /proc/net/nf_conntrack lines while held: $(cat "$OUT/conntrack-lines.txt" 2>/dev/null || echo 'n/a')." >>"$OUT/context.txt"
status=0
py report "$OUT" >"$OUT/table.md" || status=$?
cat "$OUT/context.txt" "$OUT/table.md"
echo
echo "Raw results: $OUT"
[[ $status == 0 ]] || die "lost deliveries or failed connections (see the table)"
