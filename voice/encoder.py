"""Speaker encoder: log-mel in, an L2-normalised speaker embedding out.

A small TDNN (x-vector / ECAPA family: dilated 1-D convolutions with residual
connections, attentive statistics pooling) trained with an additive angular
margin softmax. It is written by hand because it is ~1 M parameters and a few
lines; a long clip is embedded as the mean of its windows' embeddings so a
10-s enrollment clip and a 3-s one land in the same space.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from codec.losses import log_mel
from tts.audio import SAMPLE_RATE, resample, trim_silence
from tts.modelfile import ASSETS, load_model_file, save_model_file

DEFAULT_ENCODER = ASSETS / "voice_encoder.safetensors"
KIND = "voice-encoder"


@dataclass
class EncoderConfig:
    """Shape of the encoder and of its input features; saved inside every model file."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 512
    hop: int = 160                 # 10 ms frames
    n_mels: int = 64
    channels: int = 256
    pooled_channels: int = 768
    embedding_dim: int = 192
    window_seconds: float = 3.0    # long clips: mean of embeddings of windows this long
    window_hop_seconds: float = 1.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown encoder config keys {sorted(unknown)}")
        return cls(**data)


class _ResidualTDNN(nn.Module):
    """Dilated conv + BN + ReLU with a residual connection."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation)
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.norm(self.conv(x)))


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time (per channel)."""

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.attention(x), dim=-1)
        mean = (w * x).sum(-1)
        var = (w * x * x).sum(-1) - mean * mean
        return torch.cat([mean, var.clamp_min(1e-6).sqrt()], dim=1)


class SpeakerEncoder(nn.Module):
    """waveform [B, T] at `config.sample_rate` -> embedding [B, embedding_dim], unit length."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.stem = nn.Sequential(nn.Conv1d(config.n_mels, c, 5, stride=2, padding=2), nn.BatchNorm1d(c), nn.ReLU())
        self.blocks = nn.Sequential(_ResidualTDNN(c, 2), _ResidualTDNN(c, 3), _ResidualTDNN(c, 4))
        self.expand = nn.Sequential(nn.Conv1d(c, config.pooled_channels, 1), nn.BatchNorm1d(config.pooled_channels),
                                    nn.ReLU())
        self.pool = AttentiveStatsPool(config.pooled_channels)
        self.project = nn.Linear(2 * config.pooled_channels, config.embedding_dim)
        self.model_id = "untrained"

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Log-mel with the per-clip mean removed (so gain and a fixed channel colour cancel)."""
        cfg = self.config
        mel = log_mel(wave, cfg.sample_rate, n_fft=cfg.n_fft, hop=cfg.hop, n_mels=cfg.n_mels)
        return mel - mel.mean(dim=-1, keepdim=True)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.expand(self.blocks(self.stem(self.features(wave))))
        return F.normalize(self.project(self.pool(x)), dim=-1)

    @torch.inference_mode()
    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Embedding of a whole clip: silence trimmed, windows embedded in one batch, averaged."""
        cfg = self.config
        x = resample(np.asarray(samples, dtype=np.float32), sample_rate, cfg.sample_rate)
        x = trim_silence(x, cfg.sample_rate)
        if len(x) < cfg.hop * 50:
            raise ValueError("clip too short to embed (needs at least 0.5 s of sound)")
        win, hop = int(cfg.window_seconds * cfg.sample_rate), int(cfg.window_hop_seconds * cfg.sample_rate)
        starts = list(range(0, max(1, len(x) - win + 1), hop))
        if len(x) > win and starts[-1] + win < len(x):
            starts.append(len(x) - win)  # cover the tail too
        batch = torch.from_numpy(np.stack([x[s:s + win] for s in starts]) if len(x) >= win else x[None])
        emb = self(batch).mean(0)
        return F.normalize(emb, dim=0).numpy().astype(np.float32)


def save_encoder(model: SpeakerEncoder, path: str | Path, step: int = 0, extra: dict | None = None) -> str:
    """Write a shipped encoder file; returns its model id (the voices' `encoder_version`)."""
    return save_model_file(path, model.state_dict(), KIND, model.config.to_dict(), step, extra)


def load_encoder(path: str | Path | None = None) -> SpeakerEncoder:
    """Load an encoder file (the shipped one by default), in eval mode.

    Raises:
        ModelFileError: missing file, another kind of model, or weights that do not fit.
    """
    path = Path(path) if path is not None else DEFAULT_ENCODER
    return load_model_file(path, KIND, lambda config: SpeakerEncoder(EncoderConfig.from_dict(config)))[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
