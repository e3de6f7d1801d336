"""Intelligibility by speech recognition: word error rate of an offline recogniser on our output.

pocketsphinx (CMU Sphinx, with its bundled US-English model; an optional
dependency of the `bench` extra) transcribes the audio, and the word error
rate against the spoken form of the text is reported. The recogniser is weak
(about 20-30 % WER on the training corpus's own clean synthetic speech, see
`tts bench tts --corpus`), so the figure is for comparing our models with each
other and with that baseline, not with published WERs of stronger recognisers.
"""
from __future__ import annotations

import re

import numpy as np

from tts.text import normalize_text


def words_of(text: str) -> list[str]:
    """The spoken words of a text, without punctuation ("don't" keeps its apostrophe)."""
    return re.findall(r"[a-z0-9']+", normalize_text(text).replace("-", " "))


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    return edit_alignment(reference, hypothesis)[0]


def edit_alignment(reference: list, heard: list) -> tuple[int, np.ndarray]:
    """(edit distance, per heard item whether it is an insertion) of `heard` against `reference`: words or
    tokens (benchmarks/token_reader.py counts insertions to find a phrase said again).

    Of the alignments with the fewest edits, the backtrace prefers a match or substitution, then a deletion,
    then an insertion, so a token counts as inserted only where no reading of it as another costs as little.
    """
    n, m = len(reference), len(heard)
    cost = np.zeros((n + 1, m + 1), dtype=np.int32)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    hyp = np.asarray(heard)
    for i in range(1, n + 1):   # a row at a time: the insertion term runs along the row, so it is a cummin
        diagonal = cost[i - 1, :-1] + (hyp != reference[i - 1])
        row = np.minimum(cost[i - 1, 1:] + 1, diagonal)
        row = np.concatenate([[i], row])
        cost[i] = np.minimum.accumulate(row - np.arange(m + 1)) + np.arange(m + 1)
    inserted = np.zeros(m, dtype=bool)
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (reference[i - 1] != heard[j - 1]):
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
            inserted[j] = True
    return int(cost[n, m]), inserted


class Recognizer:
    """pocketsphinx on 16 kHz float PCM. Raises ImportError when it is not installed."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=16000, loglevel="FATAL")

    def transcribe(self, pcm: np.ndarray) -> str:
        """The words heard in one clip; the same whatever clips came before."""
        raw = (np.clip(pcm, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        # Its cepstral mean normalisation adapts from one clip to the next (live CMN), so a transcript
        # depended on what was heard before it (1 clip in 12, session 26) and a bench's real-audio WER moved
        # by a point between runs. Resetting the features puts every clip back on the initial estimate.
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(raw, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""


def wer(recognizer: Recognizer, pairs: list[tuple[np.ndarray, str]]) -> float:
    """Corpus-level WER of (audio at 16 kHz, text) pairs."""
    errors = total = 0
    for pcm, text in pairs:
        ref = words_of(text)
        errors += word_errors(ref, recognizer.transcribe(pcm).lower().split())
        total += len(ref)
    return errors / max(1, total)
