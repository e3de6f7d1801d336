"""SEANet-style causal encoder and mirror decoder (as in SoundStream / EnCodec).

Encoder: conv k7 -> for each stride s: 3 residual units (dilations 1, 3, 9),
ELU, strided conv (kernel 2s) doubling the channels -> ELU, conv k3 to the
latent dimension. The decoder mirrors it with transposed convs.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from codec.modules.conv import StreamingConv1d, StreamingConvTranspose1d

DILATIONS = (1, 3, 9)


class ResidualUnit(nn.Module):
    """x + conv1x1(ELU(conv_k3_dilated(ELU(x)))), hidden width halved."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.block = nn.Sequential(
            nn.ELU(), StreamingConv1d(channels, hidden, 3, dilation=dilation),
            nn.ELU(), StreamingConv1d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _channels(base: int, level: int, max_channels: int) -> int:
    return min(base * 2 ** level, max_channels)


class Encoder(nn.Module):
    """Waveform [B, 1, T] -> latent [B, D, T / prod(strides)]."""

    def __init__(self, channels: int, strides: Sequence[int], dimension: int, max_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [StreamingConv1d(1, channels, 7)]
        for level, stride in enumerate(strides):
            c_in, c_out = _channels(channels, level, max_channels), _channels(channels, level + 1, max_channels)
            layers += [ResidualUnit(c_in, d) for d in DILATIONS]
            layers += [nn.ELU(), StreamingConv1d(c_in, c_out, 2 * stride, stride=stride)]
        layers += [nn.ELU(), StreamingConv1d(_channels(channels, len(strides), max_channels), dimension, 3)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Decoder(nn.Module):
    """Latent [B, D, F] -> waveform [B, 1, F * prod(strides)]."""

    def __init__(self, channels: int, strides: Sequence[int], dimension: int, max_channels: int) -> None:
        super().__init__()
        levels = len(strides)
        layers: list[nn.Module] = [StreamingConv1d(dimension, _channels(channels, levels, max_channels), 7)]
        for i, stride in enumerate(reversed(strides)):
            level = levels - i
            c_in, c_out = _channels(channels, level, max_channels), _channels(channels, level - 1, max_channels)
            layers += [nn.ELU(), StreamingConvTranspose1d(c_in, c_out, 2 * stride, stride)]
            layers += [ResidualUnit(c_out, d) for d in DILATIONS]
        layers += [nn.ELU(), StreamingConv1d(channels, 1, 7)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)
