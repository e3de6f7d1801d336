#!/usr/bin/env bash
# One whole backbone training run on the lent GPU machine, in one call (a call may run 10 minutes):
#   run(command="bash scripts/gpu_backbone.sh 8",
#       carry=["runs/backbone/cache_full.npz", "runs/backbone/last.pt"])
# The token cache replaces the audio (build it here first: all 27 h of the corpus = about 25 MB, see
# README "Backbone"). Trains for $1 minutes (default 8) with the alignment guide, resuming from
# runs/backbone/last.pt when carried (INIT=path starts a new run from other weights instead), and
# leaves the exported weights, the checkpoint and the log in $OUT to bring back. Call it again with
# the returned last.pt carried to go on.
set -euo pipefail
MINUTES="${1:-8}"
CACHE="${CACHE:-runs/backbone/cache_full.npz}"
OUT="${OUT:-runs/gpu_out}"
mkdir -p "$OUT"
pip install --quiet --no-deps -e . 2>/dev/null || true
pip install --quiet num2words sentencepiece 2>/dev/null || true
INIT_ARGS=()
if [[ -n "${INIT:-}" ]]; then INIT_ARGS=(--init-from "$INIT"); fi
python -m tts -v train backbone --cache "$CACHE" --out runs/backbone \
    --export "$OUT/backbone.safetensors" --device cuda --batch-frames 16000 --lr 1e-3 \
    --steps "${STEPS:-20000}" --guide 1.0 --guide-layers 1 2 --guide-heads 2 "${INIT_ARGS[@]}" \
    --valid-every 500 --max-minutes "$MINUTES" 2>&1 | tee "$OUT/train_stdout.log"
cp runs/backbone/last.pt runs/backbone/train.log "$OUT/"
