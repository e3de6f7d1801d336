"""Is a clip still its speaker's voice? Shared by `tts bench backbone` and `tts bench codec`.

A reference per speaker is the speaker encoder's embedding of a 10-s clip of
that speaker's other sentences (never the clip being judged). A clip keeps its
voice when its embedding is closer to its own speaker's reference than to any
other speaker's of the same draw; the cosine to its own reference says by how much.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tts.corpus.manifest import Utterance
from voice.encoder import SpeakerEncoder
from voice.verification import REFERENCE_SECONDS, speaker_references, speaker_streams


def references(corpus: str, all_utts: list[Utterance], speakers: set[str], exclude: set[str],
               encoder: SpeakerEncoder, last_first: bool = False) -> dict[str, np.ndarray]:
    """Per speaker, the embedding of a 10-s clip of its other sentences (never the ids in `exclude`), the
    first by id; `last_first`: the last, another 10 s of the same voice (an enrollment other than the judge's)."""
    return speaker_references(corpus, _pool(all_utts, speakers, exclude), encoder, last_first)


def reference_clips(corpus: str, all_utts: list[Utterance], speakers: set[str], exclude: set[str],
                    sample_rate: int) -> dict[str, np.ndarray]:
    """Per speaker, the 10-s clip `references` embeds: what an enrollment of that voice would have given."""
    streams = speaker_streams(corpus, _pool(all_utts, speakers, exclude), sample_rate, REFERENCE_SECONDS)
    return {s: x[:int(REFERENCE_SECONDS * sample_rate)] for s, x in streams.items()}


def _pool(all_utts: list[Utterance], speakers: set[str], exclude: set[str]) -> list[Utterance]:
    return [u for u in all_utts if u.speaker in speakers and u.id not in exclude]


def embedding_or_zeros(encoder: SpeakerEncoder, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """The clip's speaker embedding; zeros (no similarity to anyone) when it is too short to embed."""
    try:
        return encoder.embed(pcm, sample_rate)
    except ValueError:
        return np.zeros(encoder.config.embedding_dim, np.float32)


def speaker_scores(encoder: SpeakerEncoder, pcm: np.ndarray, sample_rate: int,
                   refs: dict[str, np.ndarray]) -> dict[str, float]:
    """Cosine of the clip's speaker embedding to each reference voice."""
    emb = embedding_or_zeros(encoder, pcm, sample_rate)
    return {speaker: float(np.dot(emb, ref)) for speaker, ref in refs.items()}


@dataclass
class IdentityTally:
    """Running figures for one kind of clip (ours, the real audio, a codec's round trip, ...)."""
    cosines: list[float] = field(default_factory=list)
    hits: list[bool] = field(default_factory=list)   # per clip: closest to its own voice (paired comparisons)

    def add(self, scores: dict[str, float], speaker: str) -> None:
        """One clip of `speaker`; it counts as closest only when strictly closer than to every other voice
        (a clip too short to embed scores 0 against all and is not)."""
        own = scores[speaker]
        self.cosines.append(own)
        self.hits.append(all(own > score for other, score in scores.items() if other != speaker))

    @property
    def closest(self) -> int:
        return sum(self.hits)

    @property
    def mean_cosine(self) -> float:
        return float(np.mean(self.cosines)) if self.cosines else float("nan")

    @property
    def closest_share(self) -> float:
        """How often the clip was closest to its own speaker's reference (0-1)."""
        return self.closest / len(self.cosines) if self.cosines else float("nan")
