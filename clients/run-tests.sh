#!/usr/bin/env bash
# Runs the Python and JavaScript client tests against the real `switchboard` binary.
#
#   clients/run-tests.sh
#
# - creates clients/python/.venv when missing (or when requirements-dev.txt changed) and installs
#   the pinned test dependencies from PyPI (mypy among them);
# - runs `npm ci` in clients/js when node_modules is missing (or package-lock.json changed;
#   typescript is a pinned dev dependency);
# - builds the server: cargo build -p switchboard-server --bin switchboard (honours
#   CARGO_TARGET_DIR; the binary is $CARGO_TARGET_DIR/debug/switchboard);
# - runs pytest and `node --test` (test/*.test.js but the two browser tests); both include the
#   type checks (python/tests/test_types.py: mypy --strict; js/test/types.test.js: tsc --noEmit),
#   which run doc_examples.py to check every JSON example of docs/protocol against the client types;
# - makes sure Debian's chromium is installed (clients/ensure-chromium.sh, apt-get) and runs the
#   browser test (test/browser.test.js, headless chromium driven by puppeteer-core), which fails
#   if chromium cannot be installed;
# - runs the inspector's browser test (test/inspector.test.js: the admin page of the binary in
#   headless chromium), which keeps a screenshot at target/inspector.png ($INSPECTOR_SCREENSHOT);
# - prints the four runners' summary lines.
# Exits non-zero if anything fails.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
export CARGO_TARGET_DIR="$target"

step() { printf '\n== %s\n' "$*"; }
die() {
  echo "run-tests.sh: $*" >&2
  exit 1
}

# --- Python environment ----------------------------------------------------------------------
py_dir="$here/python"
venv="$py_dir/.venv"
stamp="$venv/.requirements-dev.txt"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$py_dir/requirements-dev.txt" "$stamp"; then
  step "creating $venv"
  python3 -m venv "$venv" || die "python3 -m venv failed"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$py_dir/requirements-dev.txt" || die "pip install failed"
  cp "$py_dir/requirements-dev.txt" "$stamp"
fi

# --- JavaScript dependencies -----------------------------------------------------------------
js_dir="$here/js"
js_stamp="$js_dir/node_modules/.switchboard-package-lock.json"
if [ ! -d "$js_dir/node_modules" ] || ! cmp -s "$js_dir/package-lock.json" "$js_stamp"; then
  step "installing JavaScript dependencies"
  if [ -f "$js_dir/package-lock.json" ]; then
    (cd "$js_dir" && npm ci --no-audit --no-fund) || die "npm ci failed"
    cp "$js_dir/package-lock.json" "$js_stamp"
  else
    (cd "$js_dir" && npm install --no-audit --no-fund) || die "npm install failed"
  fi
fi

# --- the server --------------------------------------------------------------------------------
step "building switchboard (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$repo" && cargo build -p switchboard-server --bin switchboard) || die "cargo build failed"
export SWITCHBOARD_BIN="$CARGO_TARGET_DIR/debug/switchboard"
[ -x "$SWITCHBOARD_BIN" ] || die "$SWITCHBOARD_BIN was not built"

# --- tests -------------------------------------------------------------------------------------
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

step "Python clients: pytest"
(cd "$py_dir" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests) 2>&1 | tee "$logs/py.log"
py_status=${PIPESTATUS[0]}

step "JavaScript clients: node --test"
js_tests=()
for f in "$js_dir"/test/*.test.js; do
  case "$(basename "$f")" in
    browser.test.js | inspector.test.js) ;;
    *) js_tests+=("test/$(basename "$f")") ;;
  esac
done
(cd "$js_dir" && node --test --test-reporter=spec "${js_tests[@]}") 2>&1 | tee "$logs/js.log"
js_status=${PIPESTATUS[0]}

step "browser: chromium (apt) and node --test test/browser.test.js"
# A failed install is reported here; the test itself then fails with the reason (never skips).
bash "$here/ensure-chromium.sh" || echo "run-tests.sh: chromium could not be installed" >&2
(cd "$js_dir" && node --test --test-reporter=spec test/browser.test.js) 2>&1 | tee "$logs/browser.log"
browser_status=${PIPESTATUS[0]}

step "inspector: node --test test/inspector.test.js (screenshot: target/inspector.png)"
(cd "$js_dir" && node --test --test-reporter=spec test/inspector.test.js) 2>&1 | tee "$logs/inspector.log"
inspector_status=${PIPESTATUS[0]}

step "summary"
echo "python (pytest, exit $py_status): $(grep -E '[0-9]+ (passed|failed|error)' "$logs/py.log" | tail -n 1)"
echo "javascript (node --test, exit $js_status):"
grep -E '^(ℹ|#) (tests|pass|fail|cancelled|skipped|todo) ' "$logs/js.log" | sed 's/^/  /'
echo "browser (node --test test/browser.test.js, exit $browser_status):"
grep -E '^(ℹ|#) (tests|pass|fail|cancelled|skipped|todo) ' "$logs/browser.log" | sed 's/^/  /'
echo "inspector (node --test test/inspector.test.js, exit $inspector_status):"
grep -E '^(ℹ|#) (tests|pass|fail|cancelled|skipped|todo) ' "$logs/inspector.log" | sed 's/^/  /'

if [ "$py_status" -ne 0 ] || [ "$js_status" -ne 0 ] || [ "$browser_status" -ne 0 ] ||
  [ "$inspector_status" -ne 0 ]; then
  echo "client tests FAILED" >&2
  exit 1
fi
echo "client tests passed"
