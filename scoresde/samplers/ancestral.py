"""DDPM ancestral sampling (Ho et al. 2020) and its SMLD counterpart for VE.

Each step draws ``x_s ~ N(μ̃(x_t, x0), v)`` with ``μ̃`` the posterior mean of
``q(x_s | x_t, x_0 = x0(x_t, t))`` and ``v`` one of (see :mod:`scoresde.samplers.steps`):

* ``"posterior"``: the posterior variance β̃;
* ``"beta"``: the forward variance β (score_sde's ancestral predictor, DDPM's σ² = β);
* ``"learned"``: the model's ``Σ_θ = exp(v·log β + (1 − v)·log β̃)`` (Nichol & Dhariwal 2021),
  for a model with a learned variance (``ScoreModel(..., learned_variance=True)``);
* ``"analytic"``: Analytic-DPM's optimal ``β̃ + k²·x0_var`` (Bao et al. 2022), for a model wrapped
  in :class:`scoresde.variance.AnalyticVariance`;
* ``"auto"`` (default): ``"learned"`` when the model has a learned variance, else ``"posterior"``.

As in DDPM, the step that ends the grid adds no noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerOptions, SamplerSpec, report
from scoresde.samplers.steps import Variance, resolve_variance, reverse_step


@dataclass(frozen=True)
class AncestralOptions(SamplerOptions):
    """``variance``: the reverse step's noise: β̃ (``"posterior"``), β (``"beta"``), the model's
    learned Σ (``"learned"``), Analytic-DPM's (``"analytic"``); ``"auto"``: learned if the model has
    it, else posterior."""

    variance: Variance = "auto"


def ancestral(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource,
              options: AncestralOptions, callback: Callback | None = None) -> Tensor:
    """DDPM ancestral sampling along ``grid``; one network call per step."""
    n = grid.steps
    for i in range(n):
        pred = model.predict(x, grid.t[i])
        variance = resolve_variance(options.variance, pred, "posterior")
        z = noise.randn(x.shape, x.dtype, x.device) if i < n - 1 else None
        x = reverse_step(pred, grid, i, z, variance=variance)
        report(callback, i, grid.t[i + 1], x, pred)
    return x


SPEC = SamplerSpec(
    "ancestral", ancestral, AncestralOptions, grid="quadratic", grid_geometric="uniform",
    variants=(("ancestral posterior", {"variance": "posterior"}), ("ancestral beta", {"variance": "beta"})),
    paper="DDPM ancestral sampling, Ho et al. 2020 (SMLD's for VE, Song & Ermon 2019)",
    order="— (stochastic)", nfe="steps",
)
