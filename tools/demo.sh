#!/usr/bin/env bash
# Serve the browser page on http://127.0.0.1:${PORT:-8080}/: the model (models/nano/nano.rsb)
# runs in a Web Worker on WebGPU, or on the CPU without it. Open the address in a browser with
# WebGPU (Chrome/Edge; elsewhere the page uses the CPU).
#
# web/prebuilt/ is a release build of the page, committed with the hash of the sources it was
# built from (tools/page-hash.sh; CI checks that it matches). While it matches, it is served as
# is with Python's static file server: the first run takes seconds and installs nothing. After
# a change to the model, the web crate or the page (or with BUILD=1), the page is built and
# served with trunk instead; that installs trunk and wasm-bindgen-cli first (tools/setup.sh) and
# takes ≈ 38 min the first time on 2 cores (README "Quick start"), seconds later.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
PORT="${PORT:-8080}"

if [ -z "${BUILD:-}" ] && command -v python3 >/dev/null 2>&1 && bash tools/page-hash.sh --check >/dev/null 2>&1; then
    echo "[demo] web/prebuilt matches the sources: serving it (BUILD=1 builds the page instead)"
    echo "[demo] serving http://127.0.0.1:${PORT}/ (Ctrl-C to stop)"
    exec python3 -m http.server --bind 127.0.0.1 --directory web/prebuilt "$PORT"
fi

if [ -z "${BUILD:-}" ]; then
    echo "[demo] the sources differ from web/prebuilt's (or python3 is missing): building the page"
fi
echo "[demo] installing what is missing (a first run compiles trunk and wasm-bindgen-cli: minutes)"
bash tools/setup.sh --no-browser
echo "[demo] building the page (a first build of the wasm takes up to ~20 min on 2 cores)"
echo "[demo] serving http://127.0.0.1:${PORT}/ (Ctrl-C to stop)"
exec trunk serve --offline --address 127.0.0.1 --port "$PORT" "$@"
