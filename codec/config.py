"""The codec's configuration: saved inside every checkpoint, enough to rebuild the model."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class CodecConfig:
    """Architecture of a codec model.

    The frame rate is sample_rate / prod(strides). 25 Hz (hop 640 at 16 kHz) is
    the default because the backbone runs one transformer step per frame and a
    ~10 M-parameter step costs ~8-10 ms on one CPU thread: 50 Hz frames would
    need 0.5 s of compute per second of audio before anything else runs.
    """

    sample_rate: int = 16_000
    channels: int = 16
    max_channels: int = 256
    strides: tuple[int, ...] = (4, 4, 5, 8)
    dimension: int = 128
    n_q: int = 24
    card: int = 1024
    ema_decay: float = 0.99
    version: str = "0"
    # "seanet": the mirror of the encoder (transposed convs up). "istft": causal ConvNeXt blocks at
    # `decoder_hop` resolution predicting short-time spectra, inverse FFT + overlap-add
    # (codec/modules/istft.py: several times cheaper, output delayed by decoder_hop samples).
    decoder: str = "seanet"
    decoder_hop: int = 160
    decoder_dim: int = 256
    decoder_hidden: int = 768
    decoder_layers: int = 6
    decoder_phase: str = "absolute"   # istft: "absolute" or "integrated" phases (codec/modules/istft.py)
    decoder_harmonics: int = 0        # istft: oscillators of a harmonic source (codec/modules/harmonic.py); 0: none
    decoder_speaker_dim: int = 0      # istft: size of the speaker embedding that steers it (codec/modules/speaker.py)

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def bits_per_code(self) -> int:
        return math.ceil(math.log2(self.card))

    def kbps(self, n_q: int) -> float:
        return n_q * self.bits_per_code * self.frame_rate / 1000

    def n_q_for_kbps(self, kbps: float) -> int:
        """Quantizers giving the bitrate closest to `kbps` (at least 1, at most n_q).

        Raises:
            ValueError: `kbps` is not a positive finite number (NaN would reach round() as an uncaught error).
        """
        if not 0 < kbps < math.inf:
            raise ValueError(f"a bitrate must be a positive number of kbit/s, not {kbps}")
        per_q = self.kbps(1)
        n_q = max(1, min(self.n_q, round(kbps / per_q)))
        return n_q

    def to_dict(self) -> dict:
        d = asdict(self)
        d["strides"] = list(self.strides)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "CodecConfig":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}  # unknown (newer) keys are dropped
        if "strides" in kwargs:
            kwargs["strides"] = tuple(kwargs["strides"])
        return cls(**kwargs)
