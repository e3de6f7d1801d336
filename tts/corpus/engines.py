"""Run the offline speech engines (flite, espeak-ng, festival) for one corpus speaker.

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
from tts.corpus.speakers import FESTIVAL_LANGUAGE_PACKAGES, FESTIVAL_VOICES, Speaker

ESPEAK_DEFAULT_WPM = 175
_BINARIES = {"flite": "flite", "espeak": "espeak-ng", "festival": "text2wave"}
_PACKAGES = {"flite": "flite", "espeak": "espeak-ng", "festival": "festival"}
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")


class EngineMissingError(RuntimeError):
    """A speech engine binary is not installed."""


class SynthesisError(RuntimeError):
    """The engine ran but produced no usable audio for this text."""


def engine_binary(engine: str) -> str:
    """Path of the engine's binary, or an error naming the package to install."""
    path = shutil.which(_BINARIES[engine])
    if path is None:
        raise EngineMissingError(f"'{_BINARIES[engine]}' is not installed: run 'apt-get install "
                                 f"{_PACKAGES[engine]}' (it is needed to build the corpus)")
    return path


def require_festival_voices(voices: set[str]) -> None:
    """festival runs on with a missing voice (an "unbound variable" on stderr, exit status 0, no
    audio), so the voices are checked before a build starts, naming the packages to install."""
    engine_binary("festival")
    installed = {p.name for p in FESTIVAL_VOICE_DIR.glob("*/*")}
    missing = sorted(v for v in voices if v not in installed)
    if missing:
        packages = " ".join([FESTIVAL_VOICES[v] for v in missing] + list(FESTIVAL_LANGUAGE_PACKAGES))
        raise EngineMissingError(f"festival voices {', '.join(missing)} are not installed: run "
                                 f"'apt-get install {packages}'")


def _run(cmd: list[str], text_input: str | None = None) -> bytes:
    result = subprocess.run(cmd, input=text_input.encode() if text_input else None,
                            capture_output=True, timeout=120)
    if result.returncode != 0:
        raise SynthesisError(f"{Path(cmd[0]).name} failed: {result.stderr.decode(errors='replace')[:200]}")
    return result.stdout


def _scratch_dir() -> tempfile.TemporaryDirectory:
    """A folder for an engine's WAV file, in memory where the machine has /dev/shm."""
    return tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None)


def _synth_flite(speaker: Speaker, text: str) -> Audio:
    with _scratch_dir() as tmp:
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


def _synth_festival(speaker: Speaker, text: str) -> Audio:
    with _scratch_dir() as tmp:
        out = Path(tmp) / "out.wav"
        _run([engine_binary("festival"), "-eval", f"(voice_{speaker.voice})",
              "-eval", f"(Parameter.set 'Duration_Stretch {speaker.vtl / speaker.rate:.3f})",
              "-o", str(out)], text_input=text)
        if not out.is_file() or out.stat().st_size == 0:  # festival reports its errors with status 0
            raise SynthesisError(f"festival wrote no audio for {text!r}")
        return read_audio(out)


_SYNTHESIZERS = {"flite": _synth_flite, "espeak": _synth_espeak, "festival": _synth_festival}


def synthesize(speaker: Speaker, text: str) -> Audio:
    """Speak `text` in `speaker`'s voice; 16 kHz mono float32, not yet trimmed or normalised."""
    raw = _SYNTHESIZERS[speaker.engine](speaker, text)
    if raw.duration < 0.2:
        raise SynthesisError(f"{speaker.engine} produced {raw.duration:.2f}s of audio for {text!r}")
    return Audio(resample(raw.samples, raw.sample_rate * speaker.vtl, SAMPLE_RATE), SAMPLE_RATE)
