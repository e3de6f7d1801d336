"""Pieces shared by the synthetic corpus builder and the user-corpus importer."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from tqdm import tqdm

from tts.audio import SAMPLE_RATE, AudioError, normalize_loudness, resample, trim_silence, write_audio

log = logging.getLogger(__name__)
J = TypeVar("J")
R = TypeVar("R")


class OutputDirError(OSError):
    """The output folder cannot be created or written."""


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Create `out_dir` and prove it is writable before any work starts."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(f"output folder {out} is not writable: {exc.strerror or exc}") from exc
    return out


def finish_and_write(samples: np.ndarray, sample_rate: int, path: Path) -> float:
    """Resample to 16 kHz, trim silence, normalise loudness, write; returns seconds written.

    Raises:
        AudioError: nothing but silence is left.
    """
    audio = resample(samples, sample_rate, SAMPLE_RATE)
    audio = trim_silence(audio, SAMPLE_RATE)
    if len(audio) < int(0.3 * SAMPLE_RATE):
        raise AudioError("audio is silent or shorter than 0.3 s after trimming")
    write_audio(path, normalize_loudness(audio, SAMPLE_RATE))
    return len(audio) / SAMPLE_RATE


def _init_worker() -> None:
    # One thread per process is fastest on this machine; workers give the parallelism.
    os.environ["OMP_NUM_THREADS"] = "1"


def run_parallel(fn: Callable[[J], R], jobs: list[J], workers: int, desc: str,
                 weight: Callable[[J], float] | None = None, unit: str = "it") -> Iterator[R]:
    """Map `fn` over `jobs` in worker processes with a progress bar; results in any order."""
    interactive = sys.stderr.isatty()
    # On a terminal a live bar; in a log file (nohup, CI) a line every 30 s.
    bar = tqdm(total=sum(map(weight, jobs)) if weight else len(jobs), desc=desc, unit=unit,
               dynamic_ncols=interactive, mininterval=0.2 if interactive else 30.0)
    try:
        if workers <= 1:
            results: Iterable[tuple[J, R]] = ((job, fn(job)) for job in jobs)
            for job, result in results:
                bar.update(weight(job) if weight else 1)
                yield result
            return
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for job, result in zip(jobs, pool.imap(fn, jobs, chunksize=8)):
                bar.update(weight(job) if weight else 1)
                yield result
    finally:
        bar.close()


def write_json(path: Path, data: dict | list) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
