"""Training objectives: denoising score matching in continuous time, DDPM's ε-loss, SMLD's loss.

All three perturb data as the SDE does, ``x_t = alpha(t)·x0 + sigma(t)·z`` with ``z ~ N(0, I)``,
and regress the model's noise prediction on ``z``. Because ``score = −eps/sigma`` (see
:mod:`scoresde.model`), ``sigma·score + z = z − eps_θ`` and every loss here is a weighted

    L = E_{t, x0, z} [ w(t) · ||eps_θ(x_t, t) − z||² ],

which is what the network's ``prediction`` type (eps, x0, v or score) is converted to. They
differ only in how ``t`` is drawn and in ``w``:

* :func:`dsm_loss` — Song et al. 2021, eq. 7: ``E_t[λ(t) ||s_θ(x_t, t) − ∇log p(x_t | x0)||²]``
  with ``∇log p(x_t | x0) = −z/sigma`` and ``t ~ U[eps, T]``. ``λ(t) = sigma²`` gives ``w = 1``;
  the likelihood weighting ``λ(t) = g(t)²`` of Song et al. 2021b ("Maximum likelihood training
  of score-based diffusion models") gives ``w = g²/sigma²``, for which the loss (with
  ``reduce_mean=False``) bounds the negative log-likelihood up to constants.
* :func:`ddpm_loss` — Ho et al. 2020's simple loss: ``i ~ U{0..N−1}`` at ``t_i = (i + 1)/N``.
* :func:`smld_loss` — Song & Ermon 2019 for the VE SDE: ``i ~ U{0..N−1}`` at ``t_i = i/(N − 1)``,
  so ``sigma(t_i)`` is the i-th noise level of ``VESDE.discrete_sigmas``; ``λ = sigma_i²``.

* :func:`hybrid_loss` — improved DDPM's ``L_simple + λ·L_vlb`` (Nichol & Dhariwal 2021) for a
  model with a learned variance: DDPM's simple loss plus the variational bound's term at the same
  draw, whose mean is frozen so that it trains only the variance.

``reduce_mean`` averages the squared error over the data dimensions (else sums it); the result
is then averaged over the batch. Times are drawn first, then ``z``, both from the ``generator``.
``cond`` (a tensor with the batch first, or a dict of network keyword arguments) is passed to
the model unchanged: a conditional model learns ``eps(x_t, t, cond)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from scoresde.bound import check_decoder, step_term
from scoresde.errors import InputError
from scoresde.model import Cond, DiffusionModel, check_cond, check_times
from scoresde.sde import VESDE


def draw_x_t(model: DiffusionModel, x0: Tensor, t: Tensor,
               generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(x_t, z)`` with ``x_t = alpha(t)·x0 + sigma(t)·z``, ``z`` drawn from ``generator``."""
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    return model.sde.perturb(x0, t, z), z


def _squared_error(eps: Tensor, z: Tensor, reduce_mean: bool) -> Tensor:
    """``||eps − z||²`` per sample, averaged (``reduce_mean``) or summed over the data dimensions."""
    err = (eps - z).square().flatten(1)
    return err.mean(1) if reduce_mean else err.sum(1)


def _noise_matching(
    model: DiffusionModel,
    x0: Tensor,
    t: Tensor,
    generator: torch.Generator,
    *,
    cond: Cond = None,
    weight: Tensor | None = None,
    reduce_mean: bool = True,
) -> Tensor:
    """``mean_batch[ w(t) · reduce_dims ||eps_θ(x_t, t) − z||² ]`` at float64 times ``t`` (batch,)."""
    x_t, z = draw_x_t(model, x0, t, generator)
    per_sample = _squared_error(model.predict(x_t, t, cond).eps, z, reduce_mean)
    if weight is not None:
        per_sample = per_sample * weight.to(per_sample)
    return per_sample.mean()


def uniform_index(model: DiffusionModel, x0: Tensor, generator: torch.Generator) -> Tensor:
    """Step indices ``i ~ U{0..N−1}``, one per sample, as float64."""
    n = model.sde.require_N("a discrete-time loss (use dsm_loss otherwise)")
    i = torch.randint(n, (x0.shape[0],), generator=generator, device=x0.device)
    return i.to(torch.float64)


