"""One generation loop for every stream of the server: batched backbone steps, per-stream output.

A worker thread owns the backbone's `BatchGenerator` and the codec. Each loop
turn it (1) applies what the streams' handlers asked for (new text, end of
input, cancellation), (2) starts the next segment of every stream that has one
waiting and whose client is keeping up, (3) runs ONE transformer step for all
active streams together, and (4) hands each stream its new audio, encoded,
through an asyncio queue. Adding streams therefore adds rows to a batch, not
turns to a lock. A cancelled stream leaves the batch before the next step.

Backpressure: a stream whose client has more than `max_queued_seconds` of
audio not yet taken does not start its next segment (a segment is bounded,
so memory per stream is bounded too).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from codec.bitstream import pack_frames
from tts.audio import StreamingResampler
from tts.engine import Engine, SpeechStream

log = logging.getLogger(__name__)


@dataclass
class Emitted:
    """A piece of a stream's output, ready to send."""

    audio: bytes
    seconds: float
    segment: int
    elapsed: float            # seconds since the stream was submitted
    final: bool = False
    error: BaseException | None = None
    remaining: float = 0.0    # estimate of the seconds still to come


@dataclass
class OutputFormat:
    """How a stream's audio leaves the server: PCM (int16 or float32) at a rate, or codec packets."""

    kind: str = "linear16"    # linear16 | float32 | codec
    sample_rate: int = 16000
    n_q: int = 4              # codec packets: quantizers kept per frame
    bits_per_code: int = 10


