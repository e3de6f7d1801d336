"""The synthetic speakers of the corpus: a base voice from flite or espeak-ng,
multiplied by pitch, speaking rate and vocal-tract length (formant) changes.

A speaker is fully described by its parameters, so the same seed always gives
the same speakers and each one can be regenerated or audited later.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

# flite's voices are built from recordings of real people (CMU ARCTIC): the most
# human-sounding, so they get most of the speakers and most of the hours.
# kal (8 kHz) is left out: kal16 is the same speaker at 16 kHz.
FLITE_VOICES = {"slt": 170.0, "rms": 105.0, "awb": 115.0, "kal16": 105.0}  # voice -> natural f0 (Hz)
# Measured: rms ignores int_f0_target_mean, so its pitch moves only with the vtl warp.
FLITE_FIXED_PITCH = {"rms"}
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                 "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# espeak-ng variants that sound least robotic (klatt/robot/whisper variants excluded).
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "Andy", "Annie", "aunty", "boris", "david", "ed", "Gene", "grandma",
                   "grandpa", "iven", "john", "kaukovalta", "linda", "max", "Michael",
                   "norbert", "paul", "pablo", "quincy", "rob", "robert", "steph", "travis")
# Whole base voices kept out of training so "unseen speaker" really means unseen.
HELD_OUT_BASES = ("flite:awb", "espeak:en-029")


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker and the exact parameters that make its voice.

    Attributes:
        id: stable name, e.g. "flite-slt-03".
        engine: "flite" or "espeak".
        voice: engine voice name ("slt", or "en-us+f3" for espeak with its variant).
        pitch: flite: mean f0 in Hz; espeak: its 0-99 pitch setting.
        pitch_range: flite: f0 standard deviation in Hz; espeak: 0 (its CLI has no range setting).
        rate: speaking-rate factor (1.0 = engine default; >1 is faster).
        vtl: vocal-tract length factor; formants are multiplied by it (>1: smaller vocal tract).
        held_out: never used for training (unseen-speaker tests).
    """

    id: str
    engine: str
    voice: str
    pitch: float
    pitch_range: float
    rate: float
    vtl: float
    held_out: bool = False

    @property
    def base(self) -> str:
        return f"{self.engine}:{self.voice.split('+')[0]}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Speaker":
        return cls(**data)


def make_speakers(n_flite: int, n_espeak: int, seed: int) -> list[Speaker]:
    """Deterministic speaker catalogue: `n_flite` + `n_espeak` distinct voices."""
    rng = random.Random(seed)
    speakers: list[Speaker] = []
    flite_names = sorted(FLITE_VOICES)
    for i in range(n_flite):
        voice = flite_names[i % len(flite_names)]
        # First speaker of each voice is the unmodified original.
        original = i < len(flite_names)
        vtl = 1.0 if original else round(rng.uniform(0.88, 1.14), 3)
        f0 = FLITE_VOICES[voice] * (1.0 if original else rng.uniform(0.8, 1.3))
        if voice in FLITE_FIXED_PITCH:
            vtl = 1.0 if original else round(rng.uniform(0.85, 1.2), 3)
            f0 = FLITE_VOICES[voice] * vtl
        speakers.append(Speaker(
            id=f"flite-{voice}-{i // len(flite_names):02d}", engine="flite", voice=voice,
            pitch=round(f0, 1), pitch_range=round(f0 * (0.12 if original else rng.uniform(0.08, 0.2)), 1),
            rate=1.0 if original else round(rng.uniform(0.85, 1.15), 3), vtl=vtl,
            held_out=f"flite:{voice}" in HELD_OUT_BASES))
    combos = [(b, v) for b in ESPEAK_VOICES for v in ESPEAK_VARIANTS]
    rng.shuffle(combos)
    for i in range(n_espeak):
        base, variant = combos[i % len(combos)]
        speakers.append(Speaker(
            id=f"espeak-{base}-{variant.lower()}-{i:03d}", engine="espeak", voice=f"{base}+{variant}",
            pitch=float(rng.randint(25, 75)), pitch_range=0.0,
            rate=round(rng.uniform(0.85, 1.15), 3), vtl=round(rng.uniform(0.92, 1.08), 3),
            held_out=f"espeak:{base}" in HELD_OUT_BASES))
    ids = [s.id for s in speakers]
    assert len(set(ids)) == len(ids), "speaker ids must be unique"
    return speakers
