"""`tts data build`: the offline multi-speaker training corpus, deterministic from a seed.

Layout of the output folder:
    build.json       the build's config and measured figures
    speakers.json    every speaker with the parameters that generate its voice
    manifest.jsonl   one line per utterance (see tts.corpus.manifest)
    audio/<speaker>/<utterance>.flac   16 kHz mono, trimmed, loudness-normalised

A re-run with the same settings skips every utterance whose audio exists
(audio files are written atomically, so an existing file is a finished one).
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import soundfile as sf

from tts.audio import AudioError
from tts.corpus.common import finish_and_write, prepare_output_dir, run_parallel, write_json
from tts.corpus.engines import SynthesisError, engine_binary, require_festival_voices, synthesize
from tts.corpus.manifest import MANIFEST_NAME, Utterance, summarize, write_manifest
from tts.corpus.speakers import Speaker, make_speakers
from tts.corpus.text import collect_sentences

log = logging.getLogger(__name__)
SECONDS_PER_WORD = 0.29  # measured: duration ~ 0.39 s + 0.29 s per word after trimming
PLAN_MARGIN = 1.02  # the estimate ran ~1 % long on the default build: plan a little over the hours asked


@dataclass
class BuildConfig:
    """Settings of one corpus build; the same settings always give the same corpus."""

    out_dir: str = "data/corpus"
    hours: float = 30.0
    n_flite: int = 72
    n_espeak: int = 60
    n_festival: int = 0           # festival's voices (foreign accents): for a codec's extra corpus
    flite_share: float = 0.65     # fraction of utterances spoken by flite (more human) voices
    festival_share: float = 0.0   # fraction spoken by festival voices (all of them when it is the only engine)
    valid_share: float = 0.02     # of hours: seen speakers, validation sentences
    test_share: float = 0.02      # of hours: seen speakers, test sentences
    unseen_share: float = 0.06    # of hours: held-out speakers, test sentences
    seed: int = 1234
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass(frozen=True)
class _Job:
    utt_id: str
    speaker: Speaker
    text: str
    split: str
    rel_path: str
    out_dir: str


def _estimate_seconds(text: str) -> float:
    return 0.39 + SECONDS_PER_WORD * len(text.split())


def _split_sentences(sentences: list[str], rng: random.Random, cfg: BuildConfig) -> dict[str, list[str]]:
    """Disjoint sentence pools; validation and test pools are sized to what they must fill."""
    order = sentences[:]
    rng.shuffle(order)
    mean_s = sum(map(_estimate_seconds, order)) / len(order)
    n_valid = max(2, int(cfg.valid_share * cfg.hours * 3600 / mean_s))
    n_test = max(2, int((cfg.test_share + cfg.unseen_share) * cfg.hours * 3600 / mean_s / 2))
    n_valid = min(n_valid, len(order) // 10 or 1)
    n_test = min(n_test, len(order) // 10 or 1)
    return {"valid": order[:n_valid], "test": order[n_valid:n_valid + n_test],
            "train": order[n_valid + n_test:]}


def _pick_engine(draw: float, cfg: BuildConfig, by_engine: dict[str, list[Speaker]]) -> str:
    """The engine of one training utterance from one uniform draw (one draw whatever the engines, so
    a build without festival plans exactly what it planned before festival was added)."""
    if draw < cfg.flite_share and by_engine["flite"]:
        return "flite"
    if by_engine["festival"] and (not by_engine["espeak"] or draw < cfg.flite_share + cfg.festival_share):
        return "festival"
    return "espeak"


def plan_jobs(cfg: BuildConfig, sentences: list[str], speakers: list[Speaker]) -> list[_Job]:
    """The full, ordered list of utterances to synthesise (pure function of its inputs)."""
    rng = random.Random(cfg.seed)
    pools = _split_sentences(sentences, rng, cfg)
    seen = [s for s in speakers if not s.held_out]
    unseen = [s for s in speakers if s.held_out]
    by_engine = {e: [s for s in seen if s.engine == e] for e in ("flite", "espeak", "festival")}
    plan = [("train", "train", 1 - cfg.valid_share - cfg.test_share - cfg.unseen_share),
            ("valid", "valid", cfg.valid_share), ("test", "test", cfg.test_share),
            ("unseen", "test", cfg.unseen_share)]
    jobs: list[_Job] = []
    counters = {e: 0 for e in by_engine}
    for split, pool_name, share in plan:
        pool = pools[pool_name][:]
        rng.shuffle(pool)
        budget, i = share * cfg.hours * 3600 * PLAN_MARGIN, 0
        while budget > 0 and pool and (seen if split != "unseen" else unseen):
            text = pool[i % len(pool)]
            if split == "unseen":
                speaker = unseen[i % len(unseen)]
            else:
                engine = _pick_engine(rng.random(), cfg, by_engine)
                group = by_engine[engine] or seen
                speaker = group[counters[engine] % len(group)]
                counters[engine] += 1
            # The text hash makes reuse safe: a file is reused only for the same speaker and text.
            utt_id = f"{speaker.id}_{len(jobs):06d}_{hashlib.sha1(text.encode()).hexdigest()[:6]}"
            jobs.append(_Job(utt_id, speaker, text, split, f"audio/{speaker.id}/{utt_id}.flac", cfg.out_dir))
            budget -= _estimate_seconds(text)
            i += 1
    return jobs


def _run_job(job: _Job) -> Utterance | str:
    """Synthesise one utterance (or reuse the finished file); an error string if it failed."""
    path = Path(job.out_dir) / job.rel_path
    try:
        if path.exists():
            duration = sf.info(str(path)).duration
        else:
            audio = synthesize(job.speaker, job.text)
            duration = finish_and_write(audio.samples, audio.sample_rate, path)
    except (SynthesisError, AudioError, RuntimeError) as exc:
        return f"{job.utt_id}: {exc}"
    return Utterance(job.utt_id, job.rel_path, job.text, job.speaker.id, round(duration, 3), job.split)


def _remove_stale_audio(out: Path, planned: set[str]) -> int:
    """Delete audio left by a build with other settings, so the folder matches its manifest."""
    removed = 0
    for path in out.glob("audio/*/*"):
        if path.relative_to(out).as_posix() not in planned:
            path.unlink()
            removed += 1
    return removed


def build_corpus(cfg: BuildConfig) -> dict:
    """Build (or finish building) the corpus; returns the figures written to build.json.

    Raises:
        EngineMissingError: flite or espeak-ng is not installed (the message names the package).
        TextSourceError: no text source is installed.
        OutputDirError: the output folder is not writable.
    """
    started = time.time()
    if cfg.n_flite:
        engine_binary("flite")
    if cfg.n_espeak:
        engine_binary("espeak")
    speakers = make_speakers(cfg.n_flite, cfg.n_espeak, cfg.seed, cfg.n_festival)
    if cfg.n_festival:
        require_festival_voices({s.voice for s in speakers if s.engine == "festival"})
    out = prepare_output_dir(cfg.out_dir)
    sentences = collect_sentences()
    jobs = plan_jobs(cfg, sentences, speakers)
    write_json(out / "speakers.json", [s.to_dict() for s in speakers])

    utterances: list[Utterance] = []
    failures: list[str] = []
    for result in run_parallel(_run_job, jobs, cfg.workers, desc="synthesising",
                               weight=lambda j: round(_estimate_seconds(j.text) / 60, 3), unit="min"):
        (failures if isinstance(result, str) else utterances).append(result)
    for failure in failures[:20]:
        log.warning("skipped %s", failure)
    write_manifest(out / MANIFEST_NAME, utterances)
    stale = _remove_stale_audio(out, {j.rel_path for j in jobs})

    used = {u.speaker for u in utterances}
    by_source: dict[str, int] = {}
    for s in speakers:
        if s.id in used:
            by_source[s.engine] = by_source.get(s.engine, 0) + 1
    stats = {
        "config": asdict(cfg),
        "hours": round(sum(u.duration for u in utterances) / 3600, 4),
        "utterances": len(utterances),
        "failed": len(failures),
        "speakers": len(used),
        "speakers_by_source": by_source,
        "held_out_speakers": sorted(s.id for s in speakers if s.held_out and s.id in used),
        "distinct_sentences": len({u.text for u in utterances}),
        "stale_files_removed": stale,
        "splits": summarize(utterances),
        "build_seconds": round(time.time() - started, 1),
    }
    write_json(out / "build.json", stats)
    return stats
