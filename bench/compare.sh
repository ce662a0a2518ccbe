#!/usr/bin/env bash
# Side-by-side comparison, in one run on one machine, of three servers doing the laptimes relay's
# job (every client's message goes to every other client):
#   switchboard        the `switchboard` binary (release build) on its WebSocket-only transport
#                      (`--transport tokio`; SWITCHBOARD_TRANSPORT=hyper runs the HTTP one)
#   node-ws            bench/peers/node-relay: Node + `ws` from npm, as the laptimes seed describes
#   python-websockets  bench/peers/python-relay: Python + `websockets` from PyPI
# Each server runs alone on 127.0.0.1, started fresh for each load run, and is measured with
# `switchboard-load` (crates/loadgen), which reads the server's CPU time and RSS from /proc:
#   idle     IDLE_CONNS idle sockets on top of 100: RSS per idle connection
#   latency  LAT_SUBS subscribers, 1 publisher, LAT_RATE publications/s for LAT_SECS: delivery
#            latency, and server CPU per delivery at that fixed rate; LAT_ROUNDS rounds, the
#            servers taking turns, and the table shows each figure's median. Every PROBE_EVERY-th
#            subscriber is a probe read on the load tool's own thread (its latency is the
#            server's, not the tool's), compared with the fan-out floor measured in the same
#            run (the kernel's per-send cost, timed without a server on the server's CPU in
#            rounds as far apart as the publications, times the recipients up to the deepest
#            probe; the table also shows it timed with the rounds 2 ms apart, as before, and
#            timed during the run itself, halfway between its publications, so that the
#            machine's other work slows the floor as it slows the server)
#   flat     FLAT_SUBS subscribers, FLAT_PUBS publishers, flat out with FLAT_WINDOW (4)
#            publications in flight: deliveries/s and CPU per delivery; FLAT_ROUNDS rounds, the
#            servers taking turns, and the table shows each figure's median (one flat run swings
#            by 10 % or more with the machine's other work, which is as much as the distance to
#            issue 14's target) and how busy each server was (a server faster than the load
#            tool's reading waits for it part of the time)
# Then, switchboard alone, history off (`--history-max-entries 0`, v1 clients) against history on
# (the default, protocol v2 clients): the latency run's fan-out, ROOMS collab projects of MEMBERS
# members at ROOM_RATE edits/s (each to the other members), and the idle run; HIST_ROUNDS rounds,
# taking turns (HISTORY=0 skips them). The main rows above run switchboard with its defaults
# (history on) and v1 clients, as the peers' clients are.
# Then it prints the table (bench/table.py) with switchboard / peer ratios, and history on / off.
# The publish-to-all job (AFC) against Fastify, Socket.IO and Sockudo is bench/peers.sh.
#
# One command from a fresh machine (needs cargo, node + npm, python3 with venv; fetches the npm
# and PyPI packages): bash bench/compare.sh
# With 2 or more CPUs and `taskset`, the server is pinned to CPU 0 and the load tool to CPU 1
# (PIN=0 turns that off). Every knob above is an environment variable; SERVERS picks servers;
# SWITCHBOARD_BIN runs another build of switchboard (to try a change).
# Raw results: bench/results/<timestamp>/. Bounded: every load run has a timeout (RUN_TIMEOUT);
# the whole run takes about 12 minutes after the build.

