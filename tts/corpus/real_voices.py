"""`tts data real`: a corpus of real human voices, transcribed, from Debian packages (no other network).

Why: every voice `tts data build` makes is synthetic (espeak-ng, flite), and so is every voice the benches
hold out. Users enroll real people. Debian ships a few real, transcribed, wideband (16 kHz) voices: the
Asterisk PBX prompts (G.722; CC-BY-SA 3.0: Allison Smith in English, June Wallack in French, Carlo in
Italian, a Russian speaker) and five sentences of a LibriVox reader in pocketsphinx's test data. The English
voices are held out (the benches' `unseen` split: judged, never trained on); the other three are for
training, since a codec and a speaker encoder hear voices, not languages. Allison's Spanish prompts are left
out: her voice is held out.

The G.722 files are decoded by ffmpeg (apt), then `tts data import` does the rest.
"""
from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tts.corpus.importer import CorpusImportError, import_corpus

ASTERISK = Path("/usr/share/asterisk/sounds")
DOCS = Path("/usr/share/doc")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


@dataclass(frozen=True)
class RealVoice:
    speaker: str
    packages: str          # what `apt-get install` needs for it
    folder: Path           # its recordings
    transcripts: Path      # Asterisk's "name: text" list, or pocketsphinx's "<s> text </s> (name)" lines
    held_out: bool


def _asterisk(speaker: str, lang: str, folder: str, held_out: bool) -> RealVoice:
    return RealVoice(speaker, f"asterisk-core-sounds-{lang}-g722 asterisk-core-sounds-{lang}", ASTERISK / folder,
                     DOCS / f"asterisk-core-sounds-{lang}" / f"core-sounds-{lang}.txt.gz", held_out)


VOICES = (
    _asterisk("allison-en", "en", "en_US_f_Allison", held_out=True),
    RealVoice("librivox-en", "pocketsphinx-testdata", LIBRIVOX, LIBRIVOX / "transcription", held_out=True),
    _asterisk("june-fr", "fr", "fr_CA_f_June", held_out=False),
    _asterisk("carlo-it", "it", "it_IT_m_Carlo", held_out=False),
    _asterisk("ivr-ru", "ru", "ru_RU_f_IvrvoiceRU", held_out=False),
)


def transcripts(voice: RealVoice) -> dict[str, str]:
    """Recording name (relative to its folder, no suffix) -> its text; tones and beeps ("[...]") left out."""
    opener = gzip.open if voice.transcripts.suffix == ".gz" else open
    with opener(voice.transcripts, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if voice.transcripts.suffix == ".gz":
        pairs = (line.split(":", 1) for line in lines if ":" in line and not line.startswith(";"))
    else:
        matches = (re.fullmatch(r"<s>(.*)</s>\s*\((.*)\)", line.strip()) for line in lines)
        pairs = ((m.group(2), m.group(1)) for m in matches if m)
    texts = {name.strip(): " ".join(text.split()) for name, text in pairs}
    return {name: text for name, text in texts.items() if text and "[" not in text}


def _audio_of(voice: RealVoice, name: str) -> Path | None:
    for suffix in (".g722", ".wav"):
        path = voice.folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def gather(dst: Path, voices: tuple[RealVoice, ...] = VOICES) -> int:
    """Write each voice's transcribed recordings as `dst/SPEAKER/NAME.wav` + `.txt` (`tts data import`'s layout);
    returns how many.

    Raises:
        CorpusImportError: a package or ffmpeg is missing (naming the apt-get command).
    """
    missing = [v.packages for v in voices if not (v.folder.is_dir() and v.transcripts.is_file())]
    if shutil.which("ffmpeg") is None and any(next(v.folder.rglob("*.g722"), None) for v in voices
                                              if v.folder.is_dir()):
        missing.insert(0, "ffmpeg")
    if missing:
        raise CorpusImportError(f"the real voices need Debian packages: apt-get install {' '.join(missing)}")
    count = 0
    for voice in voices:
        (dst / voice.speaker).mkdir(parents=True, exist_ok=True)
        for name, text in sorted(transcripts(voice).items()):
            audio = _audio_of(voice, name)
            if audio is None:
                continue
            out = dst / voice.speaker / f"{name.replace('/', '_')}.wav"
            if audio.suffix == ".g722":   # raw G.722 (16 kHz) has no header: name the format
                subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "g722", "-i", str(audio),
                                str(out)], check=True)
            else:
                shutil.copyfile(audio, out)
            out.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
            count += 1
    return count


def build_real_corpus(out_dir: str | Path, workers: int = 1, voices: tuple[RealVoice, ...] = VOICES) -> dict:
    """The corpus of `voices` at `out_dir` (`import_corpus`'s figures): the held-out ones in `unseen`."""
    with tempfile.TemporaryDirectory(prefix="real_voices_") as tmp:
        gather(Path(tmp), voices)
        return import_corpus(tmp, out_dir, workers=workers, held_out=[v.speaker for v in voices if v.held_out])
