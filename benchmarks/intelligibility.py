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
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


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
