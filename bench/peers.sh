#!/usr/bin/env bash
# The publish-to-all job (the AFC shape: a backend posts an event, every socket receives it),
# side by side, in one run on one machine, against the servers users pick for it:
#   switchboard  the `switchboard` binary (release) serving the AFC system (`--systems afc`,
#                HTTP and WebSocket on one port), its rate limits off
#   fastify      bench/peers/afc-fastify: the AFC seed's own service as afc-events.md describes
#                it (Fastify + @fastify/websocket, POST /events/<entity>-<action>)
#   socketio     bench/peers/socketio: Socket.IO, `io.emit` on the same POST
#   sockudo      Sockudo (a Rust Pusher-protocol server from crates.io): clients subscribe to a
#                channel, backends publish through its signed HTTP API; its rate limiter off
# Each server runs alone on 127.0.0.1, started fresh for each load run, and is measured with
# `switchboard-load publish-all`: CLIENTS WebSocket clients, BACKENDS backends posting EVENTS
# events in all (each backend one request at a time over a keep-alive connection); ROUNDS
# rounds, the servers taking turns, the table shows medians. Figures: server CPU per delivery
# (user and kernel apart), RSS at the end, deliveries lost, latency.
#
# One command (needs cargo, node + npm; fetches the npm packages, and Sockudo with
# `cargo install sockudo --locked --root bench/.tools`, which needs Debian's protobuf-compiler:
# installed with apt-get when missing and allowed): bash bench/peers.sh
# Sockudo's first install compiles it (about 15 minutes on 2 cores, niced); if the install fails
# or takes longer than SOCKUDO_INSTALL_TIMEOUT seconds, the run goes on without it and says so.
# SOCKUDO_ROOT installs it elsewhere. SERVERS picks servers; SWITCHBOARD_BIN runs another build
# of switchboard. With 2 or more CPUs
# the server is pinned to CPU 0 and the load tool to CPU 1 (PIN=0 turns that off).
# Raw results: bench/results/<timestamp>-peers/. Bounded: every load run has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CLIENTS=${CLIENTS:-200}
BACKENDS=${BACKENDS:-8}
EVENTS=${EVENTS:-4000}
ROUNDS=${ROUNDS:-3}
SERVERS=${SERVERS:-"switchboard fastify socketio sockudo"}
PIN=${PIN:-1}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
SOCKUDO_INSTALL_TIMEOUT=${SOCKUDO_INSTALL_TIMEOUT:-2400}
SOCKUDO_VERSION=${SOCKUDO_VERSION:-5.2.0}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'peers.sh: %s\n' "$*" >&2; exit 1; }

for tool in cargo node npm python3; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$ROOT/bench/results/$STAMP-peers"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

say "building release binaries (switchboard, switchboard-load)"
cargo build --release --locked -p switchboard-server -p switchboard-load >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER_BIN=${SWITCHBOARD_BIN:-$TARGET_DIR/release/switchboard}
LOAD_BIN="$TARGET_DIR/release/switchboard-load"

FASTIFY_DIR="$ROOT/bench/peers/afc-fastify"
SOCKETIO_DIR="$ROOT/bench/peers/socketio"
TOOLS=${SOCKUDO_ROOT:-$ROOT/bench/.tools}
SOCKUDO_BIN="$TOOLS/bin/sockudo"
NOTES=()

