#!/usr/bin/env bash
# Install what building and testing rsrefseg needs. Idempotent: each step is skipped when the
# right version is already there, so it is cheap to run every time.
#
#   bash tools/setup.sh            # everything: browser, wasm target, wasm-bindgen-cli, trunk
#   bash tools/setup.sh --no-browser   # skip Chromium/ChromeDriver (page build/serve only)
#   bash tools/setup.sh --no-trunk     # skip trunk (wasm tests only)
#
# Installs:
#   - Debian packages chromium + chromium-driver (headless browser tests; needs root or sudo)
#   - rustup target wasm32-unknown-unknown
#   - wasm-bindgen-cli at exactly the `wasm-bindgen` version in Cargo.lock
#     (`cargo install` without --locked: its own lockfile pins crates the registry may lack)
#   - trunk 0.21.14 (newer trunk needs a newer rustc)
#   - npm packages of package-lock.json (`npm ci`: playwright-core for tests/page-test.mjs; it
#     drives the system Chromium and downloads no browser), with Debian's nodejs/npm if missing
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRUNK_VERSION="0.21.14"

want_browser=1
want_trunk=1
for arg in "$@"; do
    case "$arg" in
        --no-browser) want_browser=0 ;;
        --no-trunk) want_trunk=0 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

log() { printf '[setup] %s\n' "$*"; }

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# --- Debian packages ------------------------------------------------------------------------
if [ "$want_browser" = 1 ]; then
    if command -v chromedriver >/dev/null 2>&1 && [ -x /usr/lib/chromium/chromium ]; then
        log "chromium: $(/usr/lib/chromium/chromium --version 2>/dev/null || echo present)"
    else
        SUDO=""
        if [ "$(id -u)" != 0 ]; then
            if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
                echo "setup.sh: chromium/chromium-driver missing and not root (no sudo)" >&2
                exit 1
            fi
        fi
        log "installing chromium chromium-driver (apt)"
        $SUDO apt-get update
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            chromium chromium-driver
    fi
fi

# --- Rust wasm target -------------------------------------------------------------------------
if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "rust target wasm32-unknown-unknown: installed"
else
    log "adding rust target wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
fi

# --- wasm-bindgen-cli (must match Cargo.lock) ---------------------------------------------------
WB_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' \
    "$ROOT/Cargo.lock")"
if [ -z "$WB_VERSION" ]; then
    echo "setup.sh: no wasm-bindgen in Cargo.lock" >&2
    exit 1
fi
have_wb="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
have_runner="$(command -v wasm-bindgen-test-runner || true)"
if [ "$have_wb" = "$WB_VERSION" ] && [ -n "$have_runner" ]; then
    log "wasm-bindgen-cli $WB_VERSION: installed"
else
    log "installing wasm-bindgen-cli $WB_VERSION (had: ${have_wb:-none})"
    cargo install wasm-bindgen-cli --version "$WB_VERSION" --force
fi

# --- trunk ------------------------------------------------------------------------------------
if [ "$want_trunk" = 1 ]; then
    have_trunk="$(trunk --version 2>/dev/null | awk '{print $2}' || true)"
    if [ "$have_trunk" = "$TRUNK_VERSION" ]; then
        log "trunk $TRUNK_VERSION: installed"
    else
        log "installing trunk $TRUNK_VERSION (had: ${have_trunk:-none})"
        cargo install trunk --version "$TRUNK_VERSION" --locked --force
    fi
    # Trunk.toml pins the wasm-bindgen version trunk uses; it must follow Cargo.lock.
    if ! grep -q "wasm_bindgen = \"$WB_VERSION\"" "$ROOT/Trunk.toml"; then
        echo "setup.sh: Trunk.toml [tools] wasm_bindgen must be \"$WB_VERSION\" (Cargo.lock)" >&2
        exit 1
    fi
fi

# --- npm packages (page test) ------------------------------------------------------------------
if [ "$want_browser" = 1 ]; then
    if ! command -v npm >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
        log "installing nodejs npm (apt)"
        $SUDO apt-get update
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
    fi
    want_pw="$(cd "$ROOT" && node -p "require('./package-lock.json').packages['node_modules/playwright-core'].version")"
    have_pw="$(cd "$ROOT" && node -p "require('./node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
    if [ "$have_pw" = "$want_pw" ]; then
        log "playwright-core $want_pw: installed"
    else
        log "npm ci (playwright-core $want_pw; had: ${have_pw:-none})"
        (cd "$ROOT" && npm ci --no-audit --no-fund)
    fi
fi

log "done"
