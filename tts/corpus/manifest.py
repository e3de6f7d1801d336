"""The corpus manifest: one JSON object per line, one line per utterance.

Every trainer reads this format, whether the corpus was synthesised by
`tts data build` or imported from a user's recordings by `tts data import`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

SPLITS = ("train", "valid", "test", "unseen")
MANIFEST_NAME = "manifest.jsonl"


class ManifestError(ValueError):
    """A manifest line is malformed or refers to a split that does not exist."""


@dataclass(frozen=True)
class Utterance:
    """One line of the manifest.

    Attributes:
        id: unique utterance id.
        audio: path of the audio file, relative to the manifest's folder.
        text: the transcript, in written form.
        speaker: speaker id.
        duration: seconds of audio.
        split: one of SPLITS; "unseen" speakers never appear in "train".
    """

    id: str
    audio: str
    text: str
    speaker: str
    duration: float
    split: str

    def to_dict(self) -> dict:
        return asdict(self)


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write atomically: a reader never sees half a manifest."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        for utt in utterances:
            f.write(json.dumps(utt.to_dict(), ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_manifest(path: str | Path, splits: Iterable[str] | None = None) -> list[Utterance]:
    """Utterances of `path` (a manifest file or a corpus folder), optionally of some splits only.

    Raises:
        ManifestError: a line is not valid JSON or misses a field.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    wanted = set(splits) if splits is not None else None
    if wanted is not None and not wanted <= set(SPLITS):
        raise ManifestError(f"unknown split(s) {sorted(wanted - set(SPLITS))}; choose from {SPLITS}")
    utterances: list[Utterance] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                utt = Utterance(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ManifestError(f"{path}:{line_no}: not a manifest record ({exc})") from exc
            if utt.split not in SPLITS:
                raise ManifestError(f"{path}:{line_no}: unknown split {utt.split!r}")
            if wanted is None or utt.split in wanted:
                utterances.append(utt)
    return utterances


def audio_path(manifest_path: str | Path, utt: Utterance) -> Path:
    """Absolute path of an utterance's audio."""
    root = Path(manifest_path)
    root = root if root.is_dir() else root.parent
    return root / utt.audio


def summarize(utterances: Iterable[Utterance]) -> dict:
    """Hours, utterances and speakers per split."""
    stats: dict[str, dict] = {}
    for utt in utterances:
        s = stats.setdefault(utt.split, {"hours": 0.0, "utterances": 0, "speakers": set()})
        s["hours"] += utt.duration / 3600
        s["utterances"] += 1
        s["speakers"].add(utt.speaker)
    return {k: {"hours": round(v["hours"], 3), "utterances": v["utterances"],
                "speakers": len(v["speakers"])} for k, v in sorted(stats.items())}
