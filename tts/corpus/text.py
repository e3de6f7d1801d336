"""English sentences for the synthetic corpus, from text installed on the machine.

The default source is Debian's `fortunes` databases (quotes, jokes, definitions):
real prose with numbers, abbreviations, quotes and punctuation. Text is kept in
its written form; the backbone's front end does the normalisation.
"""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

FORTUNE_DIRS = (Path("/usr/share/games/fortunes"),)
MIN_WORDS, MAX_WORDS = 3, 30

# Words after which a full stop does not end a corpus sentence. The list is the corpus's own, frozen,
# not the front end's (tts.text.is_abbreviation): that one grows as the front end learns to read more
# (session 33 added weekdays for streamed text), and every word added there moved sentence boundaries
# here, so the same seed planned another corpus (other sentences, other utterance ids, other splits)
# than the one the shipped models were trained and measured on. These are the 44 words that built it.
CORPUS_ABBREVIATIONS = frozenset((
    "approx", "apr", "apt", "aug", "ave", "blvd", "capt", "co", "col", "corp", "dec", "dept", "dr", "est",
    "etc", "ext", "feb", "ft", "gen", "inc", "incl", "jan", "jr", "jul", "jun", "lt", "ltd", "mar", "may",
    "mr", "mrs", "ms", "mt", "nov", "oct", "prof", "rd", "rev", "sep", "sept", "sgt", "sr", "st", "vs"))

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ATTRIBUTION = re.compile(r"\s(--|—)\s?[A-Z].*$")
_ALLOWED = re.compile(r"^[A-Za-z0-9 .,;:!?'\"()\-$%&/#+@]+$")
_BAD_PATTERNS = re.compile(r"(\.\.\.\.|__|==|--|\|\||://|\b[A-Z]{2,}:|^\W|[;:,]$|\(\)|\d{6,})")


class TextSourceError(RuntimeError):
    """Raised when no usable text source is installed."""


def fortune_dirs() -> list[Path]:
    """Debian's fortunes folder, or the folders listed in $TTS_FORTUNE_DIRS (the package unpacked
    elsewhere, as on the GPU machine where nothing can be installed: scripts/gpu/env.sh)."""
    listed = os.environ.get("TTS_FORTUNE_DIRS", "")
    return [Path(p) for p in listed.split(os.pathsep) if p] or list(FORTUNE_DIRS)


def _fortune_files() -> list[Path]:
    files: list[Path] = []
    for folder in fortune_dirs():
        if folder.is_dir():
            files += sorted(p for p in folder.iterdir()
                            if p.is_file() and not p.is_symlink() and p.suffix == "")
    return files


def _read_utf8(path: Path) -> str | None:
    """Text of a file, or None when it is not UTF-8 (Latin-1 fortunes exist: skip them)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def iter_fortunes(files: Iterable[Path]) -> Iterator[str]:
    """Each fortune (records separated by a line holding only '%') as one line of text."""
    for path in files:
        text = _read_utf8(path)
        if text is None:
            continue
        for record in re.split(r"^%\s*$", text, flags=re.M):
            lines = [ln for ln in record.splitlines() if ln.strip()]
            # Verse, dialogue scripts and ASCII art are indented or tabular: skip them.
            if not lines or any(ln.startswith(("\t", "    ")) and len(ln) - len(ln.lstrip()) > 8
                                for ln in lines[:-1]):
                continue
            yield " ".join(ln.strip() for ln in lines)


def _is_abbreviation(word: str) -> bool:
    word = word.lower().strip("\"'(")
    return len(word) == 1 or word in CORPUS_ABBREVIATIONS or "." in word


def split_sentences(paragraph: str) -> list[str]:
    """Split prose at sentence ends, leaving abbreviations such as 'Dr.' joined."""
    pieces = _SENTENCE_END.split(paragraph)
    sentences: list[str] = []
    for piece in pieces:
        if sentences:
            if _is_abbreviation(sentences[-1].rsplit(" ", 1)[-1].rstrip(".")):
                sentences[-1] = f"{sentences[-1]} {piece}"
                continue
        sentences.append(piece)
    return sentences


def clean_sentence(raw: str) -> str | None:
    """Normalise quotes/whitespace; None when the sentence is unfit to be spoken."""
    text = unicodedata.normalize("NFKC", raw)
    text = text.replace("\u2018", "'").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = _ATTRIBUTION.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    if not text or not _ALLOWED.match(text) or _BAD_PATTERNS.search(text):
        return None
    if text[-1] not in ".!?\"'" or not text[0].isupper() and not text[0] in "\"'(":
        return None
    if text.count('"') % 2 or text.count("(") != text.count(")"):
        return None
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    letters = sum(c.isalpha() for c in text)
    if letters < 0.6 * len(text) or text.isupper():
        return None
    return text


def collect_sentences(files: Iterable[Path] | None = None) -> list[str]:
    """Clean, de-duplicated sentences in a stable order (sorted), ready to be spoken.

    Raises:
        TextSourceError: no fortune database is installed.
    """
    files = list(files) if files is not None else _fortune_files()
    if not files:
        raise TextSourceError(
            "no English text source found: install Debian's 'fortunes' package "
            "(apt-get install fortunes fortunes-min)")
    seen: set[str] = set()
    sentences: list[str] = []
    for paragraph in iter_fortunes(files):
        for raw in split_sentences(paragraph):
            sentence = clean_sentence(raw)
            if sentence is None:
                continue
            key = re.sub(r"[^a-z0-9]", "", sentence.lower())
            if key not in seen:
                seen.add(key)
                sentences.append(sentence)
    return sorted(sentences)
