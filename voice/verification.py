"""Speaker-verification evaluation: clips per speaker, all-pairs trials, equal error rate.

Used by the trainer (model selection on development speakers) and by
`tts bench voice` (the figure on held-out speakers).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import soundfile as sf

from tts.audio import played_faster, trim_silence
from tts.corpus.manifest import Utterance, audio_path

GAP_SECONDS = 0.15
REFERENCE_SECONDS = 10.0   # a voice's reference: as long as an enrollment clip

if TYPE_CHECKING:
    from voice.encoder import SpeakerEncoder


def speaker_streams(corpus: str | Path, utterances: list[Utterance], sample_rate: int,
                    max_seconds: float | None = None, last_first: bool = False) -> dict[str, np.ndarray]:
    """Per speaker, the silence-trimmed utterances joined by short pauses (float32).

    Joining lets a 10-s clip be cut from a speaker's 2-4-s sentences, as a
    user's enrollment clip is several sentences in a row.
    """
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in sorted(utterances, key=lambda u: u.id, reverse=last_first):   # `last_first`: from the other end
        by_speaker.setdefault(utt.speaker, []).append(utt)
    gap = np.zeros(int(GAP_SECONDS * sample_rate), dtype=np.float32)
    streams = {}
    for speaker, utts in sorted(by_speaker.items()):
        parts, total = [], 0.0
        for utt in utts:
            x, sr = sf.read(str(audio_path(corpus, utt)), dtype="float32")
            if sr != sample_rate:
                raise ValueError(f"{utt.id}: corpus audio is {sr} Hz, the encoder expects {sample_rate} Hz")
            x = trim_silence(x, sr)
            parts += [x, gap]
            total += len(x) / sr
            if max_seconds is not None and total >= max_seconds:
                break
        streams[speaker] = np.concatenate(parts)
    return streams


def speaker_references(corpus: str | Path, utterances: list[Utterance], encoder: "SpeakerEncoder",
                       last_first: bool = False) -> dict[str, np.ndarray]:
    """Per speaker, the embedding of its first REFERENCE_SECONDS of `utterances` joined as an enrollment clip is
    (`speaker_streams`, in id order, or from the last with `last_first`)."""
    return {s: e[0] for s, e in speaker_references_at(corpus, utterances, encoder, (1.0,), last_first).items()}


def speaker_references_at(corpus: str | Path, utterances: list[Utterance], encoder: "SpeakerEncoder",
                          rates: Sequence[float], last_first: bool = False) -> dict[str, np.ndarray]:
    """`speaker_references` of the clip played at each of `rates` (`played_faster`: the voice a warped training
    crop has), [len(rates), E] per speaker; the utterances are read once for all rates."""
    sr = encoder.config.sample_rate
    streams = speaker_streams(corpus, utterances, sr, max_seconds=REFERENCE_SECONDS * max(*rates, 1.0),
                              last_first=last_first)   # a faster play shortens the clip: read enough for 10 s
    return {s: np.stack([encoder.embed(played_faster(x, rate, sr)[:int(REFERENCE_SECONDS * sr)], sr)
                         for rate in rates]) for s, x in streams.items()}


def cut_clips(streams: dict[str, np.ndarray], seconds: float, per_speaker: int,
              sample_rate: int) -> tuple[list[np.ndarray], list[str]]:
    """Up to `per_speaker` non-overlapping clips of `seconds` from each speaker's stream."""
    n = int(seconds * sample_rate)
    clips, labels = [], []
    for speaker, x in streams.items():
        for k in range(min(per_speaker, len(x) // n)):
            clips.append(x[k * n:(k + 1) * n])
            labels.append(speaker)
    return clips, labels


def equal_error_rate(scores: np.ndarray, is_target: np.ndarray) -> float:
    """EER: the error rate where false acceptance equals false rejection."""
    order = np.argsort(-scores)
    target = is_target[order].astype(np.float64)
    n_target, n_nontarget = target.sum(), len(target) - target.sum()
    if n_target == 0 or n_nontarget == 0:
        raise ValueError("EER needs both target and non-target trials")
    # Accepting the top k trials: false rejects = targets below, false accepts = non-targets above.
    false_reject = 1.0 - np.concatenate([[0.0], np.cumsum(target)]) / n_target
    false_accept = np.concatenate([[0.0], np.cumsum(1.0 - target)]) / n_nontarget
    k = int(np.argmin(np.abs(false_reject - false_accept)))
    return float((false_reject[k] + false_accept[k]) / 2)


@dataclass
class VerificationResult:
    eer: float
    target_trials: int
    nontarget_trials: int
    mean_target_score: float
    mean_nontarget_score: float
    seconds_per_clip: float  # embedding time, one clip at a time


def verify(embed, clips: list[np.ndarray], labels: list[str], sample_rate: int) -> VerificationResult:
    """All-pairs verification trials over `clips`; `embed(samples, sample_rate)` gives a unit embedding."""
    start = time.perf_counter()
    emb = np.stack([embed(c, sample_rate) for c in clips])
    per_clip = (time.perf_counter() - start) / max(1, len(clips))
    scores = emb @ emb.T
    lab = np.asarray(labels)
    iu = np.triu_indices(len(clips), k=1)
    s, t = scores[iu], (lab[:, None] == lab[None, :])[iu]
    return VerificationResult(equal_error_rate(s, t), int(t.sum()), int((~t).sum()), float(s[t].mean()),
                              float(s[~t].mean()), per_clip)
