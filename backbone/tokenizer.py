"""Text tokens for the backbone: the front end's spoken form, cut by a sentencepiece model.

sentencepiece (unigram) is trained on the normalised transcripts of a corpus
(`tts train tokenizer`) and shipped as assets/tokenizer.model. The vocabulary
is small on purpose: with a few tens of hours of speech a model generalises
better from sub-word pieces close to letters than from whole words.

A backbone may instead read phonemes (backbone/phonemes.py); `tokenizer_for`
picks the one a backbone was trained with.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import sentencepiece as spm

from tts.corpus.manifest import read_manifest
from tts.modelfile import ASSETS, ModelFileError
from tts.text import normalize_text
from tts.training import TrainingSetupError

if TYPE_CHECKING:
    from backbone.phonemes import PhonemeTokenizer

DEFAULT_TOKENIZER = ASSETS / "tokenizer.model"


class TextTokenizer:
    """normalize_text + sentencepiece. `id` is a hash of the model, recorded by the backbone."""

    def __init__(self, path: str | Path | None = None) -> None:
        path = Path(path) if path is not None else DEFAULT_TOKENIZER
        if not path.is_file():
            raise ModelFileError(f"tokenizer model not found: {path} (train one with 'tts train tokenizer')")
        data = path.read_bytes()
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(data)
        except (RuntimeError, OSError) as exc:
            raise ModelFileError(f"{path} is not a sentencepiece model ({exc})") from exc
        self.id = hashlib.sha256(data).hexdigest()[:16]

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    def encode(self, text: str, normalized: bool = False) -> list[int]:
        """Token ids of `text` (normalised first unless `normalized`)."""
        return self.sp.EncodeAsIds(text if normalized else normalize_text(text))

    def decode(self, ids: list[int]) -> str:
        return self.sp.DecodeIds(list(ids))


def training_texts(corpus: str | Path) -> list[str]:
    """The distinct normalised transcripts of the corpus's training split, what every tokenizer learns from.

    Raises:
        TrainingSetupError: there are none.
    """
    texts = [t for t in sorted({normalize_text(u.text) for u in read_manifest(corpus, ["train"])}) if t]
    if not texts:
        raise TrainingSetupError(f"{corpus} has no training transcripts")
    return texts


def train_tokenizer(corpus: str | Path, out: str | Path = DEFAULT_TOKENIZER, vocab_size: int = 384) -> dict:
    """Train on the normalised transcripts of the corpus's training split; written atomically."""
    texts = training_texts(corpus)
    model = io.BytesIO()
    spm.SentencePieceTrainer.Train(sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=1.0, num_threads=1,
                                   bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, hard_vocab_limit=False,
                                   minloglevel=2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(model.getvalue())
    tmp.replace(out)
    return {"sentences": len(texts), "vocab_size": TextTokenizer(out).vocab_size, "out": str(out)}


def load_tokenizer(path: str | Path | None = None) -> "TextTokenizer | PhonemeTokenizer":
    """A tokenizer file: a phoneme inventory (.json, backbone/phonemes.py) or a sentencepiece model."""
    from backbone.phonemes import PhonemeTokenizer

    if path is not None and Path(path).suffix == ".json":
        return PhonemeTokenizer(path)
    return TextTokenizer(path)


def tokenizer_for(tokenizer_id: str, path: str | Path | None = None) -> "TextTokenizer | PhonemeTokenizer":
    """The tokenizer a backbone was trained with: the file `path` when given, else the shipped one whose id is
    `tokenizer_id` (the sentencepiece model when none is: the engine then names the mismatch)."""
    from backbone.phonemes import DEFAULT_PHONEMES

    if path is not None:
        return load_tokenizer(path)
    if DEFAULT_PHONEMES.is_file():
        phonemes = load_tokenizer(DEFAULT_PHONEMES)
        if phonemes.id == tokenizer_id:
            return phonemes
    return TextTokenizer()
