"""Predictor–corrector sampling (Song et al. 2021, Algorithms 2–3) for every SDE.

At each grid time ``t`` the corrector runs ``n_corrector`` Langevin MCMC steps targeting
``p_t``, then the predictor moves ``x`` from ``t`` to the next time ``s`` (``dt = t − s``):

Predictors
    ``reverse_diffusion``  ``x_s = x_t − f + G²·score + G·z`` with ``(f, G) = sde.discretize``
                           (DDPM form for VP, SMLD for VE, Euler–Maruyama for sub-VP);
    ``euler_maruyama``     ``x_s = x_t − (f(t)·x_t − g²·score)·dt + g·sqrt(dt)·z``;
    ``ancestral``          the DDPM posterior step (``variance`` "posterior" or "beta");
    ``none``               corrector only.
Correctors (step size ε, then ``x ← x + ε·score + sqrt(2ε)·z``)
    ``langevin``           ``ε = 2·a·(snr·‖z‖/‖score‖)²`` with ``a = (alpha_t/alpha_s)²``
                           (score_sde's ``α_i``: 1 − β_i for VP, 1 for VE);
    ``annealed_langevin``  ``ε = 2·a·(snr·sigma_t)²`` (SMLD's schedule);
    ``none``               predictor only.

``langevin`` averages the norms over the batch, as score_sde does: a per-sample ratio blows up
where a sample's score is near zero (a mode's centre in low dimension) and makes the step size
depend on ``x``, which biases the chain. The price is that a sample depends on its batch;
``annealed_langevin`` uses no norms and is batch-size invariant. The step that ends the grid
adds no noise (score_sde's noise removal).
One network call per corrector step and one per predictor step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde.model import Prediction
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, CountingModel, report
from scoresde.samplers.steps import ancestral_coefficients, gaussian_step
from scoresde.sde import SDE, batch_coeff

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "ancestral", "none")
CORRECTORS = ("langevin", "annealed_langevin", "none")


def _per_sample_norm(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1)


def _predict_step(name: str, sde: SDE, pred: Prediction, t: Tensor, s: Tensor,
                  z: Tensor | None, variance: str) -> Tensor:
    x = pred.x
    if name == "ancestral":
        alpha_s, eps_coef, noise_std = ancestral_coefficients(sde, t, s, variance)
        return gaussian_step(pred, alpha_s, eps_coef, noise_std, z)
    rsde = sde.reverse(lambda _x, _t: pred.score)
    dt = t - s
    if name == "reverse_diffusion":
        rev_f, rev_g = rsde.discretize(x, t, dt)
        x_mean = x - rev_f
        scale = rev_g
    else:  # euler_maruyama
        drift, diffusion = rsde.sde(x, t)
        x_mean = x - drift * batch_coeff(dt, x)
        scale = diffusion * torch.sqrt(dt)
    return x_mean if z is None else x_mean + batch_coeff(scale, x) * z


def _langevin_step(name: str, sde: SDE, pred: Prediction, t: Tensor, s: Tensor, snr: float,
                   z: Tensor) -> Tensor:
    a = (sde.alpha(t) / sde.alpha(s)) ** 2
    grad = pred.score
    if name == "langevin":
        grad_norm = _per_sample_norm(grad).mean()
        if grad_norm == 0:
            raise ValueError(
                f"the model's score is zero for the whole batch at t={float(t):.4g}: the Langevin "
                "step size (snr·‖z‖/‖score‖)² is undefined; use corrector='annealed_langevin'"
            )
        ratio = snr * _per_sample_norm(z).mean() / grad_norm
        step = (2.0 * a.to(z.dtype) * ratio * ratio).expand(z.shape[0])
    else:  # annealed_langevin
        step = (2.0 * a * (snr * sde.sigma(t)) ** 2).to(z.dtype).expand(z.shape[0])
    step = batch_coeff(step, z)
    return pred.x + step * grad + torch.sqrt(2.0 * step) * z


def pc(model: CountingModel, x: Tensor, timesteps: Tensor, noise: NoiseSource,
       callback: Callback | None = None, predictor: str = "reverse_diffusion",
       corrector: str = "langevin", snr: float = 0.16, n_corrector: int = 1,
       variance: str = "beta") -> Tensor:
    """Predictor–corrector sampling along ``timesteps``.

    ``variance`` applies to the ancestral predictor; its default ``"beta"`` is score_sde's.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; available: {PREDICTORS}")
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; available: {CORRECTORS}")
    if int(n_corrector) != n_corrector or n_corrector < 0:
        raise ValueError(f"n_corrector must be an integer >= 0, got {n_corrector!r}")
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    if predictor == "none" and (corrector == "none" or n_corrector == 0):
        raise ValueError("predictor='none' needs a corrector with n_corrector >= 1")
    sde = model.sde
    n = len(timesteps) - 1
    for i in range(n):
        t, s = timesteps[i], timesteps[i + 1]
        pred = None
        if corrector != "none":
            for _ in range(n_corrector):
                pred = model.predict(x, t)
                z = noise.randn(x.shape, x.dtype, x.device)
                x = _langevin_step(corrector, sde, pred, t, s, snr, z)
        if predictor != "none":
            pred = model.predict(x, t)
            z = noise.randn(x.shape, x.dtype, x.device) if i < n - 1 else None
            x = _predict_step(predictor, sde, pred, t, s, z, variance)
        report(callback, i, s, x, pred)
    return x
