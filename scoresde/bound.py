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
* ``"learned"``: the model's ``Σ_θ = exp(v·log β + (1 − v)·log β̃)`` (Nichol & Dhariwal 2021; β̃
  clipped as above at k = 1, as improved DDPM's ``posterior_log_variance_clipped``),
* ``"analytic"``: Analytic-DPM's ``β̃ + k²·x0_var`` (Bao et al. 2022, :mod:`scoresde.variance`),
  at k = 1 (β̃ = 0 for VP) the model's ``x0_var`` itself, the optimal Gaussian decoder variance
  (Bao et al.'s code keeps β̃_2 there),
* ``"auto"`` (default): ``"learned"`` for a model with a learned variance, else ``"posterior"``,
* a callable ``(x_k, t_k) -> log-variance`` (broadcastable to x).

The decoder is ``"gaussian"`` (continuous data, density in nats) or ``"discretized"`` (8-bit
data on ``levels`` evenly spaced values spanning ``data_range``, DDPM's discretized Gaussian with
open end bins). Results are in nats per sample and in bits/dim. :func:`step_term` is one term
``L_{k−1}`` at a given ``x_k``; the bound sums it over k and :func:`scoresde.losses.hybrid_loss`
draws one k per sample.

**Latent models** (:class:`~scoresde.latent.LatentDiffusion`, or a wrapper of one): the bound is
the latent model's bound on ``−log p(z)`` at ``z = to_latent(x0)`` (Gaussian decoder only: latents
are continuous), labelled ``space="latent"``. It is not a bound on ``−log p(x0)`` (the autoencoder's
reconstruction is outside it), so the result's bits/dim, which this library reports per data
dimension, are refused for it; ``.total`` is in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from scoresde.errors import InputError
from scoresde.latent import find_latent_model
from scoresde.model import Cond, CountingModel, DiffusionModel, Prediction, check_cond, check_model
from scoresde.noise import NoiseSource, as_noise
from scoresde.samplers.steps import (
    VARIANCES,
    Step,
    analytic_variance,
    gaussian_step,
    learned_log_variance,
    resolve_variance,
)
from scoresde.sde import SDE, batch_coeff

DECODERS = ("gaussian", "discretized")
Variance = str | Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class VariationalBound:
    """Terms in nats per sample: ``prior`` (L_T), ``kl`` (``(N − 1, batch)``, k = 2..N in order),
    ``decoder`` (L_0); ``total = prior + kl.sum(0) + decoder``; ``nfe`` network calls. ``space``:
    ``"data"``, or ``"latent"`` for a latent model's bound on ``−log p(z)`` (``dim`` is then the
    latent dimension, and the bits/dim are refused)."""

    prior: Tensor
    kl: Tensor
    decoder: Tensor
    dim: int
    nfe: int
    space: str = "data"

    def _check_data_space(self) -> None:
        if self.space != "data":
            raise InputError("this is a latent model's bound on −log p(z) of its latents, not a bound on the "
                             "data: bits/dim are per data dimension; use .total (nats per sample)")

    @property
    def total(self) -> Tensor:
        return self.prior + self.kl.sum(0) + self.decoder

    @property
    def bits_per_dim(self) -> Tensor:
        """Per-sample total in bits per dimension."""
        self._check_data_space()
        return self.total / (self.dim * math.log(2.0))

    def terms_bits_per_dim(self) -> dict[str, Tensor]:
        """Batch-mean of each term in bits/dim: ``prior``, ``kl`` (per k) and ``decoder``."""
        self._check_data_space()
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


def check_decoder(decoder: str) -> None:
    if decoder not in DECODERS:
        raise InputError(f"decoder must be one of {DECODERS}, got {decoder!r}")


def check_variance(variance: Variance) -> None:
    if not (callable(variance) or variance in VARIANCES):
        raise InputError(f"variance must be one of {VARIANCES} or a callable, got {variance!r}")


