"""The DDPM variational bound (Ho et al. 2020, eq. 5) for discrete-time models, term by term.

With the model's N steps at times ``τ_k = k/N`` (``τ_0 = 0`` is the data; step index ``k − 1``
in the ``time_input="index"`` convention):

    L = L_T + Σ_{k=2}^{N} L_{k−1} + L_0,
    L_T     = KL(q(x_N | x_0) ‖ p_T)                             (prior mismatch),
    L_{k−1} = E_{x_k ~ q(x_k | x_0)} KL(q(x_{k−1} | x_k, x_0) ‖ p_θ(x_{k−1} | x_k)),
    L_0     = −log p_θ(x_0 | x_1)                                (decoder).

Every KL is Gaussian-to-Gaussian in closed form; the only Monte-Carlo draw is ``x_k`` (one per
term and sample). The transitions are the Gaussian ones of :mod:`scoresde.samplers.steps`, so
the bound is defined for every SDE here (DDPM's for VP, SMLD's for VE).
``p_θ(x_{k−1} | x_k)`` has the posterior mean at the model's ``x0`` and a variance that is

* ``"posterior"``: β̃ (at k = 1, where β̃ = 0 for VP, the k = 2 value, as improved DDPM clips),
* ``"beta"``: β (the forward transition variance),
* a callable ``(x_k, t_k) -> log-variance`` (broadcastable to x), for learned variances.

The decoder is ``"gaussian"`` (continuous data, density in nats) or ``"discretized"`` (8-bit
data on ``levels`` evenly spaced values spanning ``data_range``, DDPM's discretized Gaussian with
open end bins). Results are in nats per sample and in bits/dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.grids import GridTable
from scoresde.model import Cond, CountingModel, DiffusionModel, Prediction, check_cond, check_model
from scoresde.noise import NoiseSource, as_noise
from scoresde.samplers.steps import ancestral_coefficients, gaussian_step
from scoresde.sde import batch_coeff

DECODERS = ("gaussian", "discretized")
Variance = str | Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class VariationalBound:
    """Terms in nats per sample: ``prior`` (L_T), ``kl`` (``(N − 1, batch)``, k = 2..N in order),
    ``decoder`` (L_0); ``total = prior + kl.sum(0) + decoder``; ``nfe`` network calls."""

    prior: Tensor
    kl: Tensor
    decoder: Tensor
    dim: int
    nfe: int

    @property
    def total(self) -> Tensor:
        return self.prior + self.kl.sum(0) + self.decoder

    @property
    def bits_per_dim(self) -> Tensor:
        """Per-sample total in bits per dimension."""
        return self.total / (self.dim * math.log(2.0))

    def terms_bits_per_dim(self) -> dict[str, Tensor]:
        """Batch-mean of each term in bits/dim: ``prior``, ``kl`` (per k) and ``decoder``."""
        scale = self.dim * math.log(2.0)
        return {"prior": self.prior.mean() / scale, "kl": self.kl.mean(1) / scale,
                "decoder": self.decoder.mean() / scale}


def gaussian_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """``KL(N(mean1, e^{logvar1}) ‖ N(mean2, e^{logvar2}))`` summed over all but the batch axis."""
    kl = 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)
    return kl.flatten(1).sum(1)


def _log_normal_cdf(z: Tensor) -> Tensor:
    return torch.special.log_ndtr(z)


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, logvar: Tensor,
                                        half_bin: float, lo: float, hi: float) -> Tensor:
    """``log P(x)`` per sample for ``x`` on a grid with bins ``[x − half_bin, x + half_bin]``
    (the end bins open to ±∞) under ``N(mean, e^{logvar})``, summed over dimensions."""
    std = torch.exp(0.5 * logvar)
    upper = (x + half_bin - mean) / std
    lower = (x - half_bin - mean) / std
    log_cdf_upper = _log_normal_cdf(upper)
    log_sf_lower = _log_normal_cdf(-lower)
    # log(Φ(u) − Φ(l)) = log Φ(u) + log(1 − exp(log Φ(l) − log Φ(u))), stable in the bulk.
    mid = log_cdf_upper + torch.log(-torch.expm1(_log_normal_cdf(lower) - log_cdf_upper))
    edge = 1e-6 * (hi - lo)
    logp = torch.where(x <= lo + edge, log_cdf_upper, torch.where(x >= hi - edge, log_sf_lower, mid))
    return logp.flatten(1).sum(1)


def _logvar(variance: Variance, posterior_var: Tensor, beta: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    if callable(variance):
        return torch.broadcast_to(variance(x_t, t), x_t.shape).to(x_t.dtype)
    v = posterior_var if variance == "posterior" else beta
    return torch.log(batch_coeff(v, x_t)).expand_as(x_t)


def variational_bound(
    model: DiffusionModel,
    x0: Tensor,
    *,
    cond: Cond = None,
    variance: Variance = "posterior",
    decoder: str = "gaussian",
    data_range: tuple[float, float] = (-1.0, 1.0),
    levels: int = 256,
    generator: torch.Generator | NoiseSource | None = None,
) -> VariationalBound:
    """The N-step DDPM bound on ``−log p(x0)`` for ``model`` (N = ``model.sde.N``).

    ``x0``: continuous data (``decoder="gaussian"``) or, for ``decoder="discretized"``, integer
    pixels in ``[0, levels − 1]`` mapped to ``lo + (hi − lo)·pixel/(levels − 1)``. ``cond`` is
    passed to every network call (the bound is then on ``−log p(x0 | cond)``).
    """
    check_model(model)
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if not (callable(variance) or variance in ("posterior", "beta")):
        raise ValueError(f"variance must be 'posterior', 'beta' or a callable, got {variance!r}")
    lo, hi = data_range
    if decoder == "discretized":
        if x0.is_floating_point() or x0.min() < 0 or x0.max() > levels - 1:
            raise ValueError(f"decoder='discretized' needs integer pixels in [0, {levels - 1}]")
        x0 = lo + (hi - lo) * x0.to(torch.float64) / (levels - 1)
    elif not x0.is_floating_point():
        raise ValueError("decoder='gaussian' needs floating-point data")
    if x0.ndim < 2 or not torch.isfinite(x0).all():
        raise ValueError(f"x0 must be a finite (batch, ...) tensor, got shape {tuple(x0.shape)}")
    check_cond(cond, x0.shape[0])
    noise = as_noise(generator)
    sde = model.sde
    N = sde.require_N("the DDPM variational bound")
    counting = CountingModel(model, cond)
    taus = torch.arange(N + 1, dtype=torch.float64) / N
    table = GridTable.build(sde, taus.flip(0))  # step N − k goes from τ_k to τ_{k−1}

    def q_sample(k: int) -> tuple[Tensor, Tensor]:
        eps = noise.randn(tuple(x0.shape), x0.dtype, x0.device)
        return batch_coeff(sde.alpha(taus[k]), x0) * x0 + batch_coeff(sde.sigma(taus[k]), x0) * eps, eps

    # L_T
    mean_T = batch_coeff(sde.alpha(taus[N]), x0) * x0
    logvar_T = torch.full_like(x0, 2.0 * math.log(float(sde.sigma(taus[N]))))
    prior = gaussian_kl(mean_T, logvar_T, torch.zeros_like(x0),
                        torch.full_like(x0, 2.0 * math.log(sde.prior_std)))

    kls = []
    decoder_term = None
    for k in range(N, 0, -1):
        t = taus[k]
        x_t, eps_true = q_sample(k)
        alpha_s, eps_coef, post_std = ancestral_coefficients(table, N - k, "posterior")
        _, _, beta_std = ancestral_coefficients(table, N - k, "beta")
        post_var = post_std**2
        if post_var == 0:  # k = 1 for VP: β̃_1 = 0; use β̃_2 as improved DDPM does (β_1 if N = 1)
            post_var = (ancestral_coefficients(table, N - 2, "posterior")[2] ** 2
                        if N >= 2 else beta_std**2)
        pred = counting.predict(x_t, t)
        truth = Prediction(x=x_t, alpha=pred.alpha, sigma=pred.sigma, x0=x0, eps=eps_true)
        zero = torch.zeros((), dtype=torch.float64)
        mean_model = gaussian_step(pred, alpha_s, eps_coef, zero, None)
        logvar_model = _logvar(variance, post_var, beta_std**2, x_t, t)
        if k > 1:
            mean_q = gaussian_step(truth, alpha_s, eps_coef, zero, None)
            logvar_q = torch.log(batch_coeff(post_std**2, x_t)).expand_as(x_t)
            kls.append(gaussian_kl(mean_q, logvar_q, mean_model, logvar_model))
        elif decoder == "gaussian":
            decoder_term = 0.5 * ((x0 - mean_model) ** 2 * torch.exp(-logvar_model) + logvar_model
                                  + math.log(2 * math.pi)).flatten(1).sum(1)
        else:
            half_bin = (hi - lo) / (2 * (levels - 1))
            decoder_term = -discretized_gaussian_log_likelihood(x0, mean_model, logvar_model,
                                                                half_bin, lo, hi)
    kl = torch.stack(kls[::-1]) if kls else x0.new_zeros(0, x0.shape[0])
    return VariationalBound(prior=prior, kl=kl, decoder=decoder_term, dim=x0[0].numel(),
                            nfe=counting.nfe)
