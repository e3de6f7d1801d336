"""DDP helpers shared by the trainers: `torchrun --nproc_per_node N -m tts train ...` just works.

gloo on CPU, nccl on CUDA; a single process needs nothing set up.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup_distributed(device: str) -> torch.device:
    """Join the process group torchrun describes (if any); returns this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(device)


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any (so all ranks stop at the same step)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
