"""The synthetic speakers of the corpus: a base voice from flite, espeak-ng or
festival, multiplied by pitch, speaking rate and vocal-tract length (formant) changes.

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
# festival's diphone and HTS voices are recordings of ten more people (one American English;
# Italian, Czech, Finnish and Catalan reading English text with their own letter-to-sound rules).
# Their accents make them wrong for the backbone, but a codec needs vocal tracts, not words: its
# unseen-speaker loss is the spectral envelope of voices it never heard (docs/history/codec.md).
# voice -> the Debian package that ships it (the Czech and Catalan ones also need their language's
# festival package, FESTIVAL_LANGUAGE_PACKAGES).
FESTIVAL_VOICES = {"ked_diphone": "festvox-kdlpc16k", "lp_diphone": "festvox-italp16k",
                   "pc_diphone": "festvox-itapc16k", "czech_dita": "festvox-czech-dita",
                   "czech_krb": "festvox-czech-krb", "czech_machac": "festvox-czech-machac",
                   "czech_ph": "festvox-czech-ph", "hy_fi_mv_diphone": "festvox-suopuhe-mv",
                   "suo_fi_lj_diphone": "festvox-suopuhe-lj", "upc_ca_ona_hts": "festvox-ca-ona-hts"}
FESTIVAL_LANGUAGE_PACKAGES = ("festival-czech", "festival-ca")
FESTIVAL_FIXED_RATE = {"upc_ca_ona_hts"}  # measured: an HTS voice ignores Duration_Stretch
# Whole base voices kept out of training so "unseen speaker" really means unseen.
HELD_OUT_BASES = ("flite:awb", "espeak:en-029")


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker and the exact parameters that make its voice.

    Attributes:
        id: stable name, e.g. "flite-slt-03".
        engine: "flite", "espeak" or "festival".
        voice: engine voice name ("slt", or "en-us+f3" for espeak with its variant).
        pitch: flite: mean f0 in Hz; espeak: its 0-99 pitch setting; festival: 0 (the voice's own
            intonation; the vtl warp moves it).
        pitch_range: flite: f0 standard deviation in Hz; espeak and festival: 0 (no such setting).
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


def make_speakers(n_flite: int, n_espeak: int, seed: int, n_festival: int = 0) -> list[Speaker]:
    """Deterministic speaker catalogue: `n_flite` + `n_espeak` + `n_festival` distinct voices.
    The festival speakers draw from a random stream of their own, so adding them leaves the others
    (and so the default corpus) exactly as they were."""
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
    festival_rng = random.Random(f"{seed}:festival")
    festival_names = sorted(FESTIVAL_VOICES)
    for i in range(n_festival):
        voice = festival_names[i % len(festival_names)]
        original = i < len(festival_names)
        speakers.append(Speaker(
            id=f"festival-{voice.replace('_', '-')}-{i // len(festival_names):02d}", engine="festival",
            voice=voice, pitch=0.0, pitch_range=0.0,
            rate=1.0 if original or voice in FESTIVAL_FIXED_RATE else round(festival_rng.uniform(0.85, 1.15), 3),
            vtl=1.0 if original else round(festival_rng.uniform(0.88, 1.14), 3)))
    ids = [s.id for s in speakers]
    assert len(set(ids)) == len(ids), "speaker ids must be unique"
    return speakers
