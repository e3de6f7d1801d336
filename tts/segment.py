"""Long text to speakable segments: sentences, then clauses, then words, each with the pause after it.

The backbone speaks one utterance of bounded length well (its training
sentences are under ~200 characters), so any input is cut into segments the
model handles, at the most natural boundary that fits: paragraph, sentence,
clause (, ; :), and only as a last resort between words. Each segment carries
the pause that follows it, so the joined audio breathes where a reader would.
Splitting happens after normalisation: "Dr." and "3.5" are already words,
so every remaining full stop ends a sentence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from tts.text import is_abbreviation, normalize_text

PAUSES = {"paragraph": 0.6, ".": 0.35, "?": 0.35, "!": 0.35, ";": 0.25, ":": 0.25, ",": 0.15, "": 0.1}
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Segment:
    text: str            # normalised text of one utterance
    pause_after: float   # seconds of silence after it


def _pause(piece: str) -> float:
    return PAUSES.get(piece[-1:], PAUSES[""])


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive pieces while they fit in `max_chars`."""
    out: list[str] = []
    for piece in pieces:
        if out and len(out[-1]) + 1 + len(piece) <= max_chars:
            out[-1] += " " + piece
        else:
            out.append(piece)
    return out


def _split_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    pieces = []
    for clause in _pack(_CLAUSE_END.split(sentence), max_chars):
        if len(clause) <= max_chars:
            pieces.append(clause)
            continue
        words = [w[i:i + max_chars] for w in clause.split() for i in range(0, len(w), max_chars)]
        pieces.extend(_pack(words, max_chars))
    return pieces


def split_sentences(normalized: str, max_chars: int) -> list[str]:
    """Normalised text (one paragraph) to pieces of at most `max_chars`, cut at the best boundary."""
    pieces = []
    for sentence in _SENTENCE_END.split(normalized.strip()):
        if sentence.strip():
            pieces.extend(_split_long(sentence.strip(), max_chars))
    return pieces


def segment_text(text: str, max_chars: int = 160) -> list[Segment]:
    """Raw text to segments in reading order; empty when nothing in it can be spoken."""
    if max_chars < 20:
        raise ValueError("max_chars must be at least 20")
    segments: list[Segment] = []
    for paragraph in _PARAGRAPH.split(text):
        pieces = split_sentences(normalize_text(paragraph), max_chars)
        pieces = [p for p in pieces if any(c.isalnum() for c in p)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            segments.append(Segment(piece, PAUSES["paragraph"] if last else _pause(piece)))
    if segments:
        segments[-1] = Segment(segments[-1].text, 0.0)
    return segments


def utterance_text(segment: str) -> str:
    """The text the backbone speaks for a segment: one cut without any closing punctuation ("yes", or a
    piece cut between words) gets a full stop. The training sentences all end with one, and the model
    learnt to stop there; without it, it trails on until the end-of-speech guard stops it (session 19:
    "yes" lasted 0.3-1 s, "yes." 0.3-0.5 s)."""
    return segment if segment[-1:] in ".?!,;:" else segment + "."


class TextAccumulator:
    """Text arriving in pieces (as an LLM emits it) to segments as soon as each is complete.

    A segment is released when a sentence ends and more text follows it, or when
    the pending text grows past `max_chars`; `flush()` releases the rest.
    """

    def __init__(self, max_chars: int = 160) -> None:
        self.max_chars = max_chars
        self._pending = ""

    def feed(self, piece: str) -> list[Segment]:
        self._pending += piece
        match = None
        for candidate in re.finditer(r"[.?!;:]\s+|\n\s*\n", self._pending):
            word = self._pending[:candidate.start()].rsplit(None, 1)[-1:] or [""]
            if not (candidate.group().startswith(".") and is_abbreviation(word[0])):
                match = candidate
        if match is None and len(self._pending) <= self.max_chars:
            return []
        cut = match.end() if match is not None else self._last_space()
        if cut <= 0:
            return []
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._segments(ready, final=False)

    def flush(self) -> list[Segment]:
        ready, self._pending = self._pending, ""
        return self._segments(ready, final=True)

    def _last_space(self) -> int:
        return self._pending.rfind(" ") + 1

    def _segments(self, text: str, final: bool) -> list[Segment]:
        segments = segment_text(text, self.max_chars) if text.strip() else []
        if segments and not final:
            # More text follows: keep the pause this piece's ending calls for.
            segments[-1] = Segment(segments[-1].text, _pause(segments[-1].text))
        return segments

