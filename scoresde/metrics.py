"""Distances between sample sets, for checking samplers against exact draws.

* :func:`mmd2` — unbiased squared maximum mean discrepancy (Gretton et al. 2012) with a sum of
  Gaussian kernels at fixed bandwidths ``k(x, y) = Σ_h exp(−‖x − y‖² / (2 h²))``. Under equal
  distributions its expectation is 0 and it fluctuates around 0 with O(1/n) spread.
* :func:`sliced_wasserstein` — mean over random unit directions of the 1-D Wasserstein-2
  distance between the projected sets (equal sizes).

Both compute in float64 and return Python floats.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.errors import InputError


def _flat(x: Tensor) -> Tensor:
    if x.ndim < 2 or not torch.isfinite(x).all():
        raise InputError(f"expected a finite (n, ...) batch of samples, got shape {tuple(x.shape)}")
    return x.flatten(1).to(torch.float64)


def mmd2(x: Tensor, y: Tensor, bandwidths: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)) -> float:
    """Unbiased MMD² between samples ``x`` (n, …) and ``y`` (m, …); n, m ≥ 2."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise InputError(
            f"need two sets of >= 2 samples of one dimension, got {tuple(x.shape)}, {tuple(y.shape)}"
        )

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2.0 * h * h)) for h in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 128,
                       generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-2 distance between equal-size sample sets."""
    x, y = _flat(x), _flat(y)
    if x.shape != y.shape:
        raise InputError(f"need sets of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    dirs = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ dirs, dim=0)
    py, _ = torch.sort(y @ dirs, dim=0)
    return float((px - py).pow(2).mean().sqrt())
