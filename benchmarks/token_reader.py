"""A second reader for `tts bench backbone`: the CTC aligner hears phonemes in codec tokens.

Why: pocketsphinx, the bench's recogniser, barely reads two of the espeak
voices at all (WER about 90 % on their real audio, session 26), so what it
hears in them, repeated phrases included, is mostly its own error. The CTC
aligner (backbone/aligner.py) was trained on every training voice of the
corpus, on the codec's own tokens, to emit the text's phoneme tokens: its
best-path output against the text gives a token error rate for any voice, and
how many of 16 tokens heard in a row have no counterpart in the text (the edit
alignment's insertions) is a check for a repeated phrase or babbling that does
not depend on an English acoustic model: a 4-word phrase said again gave 9-15
(session 27), the corpus's real audio rarely reaches 9.

Its limits, which is why the bench reports it beside the real audio's figures:
it errs on 12-37 % of the tokens of training voices' real audio and about half
of unseen voices' (it knows only the corpus's voices), and it reads the
output's tokens after a trip through the codec, as it reads the real audio's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backbone.aligner import greedy_tokens, load_aligner
from benchmarks.intelligibility import edit_alignment
from codec.model import CodecModel
from tts.engine import ModelMismatchError
from tts.modelfile import ASSETS

log = logging.getLogger(__name__)
DEFAULT_READER = ASSETS / "reader.safetensors"
INSERTION_WINDOW = 16   # heard tokens (about four words) over which `Reading.densest_insertion` counts


@dataclass(frozen=True)
class Reading:
    errors: int              # edit distance between heard and expected tokens
    tokens: int              # expected tokens
    inserted: np.ndarray     # per heard token, True where it has no counterpart in the text
    heard: list[int]

    @property
    def longest_insertion(self) -> int:
        """The longest run of heard tokens in a row with no counterpart in the text."""
        runs = np.diff(np.flatnonzero(np.concatenate([[True], ~self.inserted, [True]]))) - 1
        return int(runs.max()) if len(runs) else 0

    def densest_insertion(self, window: int = INSERTION_WINDOW) -> int:
        """The most heard tokens without counterpart among any `window` heard in a row: a phrase said again
        is that dense even where the reader misses a token of it (the alignment then cuts the run)."""
        if not len(self.inserted):
            return 0
        counts = np.convolve(self.inserted.astype(np.int32), np.ones(min(window, len(self.inserted)), np.int32),
                             "valid")
        return int(counts.max())


class TokenReader:
    """Reads text tokens from audio through the codec and the CTC aligner (module doc)."""

    def __init__(self, aligner_path: str | Path, codec: CodecModel, tokenizer) -> None:
        self.model, trained_on = load_aligner(aligner_path)
        for key, ours in (("codec_id", codec.tokens_id), ("tokenizer_id", tokenizer.id)):
            if trained_on.get(key) != ours:
                raise ModelMismatchError(f"{aligner_path} reads the tokens of {key} {trained_on.get(key)}, "
                                          f"the engine's is {ours}: train an aligner on this engine's token cache")
        self.codec, self.tokenizer = codec, tokenizer
        self.n_codebooks = self.model.config.n_codebooks

    @torch.inference_mode()
    def heard(self, pcm: np.ndarray) -> list[int]:
        """The text tokens the aligner hears in 16 kHz audio (best path)."""
        if len(pcm) < self.codec.hop_length:
            return []
        codes = self.codec.encode(torch.from_numpy(np.ascontiguousarray(pcm, np.float32))[None, None],
                                  self.n_codebooks)
        return greedy_tokens(self.model(codes)[0].numpy())

    def read(self, pcm: np.ndarray, text: str) -> Reading:
        """What the aligner hears in `pcm` against the tokens of `text`."""
        expected = self.tokenizer.encode(text)
        heard = self.heard(pcm)
        errors, inserted = edit_alignment(expected, heard)
        return Reading(errors, len(expected), inserted, heard)


def shipped_reader(codec: CodecModel, tokenizer, path: str = "auto") -> TokenReader | None:
    """The reader for a bench: `path`, or with "auto" the shipped one when it reads this codec's tokens and this
    tokenizer's text (None, with a warning, when it does not: another codec needs its own aligner), "none": None.

    Raises ModelMismatchError for a reader given by path that reads other tokens.
    """
    if path == "none":
        return None
    if path != "auto":
        return TokenReader(path, codec, tokenizer)
    if not DEFAULT_READER.is_file():
        log.warning("no shipped reader (%s): the bench runs without it", DEFAULT_READER)
        return None
    try:
        return TokenReader(DEFAULT_READER, codec, tokenizer)
    except ModelMismatchError as exc:
        log.warning("the shipped reader is skipped: %s", exc)
        return None
