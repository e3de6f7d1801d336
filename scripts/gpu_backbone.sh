#!/usr/bin/env bash
# One whole backbone training run on the lent GPU machine, in one call:
#   run(command="bash scripts/gpu_backbone.sh 8", carry=["runs/backbone/tokens.npz", "runs/backbone/last.pt"])
# The token cache replaces the audio (it is built here with 'tts train backbone' or build_token_cache).
# Trains for $1 minutes (default 8), resuming from runs/backbone/last.pt when carried, and leaves the
# exported weights, the checkpoint and the log in $OUT to bring back.
set -euo pipefail
MINUTES="${1:-8}"
OUT="${OUT:-runs/gpu_out}"
mkdir -p "$OUT"
pip install --quiet --no-deps -e . 2>/dev/null || true
pip install --quiet num2words sentencepiece 2>/dev/null || true
python -m tts -v train backbone --cache runs/backbone/tokens.npz --out runs/backbone \
    --export "$OUT/backbone.safetensors" --device cuda --batch-frames 16000 --lr 1e-3 \
    --valid-every 500 --max-minutes "$MINUTES" 2>&1 | tee "$OUT/train_stdout.log"
cp runs/backbone/last.pt runs/backbone/train.log "$OUT/"
