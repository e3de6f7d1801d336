"""Residual vector quantiser with quantizer dropout: one model for every bitrate."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from codec.quantization.core_vq import EuclideanCodebook


@dataclass
class QuantizedResult:
    """Output of `ResidualVectorQuantizer.forward`.

    Attributes:
        quantized: [B, D, F] sum of the used quantizers' codes (straight-through in training).
        codes: [B, K, F] indices of all K layers (layers past a sample's n_q are still computed).
        n_q: [B] quantizers used per sample.
        commitment_loss: mean squared distance between encoder output residuals and their codes.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    n_q: torch.Tensor
    commitment_loss: torch.Tensor


class ResidualVectorQuantizer(nn.Module):
    """K codebooks in sequence, each quantising what the previous ones left."""

    def __init__(self, dim: int, n_q: int, card: int, decay: float = 0.99, dead_fraction: float = 0.05) -> None:
        super().__init__()
        self.n_q, self.card = n_q, card
        self.layers = nn.ModuleList(EuclideanCodebook(dim, card, decay, dead_fraction=dead_fraction)
                                    for _ in range(n_q))

    def forward(self, z: torch.Tensor, n_q: torch.Tensor | int | None = None) -> QuantizedResult:
        """Quantise z [B, D, F]; in training, `n_q` per sample implements quantizer dropout."""
        B, D, F = z.shape
        if n_q is None:
            n_q = self.n_q
        n_q_t = torch.as_tensor(n_q, device=z.device).expand(B) if not torch.is_tensor(n_q) or n_q.dim() == 0 \
            else n_q.to(z.device)
        flat_z = z.transpose(1, 2).reshape(B * F, D)
        residual = flat_z.detach()
        # Straight-through: the sum of the used codes replaces z, gradients pass to z unchanged.
        quantized_sum = torch.zeros_like(residual)
        codes, commit = [], z.new_zeros(())
        frame_active = n_q_t.repeat_interleave(F)  # [B * F]
        for k, layer in enumerate(self.layers):
            idx = layer.encode(residual)
            active = (frame_active > k).to(z.dtype)[:, None]
            if self.training:
                # Every frame updates every codebook, whatever its dropout: the residual is defined
                # for all of them, and every process then runs the same collectives under DDP.
                fresh = not bool(layer.initialized)
                layer.update(residual, idx)
                if fresh:  # codes drawn from the random pre-init codebook mean nothing: re-assign
                    idx = layer.encode(residual)
            q = layer.decode(idx)
            commit = commit + ((flat_z - quantized_sum - q).pow(2) * active).sum() / max(float(active.sum()) * D, 1.0)
            quantized_sum = quantized_sum + q * active
            residual = residual - q
            codes.append(idx.view(B, F))
        quantized = flat_z + (quantized_sum - flat_z).detach()
        return QuantizedResult(quantized.view(B, F, D).transpose(1, 2), torch.stack(codes, 1), n_q_t,
                               commit / self.n_q)

    def encode(self, z: torch.Tensor, n_q: int) -> torch.Tensor:
        """z [B, D, F] -> codes [B, n_q, F] (int64)."""
        B, D, F = z.shape
        residual = z.transpose(1, 2).reshape(B * F, D)
        codes = []
        for layer in self.layers[:n_q]:
            idx = layer.encode(residual)
            residual = residual - layer.decode(idx)
            codes.append(idx.view(B, F))
        return torch.stack(codes, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, F] with 0 <= code < card (not checked here: validate at the boundary) -> [B, D, F]."""
        out = sum(self.layers[k].decode(codes[:, k]) for k in range(codes.shape[1]))
        return out.transpose(1, 2)
