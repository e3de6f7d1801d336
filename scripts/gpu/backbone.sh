#!/usr/bin/env bash
# One backbone training call on the lent GPU machine (a call may run 10 minutes):
#   run(command="CACHE=runs/backbone/cache_ph_aligned_s25.npz INIT=assets/backbone.safetensors FINE_TUNE=1 \
#                bash scripts/gpu/backbone.sh 8", carry=[".whl", "runs/backbone/cache_ph_aligned_s25.npz"])
# The token cache replaces the audio (about 20 MB for the 30-h corpus). Without one (CACHE names
# a missing file) it is built there from the corpus with the codec in assets/: after
# scripts/gpu/codec.sh, copy its codec.safetensors to assets/ first and carry ".debs" too so the
# corpus can be built. Trains for $1 minutes with the alignment guide, resuming from
# runs/backbone/last.pt when the machine still holds one (INIT=path starts a new run from other weights
# instead), and leaves the best export (written at each validation and at the last step) and the log in
# $OUT to bring back. The checkpoint (about 70 MB) is over what a call returns (16 MiB a file): to go on
# in a later call, carry the export and give it as INIT. Carrying the tree, a 21-MB cache and .whl is
# about 66 MB of the 64 MiB a call takes: put a new INIT in place of assets/backbone.safetensors
# (uncommitted) rather than beside it. A cache built there cuts its texts with TOKENIZER (default: the
# shipped phoneme inventory; assets/tokenizer.model for sub-word pieces). ALIGN=1 trains the CTC
# aligner there when the cache has no token starts (tts train aligner, a few minutes on a GPU), writes
# them into the cache (tts train align) and has the guide follow them (--guide-aligned); the aligned
# cache comes back in $OUT. READ_POINTER=4 trains a read-pointer model instead of the guide (implies
# ALIGN=1; with INIT, the pointer's embeddings and advance head start afresh; a cache that already has
# token starts is used as it is). The shipped model of session 18 on to a recoded cache:
#   CACHE=runs/backbone/cache_ph_aligned_h.npz INIT=runs/backbone/retargeted_h.safetensors READ_POINTER=4
# FINE_TUNE=1 (with INIT) trains INIT's model as it is, no guide and no new pointer: the README's CPU fine-tune,
# e.g. after `tts train recode`. SPEAKER_STEPS=1 (with FINE_TUNE and INIT) adds the speaker to every step's
# input, starting at zero, its projection at NEW_LR_SCALE (default 10) times LR (session 28).
# WARMUP (default 500) and VALID_EVERY (default 500) are in steps; the best export is written at each
# validation, so a call cut short still returns one.
set -euo pipefail
MINUTES="${1:-8}"
CACHE="${CACHE:-runs/backbone/cache_full_v2.npz}"
OUT="${OUT:-runs/gpu_out}"
RUN="${RUN:-runs/backbone}"
mkdir -p "$OUT"
source scripts/gpu/env.sh
[[ -f "$CACHE" ]] || build_corpus_once "$OUT/build.log"
INIT_ARGS=()
if [[ -n "${INIT:-}" ]]; then INIT_ARGS=(--init-from "$INIT"); fi
# NEW_TEXT_TOKENS=1 with INIT: the cache's text tokens differ from INIT's (e.g. phonemes); text embeddings start afresh
if [[ -n "${NEW_TEXT_TOKENS:-}" ]]; then INIT_ARGS+=(--new-text-tokens); fi
GUIDE_ARGS=()
if [[ -n "${READ_POINTER:-}" ]]; then ALIGN=1; fi
has_starts() { "$PY" -c "import numpy, sys; sys.exit('token_starts' not in numpy.load(sys.argv[1]).files)" "$1"; }
if [[ -n "${ALIGN:-}" ]] && [[ -f "$CACHE" ]] && has_starts "$CACHE"; then
    GUIDE_ARGS=(--guide-aligned)          # already aligned (e.g. by 'tts train recode' of an aligned cache)
