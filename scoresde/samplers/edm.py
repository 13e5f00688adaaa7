"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): Heun with "churn", in ``(x̄, σ̄)``.

In DDIM coordinates ``x̄ = x/alpha``, ``σ̄ = sigma/alpha`` the PF-ODE is ``dx̄/dσ̄ = eps`` (EDM's
eq. 4 with ``s = 1``), and the denoiser is ``D(x̄; σ̄) = x0``. Step ``i`` from ``σ̄_i`` to
``σ̄_{i+1}``:

    γ = min(S_churn/n, √2 − 1) if S_tmin ≤ σ̄_i ≤ S_tmax else 0
    σ̂ = σ̄_i·(1 + γ),   x̂ = x̄_i + sqrt(σ̂² − σ̄_i²)·S_noise·z            (add noise: "churn")
    d = (x̂ − D(x̂; σ̂))/σ̂,   x̄_{i+1} = x̂ + (σ̄_{i+1} − σ̂)·d               (Euler)
    if σ̄_{i+1} ≠ 0 and heun:  d' = (x̄_{i+1} − D(x̄_{i+1}; σ̄_{i+1}))/σ̄_{i+1},
                             x̄_{i+1} = x̂ + (σ̄_{i+1} − σ̂)·(d + d')/2      (2nd-order correction)

with ``n`` the number of steps. ``S_churn = 0`` is the deterministic Heun sampler (EDM
Algorithm 1); ``heun=False`` is k-diffusion's ``sample_euler`` with churn. σ̂ lives on the SDE's
range: where ``σ̄_i(1 + γ)`` would pass ``σ̄(T)`` (churn on the first step from T), ``γ`` is
reduced so that ``σ̂ = σ̄(T)`` — the noise level the prior was drawn at. NFE: 2 per step, 1 for
Euler or for a step ending at ``σ̄ = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerOptions, SamplerSpec, report
from scoresde.sde import batch_coeff


@dataclass(frozen=True)
class EDMOptions(SamplerOptions):
    """``s_churn`` ≥ 0 (total churn; 0 = deterministic), ``s_tmin``/``s_tmax``: the σ̄ range where
    churn applies, ``s_noise``: scale of the added noise, ``heun``: second-order correction."""

    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    heun: bool = True

    def validate(self) -> None:
        if not self.s_churn >= 0:
            raise InputError(f"s_churn must be >= 0, got {self.s_churn}")
        if not 0 <= self.s_tmin <= self.s_tmax:
            raise InputError(f"need 0 <= s_tmin <= s_tmax, got s_tmin={self.s_tmin}, s_tmax={self.s_tmax}")
        if not self.s_noise >= 0 or math.isinf(self.s_noise):
            raise InputError(f"s_noise must be a finite number >= 0, got {self.s_noise}")

    def unused(self) -> dict[str, str]:
        if self.s_churn == 0:
            why = "with s_churn=0 (no churn: s_tmin, s_tmax and s_noise shape the churn's noise)"
            return {"s_tmin": why, "s_tmax": why, "s_noise": why}
        return {}

    @property
    def stochastic(self) -> bool:
        return self.s_churn > 0 and self.s_noise > 0


def edm(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None, options: EDMOptions,
        callback: Callback | None = None) -> Tensor:
    """EDM's Algorithm 2 along ``grid``; the state is carried as ``x̄ = x/alpha``."""
    sde = model.sde
    n = grid.steps
    sigma_bar_max = sde.sigma_bar(sde.T)
    x_bar = x / batch_coeff(grid.alpha[0], x)

    def denoise(x_bar: Tensor, sigma_bar: Tensor) -> Tensor:
        t = sde.t_from_sigma_bar(sigma_bar)
        return model.predict(x_bar * batch_coeff(sde.alpha(t), x_bar), t).x0

    for i in range(n):
        s_i, s_next = grid.sigma_bar[i], grid.sigma_bar[i + 1]
        churned = options.s_tmin <= s_i <= options.s_tmax
        gamma = min(options.s_churn / n, math.sqrt(2.0) - 1.0) if churned else 0.0
        s_hat = torch.minimum(s_i * (1.0 + gamma), sigma_bar_max) if gamma > 0 else s_i
        if s_hat > s_i:
            z = noise.randn(x.shape, x.dtype, x.device)
            x_bar = x_bar + batch_coeff(torch.sqrt(s_hat**2 - s_i**2) * options.s_noise, x_bar) * z
        x0 = denoise(x_bar, s_hat)
        d = (x_bar - x0) / batch_coeff(s_hat, x_bar)
        x_next = x_bar + batch_coeff(s_next - s_hat, x_bar) * d
        if options.heun and s_next > 0:
            d_next = (x_next - denoise(x_next, s_next)) / batch_coeff(s_next, x_next)
            x_next = x_bar + batch_coeff(s_next - s_hat, x_bar) * 0.5 * (d + d_next)
        x_bar = x_next
        report(callback, i, grid.t[i + 1], x_bar * batch_coeff(grid.alpha[i + 1], x_bar))
    return x_bar * batch_coeff(grid.alpha[-1], x_bar)


SPEC = SamplerSpec(
    "edm", edm, EDMOptions, grid="logsnr",
    variants=(("edm heun", {}), ("edm churn=40", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0,
                                                   "s_noise": 1.003}),
              ("edm euler", {"heun": False})),
    paper="EDM, Karras et al. 2022, Alg. 1–2", order="2 (heun, no churn)",
    nfe="2·steps − 1 (grid to σ = 0; heun=False: steps)",
)
