"""Multi-scale STFT discriminator (EnCodec style), written for this project.

Each scale looks at the complex STFT (real and imaginary parts as two
channels) through 2-d convolutions dilated along time, so it judges both
magnitude and phase at that resolution.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrizations


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, channels: int = 32, dilations: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        wn = parametrizations.weight_norm
        layers = [wn(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in dilations:
            layers.append(wn(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1),
                                       padding=(d, 4))))
        layers.append(wn(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(layers)
        self.out = wn(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B, 1, T] -> (logits, feature maps)."""
        window = torch.hann_window(self.n_fft, device=x.device, dtype=x.dtype)
        spec = torch.stft(x.flatten(1), self.n_fft, self.hop, window=window, return_complex=True)
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, freq]
        feats = []
        for conv in self.convs:
            h = nn.functional.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, fft_sizes: Sequence[int] = (2048, 1024, 512), channels: int = 32) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in fft_sizes)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, feats = [], []
        for d in self.discriminators:
            lg, ft = d(x)
            logits.append(lg)
            feats.append(ft)
        return logits, feats
