# Source THERE (the GPU machine) at the start of each call that carries .debs and .whl
# (gathered here by scripts/gpu/pack.sh):   source scripts/gpu/env.sh
# Installs the wheels into /tmp/site, unpacks the speech engines and the fortunes text under
# /tmp/engines (never into /, where they could break the image), and points the project at them.
# PYTHON, DEVICE, CORPUS, HOURS and WORKERS override the defaults (python3, cuda, /tmp/corpus, 30, 16),
# e.g. for a dry run here. build_corpus_once (below) builds the corpus a call needs.
# Idempotent: a warm machine keeps what an earlier call set up.
ENGINES="${ENGINES:-/tmp/engines}"
PY="${PYTHON:-python3}"
CORPUS="${CORPUS:-/tmp/corpus}"
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import soundfile, soxr, pyloudnorm, num2words" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
# PESQ has no wheel for the image's Python: its source (in .whl) is built there, where numpy and Cython are;
# without it the codec's export is selected by log-mel instead of PESQ.
if ! "$PY" -c "import pesq" 2>/dev/null && compgen -G ".whl/pesq-*.tar.gz" >/dev/null; then
    # its setup.py fetches pytest-runner by a pip of its own, which the variables point at .whl
    PIP_NO_INDEX=1 PIP_FIND_LINKS="$PWD/.whl" "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
        --no-cache-dir --target /tmp/site .whl/pesq-*.tar.gz || echo "pesq did not build: selection by log-mel"
fi
# The engines only when carried: a backbone call with a token cache needs no corpus and carries no .debs.
if [[ ! -x "$ENGINES/usr/bin/espeak-ng" ]] && compgen -G ".debs/*.deb" >/dev/null; then
    mkdir -p "$ENGINES"
    for deb in .debs/*.deb; do dpkg -x "$deb" "$ENGINES"; done
    cp .debs/libpcaudio.so.0 "$ENGINES/usr/lib/x86_64-linux-gnu/"
fi
export PATH="$ENGINES/usr/bin:$ENGINES/usr/games:$PATH"
export LD_LIBRARY_PATH="$ENGINES/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ESPEAK_DATA_PATH="$ENGINES/usr/lib/x86_64-linux-gnu"
export TTS_FORTUNE_DIRS="$ENGINES/usr/share/games/fortunes"

# The corpus at $CORPUS, built once per machine (the default 30-h build: the same sentences,
# speakers and splits as here; about 2 minutes on 16 cores). Its log goes to $1.
build_corpus_once() {
    if [[ ! -f "$CORPUS/.complete" ]]; then
        "$PY" -m tts data build --out "$CORPUS" --hours "${HOURS:-30}" --workers "${WORKERS:-16}" 2>&1 | tail -n 20 | tee "$1"
        touch "$CORPUS/.complete"
    fi
}
