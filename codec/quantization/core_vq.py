"""Vector quantisation with EMA codebooks (VQ-VAE-2 / SoundStream), written for this project.

- codebook learned by exponential moving averages of the assigned vectors,
  not by gradients (more stable, no codebook loss needed);
- initialised from data with a few k-means iterations on the first batch;
- dead codes restarted from random current inputs: a code is dead when its EMA usage
  falls below `dead_fraction` of the mean usage (an absolute threshold would depend on
  the batch size: with 400 frames a step for 1024 codes the mean usage is 0.4, and a
  threshold of 1 restarted most of the codebook at every step);
- straight-through estimator: forward uses the code, backward the identity.
Under torch.distributed the EMA statistics are summed over processes so that
every replica keeps the same codebook.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def _broadcast(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(t, 0)
    return t


def kmeans(samples: torch.Tensor, k: int, iters: int = 10) -> torch.Tensor:
    """k centroids of samples [N, D] (N may be < k: samples are then drawn with replacement)."""
    idx = torch.randint(0, samples.shape[0], (k,), device=samples.device)
    centroids = samples[idx].clone()
    for _ in range(iters):
        assign = torch.cdist(samples, centroids).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).to(samples.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, samples)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class EuclideanCodebook(nn.Module):
    """One codebook of `size` vectors of `dim`, updated by EMA."""

    def __init__(self, dim: int, size: int, decay: float = 0.99, eps: float = 1e-5,
                 dead_fraction: float = 0.05) -> None:
        super().__init__()
        self.size, self.decay, self.eps, self.dead_fraction = size, decay, eps, dead_fraction
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("embed", torch.randn(size, dim) * 0.1)
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_avg", self.embed.clone())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, D] -> nearest code indices [N].

        argmin ||x - e||^2 = argmin (||e||^2 - 2 x.e): the ||x||^2 term is the same for every code.
        """
        return torch.addmm(self.embed.pow(2).sum(1)[None], x, self.embed.t(), alpha=-2.0).argmin(dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(codes, self.embed)

    @torch.no_grad()
    def _init_from_data(self, x: torch.Tensor) -> None:
        centroids = _broadcast(kmeans(x, self.size))
        self.embed.copy_(centroids)
        self.embed_avg.copy_(centroids)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA step with the vectors x [N, D] assigned to `codes` [N], then restart dead codes."""
        if not bool(self.initialized):
            self._init_from_data(x)
            return
        counts = _all_reduce(torch.bincount(codes, minlength=self.size).to(x.dtype))
        sums = _all_reduce(torch.zeros_like(self.embed).index_add_(0, codes, x))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.size * self.eps) * n  # Laplace smoothing
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        mean_usage = self.cluster_size.mean()
        dead = self.cluster_size < self.dead_fraction * mean_usage
        if bool(dead.any()) and x.shape[0] > 0:
            picks = _broadcast(x[torch.randint(0, x.shape[0], (self.size,), device=x.device)])
            self.embed[dead] = picks[dead]
            self.cluster_size[dead] = mean_usage  # a fair start, not instantly dead again
            self.embed_avg[dead] = picks[dead] * mean_usage
