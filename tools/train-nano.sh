#!/usr/bin/env bash
# Regenerate the shipped `nano` model (models/nano/) from scratch on the CPU:
# synthetic benchmark -> training -> test-split evaluation -> f32 weights + web bundle.
#
#   bash tools/train-nano.sh            # full recipe (about an hour on 2 cores)
#   STEPS=40 bash tools/train-nano.sh   # a quick smoke run (stops early; weights not copied)
#   ABLATION=single-stage STEPS=400 bash tools/train-nano.sh   # the README's ablation rows:
#   ABLATION=no-dense STEPS=400 bash tools/train-nano.sh       # same recipe and budget as the
#                                                              # shipped model, weights not copied
#
# The recipe is deterministic (seeded data, order and initialisation); thread scheduling makes
# the last digits of the floating-point sums vary, so a rerun reaches the same figures only
# approximately.
set -euo pipefail
cd "$(dirname "$0")/.."

ABLATION=${ABLATION:-}
WORK=${WORK:-target/nano-recipe${ABLATION:+-$ABLATION}}
EPOCHS=${EPOCHS:-2}
BIN=target/release/rsrefseg

cargo build --release -p rsrefseg-cli --features simd
mkdir -p "$WORK"
[ -f "$WORK/data/train.jsonl" ] || "$BIN" synth --out "$WORK/data" --seed 0 --n 1000

CONFIG=nano
if [ -n "$ABLATION" ]; then
    CONFIG="$WORK/nano-$ABLATION.json"
    "$BIN" config --preset nano --ablation "$ABLATION" > "$CONFIG"
fi
ARGS=(--config "$CONFIG" --data "$WORK/data" --tokenizer models/nano/tokenizer.json --out "$WORK/run"
      --epochs "$EPOCHS" --batch-size 8 --lr 1e-3 --warmup-epochs 0.1 --eval-every 1
      --val-limit 200 --checkpoint-every 50 --seed 0)
if [ -n "${STEPS:-}" ]; then ARGS+=(--max-steps "$STEPS"); fi
# An interrupted run continues from its last checkpoint.
if [ -f "$WORK/run/train_config.json" ]; then ARGS+=(--resume); fi
"$BIN" train "${ARGS[@]}"

"$BIN" eval --config "$WORK/run/config.json" --weights "$WORK/run/best.safetensors" \
    --data "$WORK/data" --split test --json "$WORK/eval-test.json"

if [ -z "${STEPS:-}" ] && [ -z "$ABLATION" ]; then
    cp "$WORK/run/best.safetensors" models/nano/nano.safetensors
    cp "$WORK/eval-test.json" models/nano/eval-test.json
    "$BIN" export-web --config nano --weights models/nano/nano.safetensors \
        --tokenizer models/nano/tokenizer.json --out models/nano/nano.rsb --quant q8
    echo "models/nano updated (nano.safetensors, nano.rsb, eval-test.json)"
fi