def _model_logvar(variance: Variance, step: Step, clip_std: Tensor, pred: Prediction, t: Tensor) -> Tensor:
    """``log`` of p_θ's variance (float64, broadcastable to ``pred.x``); ``clip_std``: the step's
    β̃^½ with improved DDPM's clip at k = 1."""
    x_t = pred.x
    if callable(variance):
        return torch.broadcast_to(variance(x_t, t), x_t.shape).to(torch.float64)
    variance = resolve_variance(variance, pred, "posterior")
    log_clip = 2.0 * torch.log(batch_coeff(clip_std, x_t.to(torch.float64)))
    if variance == "posterior":
        return log_clip
    log_beta = 2.0 * torch.log(batch_coeff(step.forward_std, x_t.to(torch.float64)))
    if variance == "beta":
        return log_beta
    if variance == "learned":
        return learned_log_variance(pred.var_interp, log_clip, log_beta)
    var = analytic_variance(step.posterior_std ** 2, step.x0_coef(1.0), pred.x0_var)
    if not (var > 0).all():
        raise InputError(f"the analytic variance is {float(var.min()):.3g} at t={float(t.min()):.4g}: "
                         "x0_var = 0 where the posterior variance β̃ = 0 (the decoder step), i.e. the Γ "
                         "table's estimate reached 1 there; estimate it on more data")
    return torch.log(var)


def step_term(sde: SDE, k: int | Tensor, x0: Tensor, eps: Tensor, pred: Prediction, *,
              variance: Variance = "auto", decoder: str = "gaussian",
              data_range: tuple[float, float] = (-1.0, 1.0), levels: int = 256) -> Tensor:
    """The bound's term ``L_{k−1}`` (nats per sample) at ``x_k = pred.x = alpha_k·x0 + sigma_k·eps``.

    ``k`` (an int, or one per sample ``(batch,)``) is the step from ``τ_k = k/N`` to ``τ_{k−1}``:
    for ``k ≥ 2`` ``KL(q(x_{k−1} | x_k, x0) ‖ p_θ(x_{k−1} | x_k))``, for ``k = 1`` the decoder's
    ``−log p_θ(x0 | x_1)``. ``pred`` is the model's prediction at ``(x_k, τ_k)``; ``x0`` is continuous
    data, or for ``decoder="discretized"`` data on the ``levels`` values spanning ``data_range``.
    With per-sample ``k`` the decoder and KL samples are computed apart, so neither branch's
    values (or gradients) reach the other.
    """
    N = sde.require_N("the DDPM variational bound")
    k = torch.as_tensor(k, device=x0.device)
    if k.is_floating_point() or (k < 1).any() or (k > N).any():
        raise InputError(f"k must be integer steps in [1, N={N}], got {k.tolist() if k.numel() < 9 else k}")
    options = {"variance": variance, "decoder": decoder, "data_range": data_range, "levels": levels}
    if k.ndim == 0:
        return _term(N, sde, k, x0, eps, pred, **options)
    out = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
    for mask in (k == 1, k > 1):
        if mask.all():
            return _term(N, sde, k, x0, eps, pred, **options)
        if mask.any():
            value = _term(N, sde, k[mask], x0[mask], eps[mask], _take(pred, mask), **options)
            out = out.index_put((mask,), value)
    return out


def _term(N: int, sde: SDE, k: Tensor, x0: Tensor, eps: Tensor, pred: Prediction, *, variance: Variance,
          decoder: str, data_range: tuple[float, float], levels: int) -> Tensor:
    """:func:`step_term` for steps ``k`` that are all 1 (the decoder) or all ≥ 2 (KL terms)."""
    k = k.to(torch.float64)
    first = bool((k == 1).all())
    step = Step.between(sde, k / N, (k - 1.0) / N)
    clip_std = step.posterior_std
    if first:  # β̃_1 = 0 for VP: improved DDPM's clip to β̃_2 (β_1 if N = 1)
        ones = torch.ones_like(k)
        fallback = Step.between(sde, 2.0 / N * ones, ones / N).posterior_std if N >= 2 else step.forward_std
        clip_std = torch.where(clip_std == 0, fallback, clip_std)
    mean_model = gaussian_step(pred, step.alpha_s, step.eps_coef(1.0), None, None)
    logvar_model = _model_logvar(variance, step, clip_std, pred, k / N)
    if first:
        if decoder == "gaussian":
            return 0.5 * ((x0 - mean_model) ** 2 * torch.exp(-logvar_model) + logvar_model
                          + math.log(2 * math.pi)).flatten(1).sum(1)
        lo, hi = data_range
        half_bin = (hi - lo) / (2 * (levels - 1))
        return -discretized_gaussian_log_likelihood(x0, mean_model, logvar_model, half_bin, lo, hi)
    truth = Prediction(x=pred.x, alpha=pred.alpha, sigma=pred.sigma, x0=x0, eps=eps)
    mean_q = gaussian_step(truth, step.alpha_s, step.eps_coef(1.0), None, None)
    logvar_q = 2.0 * torch.log(batch_coeff(step.posterior_std, x0.to(torch.float64)))
    return gaussian_kl(mean_q, logvar_q, mean_model, logvar_model)


