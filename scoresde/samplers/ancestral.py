"""DDPM ancestral sampling (Ho et al. 2020) and its SMLD counterpart for VE.

Each step draws ``x_s ~ N(μ̃(x_t, x0), v)`` with ``μ̃`` the posterior mean of
``q(x_s | x_t, x_0 = x0(x_t, t))`` and ``v`` the posterior variance β̃ (``"posterior"``, the
default) or the forward variance β (``"beta"``, as score_sde's ancestral predictor and DDPM's
σ² = β choice). As in DDPM, the step that ends the grid adds no noise.
"""

from __future__ import annotations

from torch import Tensor

from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, CountingModel, report
from scoresde.samplers.steps import ancestral_coefficients, gaussian_step


def ancestral(model: CountingModel, x: Tensor, timesteps: Tensor, noise: NoiseSource,
              callback: Callback | None = None, variance: str = "posterior") -> Tensor:
    """DDPM ancestral sampling along ``timesteps``; one network call per step."""
    n = len(timesteps) - 1
    for i in range(n):
        t, s = timesteps[i], timesteps[i + 1]
        pred = model.predict(x, t)
        alpha_s, eps_coef, noise_std = ancestral_coefficients(model.sde, t, s, variance)
        z = noise.randn(x.shape, x.dtype, x.device) if i < n - 1 else None
        x = gaussian_step(pred, alpha_s, eps_coef, noise_std, z)
        report(callback, i, s, x, pred)
    return x
