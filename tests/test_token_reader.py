"""The bench's second reader (benchmarks/token_reader.py): edit alignment and the aligner behind it."""
from __future__ import annotations

import random
import numpy as np
import pytest
import torch

from backbone.aligner import AlignerConfig, CtcAligner, greedy_tokens, save_aligner
from benchmarks.intelligibility import word_errors
from benchmarks.token_reader import TokenReader, edit_alignment
from codec.config import CodecConfig
from codec.model import CodecModel
from tts.engine import ModelMismatchError


def test_edit_alignment_counts_the_edits_and_the_longest_run_of_inserted_tokens():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.randrange(5) for _ in range(rng.randrange(0, 14))]
        b = [rng.randrange(5) for _ in range(rng.randrange(0, 14))]
        assert edit_alignment(a, b)[0] == word_errors(a, b)
    said = [1, 2, 3, 4, 5, 6, 7]
    assert edit_alignment(said, said) == (0, 0)
    assert edit_alignment(said, [1, 2, 3, 4, 3, 4, 3, 4, 5, 6, 7]) == (4, 4)     # "3 4" said three times
    assert edit_alignment(said, [1, 9, 3, 4, 8, 6, 7]) == (2, 0)                 # misheard: no insertion
    assert edit_alignment(said, [1, 2, 3]) == (4, 0)                             # cut short
    assert edit_alignment([], [1, 2]) == (2, 2)
    # two separate insertions of two are not a run of four
    assert edit_alignment(said, [1, 2, 8, 8, 3, 4, 5, 9, 9, 6, 7]) == (4, 2)


def test_greedy_tokens_merges_repeats_and_drops_blanks():
    path = [0, 3, 3, 0, 3, 5, 5, 0]                 # classes: token + 1, 0 the blank
    log_probs = np.log(np.full((len(path), 6), 0.02))
    log_probs[np.arange(len(path)), path] = np.log(0.9)
    assert greedy_tokens(log_probs) == [2, 2, 4]


class _Tokenizer:
    id, vocab_size = "phonemes-test", 12

    def encode(self, text: str, normalized: bool = False) -> list[int]:
        return [ord(c) % 12 for c in text if c.isalpha()]


def _aligner_file(path, codec: CodecModel, tokenizer_id: str) -> CtcAligner:
    config = AlignerConfig(text_vocab=12, n_codebooks=2, card=codec.config.card, d=16, layers_before=1,
                           layers_after=1)
    torch.manual_seed(0)
    model = CtcAligner(config)
    save_aligner(model, path, 0, {}, {"codec_id": codec.tokens_id, "tokenizer_id": tokenizer_id})
    return model


def test_reader_reads_audio_through_the_codec_and_refuses_an_aligner_of_other_tokens(tmp_path):
    codec = CodecModel(CodecConfig(channels=4, max_channels=8, strides=(2, 4), dimension=8, n_q=3, card=16)).eval()
    codec.tokens_id = "codec-test"
    model = _aligner_file(tmp_path / "reader.safetensors", codec, "phonemes-test")   # as shipped: float16 weights
    reader = TokenReader(tmp_path / "reader.safetensors", codec, _Tokenizer())
    for name, weight in reader.model.state_dict().items():
        assert torch.allclose(weight, model.state_dict()[name], atol=2e-3)
    pcm = np.random.default_rng(0).normal(0, 0.1, 1600).astype(np.float32)
    reading = reader.read(pcm, "abc de")
    assert reading.tokens == 5 and all(0 <= t < 12 for t in reading.heard)
    assert (reading.errors, reading.longest_insertion) == edit_alignment(_Tokenizer().encode("abc de"), reading.heard)
    assert reader.heard(np.zeros(3, np.float32)) == []          # shorter than one frame: nothing heard
    _aligner_file(tmp_path / "other.pt", codec, "sentencepiece")
    with pytest.raises(ModelMismatchError, match="tokenizer_id"):
        TokenReader(tmp_path / "other.pt", codec, _Tokenizer())
