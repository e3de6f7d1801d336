"""`tts say`: synthesise text to a WAV file and/or the speakers, measuring what a listener feels.

Chunks go through the playout buffer on their way to the sound card (the
callback pulls 20 ms blocks), and are written to the file as they come (into
NAME.part, renamed once whole), so memory stays bounded for any length of text. Every chunk's arrival time is
recorded; for file output the same timeline is replayed through the buffer
with a virtual clock, so `--verbose` reports the underruns a listener would
have had either way.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tts.audio import AudioFileWriter, StreamingResampler
from tts.engine import Engine, SynthesisOptions, run_stream
from tts.segment import Segment
from tts.stream.playout import PlayoutBuffer, PlayoutStats, simulate_playout

BLOCK_SECONDS = 0.02


class NoAudioDeviceError(RuntimeError):
    """No sound output is available here."""


@dataclass
class SayReport:
    time_to_first_audio: float   # seconds from the call to the first PCM chunk
    synthesis_seconds: float
    audio_seconds: float
    segments: int
    playout: PlayoutStats

    @property
    def real_time_factor(self) -> float:
        return self.synthesis_seconds / max(self.audio_seconds, 1e-9)

    def summary(self) -> str:
        p = self.playout
        start = f"{p.start_delay * 1000:.0f} ms" if p.start_delay is not None else "n/a"
        return (f"time to first audio {self.time_to_first_audio * 1000:.0f} ms, real-time factor "
                f"{self.real_time_factor:.3f} ({self.audio_seconds:.2f} s of audio in {self.synthesis_seconds:.2f} s, "
                f"{self.segments} segment(s)), playback start {start}, underruns {p.underruns}")


def open_player(buffer: PlayoutBuffer):
    """A started sounddevice output stream fed by `buffer`.

    Raises:
        NoAudioDeviceError: sounddevice/PortAudio is missing or there is no output device.
    """
    try:
        import sounddevice as sd

        def callback(outdata, frames, _time, _status) -> None:
            outdata[:, 0] = buffer.read(frames)

        stream = sd.OutputStream(samplerate=buffer.sample_rate, channels=1, dtype="float32", callback=callback,
                                 blocksize=int(BLOCK_SECONDS * buffer.sample_rate))
        stream.start()
        return stream
    except Exception as exc:  # noqa: BLE001 - any PortAudio failure means "no speakers here"
        raise NoAudioDeviceError(f"no audio output device ({exc}); write a file with --out FILE.wav") from exc


def deliver(chunks: Iterator[np.ndarray], sample_rate: int, out: str | Path | None = None, play: bool = False,
            remaining: Callable[[], float] = lambda: 0.0) -> tuple[float, float, float, PlayoutStats]:
    """Send PCM chunks (float32 at `sample_rate`) to a file and/or the speakers as they arrive.

    `remaining()` is the producer's estimate of the seconds still to come (for
    the pre-roll). Returns (time to first chunk, total time, audio seconds, playout stats).
    """
    buffer = PlayoutBuffer(sample_rate)
    timeline: list[tuple[float, int, float]] = []
    first, produced = None, 0
    with contextlib.ExitStack() as cleanup:
        writer = cleanup.enter_context(AudioFileWriter(out, sample_rate)) if out else None
        player = open_player(buffer) if play else None
        if player is not None:
            cleanup.callback(player.close)
            cleanup.callback(player.stop)
        t0 = time.perf_counter()
        buffer.start()
        for pcm in chunks:
            if first is None:
                first = time.perf_counter() - t0
            produced += pcm.size
            timeline.append((time.perf_counter() - t0, pcm.size, remaining()))
            if writer is not None:
                writer.write(pcm)
            if player is not None:
                buffer.push(pcm)
                buffer.expect(remaining())
        elapsed = time.perf_counter() - t0
        buffer.finish()
        if player is not None:
            while not buffer.drained:
                time.sleep(BLOCK_SECONDS)
            time.sleep(0.1)   # the device's own buffer
            stats = buffer.stats
        else:
            stats = simulate_playout(timeline, sample_rate, BLOCK_SECONDS)
    return (first if first is not None else elapsed), elapsed, produced / sample_rate, stats


def say(engine: Engine, text: str | list[Segment], speaker: np.ndarray, options: SynthesisOptions = SynthesisOptions(),
        out: str | Path | None = None, play: bool = False, sample_rate: int | None = None,
        on_segment: Callable[[int, int], None] | None = None, decoder_voice: np.ndarray | None = None) -> SayReport:
    """Speak `text` (or its segments from `Engine.segments`) into `out` (WAV/FLAC, 16-bit) and/or the
    speakers; returns the measurements. `decoder_voice`: see `Engine.stream`."""
    rate = sample_rate or engine.sample_rate
    stream = engine.stream(speaker, options, decoder_voice)
    if isinstance(text, str):
        stream.add_text(text)
    else:
        stream.add_segments(text)
    n_segments = len(stream.segments)
    resample = StreamingResampler(engine.sample_rate, rate)

    def chunks() -> Iterator[np.ndarray]:
        started = -1
        for chunk in run_stream(engine, stream):
            if on_segment and stream.segments_started - 1 != started:
                started = stream.segments_started - 1
                on_segment(started, n_segments)
            yield resample(chunk)
        yield resample(np.zeros(0, np.float32), last=True)

    first, elapsed, seconds, stats = deliver(chunks(), rate, out, play, stream.remaining_seconds)
    return SayReport(first, elapsed, seconds, n_segments, stats)


def read_text_argument(text: str | None) -> str:
    """The text to speak: the argument, or standard input when it is '-' or absent and stdin is piped."""
    if text is not None and text != "-":
        return text
    if text is None and sys.stdin.isatty():
        return ""
    return sys.stdin.read()
