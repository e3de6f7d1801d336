#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine, idempotently:
# system packages (speech engines, audio libraries), a virtual environment in
# .venv, and the package itself (editable) with its test and playback extras.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng flite fortunes fortunes-min libsndfile1 libportaudio2 libopus0
  # festival's ten voices, for the codec's extra corpus (tts.corpus.speakers.FESTIVAL_VOICES)
  festival festvox-kdlpc16k festvox-italp16k festvox-itapc16k festvox-czech-dita festvox-czech-krb
  festvox-czech-machac festvox-czech-ph festvox-suopuhe-lj festvox-suopuhe-mv festvox-ca-ona-hts
  festival-czech festival-ca)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch is pinned exactly (2.13.0, CPU) in pyproject.toml: an open range would pull CUDA builds.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,play]' 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import tts, torch; print(f'tts {tts.__version__} ready (torch {torch.__version__})')"
