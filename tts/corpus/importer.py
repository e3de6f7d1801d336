"""`tts data import`: turn a user's recordings into the corpus manifest every trainer reads.

Two layouts are recognised:
  * LibriTTS: <speaker>/<chapter>/<utt>.wav with <utt>.normalized.txt (or .original.txt);
  * a folder of audio + transcript pairs: <name>.wav (or .flac/.ogg) beside <name>.txt;
    the speaker is the sub-folder holding the pair ("default" at the top level).
Bad items (undecodable or silent audio, missing or non-UTF-8 transcripts) are
reported and skipped; they never stop the import.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tts.audio import AudioError, read_audio
from tts.corpus.common import finish_and_write, prepare_output_dir, run_parallel, write_json
from tts.corpus.manifest import MANIFEST_NAME, Utterance, summarize, write_manifest

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class CorpusImportError(ValueError):
    """The source folder holds no usable utterance at all."""


@dataclass(frozen=True)
class _Item:
    audio: Path
    transcript: Path
    speaker: str
    utt_id: str
    out_dir: str


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "default"


def _transcript_for(audio: Path) -> Path | None:
    for suffix in (".normalized.txt", ".original.txt", ".txt"):
        candidate = audio.with_name(audio.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def find_items(src: Path, out_dir: str) -> tuple[list[_Item], list[str]]:
    """Audio files with their transcripts and speakers, plus the problems found on the way."""
    items, problems = [], []
    for audio in sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        transcript = _transcript_for(audio)
        if transcript is None:
            problems.append(f"{audio}: no transcript (expected {audio.stem}.txt beside it)")
            continue
        rel = audio.relative_to(src)
        speaker = _safe(rel.parts[0]) if len(rel.parts) > 1 else "default"
        utt_id = _safe("_".join(rel.with_suffix("").parts))
        items.append(_Item(audio, transcript, speaker, utt_id, out_dir))
    return items, problems


def _import_one(item: _Item) -> tuple[str, str, str, float] | str:
    """(utt_id, speaker, text, seconds) or an error string."""
    try:
        text = " ".join(item.transcript.read_text(encoding="utf-8").split())
    except UnicodeDecodeError:
        return f"{item.transcript}: transcript is not UTF-8 text"
    if not text:
        return f"{item.transcript}: transcript is empty"
    try:
        audio = read_audio(item.audio)
        seconds = finish_and_write(audio.samples, audio.sample_rate,
                                   Path(item.out_dir) / "audio" / item.speaker / f"{item.utt_id}.flac")
    except AudioError as exc:
        return f"{item.audio}: {exc}"
    return item.utt_id, item.speaker, text, seconds


def _hash_fraction(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def assign_split(speaker: str, text: str, held_out: set[str], valid_frac: float, test_frac: float) -> str:
    """Split by stable hashes so that adding files never moves existing ones between splits."""
    if speaker in held_out:
        return "unseen"
    h = _hash_fraction(text.lower())
    return "valid" if h < valid_frac else "test" if h < valid_frac + test_frac else "train"


def import_corpus(src: str | Path, out_dir: str | Path, held_out_frac: float = 0.1,
                  valid_frac: float = 0.02, test_frac: float = 0.02, workers: int = 1,
                  held_out: Iterable[str] | None = None) -> dict:
    """Import recordings from `src` into a corpus at `out_dir`; returns the figures. `held_out`: the speakers
    (sub-folder names) whose every utterance goes to the `unseen` split, instead of a hashed `held_out_frac`.

    Raises:
        CorpusImportError: `src` is not a folder, holds no usable utterance, or `held_out` names a speaker it
            does not have.
        OutputDirError: `out_dir` is not writable.
    """
    src = Path(src)
    if not src.is_dir():
        raise CorpusImportError(f"{src} is not a folder of recordings")
    out = prepare_output_dir(out_dir)
    items, problems = find_items(src, str(out))
    results = list(run_parallel(_import_one, items, workers, desc="importing"))
    problems += [r for r in results if isinstance(r, str)]
    good = [r for r in results if not isinstance(r, str)]
    if not good:
        raise CorpusImportError(f"no usable utterance in {src}: " + ("; ".join(problems[:5]) or "no audio files"))
    speakers = sorted({g[1] for g in good})
    if held_out is not None:
        held_out = {_safe(name) for name in held_out}
        if held_out - set(speakers):
            raise CorpusImportError(f"no speaker {sorted(held_out - set(speakers))} to hold out in {src}; "
                                    f"its speakers: {speakers}")
    else:   # hold speakers out only when enough remain to train on
        n_held = int(len(speakers) * held_out_frac) if len(speakers) >= 5 else 0
        held_out = set(sorted(speakers, key=_hash_fraction)[:n_held])
    utterances = [Utterance(uid, f"audio/{spk}/{uid}.flac", text, spk, round(sec, 3),
                            assign_split(spk, text, held_out, valid_frac, test_frac))
                  for uid, spk, text, sec in good]
    write_manifest(out / MANIFEST_NAME, utterances)
    for problem in problems:
        log.warning("skipped %s", problem)
    stats = {"source": str(src), "utterances": len(utterances), "skipped": len(problems),
             "problems": problems[:50], "speakers": len(speakers), "held_out_speakers": sorted(held_out),
             "hours": round(sum(u.duration for u in utterances) / 3600, 4), "splits": summarize(utterances)}
    write_json(out / "build.json", stats)
    return stats
