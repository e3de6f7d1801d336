"""Uncertainty of the benchmarks' figures: how far a mean over 30-40 clips or sentences can be trusted.

Written by hand (a few lines each) rather than importing scipy for them: the benchmarks compare two
systems on the same clips, so the paired difference's standard error, a Wilson interval for a share,
and a bootstrap over sentences for a ratio of error counts are all they need.
"""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.96   # two-sided 95 % for a normal distribution


def paired_mean_se(ours: np.ndarray, other: np.ndarray) -> tuple[float, float, int]:
    """Mean and standard error of per-item differences `ours - other`, over items both scored (NaN left out:
    PESQ finds nothing to score in a silent decode); the count used. NaN figures under two items."""
    diff = np.asarray(ours, dtype=float) - np.asarray(other, dtype=float)
    diff = diff[np.isfinite(diff)]
    if len(diff) < 2:
        return float("nan"), float("nan"), len(diff)
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff))), len(diff)


def wilson_interval(hits: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Interval for a share `hits / total` (Wilson score): sound near 0 and 1, where the normal one is not."""
    if total <= 0:
        return float("nan"), float("nan")
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def ratio_interval(numerators: np.ndarray, denominators: np.ndarray, draws: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of sum(numerators) / sum(denominators), resampling items (sentences) with
    replacement: e.g. our word errors over real audio's on the same sentences. NaN when the denominators are 0."""
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if len(num) == 0 or den.sum() <= 0:
        return float("nan"), float("nan")
    picks = np.random.default_rng(seed).integers(0, len(num), size=(draws, len(num)))
    sums = den[picks].sum(axis=1)
    ratios = num[picks].sum(axis=1)[sums > 0] / sums[sums > 0]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact p of `gained` items turning one way and `lost` the other when each way were equally likely
    (McNemar's exact test on the discordant pairs: e.g. sentences closest to their voice in one decode only)."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
