"""Analytic-DPM (Bao et al. 2022): the optimal isotropic reverse variance, estimated from the model.

**Derivation, in our notation** (:mod:`scoresde.samplers.steps`). A Gaussian reverse step from
``t`` to ``s`` of the DDIM family member ``λ`` is

    q_λ(x_s | x_t, x0) = N(k·x0 + (e/sigma_t)·x_t, λ²·I),   e = sqrt(sigma_s² − λ²),
    k = alpha_s − e·alpha_t/sigma_t,

(``λ = σ̃`` is DDPM's posterior, ``λ = η·σ̃`` DDIM-η) and the model's step
``p(x_s | x_t) = N(k·x0̂(x_t) + (e/sigma_t)·x_t, σ²·I)`` puts its prediction where x0 is. Over the
data and ``x_t ~ q(x_t | x0)``,

    E KL(q_λ ‖ p) = ½·d·(λ²/σ² − 1 − log(λ²/σ²)) + E‖k·(x0 − x0̂)‖² / (2σ²),

whose derivative in σ² vanishes at ``σ² = λ² + k²·E‖x0 − x0̂‖²/d``. With the exact mean
``x0̂ = E[x0 | x_t]`` this is ``Var(x_s | x_t) = λ² + k²·Cov(x0 | x_t)`` averaged over dimensions
and ``x_t`` (the law of total variance), and Tweedie's ``x0 − E[x0|x_t] = −(sigma_t/alpha_t)·(ε −
E[ε|x_t])`` with ``E[ε·E[ε|x_t]] = E‖E[ε|x_t]‖²`` (the tower rule) gives

    σ*² = λ² + k²·v₀(t),   v₀(t) = (sigma_t²/alpha_t²)·(1 − Γ_t),   Γ_t = E‖ε̂(x_t, t)‖²/d,

a Monte-Carlo average over a data batch of the model's own noise prediction. This is Bao et al.'s
Theorem 1, ``σ*_n² = λ_n² + (sqrt(β̄_n/α_n) − sqrt(β̄_{n−1} − λ_n²))²·(1 − β̄_n·E‖∇log q_n‖²/d)``:
with ``alpha_s = sqrt(ᾱ_{n−1})``, ``alpha_t = sqrt(ᾱ_n)``, ``sigma_t² = β̄_n``, ``k·sigma_t/alpha_t =
sqrt(β̄_n/α_n) − sqrt(β̄_{n−1} − λ_n²)`` and ``β̄_n‖∇log q_n‖² = ‖ε̂‖²``. For the step into the data
(``sigma_s = 0``: ``λ = 0``, ``k = 1``) it is ``v₀``, the optimal Gaussian decoder variance.

**Clipping** (Bao et al.'s Theorem 2 and their code). Since ``0 ≤ Cov(x0|x_t)``, ``Γ ≤ 1``, and
``Γ ≥ 0``: ``λ² ≤ σ*² ≤ λ² + k²·sigma_t²/alpha_t²``; for data in ``[a, b]^d`` also ``Cov(x0|x_t) ≤
((b − a)/2)²``. The estimate of ``v₀`` is clipped into ``[0, min(sigma_t²/alpha_t², ((b − a)/2)²)]``
as the paper prescribes (their code clips ``(β̄_n/ᾱ_n)(1 − Γ̂_n)`` into ``[0, 1]`` for data in
``[−1, 1]``); the bounded-data bound applies when ``data_range`` is given. ``Γ̂ ≥ 0`` always (a
mean of squares); ``Γ̂ > 1`` happens near ``T``, where ``Γ → 1`` and the sampling error is
``O(1/sqrt(n·d))``.

:func:`estimate_eps_moment` measures ``Γ`` on a time grid (by default the model's N steps
``t_k = k/N``), :class:`EpsMomentTable` interpolates it linearly in ``t`` (an error outside the
grid: nothing is extrapolated), and :class:`AnalyticVariance` wraps any model so that its
predictions carry ``x0_var = v₀(t)`` (:attr:`~scoresde.model.Prediction.x0_var`), which the samplers'
and the bound's ``variance="analytic"`` read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from scoresde.errors import InputError, InputTypeError
from scoresde.model import Cond, DiffusionModel, Prediction, check_cond, check_model, check_times, split_cond
from scoresde.noise import NoiseSource, as_noise
from scoresde.sde import SDE


@dataclass(frozen=True)
class EpsMomentTable:
    """``Γ_t = E‖ε̂(x_t, t)‖²/d`` measured at increasing float64 times ``t`` (``gamma``, with the
    Monte-Carlo standard error ``se`` of each value over ``n`` samples); ``x0_var_max`` is the
    bounded-data clip ``((b − a)/2)²`` or ``None``."""

    t: Tensor
    gamma: Tensor
    se: Tensor
    n: int
    x0_var_max: float | None = None

    def gamma_at(self, t: Tensor) -> Tensor:
        """``Γ`` at float64 times ``t``, linear in ``t`` between the table's times."""
        t = torch.as_tensor(t, dtype=torch.float64)
        lo, hi = self.t[0], self.t[-1]
        if (t < lo).any() or (t > hi).any():
            raise InputError(f"the Γ table covers t in [{float(lo):.6g}, {float(hi):.6g}], got t from "
                             f"{float(t.min()):.6g} to {float(t.max()):.6g}; estimate it on times that "
                             "cover the sampler's grid (estimate_eps_moment(..., times=...))")
        j = torch.searchsorted(self.t, t.contiguous(), right=True).clamp(1, len(self.t) - 1)
        t0, t1 = self.t[j - 1], self.t[j]
        w = (t - t0) / (t1 - t0)
        return (1.0 - w) * self.gamma[j - 1] + w * self.gamma[j]

    def x0_var(self, sde: SDE, t: Tensor) -> Tensor:
        """``v₀(t) = (sigma²/alpha²)·(1 − Γ_t)`` clipped into ``[0, min(sigma²/alpha², x0_var_max)]``."""
        t = torch.as_tensor(t, dtype=torch.float64)
        sigma_bar2 = sde.sigma_bar(t) ** 2
        v0 = sigma_bar2 * (1.0 - self.gamma_at(t))
        upper = sigma_bar2 if self.x0_var_max is None else torch.clamp(sigma_bar2, max=self.x0_var_max)
        return torch.minimum(torch.clamp(v0, min=0.0), upper)