def dsm_loss(
    model: DiffusionModel,
    x0: Tensor,
    generator: torch.Generator,
    *,
    cond: Cond = None,
    eps: float = 1e-5,
    likelihood_weighting: bool = False,
    reduce_mean: bool = True,
    t: float | Tensor | None = None,
) -> Tensor:
    """Continuous-time denoising score matching (Song et al. 2021, eq. 7) for any SDE.

    Per sample, with ``t ~ U[eps, T]`` and ``x_t = alpha·x0 + sigma·z``:

    * default (``λ = sigma²``): ``||sigma·s_θ(x_t, t) + z||²``;
    * ``likelihood_weighting`` (``λ = g²``): ``||s_θ(x_t, t) + z/sigma||² · g(t)²``.

    Args:
        model: the score model being trained.
        x0: a data batch ``(batch, ...)``.
        generator: source of the times and the noise.
        cond: the batch's condition, passed to the model.
        eps: smallest time drawn (the score blows up as ``sigma → 0``).
        likelihood_weighting: use ``λ = g²`` instead of ``λ = sigma²``.
        reduce_mean: mean over data dimensions (else sum), before the batch mean.
        t: evaluate at these times (a scalar or ``(batch,)``) instead of drawing them;
            for tests and diagnostics of the loss as a function of time.
    """
    T = model.sde.T
    if not 0 <= eps < T:
        raise InputError(f"eps must lie in [0, T={T}), got {eps}")
    if t is None:
        t = eps + (T - eps) * torch.rand(x0.shape[0], generator=generator, dtype=torch.float64,
                                         device=x0.device)
    else:
        t = check_times(t, x0, model.sde)
    weight = model.sde.g2(t) / model.sde.sigma(t) ** 2 if likelihood_weighting else None
    return _noise_matching(model, x0, t, generator, cond=cond, weight=weight, reduce_mean=reduce_mean)


def ddpm_loss(model: DiffusionModel, x0: Tensor, generator: torch.Generator, *, cond: Cond = None,
              reduce_mean: bool = True) -> Tensor:
    """DDPM's simple loss ``||eps_θ(x_t, t_i) − z||²`` with ``i ~ U{0..N−1}``, ``t_i = (i + 1)/N``.

    On a ``VPSDE.from_betas`` schedule ``alpha(t_i)² = ᾱ_i`` exactly, and with
    ``time_input="index"`` the network sees the step index ``i``.
    """
    t = (uniform_index(model, x0, generator) + 1.0) / model.sde.N
    return _noise_matching(model, x0, t, generator, cond=cond, reduce_mean=reduce_mean)


def smld_loss(model: DiffusionModel, x0: Tensor, generator: torch.Generator, *, cond: Cond = None,
              reduce_mean: bool = True) -> Tensor:
    """SMLD's loss ``||sigma_i·s_θ(x0 + sigma_i z, sigma_i) + z||²`` for a :class:`VESDE`.

    ``i ~ U{0..N−1}`` at ``t_i = i/(N − 1)``, so ``sigma(t_i) = discrete_sigmas[i]``.
    """
    if not isinstance(model.sde, VESDE):
        raise InputError(f"smld_loss needs a VESDE, got {type(model.sde).__name__}; "
                         "use dsm_loss or ddpm_loss for other SDEs")
    # N = 1 has the single level sigma_min = sigma(0).
    t = uniform_index(model, x0, generator) / max(model.sde.N - 1, 1)
    return _noise_matching(model, x0, t, generator, cond=cond, reduce_mean=reduce_mean)


