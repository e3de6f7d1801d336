#!/usr/bin/env bash
# One codec training call on the lent GPU machine (a call may run 10 minutes):
#   run(command="bash scripts/gpu/codec.sh 7", carry=[".debs", ".whl"])
# Builds the corpus there if this machine has none yet (the default 30-h build, the same sentences,
# speakers and splits as here: about 2 minutes on 16 cores), then trains encoder, codebooks and
# decoder together for $1 minutes: the shipped codec's quantized tokens already sit on the
# ceiling of its encoder/decoder pair (`tts bench codec`), so the autoencoder, not the bitrate,
# needs the training. Resumes runs/codec_gpu/last.pt when the machine still holds it (a warm
# machine keeps ignored folders between calls); starts from $INIT_FROM otherwise (default
# assets/codec.safetensors).
# Leaves in $OUT: codec.safetensors (best by validation), codec_last.safetensors and its discriminator
# (codec_last.disc.safetensors: a later call continues the adversarial run from both, INIT_FROM and
# INIT_DISC), the training log, the build log.
# CODEC_ARGS adds trainer options, e.g. the decoder fine-tune of session 19 that keeps the tokens:
#   CODEC_ARGS="--decoder-only --decoder-phase integrated --phase-loss 2 --adv-start 0 --focus-n-q 4"
# (the export is selected by PESQ when env.sh could build pesq there, else by log-mel).
# Session 20's harmonic source, as a whole-codec run so the encoder learns to carry the pitch (new
# tokens: the backbone's token cache and training must follow):
#   CODEC_ARGS="--harmonics 100 --pitch-teacher 1.0 --focus-n-q 4 --adv-start 1000000" (a few hundred
#   steps; then --pitch-teacher 0.25). On the shipped tokens: add --decoder-only.
# To continue the harmonic codec of sessions 20-21 (pitch no longer limits it; the discriminator is next):
#   INIT_FROM=assets/codec.safetensors CODEC_ARGS="--pitch-teacher 0.25 --focus-n-q 4 --adv-start 0"
# Session 24: unseen voices lose their 2-8 kHz envelope in the codec, and a decoder-only speaker loss
# did not reach them; the whole codec with the speaker loss and warped voices did. That run, finished in
# session 25, is the shipped codec (since session 26): continue it, with the discriminator, keeping its
# tokens (the backbone speaks them) by --decoder-only, or retrain the backbone after a whole-codec run:
#   INIT_FROM=assets/codec.safetensors
#   CODEC_ARGS="--pitch-teacher 0.25 --focus-n-q 4 --adv-start 0 --speaker-loss 2 --voice-warp 0.15"
# Sessions 32-33 (docs/history/codec.md): what new voices lose is their spectral envelope, in the
# encoder/decoder pair (unquantized = 12 codebooks); a decoder-only run and a per-voice equaliser did
# not bring it back, so the next GPU run is the whole codec with the lines above (no --decoder-only),
# then the backbone re-targeted to its tokens (scripts/gpu/backbone.sh).
# Session 34: festival's ten voices (`--extra-corpus`) gave no clear gain in 5 000 CPU steps, and they
# cannot be built there: festival's voices name /usr/share/festival in their own files, so a `dpkg -x`
# tree does not load them, and their 283-MB corpus does not fit a call's 64 MiB. This script trains
# on the default corpus only.
# Session 35: the shipped decoder follows the voice's speaker embedding (--speaker-conditioning; its config
# keeps it on in every run from it). Session 36: --voice-warp works with it again (each speaker's references
# are embedded at five warps and a crop gets the one at its own; the setup embeds 106 x 6 x 5 clips of 10 s,
# about 0.16 s each on one CPU thread), e.g. for the whole codec
#   INIT_FROM=assets/codec.safetensors
#   CODEC_ARGS="--pitch-teacher 0.25 --focus-n-q 4 --adv-start 0 --speaker-loss 2 --voice-warp 0.15"
# Session 39: the source's harmonics above the 10th are silent (their gradient vanished); played at the
# real amplitudes they lift STOI past Opus 6 kbps (an oracle). --harmonic-loss brings them back; 5 000 CPU
# steps scored level with the shipped codec. Run it longer, then with the discriminator, e.g.
#   INIT_FROM=assets/codec.safetensors
# CODEC_ARGS="--decoder-only --pitch-teacher 0.25 --focus-n-q 4 --adv-start 1000000 --speaker-loss 2 --harmonic-loss 1"
# Session 41: --pesq-loss and --stoi-loss (models of the benchmark's PESQ and STOI) lifted the decoder by 0.11-0.14 PESQ
# and 0.005 STOI on unseen speakers in 5 500 CPU steps (shipped); run them longer, and under the discriminator, e.g.
#   INIT_FROM=assets/codec.safetensors CODEC_ARGS="--decoder-only --pitch-teacher 0.25 --focus-n-q 4
#   --adv-start 1000000 --speaker-loss 2 --pesq-loss 0.3 --pesq-compensate --stoi-loss 3"
# Sessions 42-44: fitting the voice to a 10-s clip (codec/voice_fit.py) brings an unseen voice to what a decoder
# trained on it reaches; what is left (6 kbps at about 2.6 PESQ against Opus 8 kbps's 3.24) is the decoder's own
# ceiling, which only training raises: the next run is the decoder under the discriminator, keeping the tokens, e.g.
#   INIT_FROM=assets/codec.safetensors LR=5e-5 CODEC_ARGS="--decoder-only --pitch-teacher 0.25 --focus-n-q 4
#   --adv-start 54114 --disc-warmup 500 --speaker-loss 2 --pesq-loss 0.3 --pesq-compensate --stoi-loss 3"
# (the shipped decoder is at step 54 114, session 48; a new discriminator first learns alone for 500 steps: on the
# CPU, 10 steps at lr 5e-5 (batch 4) under a fresh one raised validation log-mel from 0.362 to 0.380, without it to
# 0.365; at the default lr 3e-4, 3 steps took PESQ from 2.41 to 2.18. Score the run with `tts bench codec
# --fit-voice`, also with `--corpus data/real`). Session 48 fine-tuned the decoder on real voices too (`tts data
# real`, `--extra-corpus data/real` six times over): that corpus needs ffmpeg for its G.722 files, which this
# machine lacks, so a GPU run trains on the synthetic corpus alone unless a decoded copy is carried.
# CALL_SECONDS (default 570) bounds the whole call: the training gets what the corpus build leaves, less
# RESERVE_SECONDS (default 60) for the final validation and the exports, so the call ends inside its limit
# whatever the build took ($1 minutes at most). LOADER_WORKERS processes read the crops (default 12).
set -euo pipefail
STARTED=$SECONDS
MINUTES="${1:-7}"
OUT="${OUT:-runs/gpu_out}"
RUN="${RUN:-runs/codec_gpu}"
mkdir -p "$OUT" "$RUN"
source scripts/gpu/env.sh
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
build_corpus_once "$OUT/build.log"
LEFT=$(( ${CALL_SECONDS:-570} - (SECONDS - STARTED) - ${RESERVE_SECONDS:-60} ))
MINUTES=$("$PY" -c "import sys; print(round(max(0.5, min(float(sys.argv[1]), int(sys.argv[2]) / 60)), 2))" \
    "$MINUTES" "$LEFT")
