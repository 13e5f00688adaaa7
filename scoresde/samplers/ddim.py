"""DDIM (Song, Meng & Ermon 2021): the Euler step of the PF-ODE in ``(x̄, σ̄)``, with η.

``x_s = alpha_s·x0 + sqrt(sigma_s² − c²)·eps + c·z`` with ``c = η·σ̃`` (see ``steps``):
η = 0 is deterministic (``x̄_s = x̄_t + (σ̄_s − σ̄_t)·eps``), η = 1 is DDPM ancestral sampling
with the posterior variance. The step that ends the grid adds no noise.

``variance`` chooses the noise while the mean stays DDIM-η's (:mod:`scoresde.samplers.steps`):
``"posterior"`` is the ``c`` above; ``"learned"`` draws ``η·sqrt(Σ_θ)`` with the model's learned
Σ (η = 1: the learned ancestral step; η = 0 stays deterministic); ``"analytic"`` draws
Analytic-DPM's optimal ``sqrt(η²σ̃² + k²·x0_var)`` for the member ``c = η·σ̃`` — at η = 0 that is
Bao et al.'s Analytic-DDIM, which is stochastic; ``"auto"`` (default) is ``"learned"`` for a model
with a learned variance, else ``"posterior"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerOptions, SamplerSpec, report
from scoresde.samplers.steps import resolve_variance, reverse_step

DDIMVariance = Literal["auto", "posterior", "learned", "analytic"]


@dataclass(frozen=True)
class DDIMOptions(SamplerOptions):
    """``eta`` ∈ [0, 1]: 0 is the deterministic PF-ODE Euler step, 1 DDPM ancestral with β̃;
    ``variance``: the noise, ``η·σ̃`` (``"posterior"``), η times the model's learned Σ
    (``"learned"``), Analytic-DPM's (``"analytic"``, stochastic even at η = 0); ``"auto"``: learned
    if the model has it, else posterior."""

    eta: float = 0.0
    variance: DDIMVariance = "auto"

    def validate(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise InputError(f"eta must lie in [0, 1], got {self.eta}")

    def unused(self) -> dict[str, str]:
        if self.eta == 0 and self.variance != "analytic":  # "analytic" adds noise at eta = 0
            return {"variance": f"with eta=0 (a deterministic step: variance={self.variance!r} scales noise "
                                "by eta; only 'analytic' adds noise at eta=0)"}
        return {}

    @property
    def stochastic(self) -> bool:
        return self.eta > 0 or self.variance == "analytic"


def ddim(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None,
         options: DDIMOptions, callback: Callback | None = None) -> Tensor:
    """DDIM-η along ``grid``; one network call per step."""
    n = grid.steps
    for i in range(n):
        pred = model.predict(x, grid.t[i])
        variance = resolve_variance(options.variance, pred, "posterior")
        z = noise.randn(x.shape, x.dtype, x.device) if options.stochastic and i < n - 1 else None
        x = reverse_step(pred, grid, i, z, eta=options.eta, variance=variance)
        report(callback, i, grid.t[i + 1], x, pred)
    return x


SPEC = SamplerSpec("ddim", ddim, DDIMOptions, grid="quadratic", grid_geometric="uniform",
                   variants=(("ddim eta=0", {"eta": 0.0}), ("ddim eta=1", {"eta": 1.0})),
                   paper="DDIM, Song, Meng & Ermon 2021", order="1 (η = 0)", nfe="steps")
