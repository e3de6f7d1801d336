"""Running phases that streaming and offline passes compute alike."""
from __future__ import annotations

import math

import torch


def accumulate_phase(start: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
    """start [B, ...] + the cumulative sum of `moves` [B, T, ...] along dim 1, wrapped to [0, 2 pi).

    Summed in float64 and wrapped: a long offline pass and the same moves in streaming calls (which
    wrap between calls) then give the same phases to float32 precision. Returned in `moves`' dtype.
    """
    summed = start.double() + torch.cumsum(moves.double(), dim=1)
    return (summed - 2 * math.pi * torch.floor(summed / (2 * math.pi))).to(moves.dtype)