elif [[ -n "${ALIGN:-}" ]]; then
    ALIGNED="${CACHE%.npz}_aligned.npz"
    if [[ ! -f "$ALIGNED" ]]; then
        "$PY" -m tts -v train aligner --cache "$CACHE" --out "$RUN/aligner" --export "$RUN/aligner/aligner.pt" \
            --device "${DEVICE:-cuda}" --steps "${ALIGNER_STEPS:-6000}" --batch-frames 16000 2>&1 \
            | tee "$OUT/aligner.log"
        "$PY" -m tts -v train align --cache "$CACHE" --aligner "$RUN/aligner/aligner.pt" --out "$ALIGNED"
        cp "$ALIGNED" "$OUT/"
    fi
    CACHE="$ALIGNED"
    GUIDE_ARGS=(--guide-aligned)
fi
# WARP="0.79 0.85 0.91 1.09 1.15 1.21" (rates; WARP2 a second round on top, session 38): more training voices
# (`tts train warp`, WARP_SHARE default 0.1, WARP_SEED default 1) made there from the corpus, built once (carry
# .debs): a warped cache (35-49 MB) does not fit a call beside the tree, so it stays on the machine for the calls
# after (they find it). The tree (33 MB), a 21-MB aligned cache, .debs and .whl are about the 64 MiB a call takes:
# put INIT in place of assets/backbone.safetensors rather than beside it.
warp_once() {   # warp_once RATES SEED: CACHE becomes its warped copy. Not run in $(...), where a failed warp
    local warped="${CACHE%.npz}_w${2}.npz"   # would not stop the script and training would build a cache there
    if [[ ! -f "$warped" ]]; then
        build_corpus_once "$OUT/build.log"
        # shellcheck disable=SC2086  # the rates are words
        "$PY" -m tts -v train warp --cache "$CACHE" --out "$warped" --corpus "$CORPUS" --rates $1 \
            --share "${WARP_SHARE:-0.1}" --seed "$2" --workers "${WORKERS:-16}" 2>&1 \
            | tail -n 3 | tee -a "$OUT/warp.log"
    fi
    CACHE="$warped"
}
if [[ -n "${WARP:-}" ]]; then warp_once "$WARP" "${WARP_SEED:-1}"; fi
if [[ -n "${WARP2:-}" ]]; then warp_once "$WARP2" "$(( ${WARP_SEED:-1} + 1 ))"; fi
MODEL_ARGS=(--guide 1.0 --guide-layers 1 2 --guide-heads 2 "${GUIDE_ARGS[@]}")
if [[ -n "${READ_POINTER:-}" ]]; then MODEL_ARGS=(--read-pointer "$READ_POINTER"); fi
if [[ -n "${FINE_TUNE:-}" ]]; then MODEL_ARGS=(); fi
MODEL_ARGS+=(--uncond-dropout 0.1)   # either way, guidance stays trained
if [[ -n "${SPEAKER_STEPS:-}" ]]; then MODEL_ARGS+=(--speaker-steps --new-lr-scale "${NEW_LR_SCALE:-10}"); fi
"$PY" -m tts -v train backbone --corpus "$CORPUS" --cache "$CACHE" --out "$RUN" \
    --tokenizer "${TOKENIZER:-assets/phonemes.json}" --export "$OUT/backbone.safetensors" --device "${DEVICE:-cuda}" \
    --batch-frames "${BATCH_FRAMES:-16000}" --lr "${LR:-1e-3}" --steps "${STEPS:-20000}" "${MODEL_ARGS[@]}" \
    --warmup-steps "${WARMUP:-500}" "${INIT_ARGS[@]}" --valid-every "${VALID_EVERY:-500}" \
    --max-minutes "$MINUTES" 2>&1 \
    | tee "$OUT/train_stdout.log"
cp "$RUN/train.log" "$OUT/"
