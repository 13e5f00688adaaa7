"""DDPM ancestral sampling (Ho et al. 2020) and its SMLD counterpart for VE.

Each step draws ``x_s ~ N(μ̃(x_t, x0), v)`` with ``μ̃`` the posterior mean of
``q(x_s | x_t, x_0 = x0(x_t, t))`` and ``v`` the posterior variance β̃ (``"posterior"``, the
default) or the forward variance β (``"beta"``, as score_sde's ancestral predictor and DDPM's
σ² = β choice). As in DDPM, the step that ends the grid adds no noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerOptions, SamplerSpec, report
from scoresde.samplers.steps import ancestral_coefficients, gaussian_step

Variance = Literal["posterior", "beta"]


@dataclass(frozen=True)
class AncestralOptions(SamplerOptions):
    """``variance``: the reverse step's noise, DDPM's β̃ (``"posterior"``) or β (``"beta"``)."""

    variance: Variance = "posterior"


def ancestral(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource,
              options: AncestralOptions, callback: Callback | None = None) -> Tensor:
    """DDPM ancestral sampling along ``grid``; one network call per step."""
    n = grid.steps
    for i in range(n):
        pred = model.predict(x, grid.t[i])
        alpha_s, eps_coef, noise_std = ancestral_coefficients(grid, i, options.variance)
        z = noise.randn(x.shape, x.dtype, x.device) if i < n - 1 else None
        x = gaussian_step(pred, alpha_s, eps_coef, noise_std, z)
        report(callback, i, grid.t[i + 1], x, pred)
    return x


SPEC = SamplerSpec(
    "ancestral", ancestral, AncestralOptions, grid="quadratic", grid_geometric="uniform",
    variants=(("ancestral posterior", {"variance": "posterior"}), ("ancestral beta", {"variance": "beta"})),
    paper="DDPM ancestral sampling, Ho et al. 2020 (SMLD's for VE, Song & Ermon 2019)",
    order="— (stochastic)", nfe="steps",
)
