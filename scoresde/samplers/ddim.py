"""DDIM (Song, Meng & Ermon 2021): the Euler step of the PF-ODE in ``(x̄, σ̄)``, with η.

``x_s = alpha_s·x0 + sqrt(sigma_s² − c²)·eps + c·z`` with ``c = η·σ̃`` (see ``steps``):
η = 0 is deterministic (``x̄_s = x̄_t + (σ̄_s − σ̄_t)·eps``), η = 1 is DDPM ancestral sampling
with the posterior variance. The step that ends the grid adds no noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerOptions, SamplerSpec, report
from scoresde.samplers.steps import ddim_coefficients, gaussian_step


@dataclass(frozen=True)
class DDIMOptions(SamplerOptions):
    """``eta`` ∈ [0, 1]: 0 is the deterministic PF-ODE Euler step, 1 DDPM ancestral with β̃."""

    eta: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {self.eta}")

    @property
    def stochastic(self) -> bool:
        return self.eta > 0


def ddim(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None,
         options: DDIMOptions, callback: Callback | None = None) -> Tensor:
    """DDIM-η along ``grid``; one network call per step."""
    n = grid.steps
    for i in range(n):
        pred = model.predict(x, grid.t[i])
        alpha_s, eps_coef, noise_std = ddim_coefficients(grid, i, options.eta)
        z = noise.randn(x.shape, x.dtype, x.device) if options.eta > 0 and i < n - 1 else None
        x = gaussian_step(pred, alpha_s, eps_coef, noise_std, z)
        report(callback, i, grid.t[i + 1], x, pred)
    return x


SPEC = SamplerSpec("ddim", ddim, DDIMOptions, grid="quadratic", grid_geometric="uniform",
                   variants=(("ddim eta=0", {"eta": 0.0}), ("ddim eta=1", {"eta": 1.0})),
                   paper="DDIM, Song, Meng & Ermon 2021", order="1 (η = 0)", nfe="steps")
