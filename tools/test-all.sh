#!/usr/bin/env bash
# Run all tests of rsrefseg (the command CI runs):
#   1. host tests:           cargo test --workspace            (burn NdArray on the CPU)
#   2. wasm build:           cargo build -p rsrefseg --target wasm32-unknown-unknown
#   3. browser tests:        cargo test -p rsrefseg-web --target wasm32-unknown-unknown
#                            (headless Chromium, WebGPU through SwiftShader, and NdArray)
#   4. page build + check:   trunk build, then the page is loaded in headless Chromium and
#                            must reach its "ready" state (tests/page-test.py)
#   5. page test:            tests/page-test.mjs (npm playwright-core, system Chromium): on WebGPU
#                            and on the CPU, upload an image, type a sentence, press Enter, check
#                            the mask; reload offline (service worker); each synthetic sample
#                            sentence's mask against the generator's ground truth (IoU >= 0.5);
#                            screenshots in target/page-test/
# Installs what is missing first (tools/setup.sh). Prints the time each part took.
#
# Environment: SKIP_PAGE=1 skips parts 4 and 5 (and the trunk install).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

SKIP_PAGE="${SKIP_PAGE:-0}"

# Every part runs even when an earlier one failed (so one run shows everything); the script
# fails at the end if any part failed. Setup failing stops it at once.
timings=()
failed=()
run_part() {
    local name="$1"
    shift
    printf '\n=== %s ===\n' "$name"
    local start=$SECONDS rc=0
    "$@" || rc=$?
    local took=$((SECONDS - start)) result="ok"
    if [ "$rc" != 0 ]; then result="FAILED (exit $rc)"; failed+=("$name"); fi
    timings+=("$(printf '%-34s %4dm%02ds  %s' "$name" $((took / 60)) $((took % 60)) "$result")")
    return 0
}
summary() {
    local rc=$?
    printf '\n=== timings ===\n'
    local t
    for t in "${timings[@]}"; do printf '%s\n' "$t"; done
    printf '%-34s %4dm%02ds\n' "total" $((SECONDS / 60)) $((SECONDS % 60))
    if [ "$rc" = 0 ]; then echo "ALL TESTS PASSED"; else echo "FAILED: ${failed[*]:-exit $rc}"; fi
}
trap summary EXIT

setup_args=()
if [ "$SKIP_PAGE" = 1 ]; then setup_args+=(--no-trunk); fi
run_part "setup (tools/setup.sh)" bash tools/setup.sh "${setup_args[@]}"
if [ "${#failed[@]}" != 0 ]; then exit 1; fi

run_part "host tests (cargo test)" cargo test --workspace --no-fail-fast

run_part "wasm build (rsrefseg)" cargo build -p rsrefseg --target wasm32-unknown-unknown

browser_tests() {
    CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}" \
    WASM_BINDGEN_TEST_WEBDRIVER_JSON="$ROOT/webdriver.json" \
    WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}" \
        cargo test -p rsrefseg-web --target wasm32-unknown-unknown
}
run_part "browser tests (wasm, Chromium)" browser_tests

# tools/demo.sh as a user runs it (it serves web/prebuilt while the hash matches), then the page
# test against that server.
prebuilt_page_test() {
    local port log pid rc=0
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    log="$(mktemp)"
    PORT="$port" bash tools/demo.sh > "$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "http://127.0.0.1:$port/" 2>/dev/null && break
        sleep 0.2
    done
    grep -q "serving it" "$log" || { cat "$log"; kill "$pid"; return 1; }
    node tests/page-test.mjs web/prebuilt --url "http://127.0.0.1:$port/" --backend cpu || rc=$?
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
    return "$rc"
}

if [ "$SKIP_PAGE" != 1 ]; then
    run_part "page build (trunk build)" trunk build --offline
    run_part "page check (headless Chromium)" python3 tests/page-test.py dist
    run_part "page test (playwright)" node tests/page-test.mjs dist --backend webgpu,cpu
    # The committed release page that tools/demo.sh serves: built from these sources, and working.
    run_part "prebuilt page (source hash)" bash tools/page-hash.sh --check
    run_part "prebuilt page via demo.sh" prebuilt_page_test
fi

if [ "${#failed[@]}" != 0 ]; then exit 1; fi
