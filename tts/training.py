"""Small pieces every trainer shares: the learning-rate schedule and atomic checkpoints."""
from __future__ import annotations

import math
from pathlib import Path

import torch


def warmup_cosine(step: int, peak: float, warmup: int, total: int, floor: float = 0.0) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then a cosine decay to `floor * peak` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(state: dict, path: str | Path) -> None:
    """torch.save to a side file, then rename: a run killed mid-write keeps its previous checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    torch.save(state, tmp)
    tmp.replace(path)
