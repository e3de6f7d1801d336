"""The training speakers' embeddings a speaker-conditioned decoder learns from (codec/modules/speaker.py).

In use, a decoder hears the embedding of a voice's enrollment clip: about ten seconds of other
sentences than the one it decodes. Training gives it the same: per speaker, a few embeddings of
~10 s of its training utterances drawn at random, so it learns from the spread an enrollment has.
"""
from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tts.audio import warp_rate
from tts.corpus.manifest import Utterance
from voice.encoder import SpeakerEncoder
from voice.verification import speaker_references_at

UTTERANCES_PER_DRAW = 8    # more than 10 s of the corpus's 2-4-s sentences


def reference_embeddings(utterances: list[tuple[str, Utterance]], encoder: SpeakerEncoder, per_speaker: int = 6,
                         seed: int = 0, rates: Sequence[float] = (1.0,)) -> dict[str, torch.Tensor]:
    """Per speaker, embeddings [len(rates), per_speaker, E]: `per_speaker` random draws of its (corpus folder,
    utterance) pairs, each joined as an enrollment clip is, its first ~10 s embedded as played at each rate
    (voice.verification.speaker_references_at)."""
    rng = random.Random(seed)
    by_speaker: dict[tuple[str, str], list[Utterance]] = {}
    for corpus, utt in utterances:
        by_speaker.setdefault((corpus, utt.speaker), []).append(utt)
    table: dict[str, list[np.ndarray]] = {}
    for (corpus, speaker), pool in sorted(by_speaker.items()):
        for _ in range(per_speaker):
            draw = rng.sample(pool, min(UTTERANCES_PER_DRAW, len(pool)))
            table.setdefault(speaker, []).append(speaker_references_at(corpus, draw, encoder, rates)[speaker])
    return {speaker: torch.from_numpy(np.stack(rows, axis=1)) for speaker, rows in table.items()}


class TrainingVoices:
    """A speaker-conditioned run's voices: several embeddings per training speaker (`reference_embeddings`),
    one drawn at random for each crop; validation clips always get their speaker's first.

    With a voice warp (codec/train.py's CropDataset) a crop is its speaker played faster or slower, another
    vocal tract: its embeddings are those of the speaker's references played at the same rate, one set per
    warp in `warps` (the crops' warps are drawn from the same few values).
    """

    def __init__(self, utterances: list[tuple[str, Utterance]], encoder: SpeakerEncoder, seed: int,
                 voice_warp: float = 0.0, warps: Sequence[float] = (0.0,)) -> None:
        if 0.0 not in warps:
            raise ValueError("the warps must include 0 (the voices as they are: validation's and the default's)")
        self.rng = random.Random(seed)
        self.warps = tuple(warps) if voice_warp else (0.0,)
        self.plain = self.warps.index(0.0)
        self.table = reference_embeddings(utterances, encoder, seed=seed,
                                          rates=[warp_rate(u, voice_warp) for u in self.warps])

    def mean(self) -> torch.Tensor:
        """[E]: the normalised mean of every unwarped embedding of every speaker (the decoder's default voice)."""
        return F.normalize(torch.cat([t[self.plain] for t in self.table.values()]).mean(0), dim=0)

    def draw(self, speakers: list[str], warps: Sequence[float] | None = None) -> torch.Tensor:
        """[B, E]: for each crop's speaker, one of its embeddings at the crop's warp (the nearest of `warps`;
        none: unwarped), drawn at random."""
        levels = [min(range(len(self.warps)), key=lambda k: abs(self.warps[k] - u)) for u in warps] \
            if warps is not None else [self.plain] * len(speakers)
        return torch.stack([self.table[s][k, self.rng.randrange(self.table[s].shape[1])]
                            for s, k in zip(speakers, levels)])

    def first(self, speakers: list[str]) -> torch.Tensor:
        """[B, E]: each speaker's first unwarped embedding; the mean voice for a speaker with no training
        utterances."""
        return torch.stack([self.table[s][self.plain, 0] if s in self.table else self.mean() for s in speakers])
