"""Phonemes as the backbone's text tokens: espeak-ng's phoneme names of the normalised text.

Why: with sub-word pieces the backbone must learn English spelling-to-sound,
the alignment and the acoustics at once, and the small model a CPU budget
trains never got past babbling in the right voice. Phonemes take the first
job off it. They come from espeak-ng, the engine that speaks a third of the
corpus and that setup installs anyway, through its C API (`ctypes`, written
here: one call per clause costs a fraction of a millisecond, where the
`phonemizer` package starts a batch machinery per call and gives IPA strings
that would need splitting again).

A text becomes: the phoneme names of each word (stress marks as tokens of
their own), a word-boundary token between words, and the punctuation that
shapes prosody as tokens ('<,>'), since espeak-ng drops it; espeak-ng's
own pause marks (':', ';' after a word) stay as they come. The inventory (the list
of symbols, and so the ids) is learnt from the corpus's training text
(`tts train phonemes`) and shipped as assets/phonemes.json; its `id` is what
a backbone records, like a sentencepiece model's.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Iterable

from tts.modelfile import ASSETS, ModelFileError
from tts.text import normalize_text

log = logging.getLogger(__name__)

DEFAULT_PHONEMES = ASSETS / "phonemes.json"
KIND = "espeak-ng phonemes"
WORD_BOUNDARY = "<sp>"
PUNCTUATION = ",.?!;:"
STRESS_MARKS = "',"                          # espeak-ng's primary and secondary stress, before a vowel
_CLAUSE = re.compile(f"([{re.escape(PUNCTUATION)}])")
_LANGUAGE_SWITCH = re.compile(r"\([a-z-]+\)")  # "(fr)" ... "(en)" around words read in another language
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_PHONEME_NAMES_SEPARATED = ord("_") << 8       # ASCII phoneme names, "_" between the phonemes of a word


class PhonemizerError(RuntimeError):
    """espeak-ng's library is missing or refused the voice."""


class EspeakPhonemizer:
    """Text -> espeak-ng phoneme names, one word per list. The library keeps global state and is not
    thread-safe, so one instance per process (`shared()`) serialises its calls with a lock."""

    _shared: "EspeakPhonemizer | None" = None
    _shared_lock = threading.Lock()

    def __init__(self, voice: str = "en-us") -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as exc:
            raise PhonemizerError(f"espeak-ng's library is not installed ({exc}); run scripts/setup.sh "
                                  "or 'apt-get install espeak-ng'") from exc
        if self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_DONT_EXIT) <= 0:
            raise PhonemizerError("espeak-ng failed to initialise (is espeak-ng-data installed?)")
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise PhonemizerError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        self.voice = voice
        self.lock = threading.Lock()

    @classmethod
    def shared(cls, voice: str = "en-us") -> "EspeakPhonemizer":
        with cls._shared_lock:
            if cls._shared is None or cls._shared.voice != voice:
                cls._shared = cls(voice)
            return cls._shared

    def words(self, clause: str) -> list[list[str]]:
        """The phoneme names of each word of a clause without punctuation (stress marks left attached)."""
        if not clause.strip():
            return []
        buffer = ctypes.create_string_buffer(clause.encode("utf-8"))
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        pieces = []
        with self.lock:
            while pointer.value:
                out = self.lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEME_NAMES_SEPARATED)
                if out:
                    pieces.append(out.decode("utf-8", "replace"))
        text = _LANGUAGE_SWITCH.sub("", " ".join(pieces))
        return [[p for p in word.split("_") if p] for word in text.split()]


def punctuation_symbol(mark: str) -> str:
    """The token of a punctuation mark: '<,>' (espeak-ng's own names use ',', ';' and ':' for other things)."""
    return f"<{mark}>"


_PUNCTUATION_SYMBOLS = {punctuation_symbol(mark) for mark in PUNCTUATION}


def phoneme_symbols(text: str, phonemizer: EspeakPhonemizer | None = None) -> list[str]:
    """Normalised text -> symbols: phoneme names, stress marks, word boundaries and punctuation."""
    phonemizer = phonemizer or EspeakPhonemizer.shared()
    symbols: list[str] = []
    for part in _CLAUSE.split(text):
        if part and part in PUNCTUATION:
            symbols.append(punctuation_symbol(part))   # a boundary in itself: no word boundary around it
            continue
        for word in phonemizer.words(part):
            if symbols and symbols[-1] not in _PUNCTUATION_SYMBOLS:
                symbols.append(WORD_BOUNDARY)
            for name in word:
                stress = ""
                while name and name[0] in STRESS_MARKS:
                    stress, name = stress + name[0], name[1:]
                symbols.extend(f"stress{mark}" for mark in stress)
                if name:
                    symbols.append(name)
    return symbols


class PhonemeTokenizer:
    """normalize_text + espeak-ng phonemes + an inventory of symbols. Same interface as TextTokenizer."""

    def __init__(self, path: str | Path | None = None) -> None:
        path = Path(path) if path is not None else DEFAULT_PHONEMES
        if not path.is_file():
            raise ModelFileError(f"phoneme inventory not found: {path} (make one with 'tts train phonemes')")
        data = path.read_bytes()
        try:
            spec = json.loads(data)
            if spec.get("kind") != KIND:
                raise ValueError(f"kind {spec.get('kind')!r}")
            self.symbols: list[str] = list(spec["symbols"])
            self.voice: str = spec["voice"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"{path} is not a phoneme inventory ({exc})") from exc
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.id = hashlib.sha256(data).hexdigest()[:16]
        self._phonemizer: EspeakPhonemizer | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    @property
    def phonemizer(self) -> EspeakPhonemizer:
        if self._phonemizer is None:
            self._phonemizer = EspeakPhonemizer.shared(self.voice)
        return self._phonemizer

    def encode(self, text: str, normalized: bool = False) -> list[int]:
        """Token ids of `text` (normalised first unless `normalized`); symbols outside the inventory are
        dropped with a warning."""
        symbols = phoneme_symbols(text if normalized else normalize_text(text), self.phonemizer)
        unknown = sorted({s for s in symbols if s not in self.index})
        if unknown:
            log.warning("phonemes outside the inventory dropped: %s", " ".join(unknown))
        return [self.index[s] for s in symbols if s in self.index]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.symbols[i] for i in ids)


def train_phoneme_inventory(texts: Iterable[str], out: str | Path = DEFAULT_PHONEMES, voice: str = "en-us",
                            min_count: int = 2) -> dict:
    """Write the inventory of the symbols of normalised `texts` seen at least `min_count` times (written
    atomically); punctuation and the word boundary are always in it."""
    phonemizer = EspeakPhonemizer.shared(voice)
    counts: Counter[str] = Counter()
    n = 0
    for text in texts:
        counts.update(phoneme_symbols(text, phonemizer))
        n += 1
    fixed = [WORD_BOUNDARY, *sorted(_PUNCTUATION_SYMBOLS)]
    learnt = sorted(s for s, c in counts.items() if c >= min_count and s not in fixed)
    if not learnt:
        raise ValueError("no phonemes in the given texts")
    spec = {"kind": KIND, "voice": voice, "symbols": fixed + learnt}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    return {"texts": n, "symbols": len(spec["symbols"]), "out": str(out), "id": PhonemeTokenizer(out).id}
