"""Phonemes as text tokens (espeak-ng names, the inventory, caches re-cut with it, a backbone moved onto it), text
reliance, and token caches built by parallel workers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backbone.phonemes import (DEFAULT_PHONEMES, WORD_BOUNDARY, EspeakPhonemizer, PhonemeTokenizer,
                               phoneme_symbols, train_phoneme_inventory)
from backbone.tokenizer import TextTokenizer, load_tokenizer, tokenizer_for
from tests.test_backbone import TINY, _tiny_cache
from tts.modelfile import ModelFileError
from tts.text import normalize_text

SENTENCES = ["hello there, how are you today?", "the cat sat on the mat.", "she sells sea shells; he does not!",
             "five thirty p m, and then some.", "a quiet night: the stars came out."]


def test_a_spelled_letter_a_is_said_by_its_name_not_as_the_article():
    """ "USA", "9 a.m.": a lone "a" is read as the article (a schwa); the front end spells the letter "eh"."""
    words = EspeakPhonemizer.shared().words(normalize_text("The USA at 9 a.m. and a cat."))
    assert words[3] == ["'eI"] and words[6] == ["'eI"]   # the u s A | at nine A m
    assert words[9] == ["a#"]                            # the article stays the article


def test_words_become_phoneme_names_with_stress_boundaries_and_punctuation():
    symbols = phoneme_symbols("hello there, how are you?")
    assert symbols[:6] == ["h", "@", "l", "stress'", "oU", WORD_BOUNDARY]   # espeak-ng: h@l'oU
    assert "<,>" in symbols and symbols[-1] == "<?>"
    comma = symbols.index("<,>")
    assert symbols[comma - 1] != WORD_BOUNDARY and symbols[comma + 1] != WORD_BOUNDARY
    assert symbols.count(WORD_BOUNDARY) == 3                                  # hello there | how are you
    assert phoneme_symbols("") == [] and phoneme_symbols(" , ") == ["<,>"]
    # The same sound from different spellings gives the same phonemes: what sub-word pieces cannot show.
    assert phoneme_symbols("night") == phoneme_symbols("knight")
    assert phoneme_symbols("read") != phoneme_symbols("red")


def test_phonemizer_is_shared_and_safe_across_threads():
    from concurrent.futures import ThreadPoolExecutor

    assert EspeakPhonemizer.shared() is EspeakPhonemizer.shared()
    expected = [phoneme_symbols(t) for t in SENTENCES]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(phoneme_symbols, SENTENCES)) == expected


def test_inventory_trains_encodes_and_refuses_bad_files(tmp_path, caplog):
    info = train_phoneme_inventory(SENTENCES * 2, tmp_path / "ph.json")
    tok = PhonemeTokenizer(tmp_path / "ph.json")
    assert info["id"] == tok.id and info["symbols"] == tok.vocab_size
    assert tok.symbols[0] == WORD_BOUNDARY and "<.>" in tok.symbols
    ids = tok.encode("Hello there, how are you today?")
    assert tok.decode(ids).split() == phoneme_symbols(normalize_text("Hello there, how are you today?"))
    caplog.clear()
    rare = tok.encode("zebra xylophone")          # sounds the five sentences never had
    assert "dropped" in caplog.text and all(0 <= i < tok.vocab_size for i in rare)
    assert load_tokenizer(tmp_path / "ph.json").id == tok.id
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "something else", "symbols": []}))
    with pytest.raises(ModelFileError, match="not a phoneme inventory"):
        PhonemeTokenizer(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not a phoneme inventory"):
        PhonemeTokenizer(tmp_path / "junk.json")
    with pytest.raises(ModelFileError, match="not found"):
        PhonemeTokenizer(tmp_path / "missing.json")


def test_tokenizer_for_picks_the_one_a_backbone_was_trained_with(tmp_path):
    assert isinstance(tokenizer_for(TextTokenizer().id), TextTokenizer)
    train_phoneme_inventory(SENTENCES, tmp_path / "ph.json")
    assert isinstance(tokenizer_for("anything", tmp_path / "ph.json"), PhonemeTokenizer)
    if DEFAULT_PHONEMES.is_file():
        shipped = PhonemeTokenizer()
        assert tokenizer_for(shipped.id).id == shipped.id
    assert isinstance(tokenizer_for("unknown id"), TextTokenizer)   # the engine then names the mismatch


def _cache_with_texts(path, texts):
    from backbone.data import _meta, _save

    _tiny_cache(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["texts"] = np.array(texts)
    meta = _meta(arrays["meta"])
    arrays["meta"] = np.array(repr(meta))
    _save(path, arrays)


def test_retokenize_recuts_the_texts_and_keeps_codes_and_voices(tmp_path, capsys):
    from backbone.data import load_token_cache
    from tts.cli import main

    texts = [SENTENCES[i % len(SENTENCES)] for i in range(12)]
    _cache_with_texts(tmp_path / "old.npz", texts)
    train_phoneme_inventory(SENTENCES, tmp_path / "ph.json")
    tok = PhonemeTokenizer(tmp_path / "ph.json")
    assert main(["train", "retokenize", "--cache", str(tmp_path / "old.npz"), "--out", str(tmp_path / "new.npz"),
                 "--tokenizer", str(tmp_path / "ph.json")]) == 0
    assert json.loads(capsys.readouterr().out)["tokenizer_id"] == tok.id
    old, new = load_token_cache(tmp_path / "old.npz"), load_token_cache(tmp_path / "new.npz")
    assert new.meta["tokenizer_id"] == tok.id and new.meta["text_vocab"] == tok.vocab_size
    assert all(np.array_equal(a, b) for a, b in zip(old.codes, new.codes, strict=True))
    assert np.array_equal(old.speaker_embeddings, new.speaker_embeddings) and old.texts == new.texts
    for text, ids in zip(new.texts, new.text_ids, strict=True):
        assert ids.tolist() == tok.encode(text, normalized=True)


def test_a_trained_backbone_moves_onto_new_text_tokens_keeping_the_rest(tmp_path):
    from backbone.data import retokenize_token_cache
    from backbone.model import load_backbone
    from backbone.train import BackboneTrainConfig, train_backbone
    from tts.training import TrainingSetupError

    texts = [SENTENCES[i % len(SENTENCES)] for i in range(12)]
    _cache_with_texts(tmp_path / "pieces.npz", texts)
    model = {k: v for k, v in TINY.items() if k not in ("n_codebooks", "speaker_dim", "frame_rate")}
    base = dict(frames_per_batch=60, valid_every=1000, log_every=1, warmup_steps=1)
    train_backbone(BackboneTrainConfig(cache=str(tmp_path / "pieces.npz"), out_dir=str(tmp_path / "a"),
                                       export=str(tmp_path / "a.safetensors"), steps=2, model=model, **base))
    train_phoneme_inventory(SENTENCES, tmp_path / "ph.json")
    tok = PhonemeTokenizer(tmp_path / "ph.json")
    retokenize_token_cache(tmp_path / "pieces.npz", tmp_path / "phonemes.npz", tok)
    moved = BackboneTrainConfig(cache=str(tmp_path / "phonemes.npz"), out_dir=str(tmp_path / "b"),
                                export=str(tmp_path / "b.safetensors"), steps=3, valid_every=3,
                                frames_per_batch=60, log_every=1, warmup_steps=1,
                                init_from=str(tmp_path / "a" / "last.pt"))
    with pytest.raises(TrainingSetupError, match="tokenizer_id"):   # without the flag the ids would be misread
        train_backbone(moved)
    moved.new_text_tokens = True
    train_backbone(moved)
    before = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    after = load_backbone(tmp_path / "b.safetensors")
    assert after.config.tokenizer_id == tok.id and after.text_emb.weight.shape[0] == tok.vocab_size
    assert after.config.text_vocab == tok.vocab_size
    assert after.heads.weight.shape == before["heads.weight"].shape
    old_scale = before["text_emb.weight"].std().item()
    assert 0.3 * old_scale < after.text_emb.weight.std().item() < 3 * old_scale


def test_text_reliance_compares_own_other_and_no_text(tmp_path, capsys):
    """`tts bench backbone --text-reliance CACHE`: the same teacher-forced loss with three texts per utterance."""
    from backbone.data import load_token_cache
    from backbone.train import BackboneTrainConfig, _swapped_texts, text_reliance, train_backbone
    from tts.cli import main

    _tiny_cache(tmp_path / "tokens.npz")
    cache = load_token_cache(tmp_path / "tokens.npz")
    indices = list(range(12))
    other = _swapped_texts(cache, indices)
    assert all(other[other[i]] == i for i in indices) and sum(other[i] != i for i in indices) == 12
    by_length = sorted(indices, key=lambda i: (len(cache.text_ids[i]), i))
    assert all(other[a] == b for a, b in zip(by_length[0::2], by_length[1::2]))   # neighbours by length
    model = {k: v for k, v in TINY.items() if k not in ("n_codebooks", "speaker_dim", "frame_rate")}
    train_backbone(BackboneTrainConfig(cache=str(tmp_path / "tokens.npz"), out_dir=str(tmp_path / "a"),
                                       export=str(tmp_path / "a.safetensors"), steps=2, frames_per_batch=60,
                                       valid_every=2, warmup_steps=1, model=model))
    result = text_reliance(str(tmp_path / "a.safetensors"), str(tmp_path / "tokens.npz"))
    assert result["utterances"] == 2
    losses = [result[m]["valid_loss"] for m in ("own", "other", "none")]
    assert all(np.isfinite(losses)) and len(set(losses)) == 3   # three different inputs, three different losses
    assert main(["bench", "backbone", "--backbone", str(tmp_path / "a.safetensors"),
                 "--text-reliance", str(tmp_path / "tokens.npz")]) == 0
    assert "another's text of its length" in capsys.readouterr().out
    _cache_with_texts(tmp_path / "texts.npz", SENTENCES * 2 + SENTENCES[:2])
    train_phoneme_inventory(SENTENCES, tmp_path / "ph.json")
    from backbone.data import retokenize_token_cache

    retokenize_token_cache(tmp_path / "texts.npz", tmp_path / "ph.npz", PhonemeTokenizer(tmp_path / "ph.json"))
    assert main(["bench", "backbone", "--backbone", str(tmp_path / "a.safetensors"),
                 "--text-reliance", str(tmp_path / "ph.npz")]) == 2             # a cache of other text tokens
    assert "tokenizer_id" in capsys.readouterr().err


def test_token_cache_built_by_parallel_workers_equals_one_process(tmp_path):
    from backbone.data import build_token_cache, load_token_cache
    from codec.loaders import DEFAULT_CODEC, load_codec
    from tests.test_voice import speaker_corpus
    from voice.encoder import load_encoder

    corpus = speaker_corpus(tmp_path / "corpus", speakers=2, clips=2, seconds=2.0, text="One two.")
    codec, encoder = load_codec(), load_encoder()
    one = build_token_cache(corpus, tmp_path / "one.npz", codec, TextTokenizer(), encoder, 2)
    two = build_token_cache(corpus, tmp_path / "two.npz", codec, TextTokenizer(), encoder, 2, workers=2,
                            codec_path=DEFAULT_CODEC)
    assert one == two and one["text_vocab"] == TextTokenizer().vocab_size
    a, b = load_token_cache(tmp_path / "one.npz"), load_token_cache(tmp_path / "two.npz")
    assert a.ids == b.ids and len(a.codes) == 4
    assert all(np.array_equal(x, y) for x, y in zip(a.codes, b.codes, strict=True))
    with pytest.raises(ValueError, match="codec_path"):
        build_token_cache(corpus, tmp_path / "three.npz", codec, TextTokenizer(), encoder, 2, workers=2)
