"""Step maths shared by the samplers and the bound: Gaussian reverse steps between two times ``s < t``.

The forward transition of every SDE here is Gaussian, ``x_t | x_s ~ N(a·x_s, σ²_{t|s})`` with
``a = alpha_t/alpha_s`` and ``σ²_{t|s} = sigma_t²·(1 − δ)``, where

    δ = (a·sigma_s / sigma_t)²  ∈ [0, 1)

is the share of ``x_t``'s noise already present at ``s``. The posterior ``q(x_s | x_t, x_0)`` has
variance ``σ̃² = sigma_s²·(1 − δ)`` (DDPM's β̃ for VP, SMLD's for VE); ``σ²_{t|s}`` is DDPM's β
(``1 − ᾱ_t/ᾱ_s`` for VP).

Every reverse step keeping the marginals ``N(alpha_s·x_0, sigma_s²)`` given ``x_0`` is (DDIM,
Song et al. 2021, eq. 12)

    x_s = alpha_s·x0 + sqrt(sigma_s² − λ²)·eps + λ·z,

with ``x0``, ``eps`` the prediction at ``(x_t, t)``: ``λ = 0`` is DDIM (the Euler step of the
PF-ODE), ``λ = η·σ̃`` DDIM-η, ``λ = σ̃`` DDPM ancestral sampling. As a function of ``x_t`` and
``x0`` the mean is ``k·x0 + (e/sigma_t)·x_t`` with ``e = sqrt(sigma_s² − λ²)`` and

    k = alpha_s − e·alpha_t/sigma_t = alpha_s·(1 − δ)(1 + η²δ) / (1 + sqrt(δ·(1 − η²(1 − δ)))),

the coefficient of ``x0`` (``alpha_s·(1 − δ)`` for the posterior mean, η = 1).

**The noise of a step is a choice** (:func:`step_noise_std`), the mean staying DDIM-η's:

* ``"posterior"``: ``λ = η·σ̃`` (the family member itself);
* ``"beta"``: ``σ_{t|s}`` with the posterior mean (η = 1 only; DDPM's σ² = β, score_sde's);
* ``"learned"``: ``η·sqrt(Σ_θ)``, ``Σ_θ = exp(v·log β + (1 − v)·log β̃)`` from the model's variance
  interpolation ``v`` (Nichol & Dhariwal 2021, eq. 15), so v = 0 is "posterior", v = 1 "beta";
* ``"analytic"``: ``sqrt(λ² + k²·x0_var)`` with the model's ``x0_var`` (Analytic-DPM's optimal
  variance for the member ``λ² = η²·σ̃²``, Bao et al. 2022, Thm 1; see :mod:`scoresde.variance`).

Why the learned Σ scales the noise instead of being the member's ``λ²``: the network learns Σ as the
variance of a step whose mean is the posterior mean (its ``L_vlb`` is the KL to ``q(x_s | x_t, x_0)``),
and the member ``λ² = η²·Σ_θ`` does not exist wherever ``η²·Σ_θ > sigma_s²``, which happens in
ordinary use: ``β_{t|s} > sigma_s²`` ⇔ ``ᾱ_s² > ᾱ_t`` (VP) on the first steps next to the data, so
any v ≈ 1 there breaks it at η = 1. Scaling the learned noise by η keeps DDIM-η's mean, is defined
for every v, and gives DDIM (η = 0) and the learned ancestral step (η = 1) exactly at the ends.

The coefficients are written in terms of δ so that none is a difference of nearly equal numbers.
Times and coefficients are float64; :class:`Step` holds the ends as scalars (a grid step) or as
per-sample ``(batch,)`` tensors (a loss that draws one step per sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import Prediction
from scoresde.sde import SDE, batch_coeff

VARIANCES = ("auto", "posterior", "beta", "learned", "analytic")
Variance = Literal["auto", "posterior", "beta", "learned", "analytic"]


@dataclass(frozen=True)
class Step:
    """The ends of a reverse step ``t → s``: ``alpha`` and ``sigma`` at both (float64 scalars or
    ``(batch,)``)."""

    alpha_t: Tensor
    sigma_t: Tensor
    alpha_s: Tensor
    sigma_s: Tensor

    @classmethod
    def of(cls, grid: GridTable, i: int) -> Step:
        """Step ``i`` of ``grid``: ``t = grid.t[i] → s = grid.t[i + 1]``."""
        return cls(grid.alpha[i], grid.sigma[i], grid.alpha[i + 1], grid.sigma[i + 1])

    @classmethod
    def between(cls, sde: SDE, t: Tensor, s: Tensor) -> Step:
        """The step from times ``t`` to ``s`` of ``sde`` (float64 scalars or per-sample)."""
        return cls(sde.alpha(t), sde.sigma(t), sde.alpha(s), sde.sigma(s))

    @property
    def delta(self) -> Tensor:
        """``δ = (alpha_t·sigma_s / (alpha_s·sigma_t))²``."""
        return (self.alpha_t * self.sigma_s / (self.alpha_s * self.sigma_t)) ** 2

    @property
    def posterior_std(self) -> Tensor:
        """``σ̃ = sigma_s·sqrt(1 − δ)``, the std of ``q(x_s | x_t, x_0)`` (sqrt of DDPM's β̃)."""
        return self.sigma_s * torch.sqrt(1.0 - self.delta)

    @property
    def forward_std(self) -> Tensor:
        """``σ_{t|s} = sigma_t·sqrt(1 − δ)``, the std of ``q(x_t | x_s)`` (sqrt of DDPM's β)."""
        return self.sigma_t * torch.sqrt(1.0 - self.delta)

    def eps_coef(self, eta: float) -> Tensor:
        """``e = sqrt(sigma_s² − η²σ̃²) = sigma_s·sqrt(1 − η² + η²δ)``."""
        return self.sigma_s * torch.sqrt((1.0 - eta * eta) + eta * eta * self.delta)

    def x0_coef(self, eta: float) -> Tensor:
        """``k = alpha_s − e·alpha_t/sigma_t``, the coefficient of ``x0`` in DDIM-η's mean at fixed
        ``x_t``, written without cancellation (module docstring)."""
        delta = self.delta
        root = torch.sqrt(delta * (1.0 - eta * eta * (1.0 - delta)))
        return self.alpha_s * (1.0 - delta) * (1.0 + eta * eta * delta) / (1.0 + root)


def ddim_coefficients(grid: GridTable, i: int, eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(alpha_s, sqrt(sigma_s² − c²), c)`` with ``c = η·σ̃`` for step ``i``."""
    step = Step.of(grid, i)
    if eta == 0:  # deterministic; also valid for s > t (DDIM inversion), where δ > 1
        return step.alpha_s, step.sigma_s, torch.zeros_like(step.sigma_s)
    return step.alpha_s, step.eps_coef(eta), eta * step.posterior_std


def resolve_variance(variance: str, pred: Prediction, fallback: str) -> str:
    """``"auto"`` → ``"learned"`` when the model has a learned variance, else ``fallback``; a
    ``"learned"`` or ``"analytic"`` request on a prediction that lacks its field is an error."""
    if variance not in VARIANCES:
        raise InputError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if variance == "auto":
        return "learned" if pred.var_interp is not None else fallback
    if variance == "learned" and pred.var_interp is None:
        raise InputError("variance='learned' needs a model with a learned variance (Prediction.var_interp), "
                         "e.g. ScoreModel(..., learned_variance=True); this model's predictions have none")
    if variance == "analytic" and pred.x0_var is None:
        raise InputError("variance='analytic' needs the x0 posterior variance (Prediction.x0_var): wrap the "
                         "model as scoresde.variance.AnalyticVariance(model, estimate_eps_moment(...))")
    return variance


def learned_log_variance(var_interp: Tensor, log_lo: Tensor, log_hi: Tensor) -> Tensor:
    """``log Σ = v·log_hi + (1 − v)·log_lo`` (float64, shaped like ``v``), Nichol & Dhariwal's
    eq. 15 with ``log_hi = log β``, ``log_lo = log β̃`` (scalars or per-sample)."""
    v = var_interp.to(torch.float64)
    return v * batch_coeff(log_hi, v) + (1.0 - v) * batch_coeff(log_lo, v)


def analytic_variance(lam2: Tensor, k: Tensor, x0_var: Tensor) -> Tensor:
    """Analytic-DPM's ``σ*² = λ² + k²·x0_var`` (Bao et al. 2022, Thm 1; derived in
    :mod:`scoresde.variance`): ``λ²`` the family member's variance, ``k`` the coefficient of x0 in
    its mean, ``x0_var = E‖x0 − E[x0|x_t]‖²/d`` (broadcastable against the state)."""
    x0_var = x0_var.to(torch.float64)
    return batch_coeff(lam2, x0_var) + batch_coeff(k, x0_var) ** 2 * x0_var


def step_noise_std(step: Step, eta: float, variance: str, pred: Prediction) -> Tensor:
    """The std of the noise of a reverse step with DDIM-η's mean, for a resolved ``variance``
    (module docstring); float64, a scalar or broadcastable against ``pred.x``."""
    if variance == "posterior":
        return eta * step.posterior_std
    if variance == "beta":
        if eta != 1:
            raise InputError(f"variance='beta' keeps the posterior mean (eta = 1), got eta = {eta}")
        return step.forward_std
    if variance == "learned":
        log_post, log_fwd = 2.0 * torch.log(step.posterior_std), 2.0 * torch.log(step.forward_std)
        return eta * torch.exp(0.5 * learned_log_variance(pred.var_interp, log_post, log_fwd))
    if variance == "analytic":
        return torch.sqrt(analytic_variance((eta * step.posterior_std) ** 2, step.x0_coef(eta), pred.x0_var))
    raise InputError(f"variance must be one of {VARIANCES[1:]} here (resolve 'auto' first), got {variance!r}")


def reverse_step(pred: Prediction, grid: GridTable, i: int, z: Tensor | None, *, eta: float = 1.0,
                 variance: str = "posterior") -> Tensor:
    """Step ``i`` of ``grid`` from ``pred.x``: DDIM-η's mean (η = 1: the posterior mean) plus
    :func:`step_noise_std` times ``z`` (no noise, and no variance evaluated, when ``z`` is None)."""
    alpha_s, eps_coef, _ = ddim_coefficients(grid, i, eta)
    std = None if z is None else step_noise_std(Step.of(grid, i), eta, variance, pred)
    return gaussian_step(pred, alpha_s, eps_coef, std, z)


def gaussian_step(pred: Prediction, alpha_s: Tensor, eps_coef: Tensor, noise_std: Tensor | None,
                  z: Tensor | None) -> Tensor:
    """``x_s = alpha_s·x0 + eps_coef·eps + noise_std·z``; ``z = None`` draws no noise."""
    x = pred.x
    out = batch_coeff(alpha_s, x) * pred.x0 + batch_coeff(eps_coef, x) * pred.eps
    if z is not None:
        out = out + batch_coeff(noise_std, x) * z
    return out
