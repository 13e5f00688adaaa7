"""Fréchet distance between Gaussians fitted to feature sets (the FID formula, Heusel et al. 2017):

    FD = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}).

It is biased upwards for finite sets (more so for fewer samples and more feature
dimensions), so only distances computed from equally many samples are comparable; the
benchmarks report the distance of real held-out data computed the same way as the floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg
from torch import Tensor


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a feature set (float64), and how many samples made them."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def feature_stats(features: Tensor | np.ndarray) -> FeatureStats:
    """Mean and (unbiased) covariance of ``(n, d)`` features, n ≥ 2."""
    f = features.detach().to("cpu", torch.float64).numpy() if isinstance(features, Tensor) else np.asarray(
        features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2 or not np.isfinite(f).all():
        raise ValueError(f"need finite features of shape (n >= 2, d), got {f.shape}")
    return FeatureStats(f.mean(0), np.cov(f, rowvar=False), len(f))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """The Fréchet distance between the Gaussians of ``a`` and ``b``."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature dimensions differ: {a.mu.shape} vs {b.mu.shape}")
    diff = a.mu - b.mu
    cross = trace_sqrt_product(a.sigma, b.sigma)
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * cross)


def trace_sqrt_product(sa: np.ndarray, sb: np.ndarray) -> float:
    """``tr((Σ_a Σ_b)^{1/2})`` for symmetric PSD ``Σ_a, Σ_b``, as ``Σ √λ_i`` of the symmetric PSD
    ``Σ_a^{1/2} Σ_b Σ_a^{1/2}`` (same eigenvalues as ``Σ_a Σ_b``): no complex round-off."""
    w, v = linalg.eigh(sa)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    lam = linalg.eigvalsh(root @ sb @ root)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())