# The whole script is one block, which bash reads before it runs any of it: a run goes on as it
# began when the file is edited meanwhile.
{
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

IDLE_CONNS=${IDLE_CONNS:-5000}
LAT_SUBS=${LAT_SUBS:-1000}
LAT_RATE=${LAT_RATE:-20}
LAT_SECS=${LAT_SECS:-15}
LAT_ROUNDS=${LAT_ROUNDS:-3}
FLAT_SUBS=${FLAT_SUBS:-1000}
FLAT_PUBS=${FLAT_PUBS:-2}
FLAT_SECS=${FLAT_SECS:-10}
FLAT_WINDOW=${FLAT_WINDOW:-4}
FLAT_ROUNDS=${FLAT_ROUNDS:-3}
SERVERS=${SERVERS:-"switchboard node-ws python-websockets"}
PIN=${PIN:-1}
HISTORY=${HISTORY:-1}
HIST_ROUNDS=${HIST_ROUNDS:-3}
ROOMS=${ROOMS:-1000}
MEMBERS=${MEMBERS:-5}
ROOM_RATE=${ROOM_RATE:-1000}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
PROBE_EVERY=${PROBE_EVERY:-100}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

for tool in cargo node npm python3; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$ROOT/bench/results/$STAMP"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

say "building release binaries (switchboard, switchboard-load)"
cargo build --release --locked -p switchboard-server -p switchboard-load >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER_BIN=${SWITCHBOARD_BIN:-$TARGET_DIR/release/switchboard}
SERVER_TRANSPORT=${SWITCHBOARD_TRANSPORT:-tokio}
LOAD_BIN="$TARGET_DIR/release/switchboard-load"

NODE_DIR="$ROOT/bench/peers/node-relay"
PY_DIR="$ROOT/bench/peers/python-relay"
VENV="$ROOT/bench/.venv"
case " $SERVERS " in *" node-ws "*)
  say "installing the Node relay's packages (npm ci)"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2) ;;
esac
case " $SERVERS " in *" python-websockets "*)
  say "installing the Python relay's packages (venv + pip)"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$PY_DIR/requirements.txt" >&2 ;;
esac

# Every socket is a file descriptor, on both sides.
want=$((IDLE_CONNS + 1000))
hard=$(ulimit -Hn)
if [[ "$hard" != unlimited && "$hard" -lt "$want" ]]; then
  say "warning: the hard open-file limit ($hard) is below $want; the idle run may fail"
fi
ulimit -n "$hard" 2>/dev/null || ulimit -n "$want" 2>/dev/null || true

SERVER_PIN=()
LOAD_PIN=()
LOAD_THREADS=()
FLOOR_CPU=()
if [[ "$PIN" == 1 ]] && command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
  SERVER_PIN=(taskset -c 0)
  LOAD_PIN=(taskset -c 1)
  LOAD_THREADS=(--threads 1)
  FLOOR_CPU=(--floor-cpu 0)
  PINNING="server pinned to CPU 0, load tool to CPU 1 (taskset)"
else
  PINNING="no CPU pinning"
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT

# start_server NAME PORT LOG: start it in the background (pinned), wait until it accepts.
# switchboard serves $SB_SYSTEM (laptimes unless set); switchboard-history-off runs it without
# history, switchboard-history-on with its default history.
SB_SYSTEM=laptimes
URL_PATH=/
start_server() {
  local name=$1 port=$2 log=$3
  case "$name" in
    switchboard|switchboard-history-on|switchboard-history-off)
      local history=()
      [[ "$name" == switchboard-history-off ]] && history=(--history-max-entries 0)
      "${SERVER_PIN[@]}" "$SERVER_BIN" --transport "$SERVER_TRANSPORT" --systems "$SB_SYSTEM" \
        --bind 127.0.0.1 "--$SB_SYSTEM-port" "$port" --rate-per-sec 0 --log-level warn \
        "${history[@]}" >"$log" 2>&1 &
      ;;
    node-ws)
      "${SERVER_PIN[@]}" env WS_HOST=127.0.0.1 WS_PORT="$port" node "$NODE_DIR/relay.js" >"$log" 2>&1 &
      ;;
    python-websockets)
      "${SERVER_PIN[@]}" env WS_HOST=127.0.0.1 WS_PORT="$port" "$VENV/bin/python" "$PY_DIR/relay.py" >"$log" 2>&1 &
      ;;
    *) die "unknown server $name" ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "$name exited at start; see $log"
    sleep 0.1
  done
  die "$name did not listen on port $port within 10 s; see $log"
}

