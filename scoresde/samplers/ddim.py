"""DDIM (Song, Meng & Ermon 2021): the Euler step of the PF-ODE in ``(x̄, σ̄)``, with η.

``x_s = alpha_s·x0 + sqrt(sigma_s² − c²)·eps + c·z`` with ``c = η·σ̃`` (see ``steps``):
η = 0 is deterministic (``x̄_s = x̄_t + (σ̄_s − σ̄_t)·eps``), η = 1 is DDPM ancestral sampling
with the posterior variance. The step that ends the grid adds no noise.
"""

from __future__ import annotations

from torch import Tensor

from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, CountingModel, report
from scoresde.samplers.steps import ddim_coefficients, gaussian_step


def ddim(model: CountingModel, x: Tensor, timesteps: Tensor, noise: NoiseSource,
         callback: Callback | None = None, eta: float = 0.0) -> Tensor:
    """DDIM-η along ``timesteps``; one network call per step."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    n = len(timesteps) - 1
    for i in range(n):
        t, s = timesteps[i], timesteps[i + 1]
        pred = model.predict(x, t)
        alpha_s, eps_coef, noise_std = ddim_coefficients(model.sde, t, s, eta)
        z = noise.randn(x.shape, x.dtype, x.device) if eta > 0 and i < n - 1 else None
        x = gaussian_step(pred, alpha_s, eps_coef, noise_std, z)
        report(callback, i, s, x, pred)
    return x
