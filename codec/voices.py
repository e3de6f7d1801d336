"""The training speakers' embeddings a speaker-conditioned decoder learns from (codec/modules/speaker.py).

In use, a decoder hears the embedding of a voice's enrollment clip: about ten seconds of other
sentences than the one it decodes. Training gives it the same: per speaker, a few embeddings of
~10 s of its training utterances drawn at random, so it learns from the spread an enrollment has.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from tts.corpus.manifest import Utterance
from voice.encoder import SpeakerEncoder
from voice.verification import speaker_references

UTTERANCES_PER_DRAW = 8    # more than 10 s of the corpus's 2-4-s sentences


def reference_embeddings(utterances: list[tuple[str, Utterance]], encoder: SpeakerEncoder, per_speaker: int = 6,
                         seed: int = 0) -> dict[str, torch.Tensor]:
    """Per speaker, `per_speaker` embeddings [per_speaker, E], each of the first ~10 s of a random draw of its
    (corpus folder, utterance) pairs, joined as an enrollment clip is (voice.verification.speaker_references)."""
    rng = random.Random(seed)
    by_speaker: dict[tuple[str, str], list[Utterance]] = {}
    for corpus, utt in utterances:
        by_speaker.setdefault((corpus, utt.speaker), []).append(utt)
    table: dict[str, list[np.ndarray]] = {}
    for (corpus, speaker), pool in sorted(by_speaker.items()):
        for _ in range(per_speaker):
            draw = rng.sample(pool, min(UTTERANCES_PER_DRAW, len(pool)))
            table.setdefault(speaker, []).append(speaker_references(corpus, draw, encoder)[speaker])
    return {speaker: torch.from_numpy(np.stack(embeddings)) for speaker, embeddings in table.items()}


class TrainingVoices:
    """A speaker-conditioned run's voices: several embeddings per training speaker (`reference_embeddings`),
    one drawn at random for each crop; validation clips always get their speaker's first."""

    def __init__(self, utterances: list[tuple[str, Utterance]], encoder: SpeakerEncoder, seed: int) -> None:
        self.rng = random.Random(seed)
        self.table = reference_embeddings(utterances, encoder, seed=seed)

    def mean(self) -> torch.Tensor:
        """[E]: the normalised mean of every embedding of every speaker (the decoder's default voice)."""
        return F.normalize(torch.cat(list(self.table.values())).mean(0), dim=0)

    def draw(self, speakers: list[str]) -> torch.Tensor:
        """[B, E]: for each crop's speaker, one of its embeddings, drawn at random."""
        return torch.stack([self.table[s][self.rng.randrange(len(self.table[s]))] for s in speakers])

    def first(self, speakers: list[str]) -> torch.Tensor:
        """[B, E]: each speaker's first embedding; the mean voice for a speaker with no training utterances."""
        return torch.stack([self.table[s][0] if s in self.table else self.mean() for s in speakers])
