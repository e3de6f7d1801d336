"""Small pieces every trainer shares: their common options, the learning-rate schedule, atomic checkpoints."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch


class TrainingSetupError(ValueError):
    """A trainer's data, checkpoint or options cannot start a run: the CLI shows it without a traceback."""


@dataclass
class TrainerOptions:
    """Options with the same name and meaning in every trainer (the CLI's `_add_trainer_args`).

    Each trainer's config extends it and sets its own defaults for the first five.
    """

    out_dir: str = "runs"
    export: str = ""
    steps: int = 1000
    lr: float = 1e-3
    valid_every: int = 500
    device: str = "cpu"
    threads: int = 1
    seed: int = 0
    log_every: int = 25
    ckpt_minutes: float = 5.0
    max_minutes: float = 0.0          # stop (after a checkpoint) when this much time has passed; 0 = no limit


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
