#!/usr/bin/env bash
# The page's source hash: SHA-256 over the names and contents of every tracked file the page is
# built from (the model crate's and the web crate's sources, the page, the embedded bundle, the
# workspace manifests and build settings). `web/prebuilt/` holds a release build of the page and
# the hash of the sources it was built from (`web/prebuilt/SOURCES`); `tools/demo.sh` serves it
# as is while the hashes agree, and builds the page otherwise.
#
#   bash tools/page-hash.sh           # print the hash of the sources as they are now
#   bash tools/page-hash.sh --check   # exit 1 unless web/prebuilt/SOURCES holds that hash
#   bash tools/page-hash.sh --build   # rebuild web/prebuilt (trunk build --release) and record it
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PREBUILT=web/prebuilt

# What the page is built from (tests, docs and the CLI are not).
INPUTS=(Cargo.toml Cargo.lock Trunk.toml .cargo/config.toml
    crates/rsrefseg-kernels/Cargo.toml crates/rsrefseg-kernels/src
    crates/rsrefseg/Cargo.toml crates/rsrefseg/src
    crates/rsrefseg-web/Cargo.toml crates/rsrefseg-web/src
    index.html web/app.js web/worker.js web/sw.js web/style.css web/samples
    models/nano/nano.rsb)

files() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # Tracked files and new ones not ignored (a source file not yet committed counts).
        git ls-files --cached --others --exclude-standard -- "${INPUTS[@]}"
    else
        # A copy without git history: the same inputs, from the file system.
        local p
        for p in "${INPUTS[@]}"; do [ -e "$p" ] && find "$p" -type f; done
    fi | LC_ALL=C sort -u
}

hash() {
    # One line per file: its content hash and its name; then the hash of those lines.
    files | while IFS= read -r f; do
        [ -f "$f" ] || { echo "missing $f"; continue; }
        printf '%s  %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "$f"
    done | sha256sum | cut -d' ' -f1
}

case "${1:-}" in
    "") hash ;;
    --check)
        want="$(hash)"
        have="$(cat "$PREBUILT/SOURCES" 2>/dev/null || echo none)"
        if [ "$want" != "$have" ]; then
            echo "page-hash: $PREBUILT was built from other sources (recorded $have, now $want);" >&2
            echo "page-hash: rebuild it with: bash tools/page-hash.sh --build" >&2
            exit 1
        fi
        echo "page-hash: $PREBUILT matches its sources ($want)"
        ;;
    --build)
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        # Build next to the old page and swap at the end: a failed build leaves the old one.
        tmp="$(mktemp -d "$ROOT/web/.prebuilt-XXXXXX")"
        trap 'rm -rf "$tmp"' EXIT
        trunk build --release --offline --dist "$tmp/page"
        hash > "$tmp/page/SOURCES"
        rm -rf "$PREBUILT"
        mv "$tmp/page" "$PREBUILT"
        echo "page-hash: $PREBUILT rebuilt from sources $(cat "$PREBUILT/SOURCES")"
        ;;
    -h|--help) sed -n '2,11p' "$0" ;;
    *) echo "page-hash.sh: unknown option $1" >&2; exit 2 ;;
esac
