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

``reduce_mean`` averages the squared error over the data dimensions (else sums it); the result
is then averaged over the batch. Times are drawn first, then ``z``, both from the ``generator``.
``cond`` (a tensor with the batch first, or a dict of network keyword arguments) is passed to
the model unchanged: a conditional model learns ``eps(x_t, t, cond)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoresde.model import Cond, DiffusionModel, check_times
from scoresde.sde import VESDE, batch_coeff


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
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_t = batch_coeff(model.sde.alpha(t), x0) * x0 + batch_coeff(model.sde.sigma(t), x0) * z
    err = (model.predict(x_t, t, cond).eps - z).square().flatten(1)
    per_sample = err.mean(1) if reduce_mean else err.sum(1)
    if weight is not None:
        per_sample = per_sample * weight.to(per_sample)
    return per_sample.mean()


def _uniform_index(model: DiffusionModel, x0: Tensor, generator: torch.Generator) -> Tensor:
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
        raise ValueError(f"eps must lie in [0, T={T}), got {eps}")
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
    t = (_uniform_index(model, x0, generator) + 1.0) / model.sde.N
    return _noise_matching(model, x0, t, generator, cond=cond, reduce_mean=reduce_mean)


def smld_loss(model: DiffusionModel, x0: Tensor, generator: torch.Generator, *, cond: Cond = None,
              reduce_mean: bool = True) -> Tensor:
    """SMLD's loss ``||sigma_i·s_θ(x0 + sigma_i z, sigma_i) + z||²`` for a :class:`VESDE`.

    ``i ~ U{0..N−1}`` at ``t_i = i/(N − 1)``, so ``sigma(t_i) = discrete_sigmas[i]``.
    """
    if not isinstance(model.sde, VESDE):
        raise ValueError(f"smld_loss needs a VESDE, got {type(model.sde).__name__}; "
                         "use dsm_loss or ddpm_loss for other SDEs")
    # N = 1 has the single level sigma_min = sigma(0).
    t = _uniform_index(model, x0, generator) / max(model.sde.N - 1, 1)
    return _noise_matching(model, x0, t, generator, cond=cond, reduce_mean=reduce_mean)


LossFn = Callable[..., Tensor]
LOSSES: dict[str, LossFn] = {"dsm": dsm_loss, "ddpm": ddpm_loss, "smld": smld_loss}


def get_loss(name: str) -> LossFn:
    """The loss registered under ``name`` (``"dsm"``, ``"ddpm"`` or ``"smld"``)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; available: {sorted(LOSSES)}")
    return LOSSES[name]
