# Source THERE (the GPU machine) at the start of each call that carries .debs and .whl
# (gathered here by scripts/gpu/pack.sh):   source scripts/gpu/env.sh
# Installs the wheels into /tmp/site, unpacks the speech engines and the fortunes text under
# /tmp/engines (never into /, where they could break the image), and points the project at them.
# PYTHON, DEVICE, HOURS and WORKERS override the defaults (python3, cuda, 30, 16), e.g. for a dry run here.
# Idempotent: a warm machine keeps what an earlier call set up.
ENGINES="${ENGINES:-/tmp/engines}"
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
if ! "${PYTHON:-python3}" -c "import soundfile, soxr, pyloudnorm, num2words" 2>/dev/null; then
    "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
if [[ ! -x "$ENGINES/usr/bin/espeak-ng" ]]; then
    mkdir -p "$ENGINES"
    for deb in .debs/*.deb; do dpkg -x "$deb" "$ENGINES"; done
    cp .debs/libpcaudio.so.0 "$ENGINES/usr/lib/x86_64-linux-gnu/"
fi
export PATH="$ENGINES/usr/bin:$ENGINES/usr/games:$PATH"
export LD_LIBRARY_PATH="$ENGINES/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ESPEAK_DATA_PATH="$ENGINES/usr/lib/x86_64-linux-gnu"
export TTS_FORTUNE_DIRS="$ENGINES/usr/share/games/fortunes"
