"""Speaking rate by time-scale modification: the speech played faster or slower at its own pitch, as it streams.

Why: the backbone's read pointer moves on about once a frame (its text tokens are phonemes, 25 frames a second),
and its decisions are confident, so the speaking rate as odds of moving on barely changes the speech (session 47:
`--rate 0.5` made it 6 % longer, `--rate 2` 7 % shorter). Holding or hurrying the pointer instead keeps the
duration asked for but not the words: the model speaks on while it is held (babble at 0.5, recogniser errors up by
ten points at 0.8 and 1.25). Time-scale modification of the decoded speech keeps both, the standard way.

WSOLA (Verhelst and Roelands, 1993): output frames of `window` samples, Hann-windowed, are overlap-added every
`window / 2` samples; each is read from the input near `rate` times its output position, at the offset within
`tolerance` whose samples best continue the frame read before (cross-correlation), so the waveform's periods stay
aligned and the pitch is the input's. Written by hand: the Python packages that do it work on whole files, not on
chunks as they come; it is a few numpy operations a frame. The 20-ms window read our speech best: the recogniser
of `tts bench backbone` erred on 67 / 69 / 72 % of the words at 0.8 with 20 / 15 / 30-50 ms (62 % at rate 1).

Chunking does not change the output: a frame is made as soon as the input it may read has arrived, from the input
alone, so any chunks of the same samples give the same samples out. The output lags the input by about
`window + tolerance` samples (25 ms), and `flush` returns the rest, `len(input) / rate` samples in all.
"""
from __future__ import annotations

import numpy as np

MIN_RATE, MAX_RATE = 0.25, 4.0


class TempoStretcher:
    """One stream's time-scale modification by `rate` (> 1: faster, shorter; < 1: slower, longer)."""

    def __init__(self, rate: float, sample_rate: int, window_seconds: float = 0.02,
                 tolerance_seconds: float = 0.005) -> None:
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ValueError(f"a speaking rate for time-scale modification must be between {MIN_RATE} and "
                             f"{MAX_RATE}; got {rate}")
        self.rate = rate
        self.hop = max(1, int(window_seconds * sample_rate) // 2)   # output hop: half a window (Hann sums to one)
        self.window = 2 * self.hop
        self.tolerance = int(tolerance_seconds * sample_rate)
        self._hann = np.hanning(self.window + 1)[:-1].astype(np.float32)   # periodic
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample starts a new one."""
        # The input starts with half a window of silence, so the first output frame's rising half has a partner.
        self._input = np.zeros(self.hop, np.float32)
        self._offset = -self.hop          # input position of self._input[0] (the silence sits before 0)
        self._received = 0                # input samples given
        self._frame = 0                   # output frames made
        self._previous = -self.hop        # input position the last frame was read from
        self._pending = np.zeros(self.window, np.float32)   # overlap-add of the frames not yet final
        self._emitted = 0                 # output samples returned

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Input samples in; the output samples now final (possibly none)."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        self._input = np.concatenate([self._input, samples])
        self._received += len(samples)
        return self._run(None)

    def flush(self) -> np.ndarray:
        """End of the stream: the rest of the output, so that it lasts `len(input) / rate` in all; then ready for a
        new stream."""
        total = int(round(self._received / self.rate))
        left = total - self._emitted
        tail = self._run(total)[: max(0, left)]
        self.reset()
        return tail

    def _target(self, frame: int) -> int:
        """The input position output frame `frame` is read from without a search: its centre, frame * hop in the
        output, sits at rate times that in the input (frame 0 reads the leading silence)."""
        return int(round(frame * self.hop * self.rate)) - self.hop

    def _run(self, until: int | None) -> np.ndarray:
        """Make the frames whose input has arrived (`until` None), or, at the end, until `until` output samples
        are final, reading silence past the input."""
        out, made = [], 0
        while until is None or self._emitted + made < until:
            target = self._target(self._frame)
            # the search reads up to here, and so may the last frame's continuation it compares with
            needed = max(target + self.tolerance, self._previous + self.hop) + self.window
            missing = needed - (self._offset + len(self._input))
            if missing > 0:
                if until is None:
                    break
                self._input = np.concatenate([self._input, np.zeros(missing, np.float32)])
            start = self._best_start(max(target - self.tolerance, self._offset), target + self.tolerance) \
                if self._frame else target
            self._pending += self._input[start - self._offset: start - self._offset + self.window] * self._hann
            if self._frame:   # frame 0's first half is the leading silence's
                out.append(self._pending[: self.hop].copy())
                made += self.hop
            self._pending = np.concatenate([self._pending[self.hop:], np.zeros(self.hop, np.float32)])
            self._previous = start
            self._frame += 1
            self._trim()
        result = np.concatenate(out) if out else np.zeros(0, np.float32)
        self._emitted += len(result)
        return result

    def _best_start(self, low: int, high: int) -> int:
        """The start in [low, high] whose window best continues the last frame read (its next hop's samples):
        the highest cross-correlation, normalised by the candidate's energy so loud stretches do not win as such."""
        natural = self._previous + self.hop
        template = self._input[natural - self._offset: natural - self._offset + self.window]
        region = self._input[low - self._offset: high - self._offset + self.window].astype(np.float64)
        if not np.any(template):
            return min(max(natural, low), high)
        scores = np.correlate(region, template.astype(np.float64), mode="valid")
        energy = np.concatenate([[0.0], np.cumsum(region ** 2)])
        energy = energy[self.window:] - energy[: len(energy) - self.window]
        return low + int(np.argmax(scores / np.sqrt(energy + 1e-9)))

    def _trim(self) -> None:
        """Drop input no later frame can read (searches reach back `tolerance`, templates one hop)."""
        keep_from = min(self._target(self._frame) - self.tolerance, self._previous + self.hop)
        cut = keep_from - self._offset
        if cut > 0:
            self._input = self._input[cut:]
            self._offset += cut