def estimate_eps_moment(
    model: DiffusionModel,
    x0: Tensor,
    *,
    generator: torch.Generator | NoiseSource,
    times: Tensor | None = None,
    cond: Cond = None,
    batch_size: int | None = None,
    data_range: tuple[float, float] | None = None,
) -> EpsMomentTable:
    """Measure ``Γ_t = E‖ε̂(x_t, t)‖²/d`` over the data batch ``x0`` at each of ``times``.

    At every time one fresh ``ε ~ N(0, I)`` per sample gives ``x_t = alpha·x0 + sigma·ε`` and one
    model call per chunk of ``batch_size`` samples (default: the whole batch); ``Γ`` is the mean of
    ``‖ε̂‖²/d`` over the samples and ``se`` its standard error. Estimate it on data held out from
    what it will be evaluated on.

    Args:
        model: any :class:`~scoresde.model.DiffusionModel` (its ``eps`` is used).
        x0: the data batch ``(n, ...)``, n ≥ 2.
        generator: source of the noise.
        times: increasing times in ``(0, T]`` with ``sigma > 0``; default the model's N steps
            ``k/N``, k = 1..N (the grid of ``variational_bound``).
        cond: the batch's condition, passed to the model.
        batch_size: samples per model call.
        data_range: ``(a, b)`` if the data lie in ``[a, b]^d`` (Bao et al.'s bounded-data clip).
    """
    check_model(model)
    sde = model.sde
    if x0.ndim < 2 or x0.shape[0] < 2 or not x0.is_floating_point() or not torch.isfinite(x0).all():
        raise InputError(f"x0 must be a finite floating-point (n, ...) batch with n >= 2, got "
                         f"{x0.dtype} of shape {tuple(x0.shape)}")
    check_cond(cond, x0.shape[0])
    if times is None:
        N = sde.require_N("the default Γ grid (the model's N steps); pass times= otherwise")
        times = torch.arange(1, N + 1, dtype=torch.float64) / N
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.ndim != 1 or len(times) < 2 or not (times[1:] > times[:-1]).all():
        raise InputError("times must be a strictly increasing 1-D tensor of >= 2 times, got "
                         f"{times.tolist()[:8]}")
    if times[0] <= 0 or times[-1] > sde.T or not (sde.sigma(times) > 0).all():
        raise InputError(f"times must lie in (0, T={sde.T}] where sigma > 0, got [{float(times[0]):.6g}, "
                         f"{float(times[-1]):.6g}]")
    x0_var_max = None
    if data_range is not None:
        a, b = data_range
        if not b > a:
            raise InputError(f"data_range must be (a, b) with a < b, got {data_range!r}")
        x0_var_max = ((b - a) / 2.0) ** 2
    n = x0.shape[0]
    size = n if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    noise = as_noise(generator)
    gammas, ses = [], []
    with torch.no_grad():
        for t in times:
            eps = noise.randn(tuple(x0.shape), x0.dtype, x0.device)
            chunks = zip(torch.split(sde.perturb(x0, t, eps), size), split_cond(cond, size, n), strict=True)
            sq = torch.cat([model.predict(xc, t, cc).eps.to(torch.float64).square().flatten(1).mean(1)
                            for xc, cc in chunks])
            if not torch.isfinite(sq).all():
                raise InputError(f"the model's eps is not finite at t={float(t):.6g}")
            gammas.append(sq.mean())
            ses.append(sq.std() / n**0.5)
    return EpsMomentTable(t=times, gamma=torch.stack(gammas), se=torch.stack(ses), n=n, x0_var_max=x0_var_max)


class AnalyticVariance:
    """``model`` with Analytic-DPM's x0 posterior variance ``v₀(t)`` attached to every prediction.

    ``predict(x, t, cond)`` is one call of ``model.predict`` (one NFE) whose :class:`Prediction`
    gains ``x0_var = table.x0_var(sde, t)`` (float64, per sample, broadcast against ``x``); the
    samplers' and the bound's ``variance="analytic"`` turn it into ``σ*² = λ² + k²·v₀``.
    """

    def __init__(self, model: DiffusionModel, table: EpsMomentTable):
        check_model(model)
        if not isinstance(table, EpsMomentTable):
            raise InputTypeError("table must be an EpsMomentTable (from estimate_eps_moment), got "
                                 f"{type(table).__name__}")
        self.model = model
        self.table = table

    @property
    def sde(self) -> SDE:
        return self.model.sde

    def predict(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Prediction:
        pred = self.model.predict(x, t, cond)
        v0 = self.table.x0_var(self.sde, check_times(t, x, self.sde)).to(x.device, non_blocking=True)
        return replace(pred, x0_var=v0.reshape(v0.shape + (1,) * (x.ndim - 1)))
