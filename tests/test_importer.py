"""Importing a user's corpus: both layouts, resampling, and every kind of bad item."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tts.corpus.importer import CorpusImportError, assign_split, import_corpus
from tts.corpus.manifest import audio_path, read_manifest


def _tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def test_pairs_layout_with_bad_items(tmp_path):
    src = tmp_path / "src"
    (src / "alice").mkdir(parents=True)
    sf.write(src / "alice" / "one.wav", _tone(1.5, 44_100, channels=2), 44_100)
    (src / "alice" / "one.txt").write_text("Hello there, Alice speaking.\n")
    sf.write(src / "alice" / "two.flac", _tone(1.0, 22_050), 22_050)
    (src / "alice" / "two.txt").write_text("Second  line\nwraps.")
    (src / "alice" / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    (src / "alice" / "corrupt.txt").write_text("Never read.")
    sf.write(src / "alice" / "silent.wav", np.zeros(16_000), 16_000)
    (src / "alice" / "silent.txt").write_text("Nothing to hear.")
    sf.write(src / "alice" / "latin.wav", _tone(1.0, 16_000), 16_000)
    (src / "alice" / "latin.txt").write_bytes("Caf\xe9".encode("latin-1"))
    sf.write(src / "alice" / "orphan.wav", _tone(1.0, 16_000), 16_000)
    sf.write(src / "top.wav", _tone(1.0, 16_000), 16_000)
    (src / "top.txt").write_text("At the top level.")

    stats = import_corpus(src, tmp_path / "out")
    utts = {u.id: u for u in read_manifest(tmp_path / "out")}
    assert set(utts) == {"alice_one", "alice_two", "top"}
    assert utts["alice_two"].text == "Second line wraps."
    assert utts["top"].speaker == "default" and utts["alice_one"].speaker == "alice"
    samples, sr = sf.read(audio_path(tmp_path / "out", utts["alice_one"]))
    assert sr == 16_000 and samples.ndim == 1 and abs(len(samples) / sr - 1.5) < 0.15
    problems = " | ".join(stats["problems"])
    assert stats["skipped"] == 4
    for needle in ("corrupt.wav: cannot decode", "silent.wav: audio is silent", "latin.txt: transcript is not UTF-8",
                   "orphan.wav: no transcript"):
        assert needle in problems
    assert json.loads((tmp_path / "out" / "build.json").read_text())["utterances"] == 3


def test_libritts_layout_and_held_out_speakers(tmp_path):
    src = tmp_path / "LibriTTS"
    for spk in range(10):
        chapter = src / f"{100 + spk}" / "2000"
        chapter.mkdir(parents=True)
        for i in range(2):
            stem = f"{100 + spk}_2000_{i:06d}_000000"
            sf.write(chapter / f"{stem}.wav", _tone(0.8, 24_000), 24_000)
            (chapter / f"{stem}.normalized.txt").write_text(f"Speaker {spk} says line {i}.")
            (chapter / f"{stem}.original.txt").write_text("ignored when normalized exists")
    stats = import_corpus(src, tmp_path / "out", workers=2)
    utts = read_manifest(tmp_path / "out")
    assert len(utts) == 20 and stats["speakers"] == 10
    assert utts[0].text.startswith("Speaker ") and utts[0].speaker == "100"
    held = set(stats["held_out_speakers"])
    assert len(held) == 1
    assert {u.speaker for u in utts if u.split == "unseen"} == held
    assert not held & {u.speaker for u in utts if u.split == "train"}


def test_split_assignment_is_stable():
    assert assign_split("a", "Some text.", set(), 0.02, 0.02) == assign_split("a", "some TEXT.", set(), 0.02, 0.02)
    assert assign_split("a", "x", {"a"}, 0.5, 0.5) == "unseen"


def test_import_errors(tmp_path):
    with pytest.raises(CorpusImportError, match="not a folder"):
        import_corpus(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusImportError, match="no usable utterance"):
        import_corpus(tmp_path / "empty", tmp_path / "out")


def test_speakers_named_to_hold_out(tmp_path):
    """`tts data import --held-out`: the named speakers, and only they, go to `unseen`, however few there are;
    a name the source does not have is an error that says which speakers it has."""
    from tts.cli import main

    src = tmp_path / "src"
    for spk in ("ann", "bob"):
        (src / spk).mkdir(parents=True)
        for i in range(3):
            sf.write(src / spk / f"{i}.wav", _tone(0.8, 16_000), 16_000)
            (src / spk / f"{i}.txt").write_text(f"{spk} says line {i}.")
    assert main(["data", "import", str(src), "--out", str(tmp_path / "out"), "--held-out", "bob"]) == 0
    utts = read_manifest(tmp_path / "out")
    assert {u.speaker for u in utts if u.split == "unseen"} == {"bob"}
    assert all(u.split != "unseen" for u in utts if u.speaker == "ann")
    with pytest.raises(CorpusImportError, match=r"no speaker \['carol'\] to hold out.*'ann', 'bob'"):
        import_corpus(src, tmp_path / "out2", held_out=["carol"])


def test_real_voices_gathered_from_their_packages(tmp_path):
    """tts/corpus/real_voices.py reads both transcript formats (Asterisk's "name: text" list, gzipped, with tones
    left out and prompts in sub-folders; pocketsphinx's "<s> text </s> (name)"), writes the import layout, holds
    the voices marked so out, and names the apt packages a missing voice needs."""
    import gzip

    from tts.corpus.real_voices import RealVoice, build_real_corpus, gather, transcripts

    prompts = tmp_path / "asterisk"
    (prompts / "digits").mkdir(parents=True)
    for name in ("hello", "digits/1", "beep"):
        sf.write(prompts / f"{name}.wav", _tone(1.0, 16_000), 16_000)
    listing = tmp_path / "core-sounds.txt.gz"
    with gzip.open(listing, "wt", encoding="utf-8") as f:
        f.write("; a comment: not a prompt\n\nhello: Hello  there.\ndigits/1: one\nbeep: [a beep tone]\n"
                "absent: No recording of this one.\n")
    reader = tmp_path / "reader"
    reader.mkdir()
    sf.write(reader / "utt-01.wav", _tone(1.2, 16_000), 16_000)
    (reader / "transcription").write_text("<s> he was not an ill disposed young man </s> (utt-01)\n")
    voices = (RealVoice("prompter", "pkg-a", prompts, listing, held_out=False),
              RealVoice("reader", "pkg-b", reader, reader / "transcription", held_out=True))
    assert transcripts(voices[0]) == {"hello": "Hello there.", "digits/1": "one",
                                      "absent": "No recording of this one."}
    assert transcripts(voices[1]) == {"utt-01": "he was not an ill disposed young man"}
    assert gather(tmp_path / "layout", voices) == 3
    assert (tmp_path / "layout" / "prompter" / "digits_1.txt").read_text() == "one\n"
    stats = build_real_corpus(tmp_path / "corpus", voices=voices)
    utts = {u.id: u for u in read_manifest(tmp_path / "corpus")}
    assert stats["held_out_speakers"] == ["reader"] and utts["reader_utt-01"].split == "unseen"
    assert {u.speaker for u in utts.values()} == {"prompter", "reader"} and len(utts) == 3
    gone = RealVoice("gone", "pkg-c pkg-d", tmp_path / "nowhere", tmp_path / "nowhere.txt", held_out=True)
    with pytest.raises(CorpusImportError, match="apt-get install pkg-c pkg-d"):
        gather(tmp_path / "layout2", (*voices, gone))
