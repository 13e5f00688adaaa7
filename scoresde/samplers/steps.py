"""Step maths shared by the samplers: Gaussian reverse steps between two times ``s < t``.

The forward transition of every SDE here is Gaussian, ``x_t | x_s ~ N(a·x_s, σ²_{t|s})`` with
``a = alpha_t/alpha_s`` and ``σ²_{t|s} = sigma_t²·(1 − δ)``, where

    δ = (a·sigma_s / sigma_t)²  ∈ [0, 1)

is the share of ``x_t``'s noise already present at ``s``. The posterior ``q(x_s | x_t, x_0)`` has
variance ``σ̃² = sigma_s²·(1 − δ)`` (DDPM's β̃ for VP, SMLD's for VE).

Every reverse step keeping the marginals ``N(alpha_s·x_0, sigma_s²)`` given ``x_0`` is (DDIM,
Song et al. 2021, eq. 12)

    x_s = alpha_s·x0 + sqrt(sigma_s² − c²)·eps + c·z,

with ``x0``, ``eps`` the prediction at ``(x_t, t)``: ``c = 0`` is DDIM (the Euler step of the
PF-ODE), ``c = η·σ̃`` DDIM-η, ``c = σ̃`` DDPM ancestral sampling. DDPM's "β" variance keeps the
posterior mean and draws the noise with ``σ_{t|s}`` instead. The coefficients are written in
terms of δ so that none is a difference of nearly equal numbers, and read the step's ends from
a precomputed :class:`~scoresde.grids.GridTable`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.grids import GridTable
from scoresde.model import Prediction
from scoresde.sde import batch_coeff


def noise_share(grid: GridTable, i: int) -> Tensor:
    """``δ = (alpha_t·sigma_s / (alpha_s·sigma_t))²`` for the step ``t = grid.t[i] → s = grid.t[i+1]``."""
    return (grid.alpha[i] * grid.sigma[i + 1] / (grid.alpha[i + 1] * grid.sigma[i])) ** 2


def ddim_coefficients(grid: GridTable, i: int, eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(alpha_s, sqrt(sigma_s² − c²), c)`` with ``c = η·σ̃`` for step ``i``."""
    alpha_s, sigma_s = grid.alpha[i + 1], grid.sigma[i + 1]
    if eta == 0:  # deterministic; also valid for s > t (DDIM inversion), where δ > 1
        return alpha_s, sigma_s, torch.zeros_like(sigma_s)
    delta = noise_share(grid, i)
    eps_coef = sigma_s * torch.sqrt((1.0 - eta * eta) + eta * eta * delta)
    return alpha_s, eps_coef, eta * sigma_s * torch.sqrt(1.0 - delta)


def ancestral_coefficients(grid: GridTable, i: int, variance: str) -> tuple[Tensor, Tensor, Tensor]:
    """Posterior mean with noise std ``σ̃`` (``"posterior"``) or ``σ_{t|s}`` (``"beta"``), step ``i``."""
    delta = noise_share(grid, i)
    sigma_s = grid.sigma[i + 1]
    noise_scale = sigma_s if variance == "posterior" else grid.sigma[i]
    return grid.alpha[i + 1], sigma_s * torch.sqrt(delta), noise_scale * torch.sqrt(1.0 - delta)


def gaussian_step(pred: Prediction, alpha_s: Tensor, eps_coef: Tensor, noise_std: Tensor,
                  z: Tensor | None) -> Tensor:
    """``x_s = alpha_s·x0 + eps_coef·eps + noise_std·z``; ``z = None`` draws no noise."""
    x = pred.x
    out = batch_coeff(alpha_s, x) * pred.x0 + batch_coeff(eps_coef, x) * pred.eps
    if z is not None:
        out = out + batch_coeff(noise_std, x) * z
    return out