def _take(pred: Prediction, mask: Tensor) -> Prediction:
    """The samples ``mask`` of ``pred`` (fields without a batch axis are kept whole)."""
    def take(v: Tensor | None) -> Tensor | None:
        return v[mask] if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == mask.shape[0] else v
    return Prediction(**{f.name: take(getattr(pred, f.name)) for f in fields(pred)})


def variational_bound(
    model: DiffusionModel,
    x0: Tensor,
    *,
    cond: Cond = None,
    variance: Variance = "auto",
    decoder: str = "gaussian",
    data_range: tuple[float, float] = (-1.0, 1.0),
    levels: int = 256,
    generator: torch.Generator | NoiseSource | None = None,
    dtype: torch.dtype = torch.float64,
) -> VariationalBound:
    """The N-step DDPM bound on ``−log p(x0)`` for ``model`` (N = ``model.sde.N``).

    ``x0``: continuous data (``decoder="gaussian"``) or, for ``decoder="discretized"``, integer
    pixels in ``[0, levels − 1]`` mapped to ``lo + (hi − lo)·pixel/(levels − 1)`` in ``dtype``
    (pass ``torch.float32`` for a float32 network). ``cond`` is passed to every network call (the
    bound is then on ``−log p(x0 | cond)``). ``variance``: see the module docstring. For a latent
    model ``x0`` is data and the bound is on ``−log p(z)`` of ``z = to_latent(x0)`` (``space="latent"``).
    """
    check_model(model)
    check_decoder(decoder)
    check_variance(variance)
    latent = find_latent_model(model)
    if latent is not None and decoder != "gaussian":
        raise InputError(f"decoder={decoder!r} models 8-bit data, but a latent model's bound is on its "
                         "continuous latents z = to_latent(x0): use decoder='gaussian'")
    lo, hi = data_range
    if decoder == "discretized":
        if x0.is_floating_point() or x0.min() < 0 or x0.max() > levels - 1:
            raise InputError(f"decoder='discretized' needs integer pixels in [0, {levels - 1}]")
        x0 = (lo + (hi - lo) * x0.to(torch.float64) / (levels - 1)).to(dtype)
    elif not x0.is_floating_point():
        raise InputError("decoder='gaussian' needs floating-point data")
    if x0.ndim < 2 or not torch.isfinite(x0).all():
        raise InputError(f"x0 must be a finite (batch, ...) tensor, got shape {tuple(x0.shape)}")
    check_cond(cond, x0.shape[0])
    if latent is not None:
        x0 = latent.to_latent(x0)
    noise = as_noise(generator)
    sde = model.sde
    N = sde.require_N("the DDPM variational bound")
    counting = CountingModel(model, cond)
    taus = torch.arange(N + 1, dtype=torch.float64) / N

    # L_T
    mean_T = batch_coeff(sde.alpha(taus[N]), x0) * x0
    logvar_T = torch.full_like(x0, 2.0 * math.log(float(sde.sigma(taus[N]))))
    prior = gaussian_kl(mean_T, logvar_T, torch.zeros_like(x0),
                        torch.full_like(x0, 2.0 * math.log(sde.prior_std)))

    kls = []
    decoder_term = None
    for k in range(N, 0, -1):
        eps = noise.randn(tuple(x0.shape), x0.dtype, x0.device)
        term = step_term(sde, k, x0, eps, counting.predict(sde.perturb(x0, taus[k], eps), taus[k]),
                         variance=variance, decoder=decoder, data_range=data_range, levels=levels)
        if k > 1:
            kls.append(term)
        else:
            decoder_term = term
    kl = torch.stack(kls[::-1]) if kls else x0.new_zeros(0, x0.shape[0])
    return VariationalBound(prior=prior, kl=kl, decoder=decoder_term, dim=x0[0].numel(),
                            nfe=counting.nfe, space="data" if latent is None else "latent")
