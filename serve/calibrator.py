"""Enrolled voices calibrated in the background, so that no request waits for it.

A voice's speech sounds more like it decoded in a voice calibrated on the backbone's own speech
(tts/voice_calibration.py), but making one takes about 20 s of a core. The server does not make a request wait for
that: a voice enrolled with its clip kept, or one asked for that has none yet for the server's models, is queued
here and calibrated on one worker thread, a voice at a time. Until its calibration is kept, the voice's speech is
decoded in its embedding, as before; the next stream after it uses it.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from tts.engine import Engine
from tts.voice_calibration import CalibrationOptions, calibrate_enrolled_voice, needs_calibration
from voice.store import VoiceNotFoundError, VoiceStore

log = logging.getLogger("tts.serve")


# A voice whose calibration failed (a clip that no longer decodes, a stale embedding) is not tried again on requests
# for this long: each try costs tens of seconds of a core, and every request for the voice would start one.
RETRY_AFTER_S = 600.0


class BackgroundCalibrator:
    """Queues voices for calibration and runs them on one thread (one core: the scheduler keeps the other)."""

    def __init__(self, engine: Engine, store: VoiceStore, options: CalibrationOptions = CalibrationOptions(),
                 retry_after_s: float = RETRY_AFTER_S) -> None:
        self.engine, self.store, self.options = engine, store, options
        self.retry_after_s = retry_after_s
        self._queued: set[str] = set()
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-calibrate")
        self.finished: deque[str] = deque(maxlen=1000)   # the last voices calibrated, in order (a long-lived server)

    def request(self, name: str, enrolled: bool = False) -> bool:
        """Queue voice `name` where it can be calibrated and has not been (nor is queued, nor failed in the last
        `retry_after_s`; `enrolled`: it was just enrolled, so an earlier failure does not count); True when queued.
        An unknown voice is not an error here: the request that named it fails on its own."""
        with self._lock:
            failed = self._failed_at.get(name)
            if enrolled:
                self._failed_at.pop(name, None)
            elif failed is not None and time.monotonic() - failed < self.retry_after_s:
                return False
            if name in self._queued:
                return False
            try:
                if not needs_calibration(self.store, self.engine, name):
                    return False
            except VoiceNotFoundError:
                return False
            self._queued.add(name)
        try:
            self._worker.submit(self._calibrate, name)
        except RuntimeError:            # stopped: the server is going away
            with self._lock:
                self._queued.discard(name)
            return False
        return True

    def pending(self) -> int:
        with self._lock:
            return len(self._queued)

    def _calibrate(self, name: str) -> None:
        started = time.perf_counter()
        try:
            result = calibrate_enrolled_voice(self.store, self.engine, name, self.options)
            self.finished.append(name)
            log.info(json.dumps({"event": "voice_calibrated", "name": name,
                                 "seconds": round(time.perf_counter() - started, 1),
                                 "distance_before": round(result.distance_before, 4),
                                 "distance_after": round(result.distance_after, 4),
                                 "similarity_before": round(result.similarity_before, 4),
                                 "similarity_after": round(result.similarity_after, 4),
                                 "accepted": result.accepted}))
        except Exception as exc:  # noqa: BLE001 - deleted or re-embedded meanwhile, or a bad clip: logged, not fatal
            with self._lock:
                self._failed_at[name] = time.monotonic()
            log.warning(json.dumps({"event": "voice_calibration_failed", "name": name, "error": str(exc)}))
        finally:
            with self._lock:
                self._queued.discard(name)

    def stop(self) -> None:
        """Drop what is queued; a calibration under way finishes on its thread (at most tens of seconds)."""
        self._worker.shutdown(wait=False, cancel_futures=True)
