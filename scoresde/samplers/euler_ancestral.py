"""Euler-ancestral sampling (k-diffusion's ``sample_euler_ancestral``) in ``(x̄, σ̄)``.

Each step from ``σ̄_i`` to ``σ̄_{i+1}`` splits the target noise level into a deterministic part
and fresh noise, ``σ̄_{i+1}² = σ_down² + σ_up²`` with

    σ_up = min(σ̄_{i+1}, η·sqrt(σ̄_{i+1}²·(σ̄_i² − σ̄_{i+1}²)/σ̄_i²)),

takes the Euler step of ``dx̄/dσ̄ = eps`` to ``σ_down`` and adds ``S_noise·σ_up·z``:

    x̄ ← x̄ + (σ_down − σ̄_i)·eps(x̄, σ̄_i) + S_noise·σ_up·z.

η = 1 draws the same noise fraction as DDPM's posterior (in the σ̄ picture); η = 0 is DDIM. The
step that ends at ``σ̄ = 0`` adds no noise. One network call per step.
"""

from __future__ import annotations

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
class EulerAncestralOptions(SamplerOptions):
    """``eta`` ∈ [0, 1]: the share of fresh noise (0 = DDIM); ``s_noise``: its scale."""

    eta: float = 1.0
    s_noise: float = 1.0

    def validate(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise InputError(f"eta must lie in [0, 1], got {self.eta}")
        if not 0.0 <= self.s_noise < float("inf"):
            raise InputError(f"s_noise must be a finite number >= 0, got {self.s_noise}")

    def unused(self) -> dict[str, str]:
        return {"s_noise": "with eta=0 (no fresh noise to scale)"} if self.eta == 0 else {}

    @property
    def stochastic(self) -> bool:
        return self.eta > 0 and self.s_noise > 0


def ancestral_split(sigma_from: Tensor, sigma_to: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """``(σ_down, σ_up)`` with ``σ_down² + σ_up² = σ_to²`` (see the module docstring); η = 0
    is the deterministic step in either direction (encoding runs it upwards)."""
    if eta == 0:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * torch.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2)
                                                        / sigma_from**2))
    return torch.sqrt(sigma_to**2 - sigma_up**2), sigma_up


def euler_ancestral(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None,
                    options: EulerAncestralOptions, callback: Callback | None = None) -> Tensor:
    """Euler-ancestral along ``grid``; the state is carried as ``x̄ = x/alpha``."""
    x_bar = x / batch_coeff(grid.alpha[0], x)
    for i in range(grid.steps):
        pred = model.predict(x_bar * batch_coeff(grid.alpha[i], x_bar), grid.t[i])
        sigma_down, sigma_up = ancestral_split(grid.sigma_bar[i], grid.sigma_bar[i + 1], options.eta)
        x_bar = x_bar + batch_coeff(sigma_down - grid.sigma_bar[i], x_bar) * pred.eps
        if options.stochastic and grid.sigma_bar[i + 1] > 0:
            z = noise.randn(x.shape, x.dtype, x.device)
            x_bar = x_bar + batch_coeff(options.s_noise * sigma_up, x_bar) * z
        report(callback, i, grid.t[i + 1], x_bar * batch_coeff(grid.alpha[i + 1], x_bar), pred)
    return x_bar * batch_coeff(grid.alpha[-1], x_bar)


SPEC = SamplerSpec("euler_ancestral", euler_ancestral, EulerAncestralOptions, grid="quadratic",
                   grid_geometric="uniform",
                   variants=(("euler ancestral", {}),),
                   paper="Euler-ancestral, k-diffusion (Crowson; Karras et al. 2022 notation)",
                   order="— (stochastic; η = 0: 1)", nfe="steps")
