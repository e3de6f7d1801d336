"""Run the offline speech engines (flite, espeak-ng) for one corpus speaker.

Vocal-tract length is changed with the classic resampling trick: audio rendered
at rate R and read as if it were at R * vtl has every frequency (pitch and
formants) scaled by vtl and its duration divided by vtl. The engine is asked in
advance for pitch / vtl and a duration stretched by vtl, so after the warp the
pitch and rate are the ones requested and only the formants moved.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

from tts.audio import SAMPLE_RATE, Audio, read_audio, resample
from tts.corpus.speakers import Speaker

ESPEAK_DEFAULT_WPM = 175
_PACKAGES = {"flite": "flite", "espeak": "espeak-ng"}


class EngineMissingError(RuntimeError):
    """A speech engine binary is not installed."""


class SynthesisError(RuntimeError):
    """The engine ran but produced no usable audio for this text."""


def engine_binary(engine: str) -> str:
    """Path of the engine's binary, or an error naming the package to install."""
    name = _PACKAGES[engine]
    path = shutil.which(name)
    if path is None:
        raise EngineMissingError(
            f"'{name}' is not installed: run 'apt-get install {name}' (it is needed to build the corpus)")
    return path


def _run(cmd: list[str], text_input: str | None = None) -> bytes:
    result = subprocess.run(cmd, input=text_input.encode() if text_input else None,
                            capture_output=True, timeout=120)
    if result.returncode != 0:
        raise SynthesisError(f"{Path(cmd[0]).name} failed: {result.stderr.decode(errors='replace')[:200]}")
    return result.stdout


def _synth_flite(speaker: Speaker, text: str) -> Audio:
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        out = Path(tmp) / "out.wav"
        _run([engine_binary("flite"), "-voice", speaker.voice,
              "--setf", f"int_f0_target_mean={speaker.pitch / speaker.vtl:.1f}",
              "--setf", f"int_f0_target_stddev={speaker.pitch_range / speaker.vtl:.1f}",
              "--setf", f"duration_stretch={speaker.vtl / speaker.rate:.3f}",
              "-t", text, "-o", str(out)])
        return read_audio(out)


def _synth_espeak(speaker: Speaker, text: str) -> Audio:
    wpm = int(round(ESPEAK_DEFAULT_WPM * speaker.rate / speaker.vtl))
    wav = _run([engine_binary("espeak"), "-v", speaker.voice, "-s", str(wpm),
                "-p", str(int(speaker.pitch)), "--stdout"],
               text_input=text)
    return read_audio(io.BytesIO(wav).getvalue())


def synthesize(speaker: Speaker, text: str) -> Audio:
    """Speak `text` in `speaker`'s voice; 16 kHz mono float32, not yet trimmed or normalised."""
    raw = _synth_flite(speaker, text) if speaker.engine == "flite" else _synth_espeak(speaker, text)
    if raw.duration < 0.2:
        raise SynthesisError(f"{speaker.engine} produced {raw.duration:.2f}s of audio for {text!r}")
    return Audio(resample(raw.samples, raw.sample_rate * speaker.vtl, SAMPLE_RATE), SAMPLE_RATE)
