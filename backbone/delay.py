"""The delay pattern (MusicGen): K codebook streams offset by one step each.

Stream k at step t carries frame t - k, so one transformer step predicts all K
codebooks of different frames at once and codebook k is predicted after
codebooks < k of its frame are known. Chosen over a depth transformer because
it costs one backbone step per frame and no extra per-codebook steps: on this
CPU every per-step call counts (see backbone/README in the closing note).

Layout of `delay(codes)` for F frames, K streams: length F + K.
  t - k < 0   -> PAD (nothing yet)
  0 <= t - k < F -> codes[k, t - k]
  t - k == F  -> EOS (this stream is finished)
  t - k > F   -> PAD
"""
from __future__ import annotations

import torch


def delay(codes: torch.Tensor, pad: int, eos: int) -> torch.Tensor:
    """codes [K, F] -> delayed [K, F + K] (see module doc)."""
    k_streams, frames = codes.shape
    out = torch.full((k_streams, frames + k_streams), pad, dtype=codes.dtype, device=codes.device)
    for k in range(k_streams):
        out[k, k:k + frames] = codes[k]
        out[k, k + frames] = eos
    return out


def undelay(delayed: torch.Tensor) -> torch.Tensor:
    """delayed [K, F + K] -> codes [K, F]: the inverse of `delay`."""
    k_streams, length = delayed.shape
    frames = length - k_streams
    return torch.stack([delayed[k, k:k + frames] for k in range(k_streams)])


def loss_mask(frames: int, k_streams: int, device: torch.device | None = None) -> torch.Tensor:
    """[K, F + K] True where the delayed target is a code or the EOS (the PADs are fixed, not learnt)."""
    t = torch.arange(frames + k_streams, device=device)[None]
    k = torch.arange(k_streams, device=device)[:, None]
    return (t - k >= 0) & (t - k <= frames)
