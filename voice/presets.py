"""Built-in preset voices: embeddings of a few training speakers, shipped in assets/voices.json.

`tts voice presets` rebuilds the file from a corpus whenever the encoder changes,
so presets always match the shipped encoder version.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tts.corpus.manifest import read_manifest
from tts.modelfile import ASSETS
from voice.encoder import SpeakerEncoder
from voice.store import VoiceRecord, VoiceStoreError
from voice.verification import speaker_streams

PRESETS_FILE = ASSETS / "voices.json"
# preset name -> corpus speaker id (training speakers with the engines' default settings and a few variants)
PRESET_SPEAKERS = {
    "slt": "flite-slt-00", "rms": "flite-rms-00", "kal": "flite-kal16-00",
}
PRESET_ESPEAK_VOICES = {"us-m2": "en-us+m2", "rp-f1": "en-gb-x-rp+f1", "scot-f3": "en-gb-scotland+f3"}
SECONDS_PER_PRESET = 20.0


def preset_speakers(corpus: str | Path) -> dict[str, str]:
    """Preset name -> speaker id in `corpus` (espeak speakers are found by their voice)."""
    speakers = json.loads((Path(corpus) / "speakers.json").read_text(encoding="utf-8"))
    by_voice = {s["voice"]: s["id"] for s in speakers if s["engine"] == "espeak" and not s["held_out"]}
    known = {s["id"] for s in speakers if not s["held_out"]}
    chosen = {name: sid for name, sid in PRESET_SPEAKERS.items() if sid in known}
    chosen.update({name: by_voice[v] for name, v in PRESET_ESPEAK_VOICES.items() if v in by_voice})
    return chosen


def build_presets(corpus: str | Path, encoder: SpeakerEncoder, out: str | Path = PRESETS_FILE) -> dict:
    """Embed ~20 s of each preset speaker's training audio and write the presets file atomically."""
    chosen = preset_speakers(corpus)
    if not chosen:
        raise ValueError(f"{corpus} has none of the preset speakers")
    wanted = set(chosen.values())
    utts = [u for u in read_manifest(corpus, ["train"]) if u.speaker in wanted]
    streams = speaker_streams(corpus, utts, encoder.config.sample_rate, SECONDS_PER_PRESET)
    voices = []
    for name, sid in sorted(chosen.items()):
        x = streams[sid][: int(SECONDS_PER_PRESET * encoder.config.sample_rate)]
        voices.append({"name": name, "speaker": sid, "source": f"built-in voice (corpus speaker {sid})",
                       "clip_seconds": round(len(x) / encoder.config.sample_rate, 2),
                       "embedding": [round(float(v), 6) for v in encoder.embed(x, encoder.config.sample_rate)]})
    data = {"encoder_version": encoder.model_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "voices": voices}
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(out)
    return data


def load_presets(path: str | Path = PRESETS_FILE) -> dict[str, VoiceRecord]:
    """The built-in voices shipped with the package, by name (empty if the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {v["name"]: VoiceRecord(id=f"preset:{v['name']}", name=v["name"], created=data["created"],
                                   encoder_version=data["encoder_version"],
                                   embedding=np.asarray(v["embedding"], dtype=np.float32),
                                   clip_seconds=v["clip_seconds"], clip_sha256="", consent=v["source"],
                                   preset=True)
            for v in data["voices"]}


class BuiltInVoiceError(VoiceStoreError):
    """The voice ships with the package: it is not in any store, so it cannot be deleted or exported."""


def refuse_built_in(name: str, action: str) -> None:
    """Raise BuiltInVoiceError for a built-in `name` (the CLI and the server say why, not 'no enrolled voice')."""
    if name in load_presets():
        raise BuiltInVoiceError(f"{name!r} is a built-in voice, built into the package: it cannot be {action}")