def hybrid_loss(
    model: DiffusionModel,
    x0: Tensor,
    generator: torch.Generator,
    *,
    cond: Cond = None,
    vlb_weight: float = 1e-3,
    reduce_mean: bool = True,
    decoder: str = "gaussian",
    data_range: tuple[float, float] = (-1.0, 1.0),
    levels: int = 256,
    step: int | Tensor | None = None,
) -> Tensor:
    """Improved DDPM's hybrid objective ``L_simple + λ·L_vlb`` (Nichol & Dhariwal 2021, eq. 16).

    Per sample, with ``i ~ U{0..N−1}`` (step ``k = i + 1`` of the bound, ``t_i = (i + 1)/N``),
    ``z ~ N(0, I)`` and ``x_t = alpha·x0 + sigma·z`` (times drawn first, then ``z``):

        loss = ||eps_θ(x_t, t_i) − z||²  +  λ·N·L_{k−1}(x0, x_t; mean frozen) / (ln 2 · D),

    averaged over the batch. ``L_{k−1}`` is the variational bound's term at that draw
    (:func:`scoresde.bound.step_term` with the model's learned Σ): for ``k ≥ 2`` the KL of the true
    posterior ``q(x_{t_{i−1}} | x_t, x0)`` to ``p_θ``, for ``k = 1`` the decoder's
    ``−log p_θ(x0 | x_{t_0})``. In it the prediction's ``x0`` and ``eps`` are detached (improved
    DDPM's stop-gradient), so ``L_vlb`` trains only the variance interpolation ``v`` and the mean
    learns from ``L_simple`` alone.

    Units, as improved-diffusion's ``RESCALED_MSE`` (``gaussian_diffusion.training_losses``):
    ``L_simple`` is the per-dimension mean squared error (``reduce_mean``) and the bound's term is
    in bits per dimension (nats / (ln 2 · D)), times ``N`` so that ``N·E_k[L_{k−1}]`` estimates the
    whole ``L_vlb`` (the prior term ``L_T`` does not depend on θ and is left out); their
    ``vb·N/1000`` is this with ``λ = 10⁻³``. With ``reduce_mean=False`` both parts are summed over
    the dimensions instead (the bound's term in bits).

    Args:
        model: a model with a learned variance (``ScoreModel(..., learned_variance=True)``).
        x0: a data batch; for ``decoder="discretized"`` on the ``levels`` values spanning
            ``data_range`` (image data as :mod:`scoresde.data` returns it).
        generator: source of the steps and the noise.
        cond: the batch's condition, passed to the model.
        vlb_weight: λ (improved DDPM's 10⁻³).
        reduce_mean: mean over data dimensions (else sum), before the batch mean.
        decoder: ``"gaussian"`` (continuous data) or ``"discretized"`` (image data), as the bound.
        data_range, levels: the pixel grid of ``decoder="discretized"``.
        step: evaluate at these step indices ``i`` (an int or ``(batch,)``) instead of drawing
            them; for tests and diagnostics.
    """
    N = model.sde.require_N("the hybrid loss (a discrete-time bound)")
    check_decoder(decoder)
    if not vlb_weight >= 0:
        raise InputError(f"vlb_weight must be >= 0, got {vlb_weight}")
    check_cond(cond, x0.shape[0])
    if decoder == "discretized":
        _check_on_pixel_grid(x0, data_range, levels)
    if step is None:
        i = uniform_index(model, x0, generator)
    else:
        i = torch.as_tensor(step, dtype=torch.float64, device=x0.device)
        if i.shape not in ((), (x0.shape[0],)):
            raise InputError(f"step must be an int or one per sample ({x0.shape[0]},), "
                             f"got shape {tuple(i.shape)}")
        i = i.expand(x0.shape[0])
        if (i != i.round()).any() or (i < 0).any() or (i > N - 1).any():
            raise InputError(f"step must be integers in [0, {N - 1}], got {step!r}")
    t = (i + 1.0) / N
    x_t, z = draw_x_t(model, x0, t, generator)
    pred = model.predict(x_t, t, cond)
    if pred.var_interp is None:
        raise InputError("hybrid_loss trains a learned variance: the model's predictions have no var_interp "
                         "(build it as ScoreModel(..., learned_variance=True)); use ddpm_loss otherwise")
    simple = _squared_error(pred.eps, z, reduce_mean)
    frozen = replace(pred, x0=pred.x0.detach(), eps=pred.eps.detach())
    term = step_term(model.sde, i.long() + 1, x0, z, frozen, variance="learned", decoder=decoder,
                     data_range=data_range, levels=levels)
    scale = N / (math.log(2.0) * (x0[0].numel() if reduce_mean else 1))
    return (simple + vlb_weight * scale * term.to(simple.dtype)).mean()


def _check_on_pixel_grid(x0: Tensor, data_range: tuple[float, float], levels: int) -> None:
    """Refuse data off the ``levels`` values ``lo + (hi − lo)·p/(levels − 1)`` (to 10⁻³ of a bin)."""
    lo, hi = data_range
    p = (x0.to(torch.float64) - lo) / (hi - lo) * (levels - 1)
    if (p < -1e-3).any() or (p > levels - 1 + 1e-3).any() or ((p - p.round()).abs() > 1e-3).any():
        raise InputError(f"decoder='discretized' needs data on the {levels} values spanning data_range "
                         f"{tuple(data_range)} (as scoresde.data returns images); got values off that grid")


LossFn = Callable[..., Tensor]
LOSSES: dict[str, LossFn] = {"dsm": dsm_loss, "ddpm": ddpm_loss, "smld": smld_loss, "hybrid": hybrid_loss}


def get_loss(name: str) -> LossFn:
    """The loss registered under ``name`` (``"dsm"``, ``"ddpm"``, ``"smld"`` or ``"hybrid"``)."""
    if name not in LOSSES:
        raise InputError(f"unknown loss {name!r}; available: {sorted(LOSSES)}")
    return LOSSES[name]
