#!/usr/bin/env bash
# Build the browser page and serve it on http://127.0.0.1:${PORT:-8080}/ (trunk serve, offline):
# the model (models/nano/nano.rsb) runs in a Web Worker on WebGPU, or on the CPU without it.
# Installs what is missing first (tools/setup.sh; Chromium is not needed for this).
# Open the address in a browser with WebGPU (Chrome/Edge; elsewhere the page uses the CPU).
# The first run on a fresh machine compiles trunk, wasm-bindgen-cli and the page's wasm
# (≈ 38 min on 2 cores, see README "Quick start"); later runs start in seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

echo "[demo] installing what is missing (a first run compiles trunk and wasm-bindgen-cli: minutes)"
bash tools/setup.sh --no-browser
echo "[demo] building the page (a first build of the wasm takes up to ~20 min on 2 cores)"

PORT="${PORT:-8080}"
echo "[demo] serving http://127.0.0.1:${PORT}/ (Ctrl-C to stop)"
if [ ! -f models/nano/nano.rsb ]; then
    echo "[demo] models/nano/nano.rsb (the embedded model) is missing: the page will say so;"
    echo "[demo] http://127.0.0.1:${PORT}/?model=synthetic runs the untrained synthetic nano model"
fi
exec trunk serve --offline --address 127.0.0.1 --port "$PORT" "$@"