@dataclass
class StreamJob:
    """One synthesis stream as the scheduler sees it. Handlers touch it only through its methods."""

    stream: SpeechStream
    output: OutputFormat
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    created: float = field(default_factory=time.perf_counter)
    row: int | None = None
    first_audio: float | None = None
    audio_seconds: float = 0.0
    steps: int = 0
    _text: list[tuple[str, str]] = field(default_factory=list)   # ("text" | "flush" | "end", piece)
    _input_done: bool = False
    _cancelled: bool = False
    _queued_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    max_queued_seconds: float = 10.0

    def __post_init__(self) -> None:
        self._resample = StreamingResampler(self.stream.engine.sample_rate, self.output.sample_rate)

    # --- called from the event loop
    def feed(self, piece: str) -> None:
        with self._lock:
            self._text.append(("text", piece))

    def flush(self) -> None:
        with self._lock:
            self._text.append(("flush", ""))

    def end_input(self) -> None:
        with self._lock:
            self._text.append(("end", ""))

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True

    def taken(self, item: Emitted) -> None:
        """The handler has passed `item` to the transport."""
        with self._lock:
            self._queued_seconds -= item.seconds

    # --- called from the worker
    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def keeping_up(self) -> bool:
        return self._queued_seconds < self.max_queued_seconds

    def apply_input(self) -> None:
        with self._lock:
            actions, self._text = self._text, []
        for kind, piece in actions:
            if kind == "text":
                self.stream.feed(piece)
            else:
                self.stream.flush_text()
                self._input_done |= kind == "end"

    @property
    def idle(self) -> bool:
        """Nothing to speak and nothing being spoken: no input waiting, no segment queued or generating, and
        all audio taken by the handler. (Read from the event loop; each part is one attribute read.)"""
        with self._lock:
            waiting = bool(self._text)
        return not waiting and self._nothing_to_generate and self._queued_seconds <= 1e-9

    @property
    def finished(self) -> bool:
        return self._input_done and self._nothing_to_generate

    @property
    def _nothing_to_generate(self) -> bool:
        """No segment generating (no batch row) and none queued."""
        return self.row is None and not self.stream.segments

    def on_frames(self, frames: list[torch.Tensor]) -> None:
        if self.output.kind == "codec":
            self.stream.on_frames(frames, decode=False)
            if frames:
                self._send_codes(torch.stack(frames).numpy())
        else:
            for pcm in self.stream.on_frames(frames):
                self._send_pcm(pcm)

    def on_segment_end(self, silence_codes: np.ndarray) -> None:
        segment = self.stream.segments_started - 1
        pause = self.stream.current.pause_after if self.stream.current else 0.0
        if self.output.kind == "codec":
            self.stream.end_segment(decode=False)
            frames = int(round(pause * self.stream.engine.codec.frame_rate))
            if frames:
                self._send_codes(np.repeat(silence_codes[None], frames, 0), segment)
        else:
            for pcm in self.stream.end_segment():
                self._send_pcm(pcm, segment)

    def finish(self, error: BaseException | None = None) -> None:
        tail = b""
        if error is None and self.output.kind != "codec":
            tail = self._encode_pcm(self._resample(np.zeros(0, np.float32), last=True))
        seconds = len(tail) / self._bytes_per_second() if tail else 0.0
        self._put(Emitted(tail, seconds, max(0, self.stream.segments_started - 1), self._elapsed(), True, error))

    def _send_pcm(self, pcm: np.ndarray, segment: int | None = None) -> None:
        out = self._resample(pcm)
        if out.size:
            self._emit(self._encode_pcm(out), out.size / self.output.sample_rate, segment)

    def _send_codes(self, codes: np.ndarray, segment: int | None = None) -> None:
        frame_rate = self.stream.engine.codec.frame_rate
        self._emit(pack_frames(codes[:, :self.output.n_q], self.output.bits_per_code), len(codes) / frame_rate,
                   segment)

    def _encode_pcm(self, pcm: np.ndarray) -> bytes:
        if self.output.kind == "float32":
            return pcm.astype("<f4").tobytes()
        return (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()

    def _bytes_per_second(self) -> float:
        return self.output.sample_rate * (4 if self.output.kind == "float32" else 2)

    def _elapsed(self) -> float:
        return time.perf_counter() - self.created

    def _emit(self, audio: bytes, seconds: float, segment: int | None) -> None:
        if self.first_audio is None:
            self.first_audio = self._elapsed()
        self.audio_seconds += seconds
        with self._lock:
            self._queued_seconds += seconds
        seg = self.stream.segments_started - 1 if segment is None else segment
        self._put(Emitted(audio, seconds, seg, self._elapsed(), remaining=self.stream.remaining_seconds()))

    def _put(self, item: Emitted) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:   # the event loop is closed: nobody is listening any more
            pass


class Scheduler:
    """The worker thread that steps every stream's generation together (see module doc)."""

    def __init__(self, engine: Engine, max_queued_seconds: float = 10.0, idle_wait: float = 0.05) -> None:
        self.engine = engine
        self.generator = engine.generator(shared=True)
        self.max_queued_seconds = max_queued_seconds
        self.idle_wait = idle_wait
        self.jobs: list[StreamJob] = []
        self.by_row: dict[int, StreamJob] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tts-scheduler", daemon=True)
        codec = engine.codec
        with torch.inference_mode():
            silence = codec.encode(torch.zeros(1, 1, codec.hop_length * 8), engine.backbone.config.n_codebooks)
        self.silence_codes = silence[0, :, -1].numpy()
        self.steps = 0
        self.on_job_done: Callable[[StreamJob, BaseException | None], None] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def submit(self, job: StreamJob) -> None:
        job.max_queued_seconds = self.max_queued_seconds
        with self._lock:
            self.jobs.append(job)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def active_streams(self) -> int:
        return len(self.jobs)

    def _run(self) -> None:
        torch.set_num_threads(1)
        while not self._stop.is_set():
            try:
                busy = self._turn()
            except Exception as exc:  # noqa: BLE001 - one bad turn must not kill the server: fail its streams
                log.exception("scheduler turn failed")
                for job in list(self.jobs):
                    self._done(job, exc)
                self.generator = self.engine.generator(shared=True)
                self.by_row.clear()
                busy = False
            if not busy:
                self._wake.wait(self.idle_wait)
                self._wake.clear()

    def _turn(self) -> bool:
        with self._lock:
            jobs = list(self.jobs)
        for job in jobs:
            job.apply_input()
            if job.cancelled:
                if job.row is not None:
                    self.generator.cancel(job.row)
                    self.by_row.pop(job.row, None)
                self._done(job, None)
                continue
            if job.row is None and job.keeping_up:
                self._start_segment(job)
            if job.finished:
                self._done(job, None)
        if not self.generator.active:
            return False
        results = self.generator.step()
        self.steps += 1
        for row, (frames, done) in results.items():
            job = self.by_row.get(row)
            if job is None:
                continue
            job.steps += 1
            job.on_frames(frames)
            if done:
                job.on_segment_end(self.silence_codes)
                job.row = None
                del self.by_row[row]
        return True

    def _start_segment(self, job: StreamJob) -> None:
        try:
            request = job.stream.next_request()
            if request is None:
                return
            job.row = self.generator.add(request)
        except ValueError as exc:        # a segment the model cannot take
            self._done(job, exc)
            return
        self.by_row[job.row] = job

    def _done(self, job: StreamJob, error: BaseException | None) -> None:
        with self._lock:
            if job not in self.jobs:
                return
            self.jobs.remove(job)
        if not job.cancelled:
            job.finish(error)
        if self.on_job_done:
            self.on_job_done(job, error)