# scenario NAME RUN ARGS...: fresh server, one load run, JSON appended to the results.
scenario() {
  local name=$1 run=$2
  shift 2
  local port
  port=$(free_port)
  start_server "$name" "$port" "$OUT/$name-$run.log"
  say "$name: $run"
  if ! timeout "$RUN_TIMEOUT" "${LOAD_PIN[@]}" "$LOAD_BIN" "${LOAD_THREADS[@]}" --json \
      --label "$name/$run" "$@" --url "ws://127.0.0.1:$port$URL_PATH" --pid "$SERVER_PID" \
      >>"$RESULTS" 2>>"$OUT/load.err"; then
    say "warning: $name $run failed (see $OUT/load.err)"
  fi
  tail -n1 "$RESULTS" >&2
  stop_server
  sleep 1
}

{
  echo "Run $STAMP on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
  echo "kernel $(uname -r), load average at start $(cut -d' ' -f1-3 /proc/loadavg); $PINNING."
  echo "switchboard $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), node $(node --version)" \
       "+ ws $(node -p "require('$NODE_DIR/node_modules/ws/package.json').version" 2>/dev/null || echo '?')," \
       "$("$VENV/bin/python" --version 2>/dev/null || python3 --version)" \
       "+ websockets $("$VENV/bin/python" -c 'import websockets; print(websockets.__version__)' 2>/dev/null || echo '?')."
  if [[ -n "${SWITCHBOARD_BIN:-}" ]]; then echo "switchboard binary: $SWITCHBOARD_BIN."; fi
} >"$OUT/context.txt"

for name in $SERVERS; do
  scenario "$name" idle idle --connections "$IDLE_CONNS" --baseline 100 --settle 3
done
for round in $(seq "$LAT_ROUNDS"); do
  for name in $SERVERS; do
    scenario "$name" "latency#$round" fanout --subscribers "$LAT_SUBS" --publishers 1 \
      --rate "$LAT_RATE" --warmup 3 --duration "$LAT_SECS" --drain 10 --probe-every "$PROBE_EVERY" "${FLOOR_CPU[@]}" \
      --floor-during
  done
done
for round in $(seq "$FLAT_ROUNDS"); do
  for name in $SERVERS; do
    scenario "$name" "flat#$round" fanout --subscribers "$FLAT_SUBS" --publishers "$FLAT_PUBS" --rate 0 \
      --window "$FLAT_WINDOW" --warmup 2 --duration "$FLAT_SECS" --drain 10
  done
done

# History off (v1 clients) against history on (v2 clients), switchboard alone.
if [[ "$HISTORY" == 1 ]]; then
  v2_for() { [[ "$1" == switchboard-history-on ]] && echo --v2; true; }
  for round in $(seq "$HIST_ROUNDS"); do
    for name in switchboard-history-off switchboard-history-on; do
      # shellcheck disable=SC2046
      scenario "$name" "fanout#$round" fanout --subscribers "$LAT_SUBS" --publishers 1 \
        --rate "$LAT_RATE" --warmup 3 --duration "$LAT_SECS" --drain 10 $(v2_for "$name")
    done
    SB_SYSTEM=collab URL_PATH=/ws
    for name in switchboard-history-off switchboard-history-on; do
      # shellcheck disable=SC2046
      scenario "$name" "rooms#$round" fanout --rooms "$ROOMS" --members "$MEMBERS" \
        --rate "$ROOM_RATE" --warmup 3 --duration "$LAT_SECS" --drain 10 $(v2_for "$name")
    done
    SB_SYSTEM=laptimes URL_PATH=/
  done
  for name in switchboard-history-off switchboard-history-on; do
    # shellcheck disable=SC2046
    scenario "$name" idle idle --connections "$IDLE_CONNS" --baseline 100 --settle 3 $(v2_for "$name")
  done
fi

echo "Load average at end $(cut -d' ' -f1-3 /proc/loadavg)." >>"$OUT/context.txt"
python3 "$ROOT/bench/table.py" "$RESULTS" "$OUT/context.txt" | tee "$OUT/table.md"
echo
echo "Raw results: $OUT"
exit
}
