"""The playout buffer: buffer-depth control between a producer of PCM chunks and a real-time player.

Generation speed varies with the machine, the load and the text. When the
producer makes audio at `r` seconds per second and `R` seconds are still to
come, playing from now on runs dry unless the buffer already holds
`R * (1/r - 1)` seconds (the time generation still needs, less the time the
remaining audio takes to play). So the buffer measures `r` from the chunks it
receives, and starts (or, after a stall, resumes) playback only when it holds
that much times a safety margin, and never less than `min_preroll` (jitter of
chunk arrivals and of the audio callback). A fast producer gets `min_preroll`:
low latency; a slow one gets a later start instead of a stutter. Every time the
player finds the buffer empty before the end is an underrun: counted, and
playback waits for the depth again rather than playing crumbs.

The producer is held back (`push` blocks) when `max_buffered` seconds wait,
so a long text or a slow reader never makes memory grow without bound.
The same class serves the local player (sounddevice callback) and network
clients; `simulate_playout` replays a recorded arrival timeline through it
with a virtual clock, which is how files, tests and benchmarks report what a
listener would have heard.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class PlayoutStats:
    underruns: int = 0                 # times the player found the buffer empty before the end
    underrun_seconds: float = 0.0      # silence inserted by those stalls
    start_delay: float | None = None   # seconds from start() to the first sample played
    preroll_seconds: float = 0.0       # audio buffered when playback first started
    produced_seconds: float = 0.0
    played_seconds: float = 0.0
    generation_rate: float = 0.0       # audio seconds produced per second (real-time factor = 1 / this)


class BufferClosed(Exception):
    """The consumer went away; the producer should stop generating."""


class PlayoutBuffer:
    """Thread-safe PCM FIFO with rate-aware pre-roll (see module doc)."""

    def __init__(self, sample_rate: int, min_preroll: float = 0.1, margin: float = 1.25,
                 max_buffered: float = 20.0, clock: Callable[[], float] = time.monotonic) -> None:
        if min_preroll < 0 or margin < 1 or max_buffered <= min_preroll:
            raise ValueError("need min_preroll >= 0, margin >= 1 and max_buffered > min_preroll")
        self.sample_rate = sample_rate
        self.min_preroll = min_preroll
        self.margin = margin
        self.max_buffered = max_buffered
        self.clock = clock
        self._chunks: list[np.ndarray] = []
        self._offset = 0                  # samples of _chunks[0] already played
        self._buffered = 0                # samples waiting
        self._produced = 0
        self._played = 0
        self._remaining_estimate = 0.0    # seconds still to come, as the producer estimates
        self._t0: float | None = None
        self._playing = False
        self._finished = False
        self._closed = False
        self._cond = threading.Condition()
        self.stats = PlayoutStats()

    # ------------------------------------------------------------ producer side

    def start(self) -> None:
        """Generation starts now: the reference for the rate and the start delay."""
        with self._cond:
            self._t0 = self.clock()

    def expect(self, remaining_seconds: float) -> None:
        """The producer's estimate of the audio still to come after what it has pushed."""
        with self._cond:
            self._remaining_estimate = max(0.0, remaining_seconds)

    def push(self, pcm: np.ndarray, timeout: float | None = None) -> None:
        """Append audio; blocks while `max_buffered` seconds wait (backpressure).

        Raises:
            BufferClosed: the consumer closed the buffer.
            TimeoutError: still full after `timeout` seconds.
        """
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        with self._cond:
            if self._t0 is None:
                self._t0 = self.clock()
            limit = self.max_buffered * self.sample_rate
            if not self._cond.wait_for(lambda: self._closed or self._buffered < limit, timeout):
                raise TimeoutError("playout buffer full: the consumer is not reading")
            if self._closed:
                raise BufferClosed("the listener went away")
            if pcm.size:
                self._chunks.append(pcm)
                self._buffered += pcm.size
                self._produced += pcm.size
                self._remaining_estimate = max(0.0, self._remaining_estimate - pcm.size / self.sample_rate)
            self._cond.notify_all()

    def finish(self) -> None:
        """No more audio will come."""
        with self._cond:
            self._finished = True
            self._remaining_estimate = 0.0
            self._cond.notify_all()

    def close(self) -> None:
        """The consumer is gone: wake and stop the producer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------ measurements

    def generation_rate(self) -> float:
        """Audio seconds produced per wall second since start (0 before any audio)."""
        if self._t0 is None or not self._produced:
            return 0.0
        elapsed = max(self.clock() - self._t0, 1e-6)
        return self._produced / self.sample_rate / elapsed

    def required_preroll(self) -> float:
        """Seconds of audio that must wait before playback may (re)start without running dry."""
        rate = self.generation_rate()
        if rate <= 0:
            return math.inf
        gap = self._remaining_estimate * max(0.0, 1.0 / rate - 1.0)
        return max(self.min_preroll, self.margin * gap)

    @property
    def buffered_seconds(self) -> float:
        return self._buffered / self.sample_rate

    @property
    def drained(self) -> bool:
        """Everything produced has been played and no more will come."""
        with self._cond:
            return self._finished and self._buffered == 0

    # ------------------------------------------------------------ consumer side

    def read(self, n: int) -> np.ndarray:
        """`n` samples for the player: audio, or silence while pre-rolling, stalled or done."""
        out = np.zeros(n, dtype=np.float32)
        with self._cond:
            if not self._playing:
                if not self._buffered or not (self._finished or self.buffered_seconds >= self.required_preroll()):
                    return out
                self._playing = True
                if self.stats.start_delay is None and self._t0 is not None:
                    self.stats.start_delay = self.clock() - self._t0
                    self.stats.preroll_seconds = self.buffered_seconds
            filled = 0
            while filled < n and self._chunks:
                head = self._chunks[0]
                take = min(n - filled, head.size - self._offset)
                out[filled:filled + take] = head[self._offset:self._offset + take]
                filled += take
                self._offset += take
                if self._offset == head.size:
                    self._chunks.pop(0)
                    self._offset = 0
            self._buffered -= filled
            self._played += filled
            if filled < n:
                self._playing = False
                if not self._finished:
                    self.stats.underruns += 1
                    self.stats.underrun_seconds += (n - filled) / self.sample_rate
            self._update_stats()
            self._cond.notify_all()
        return out

    def _update_stats(self) -> None:
        self.stats.produced_seconds = self._produced / self.sample_rate
        self.stats.played_seconds = self._played / self.sample_rate
        self.stats.generation_rate = self.generation_rate()


class _VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate_playout(arrivals: list[tuple[float, int, float]], sample_rate: int, block_seconds: float = 0.02,
                     **buffer_options) -> PlayoutStats:
    """What a real-time listener would have heard from a recorded timeline.

    `arrivals` holds (seconds since generation started, samples pushed, producer's
    estimate of seconds still to come after them), in time order. The player
    asks for `block_seconds` of audio at a time, as a sound card callback does.
    """
    clock = _VirtualClock()
    buffer = PlayoutBuffer(sample_rate, clock=clock, max_buffered=math.inf, **buffer_options)
    buffer.start()
    block = max(1, int(round(block_seconds * sample_rate)))
    pending = list(arrivals)
    while pending or not buffer.drained:
        while pending and pending[0][0] <= clock.now:
            _, n, remaining = pending.pop(0)
            buffer.push(np.zeros(n, dtype=np.float32))
            buffer.expect(remaining)
        if not pending:
            buffer.finish()
        buffer.read(block)
        clock.now += block / sample_rate
    buffer._update_stats()
    return buffer.stats