echo "corpus ready after $(( SECONDS - STARTED )) s; training for $MINUTES min"
INIT=()
[[ -f "$RUN/last.pt" ]] || INIT=(--init-from "${INIT_FROM:-assets/codec.safetensors}")
# INIT_DISC: the discriminator an earlier call left beside its codec_last.safetensors (codec_last.disc.safetensors)
[[ -f "$RUN/last.pt" || -z "${INIT_DISC:-}" ]] || INIT+=(--init-disc "$INIT_DISC")
SELECT=mel
if "$PY" -c "import pesq, pystoi" 2>/dev/null; then SELECT=pesq; fi
"$PY" -m tts -v train codec --corpus "$CORPUS" --out "$RUN" --export "$OUT/codec.safetensors" \
    --export-last "$OUT/codec_last.safetensors" --select-by "$SELECT" --loader-workers "${LOADER_WORKERS:-12}" \
    --device "${DEVICE:-cuda}" --batch-size "${BATCH:-64}" --lr "${LR:-5e-4}" --steps "${STEPS:-200000}" \
    --valid-every "${VALID_EVERY:-500}" --max-minutes "$MINUTES" "${INIT[@]}" ${CODEC_ARGS:-} 2>&1 \
    | tail -n 40 | tee "$OUT/train_stdout.log" || echo "training failed: see $OUT/train_stdout.log"
cp "$RUN/train.log" "$OUT/codec_train.log" || true
echo "call took $(( SECONDS - STARTED )) s"
