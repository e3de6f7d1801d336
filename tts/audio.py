"""Audio helpers shared by the corpus builder, enrollment and the pipeline.

Everything works on float32 mono numpy arrays in [-1, 1]. Resampling uses soxr
(a well-kept, fast, high-quality resampler) and loudness uses pyloudnorm
(ITU-R BS.1770), so nothing here is hand-written DSP except the silence trim,
which is a few lines of frame energy.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Raised when audio cannot be decoded or is unusable (empty, silent...)."""


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples and their sample rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def read_audio(source: str | Path | bytes) -> Audio:
    """Decode wav/flac/ogg (anything libsndfile reads) to mono float32.

    Raises:
        AudioError: the file is missing, not audio, or holds no samples.
    """
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise AudioError(f"audio file not found: {source}")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        data, sr = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        # libsndfile's own words, without soundfile's "Error opening <_io.BytesIO object at 0x...>"
        reason = getattr(exc, "error_string", None) or str(exc)
        what = "the audio" if isinstance(source, bytes) else str(source)
        raise AudioError(f"cannot decode {what} as wav, flac or ogg ({reason})") from exc
    if data.size == 0:
        raise AudioError("audio holds no samples")
    mono = data.mean(axis=1).astype(np.float32)
    if not np.isfinite(mono).all():
        raise AudioError("audio holds NaN or infinite samples")
    return Audio(mono, int(sr))


def resample(samples: np.ndarray, sr_in: float, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample with soxr (HQ). `sr_in` may be fractional (used for formant warping)."""
    if sr_in == sr_out:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, sr_in, sr_out, quality="HQ").astype(np.float32)


def warp_rate(u: float, voice_warp: float) -> float:
    """The playback rate of a voice warp u in [-1, 1] of strength `voice_warp` w: from 1 / (1 + w) to 1 + w,
    log-uniform for a uniform u (the codec trainer's warped crops and their voices)."""
    return math.exp(u * math.log1p(voice_warp))


def played_faster(samples: np.ndarray, rate: float, sample_rate: int) -> np.ndarray:
    """Audio played `rate` times faster: pitch, formants and tempo times `rate`, so another voice of the same
    speech (the speaker encoder's and the backbone's warped training speakers)."""
    return samples if rate == 1.0 else resample(samples, sample_rate * rate, sample_rate)


def _frame_levels_db(samples: np.ndarray, frame: int) -> np.ndarray | None:
    """RMS of each whole frame in dB relative to the loudest; None when too short or silent."""
    n_frames = len(samples) // frame
    if n_frames == 0:
        return None
    rms = np.sqrt(np.mean(samples[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1) + 1e-12)
    if rms.max() < 1e-5:
        return None
    return 20 * np.log10(rms / rms.max())


def trim_silence(samples: np.ndarray, sample_rate: int, threshold_db: float = -40.0,
                 pad_s: float = 0.05, frame_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing frames quieter than `threshold_db` below the loudest frame."""
    frame = max(1, int(frame_s * sample_rate))
    level = _frame_levels_db(samples, frame)
    if level is None:
        return samples if len(samples) < frame else samples[:0]
    loud = np.flatnonzero(level > threshold_db)
    pad = int(pad_s * sample_rate)
    start = max(0, loud[0] * frame - pad)
    end = min(len(samples), (loud[-1] + 1) * frame + pad)
    return samples[start:end]


def active_speech_seconds(samples: np.ndarray, sample_rate: int, threshold_db: float = -40.0,
                          frame_s: float = 0.02) -> float:
    """Seconds of frames within `threshold_db` of the loudest frame (a cheap VAD)."""
    level = _frame_levels_db(samples, max(1, int(frame_s * sample_rate)))
    return 0.0 if level is None else float(np.sum(level > threshold_db) * frame_s)


def normalize_loudness(samples: np.ndarray, sample_rate: int, target_lufs: float = -20.0,
                       peak_dbfs: float = -1.0) -> np.ndarray:
    """Bring integrated loudness to `target_lufs`, then cap the peak at `peak_dbfs`."""
    import pyloudnorm  # imported here: only the data tools need it

    if len(samples) < int(0.4 * sample_rate):  # BS.1770 needs one 400 ms block
        rms = np.sqrt(np.mean(samples ** 2) + 1e-12)
        gain = 10 ** ((target_lufs + 3.0) / 20) / rms
    else:
        loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(samples.astype(np.float64))
        if not np.isfinite(loudness):
            raise AudioError("audio is silent")
        gain = 10 ** ((target_lufs - loudness) / 20)
    out = samples * gain
    peak = np.abs(out).max()
    limit = 10 ** (peak_dbfs / 20)
    if peak > limit:
        out = out * (limit / peak)
    return out.astype(np.float32)


OUTPUT_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def check_output_path(path: str | Path, formats: dict[str, str] | None = OUTPUT_FORMATS) -> Path:
    """Make sure `path` can be written before any work is done; AudioError naming the problem otherwise.

    Creates missing parent folders. `formats` maps the allowed extensions (None: any file).
    """
    path = Path(path)
    if formats is not None and path.suffix.lower() not in formats:
        allowed = " or ".join(formats)
        raise AudioError(f"cannot write {str(path)!r}: the name must end in {allowed}")
    if path.is_dir():
        raise AudioError(f"cannot write {str(path)!r}: it is a folder")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise AudioError(f"cannot write {str(path)!r}: {str(blocking)!r} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AudioError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise AudioError(f"cannot write {str(path)!r}: permission denied")
    return path


class AudioFileWriter:
    """16-bit WAV/FLAC written chunk by chunk into NAME.part and renamed at the end.

    A stream that fails or is interrupted leaves no half file, and an existing
    file of that name stays as it was until the new one is whole.
    """

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = check_output_path(path)
        self._part = self.path.with_name(self.path.name + ".part")
        self._file = sf.SoundFile(self._part, "w", samplerate=sample_rate, channels=1, subtype="PCM_16",
                                  format=OUTPUT_FORMATS[self.path.suffix.lower()])

    def write(self, samples: np.ndarray) -> None:
        self._file.write(np.clip(samples, -1.0, 1.0))

    def __enter__(self) -> "AudioFileWriter":
        return self

    def __exit__(self, exc_type, _exc, _tb) -> None:
        self._file.close()
        if exc_type is None:
            self._part.replace(self.path)
        else:
            self._part.unlink(missing_ok=True)


def write_audio(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit audio atomically (temp file + rename) so a crash never leaves half a file."""
    with AudioFileWriter(path, sample_rate) as writer:
        writer.write(samples)


class StreamingResampler:
    """Chunk-by-chunk resampling (soxr's streaming resampler) that joins without seams."""

    def __init__(self, sr_in: int, sr_out: int) -> None:
        self.sr_in, self.sr_out = sr_in, sr_out
        self._stream = soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality="HQ") if sr_in != sr_out else None

    def __call__(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        pcm = np.asarray(pcm, dtype=np.float32)
        return pcm if self._stream is None else self._stream.resample_chunk(pcm, last=last)
