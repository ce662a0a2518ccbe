#!/usr/bin/env bash
# Cost growth (issue 14): CPU per delivery and memory per connection as connections grow, in one
# run: bench/cluster.sh at each point of POINTS (NODESxPER_NODE; default one node at 1 000,
# 10 000 and 18 800 sockets, then the cluster, 6 nodes x 17 000 = 102 000), every point the same
# setup (AFC nodes with Redis between them, a cluster of one for the single-node points, the same
# load tool, posts to node 0). Prints one table (ratios to the first point, same run) and draws
# docs/growth.svg (SVG=path to put it elsewhere, SVG= none to skip) with bench/growth.py.
#
# One command: bash bench/growth.sh          (about 3 minutes after the build; stops by itself)
#              POINTS="1x1000 1x5000" bash bench/growth.sh
# Raw results: bench/results/<stamp>-growth/<point>/ (each point's table is cluster.sh's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
POINTS=${POINTS:-"1x1000 1x10000 1x18800 6x17000"}
SVG=${SVG-"$ROOT/docs/growth.svg"}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
GROWTH_OUT=${GROWTH_OUT:-"$ROOT/bench/results/$STAMP-growth"}
mkdir -p "$GROWTH_OUT"

status=0
dirs=()
for point in $POINTS; do
  [[ "$point" =~ ^[0-9]+x[0-9]+$ ]] || { echo "growth.sh: bad point $point (NODESxPER_NODE)" >&2; exit 1; }
  printf '==> point %s (load average %s)\n' "$point" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
  if ! NODES=${point%x*} PER_NODE=${point#*x} LABEL=$point OUT="$GROWTH_OUT/$point" \
      bash "$ROOT/bench/cluster.sh" >"$GROWTH_OUT/$point.out" 2>&1; then
    echo "growth.sh: point $point failed; see $GROWTH_OUT/$point.out" >&2
    status=1
  fi
  [[ -f "$GROWTH_OUT/$point/summary.json" ]] && dirs+=("$GROWTH_OUT/$point")
  sleep 2
done
[[ ${#dirs[@]} -gt 0 ]] || { echo "growth.sh: no point finished" >&2; exit 1; }
svg_args=()
[[ "$SVG" == none || -z "$SVG" ]] || svg_args=(--svg "$SVG")
python3 "$ROOT/bench/growth.py" "${svg_args[@]}" "${dirs[@]}" | tee "$GROWTH_OUT/table.md"
echo
echo "Raw results: $GROWTH_OUT"
exit "$status"
