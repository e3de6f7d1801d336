"""Causal 1-d convolutions that run offline or chunk by chunk with identical output.

Padding for a causal conv with kernel k, dilation d and stride s:

    effective kernel  K = (k - 1) * d + 1
    left context      P = K - s          (zeros offline; the previous input while streaming)

    input   | P samples of context | n * s new samples |
    output  n frames, frame i sees inputs up to (i + 1) * s - 1: nothing from the future.

A transposed conv (kernel k = 2s typically) produces k - s samples past the
end of its input that need the next input to be complete: offline they are
dropped, while streaming they are kept and added to the next chunk's head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrizations

from codec.modules.streaming import StreamingModule


class StreamingContractError(ValueError):
    """A chunk does not respect the layer's stride (the caller must buffer)."""


@dataclass
class _ConvState:
    previous: torch.Tensor  # [B, C, P] the last P input samples
    batch_size: int


class StreamingConv1d(StreamingModule):
    """Causal Conv1d with weight normalisation; streaming chunks must be multiples of the stride."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = parametrizations.weight_norm(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, bias=bias))
        self.stride = stride
        self.context = (kernel_size - 1) * dilation + 1 - stride
        if self.context < 0:
            raise ValueError(f"kernel {kernel_size} (dilation {dilation}) shorter than stride {stride}")

    def _init_state(self, batch_size: int) -> _ConvState:
        w = self.conv.weight
        return _ConvState(torch.zeros(batch_size, self.conv.in_channels, self.context,
                                      device=w.device, dtype=w.dtype), batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, T] -> [B, C', T / stride]; T must be a multiple of the stride."""
        if x.shape[-1] % self.stride:
            raise StreamingContractError(
                f"length {x.shape[-1]} is not a multiple of the stride {self.stride}; buffer accordingly")
        if self._state is None:
            return self.conv(nn.functional.pad(x, (self.context, 0)))
        padded = torch.cat([self._state.previous, x], dim=-1)
        if self.context:
            self._state.previous = padded[..., padded.shape[-1] - self.context:]
        return self.conv(padded)


@dataclass
class _ConvTrState:
    partial: torch.Tensor | None  # [B, C, k - s] overlap tail (bias removed) waiting for the next chunk
    batch_size: int


class StreamingConvTranspose1d(StreamingModule):
    """Causal ConvTranspose1d (upsampling by `stride`) with weight normalisation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError("kernel_size must be at least the stride")
        self.convtr = parametrizations.weight_norm(
            nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride))
        self.stride = stride
        self.overlap = kernel_size - stride

    def _init_state(self, batch_size: int) -> _ConvTrState:
        return _ConvTrState(None, batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, T] -> [B, C', T * stride]."""
        y = self.convtr(x)
        n_out = x.shape[-1] * self.stride
        if self._state is None:
            return y[..., :n_out]
        if self._state.partial is not None:
            y = torch.cat([y[..., :self.overlap] + self._state.partial, y[..., self.overlap:]], dim=-1)
        tail = y[..., n_out:]
        bias = self.convtr.bias
        self._state.partial = tail - bias[None, :, None] if bias is not None else tail
        return y[..., :n_out]
