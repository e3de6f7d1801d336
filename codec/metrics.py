"""Speech quality scores of a decoded signal against its reference: PESQ-WB, STOI, log-mel L1.

Shared by `tts bench codec` and the codec trainer's validation. PESQ and STOI
come from the `pesq` and `pystoi` packages (the `bench` extra): log-mel
distance alone misses what they hear (a decoder's phase errors leave the
mel spectrum nearly intact and make the speech buzz).
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch

from codec.losses import log_mel


def perceptual_metrics_available() -> bool:
    """Whether PESQ and STOI can be computed here (the `bench` extra is installed)."""
    return all(importlib.util.find_spec(name) is not None for name in ("pesq", "pystoi"))


def quality_scores(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> tuple[float, float, float]:
    """(PESQ-WB, STOI, log-mel L1) of `deg` against `ref`, both 1-d at `sample_rate` (16 kHz for PESQ-WB).

    PESQ is NaN where it finds no speech to score (a silent decode), rather than an exception.
    """
    from pesq import PesqError, pesq
    from pystoi import stoi

    n = min(len(ref), len(deg))
    ref, deg = ref[:n], deg[:n]
    p = pesq(sample_rate, ref, deg, "wb", on_error=PesqError.RETURN_VALUES)
    s = stoi(ref, deg, sample_rate, extended=False)
    m = float((log_mel(torch.from_numpy(deg)[None], sample_rate)
               - log_mel(torch.from_numpy(ref)[None], sample_rate)).abs().mean())
    return p, s, m