has() { case " $SERVERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
drop() { SERVERS=$(echo " $SERVERS " | sed "s/ $1 / /" | xargs); }

for peer in fastify socketio; do
  if has "$peer"; then
    dir=$FASTIFY_DIR
    [[ "$peer" == socketio ]] && dir=$SOCKETIO_DIR
    say "installing $peer's packages (npm ci)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
done

if has sockudo && [[ ! -x "$SOCKUDO_BIN" ]]; then
  if ! command -v protoc >/dev/null; then
    say "installing protobuf-compiler (Sockudo's build needs protoc)"
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
      apt-get install -y protobuf-compiler >&2 || { apt-get update >&2 && apt-get install -y protobuf-compiler >&2; } || true
    fi
  fi
  if command -v protoc >/dev/null; then
    say "installing sockudo $SOCKUDO_VERSION (cargo install --locked, niced, at most ${SOCKUDO_INSTALL_TIMEOUT}s)"
    if ! CARGO_TARGET_DIR="$TOOLS/build" timeout "$SOCKUDO_INSTALL_TIMEOUT" nice -n 10 \
        cargo install sockudo --version "$SOCKUDO_VERSION" --locked --root "$TOOLS" >"$OUT/sockudo-install.log" 2>&1; then
      say "warning: sockudo did not install (see $OUT/sockudo-install.log); going on without it"
    fi
  else
    say "warning: no protoc, so no sockudo; going on without it"
  fi
  if [[ ! -x "$SOCKUDO_BIN" ]]; then
    NOTES+=("sockudo: not installed in this run (cargo install failed or timed out), so not measured.")
    drop sockudo
  fi
fi

# Every socket is a file descriptor, on both sides.
want=$((CLIENTS + 1000))
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || ulimit -n "$want" 2>/dev/null || true

SERVER_PIN=()
LOAD_PIN=()
LOAD_THREADS=()
if [[ "$PIN" == 1 ]] && command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
  SERVER_PIN=(taskset -c 0)
  LOAD_PIN=(taskset -c 1)
  LOAD_THREADS=(--threads 1)
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

# Pusher credentials of Sockudo's one app (set through its SOCKUDO_DEFAULT_APP_* variables).
APP_ID=bench APP_KEY=bench-key APP_SECRET=bench-secret

# start_server NAME PORT LOG: start it in the background (pinned), wait until it accepts; sets
# LOAD_ARGS to what the load tool needs to talk to it.
start_server() {
  local name=$1 port=$2 log=$3
  LOAD_ARGS=(--protocol afc --url "ws://127.0.0.1:$port/ws" --http "http://127.0.0.1:$port")
  case "$name" in
    switchboard)
      "${SERVER_PIN[@]}" "$SERVER_BIN" --systems afc --bind 127.0.0.1 --afc-port "$port" \
        --rate-per-sec 0 --publish-rate-per-ip 0 --publish-rate-per-key 0 --log-level warn >"$log" 2>&1 &
      ;;
    fastify)
      "${SERVER_PIN[@]}" env HOST=127.0.0.1 PORT="$port" node "$FASTIFY_DIR/server.js" >"$log" 2>&1 &
      ;;
    socketio)
      "${SERVER_PIN[@]}" env HOST=127.0.0.1 PORT="$port" node "$SOCKETIO_DIR/server.js" >"$log" 2>&1 &
      LOAD_ARGS=(--protocol socketio --url "ws://127.0.0.1:$port/socket.io/?EIO=4&transport=websocket"
        --http "http://127.0.0.1:$port")
      ;;
    sockudo)
      # Its limits raised past the load (defaults: 100 connections, 100 backend events/s per
      # app) and its rate limiter off, as ours is; no metrics endpoint; one node, everything in
      # memory, no webhook queue (its default queue driver is Redis).
      "${SERVER_PIN[@]}" env HOST=127.0.0.1 PORT="$port" RATE_LIMITER_ENABLED=false \
        METRICS_ENABLED=false DEBUG=false ADAPTER_DRIVER=local CACHE_DRIVER=memory \
        QUEUE_DRIVER=none APP_MANAGER_DRIVER=memory RATE_LIMITER_DRIVER=memory \
        SOCKUDO_DEFAULT_APP_ID="$APP_ID" SOCKUDO_DEFAULT_APP_KEY="$APP_KEY" \
        SOCKUDO_DEFAULT_APP_SECRET="$APP_SECRET" SOCKUDO_DEFAULT_APP_ENABLED=true \
        SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=100000 \
        SOCKUDO_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SECOND=1000000 \
        SOCKUDO_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SECOND=1000000 \
        SOCKUDO_DEFAULT_APP_MAX_READ_REQUESTS_PER_SECOND=1000000 \
        "$SOCKUDO_BIN" >"$log" 2>&1 &
      LOAD_ARGS=(--protocol pusher --url "ws://127.0.0.1:$port/app/$APP_KEY?protocol=7&client=switchboard-load&version=1.0"
        --http "http://127.0.0.1:$port" --app-id "$APP_ID" --app-key "$APP_KEY" --app-secret "$APP_SECRET")
      ;;
    *) die "unknown server $name" ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      sleep 0.3
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "$name exited at start; see $log"
    sleep 0.1
  done
  die "$name did not listen on port $port within 15 s; see $log"
}

{
  echo "Run $STAMP on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
  echo "kernel $(uname -r), load average at start $(cut -d' ' -f1-3 /proc/loadavg); $PINNING."
  echo "switchboard $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), node $(node --version)" \
       "+ fastify $(node -p "require('$FASTIFY_DIR/node_modules/fastify/package.json').version" 2>/dev/null || echo '?')" \
       "+ @fastify/websocket $(node -p "require('$FASTIFY_DIR/node_modules/@fastify/websocket/package.json').version" 2>/dev/null || echo '?')," \
       "socket.io $(node -p "require('$SOCKETIO_DIR/node_modules/socket.io/package.json').version" 2>/dev/null || echo '?')," \
       "sockudo $([[ -x "$SOCKUDO_BIN" ]] && echo "$SOCKUDO_VERSION" || echo 'not installed')."
  echo "publish-all: $CLIENTS clients, $BACKENDS backends, $EVENTS events, $ROUNDS rounds."
  if [[ -n "${SWITCHBOARD_BIN:-}" ]]; then echo "switchboard binary: $SWITCHBOARD_BIN."; fi
  for n in "${NOTES[@]}"; do echo "$n"; done
} >"$OUT/context.txt"

for round in $(seq "$ROUNDS"); do
  for name in $SERVERS; do
    port=$(free_port)
    start_server "$name" "$port" "$OUT/$name-publish-all-$round.log"
    say "$name: publish-all #$round"
    if ! timeout "$RUN_TIMEOUT" "${LOAD_PIN[@]}" "$LOAD_BIN" "${LOAD_THREADS[@]}" --json \
        --label "$name/publish-all#$round" publish-all "${LOAD_ARGS[@]}" --clients "$CLIENTS" \
        --backends "$BACKENDS" --events "$EVENTS" --pid "$SERVER_PID" \
        >>"$RESULTS" 2>>"$OUT/load.err"; then
      say "warning: $name publish-all failed (see $OUT/load.err)"
    fi
    tail -n1 "$RESULTS" >&2
    stop_server
    sleep 1
  done
done

echo "Load average at end $(cut -d' ' -f1-3 /proc/loadavg)." >>"$OUT/context.txt"
python3 "$ROOT/bench/table.py" "$RESULTS" "$OUT/context.txt" | tee "$OUT/table.md"
echo
echo "Raw results: $OUT"
