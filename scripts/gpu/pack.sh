#!/usr/bin/env bash
# Run HERE (the development machine, which reaches the package registries), once: gathers what the
# GPU machine cannot fetch, into two git-ignored folders that each GPU call names in `carry`:
#   .debs/  the speech engines (flite, espeak-ng), their libraries, Debian's fortunes text,
#           and a stub libpcaudio.so.0 (pcaudio_stub.c) in place of PulseAudio's dependency chain;
#   .whl/   the Python wheels the project needs beyond the GPU image's (see the device's KINDS.md).
# Then scripts/gpu/env.sh, sourced there, puts them to use. About 21 MB in all.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.debs/' .git/info/exclude 2>/dev/null || printf '/.debs/\n/.whl/\n' >> .git/info/exclude
mkdir -p .debs .whl
(cd .debs && apt-get download flite libflite1 espeak-ng libespeak-ng1 espeak-ng-data libsonic0 \
    libasound2 libasound2-data fortunes fortunes-min 2>&1 | grep -v '^W:' || true)
rm -f .debs/libpcaudio0_*.deb
gcc -shared -fPIC -O2 -Wl,-soname,libpcaudio.so.0 -o .debs/libpcaudio.so.0 scripts/gpu/pcaudio_stub.c
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
    soundfile==0.14.0 soxr==1.1.0 pyloudnorm==0.2.0 num2words==0.5.14 cffi==2.0.0 pycparser==2.23 pystoi==0.4.1 \
    pytest-runner==6.0.1
# PESQ publishes only its source: env.sh builds it there, its setup_requires (pytest-runner) from .whl (reading its
# metadata here needs numpy: the project's venv)
PIP_PY=.venv/bin/python; [[ -x "$PIP_PY" ]] || PIP_PY=python3
"$PIP_PY" -m pip download --quiet --no-deps --no-binary=:all: --no-build-isolation -d .whl pesq==0.0.4
du -sh .debs .whl
