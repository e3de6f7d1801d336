"""The bench's second reader (benchmarks/token_reader.py): edit alignment and the aligner behind it."""
from __future__ import annotations

import random
from dataclasses import asdict

import numpy as np
import pytest
import torch

from backbone.aligner import AlignerConfig, CtcAligner, greedy_tokens, save_aligner
from benchmarks.backbone_bench import INSERTED
from benchmarks.intelligibility import edit_alignment, word_errors
from benchmarks.token_reader import DEFAULT_READER, Reading, TokenReader, shipped_reader
from codec.config import CodecConfig
from codec.model import CodecModel
from tts.corpus.engines import synthesize
from tts.corpus.speakers import Speaker
from tts.engine import Engine, ModelMismatchError
from tts.training import TrainingSetupError

TER_FLOOR = 0.35   # the shipped reader's token error rate on a clear sentence (en-us 7 %, annie 27 %)


def _levenshtein(a: list, b: list) -> int:
    """The textbook recurrence, a cell at a time: what the row-vectorised edit_alignment must equal."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_edit_alignment_counts_the_edits_and_marks_the_inserted_tokens():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.randrange(5) for _ in range(rng.randrange(0, 14))]
        b = [rng.randrange(5) for _ in range(rng.randrange(0, 14))]
        assert edit_alignment(a, b)[0] == _levenshtein(a, b)
        words_a, words_b = [f"w{x}" for x in a], [f"w{x}" for x in b]     # words, as the recogniser's WER has them
        assert word_errors(words_a, words_b) == _levenshtein(a, b)

    def reading(heard: list[int]) -> Reading:
        errors, inserted = edit_alignment(said, heard)
        return Reading(errors, len(said), inserted, heard)

    said = [1, 2, 3, 4, 5, 6, 7]
    assert (reading(said).errors, reading(said).longest_insertion) == (0, 0)
    looped = reading([1, 2, 3, 4, 3, 4, 3, 4, 5, 6, 7])                    # "3 4" said three times
    assert (looped.errors, looped.longest_insertion, looped.densest_insertion(6)) == (4, 4, 4)
    assert reading([1, 9, 3, 4, 8, 6, 7]).inserted.tolist() == [False] * 7   # misheard: nothing inserted
    assert (reading([1, 2, 3]).errors, reading([1, 2, 3]).longest_insertion) == (4, 0)   # cut short
    # two insertions of two, apart: a run of two, but four within six tokens
    apart = reading([1, 2, 8, 8, 3, 4, 5, 9, 9, 6, 7])
    assert (apart.errors, apart.longest_insertion) == (4, 2)
    assert (apart.densest_insertion(7), apart.densest_insertion(4)) == (4, 2)
    assert reading([]).densest_insertion() == 0 and edit_alignment([], [1, 2])[1].tolist() == [True, True]


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
    errors, inserted = edit_alignment(_Tokenizer().encode("abc de"), reading.heard)
    assert reading.errors == errors and reading.inserted.tolist() == inserted.tolist()
    assert reader.heard(np.zeros(3, np.float32)) == []          # shorter than one frame: nothing heard
    _aligner_file(tmp_path / "other.pt", codec, "sentencepiece")
    with pytest.raises(ModelMismatchError, match="tokenizer_id"):
        TokenReader(tmp_path / "other.pt", codec, _Tokenizer())
    with pytest.raises(ModelMismatchError, match="tokenizer_id"):
        shipped_reader(codec, _Tokenizer(), str(tmp_path / "other.pt"))
    assert shipped_reader(codec, _Tokenizer()) is None      # the shipped one reads the shipped codec's tokens
    # a training checkpoint (no record of the tokens it reads) and a file that is no aligner: clear errors
    torch.save({"model": model.state_dict(), "config": asdict(model.config), "step": 3}, tmp_path / "last.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    for name, message in (("last.pt", "not an aligner's export"), ("junk.pt", "is not an aligner")):
        with pytest.raises(TrainingSetupError, match=message):
            TokenReader(tmp_path / name, codec, _Tokenizer())


def _say(text: str, voice: str) -> np.ndarray:
    """`text` in one of espeak-ng's voices at its own pitch and rate (the corpus's speakers vary those)."""
    speaker = Speaker(id="test", engine="espeak", voice=voice, pitch=50.0, pitch_range=0.0, rate=1.0, vtl=1.0)
    return synthesize(speaker, text).samples


@pytest.mark.parametrize("voice", ["en-us", "en-gb-scotland+annie"])
def test_shipped_reader_reads_the_shipped_codecs_tokens_and_hears_a_phrase_said_twice(voice):
    """The bench's repeat check on real speech: a sentence as written, and with a phrase said again. The second
    voice is one pocketsphinx barely reads (WER 92 % on its corpus audio, session 26)."""
    engine = Engine.load()
    reader = shipped_reader(engine.codec, engine.tokenizer)
    assert reader is not None, f"{DEFAULT_READER} is missing or reads other tokens than the shipped codec's"
    text = "She sold the old house by the river last year."
    said = reader.read(_say(text, voice), text)
    assert said.errors / said.tokens < TER_FLOOR and said.densest_insertion() < INSERTED
    again = reader.read(_say("She sold the old house by the old house by the river last year.", voice), text)
    assert again.densest_insertion() >= INSERTED
    assert shipped_reader(engine.codec, engine.tokenizer, "none") is None
