"""Guidance: wrappers that steer a :class:`~scoresde.model.DiffusionModel` toward a condition.

Both wrappers are models themselves (``.sde``, ``predict(x, t, cond) -> Prediction``), so every
sampler, ``encode`` and ``log_likelihood`` (the guided PF-ODE) run them unchanged, and they
compose with other wrappers. ``cond`` is what the caller passes to ``sample(..., cond=...)``.

**Classifier-free guidance** (Ho & Salimans 2022, eq. 6) with guidance weight ``w``:

    eps_w = (1 + w)·eps(x, t, c) − w·eps(x, t, ∅) = eps_c + w·(eps_c − eps_u),

so for exact branches the guided score is ``(1 + w)·∇log p_t(x | c) − w·∇log p_t(x)``
``= ∇log p_t(x) + (1 + w)·∇log p_t(c | x)``. ``w = 0`` is conditional sampling and ``w = −1``
unconditional sampling. diffusers' ``guidance_scale`` (and k-diffusion's ``cond_scale``) is
``γ = 1 + w``: ``guidance_scale=7.5`` there is ``scale=6.5`` here.

**Classifier guidance** (Dhariwal & Nichol 2021, Algorithm 1 / eq. 14) with gradient scale ``s``:

    ∇log p_t(x | c) ≈ s_θ(x, t) + s·∇_x log p_φ(c | x_t, t),   i.e.   eps_s = eps − s·sigma(t)·∇_x log p_φ,

the classifier's gradient taken by autograd (under ``torch.enable_grad()``, so it works inside
``torch.no_grad()``; with a graph through ``x``, as the exact-trace likelihood builds, the gradient
is differentiable in turn). With the exact classifier and ``s = 1`` this is the exact conditional
score. CFG with weight ``w`` is classifier guidance with ``s = 1 + w`` by an implicit classifier.

**Which scales are allowed.** Both scales are finite; ``s ≥ 0`` and ``w ≥ −1``, the same rule: the
guided density ``∝ p_t(x)·p_t(c | x)^s`` (``s = 1 + w``) must not favour *other* classes. To
steer away from a condition pass it as the null of CFG (``null_cond``, "negative prompting").

**Guidance interval** (Kynkäänniemi et al. 2024): ``interval=(t_lo, t_hi)`` guides only where
``t_lo <= t <= t_hi`` (``0 <= t_lo < t_hi <= T``), per sample by ``torch.where`` on the time, and
returns the unguided prediction elsewhere (CFG: the conditional branch; classifier guidance: the
model's own). The paper gives the interval in EDM's σ; ``sde.t_from_sigma_bar`` converts.

**Rescale** (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
§3.4, φ = ``rescale``): the guided ``x0`` is rescaled per sample to the standard deviation of the
conditional branch's ``x0`` and blended,

    x0_φ = φ·x0_w·std(x0_c)/std(x0_w) + (1 − φ)·x0_w,

std over all but the batch axis (unbiased, as the paper's code). The rescale acts on ``x0``, the
quantity whose over-exposure it corrects, so it does not depend on the network's parameterisation;
diffusers' ``rescale_noise_cfg`` applies the same formula to the raw network output instead (eps for
eps-models, v for v-models), which differs. ``eps`` follows from ``x0_φ`` at ``x``. Where the guided
``x0`` has zero spread the factor is 1 (nothing to rescale).

**NFE.** One ``predict`` call is one NFE. CFG evaluates both branches in ONE call of the inner model
on the doubled batch ``[x; x]``, ``[t; t]``, ``[cond; null]`` (as k-diffusion's ``CFGDenoiser`` and
diffusers' pipelines do), even where the interval switches guidance off. Classifier guidance makes
one inner call and one classifier forward and backward pass per ``predict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any, Protocol

import torch
from torch import Tensor

from scoresde.analytic import NULL_LABEL
from scoresde.errors import InputError, InputTypeError
from scoresde.model import Cond, DiffusionModel, Prediction, check_model, check_times, prediction_from_output
from scoresde.sde import SDE, batch_coeff

Interval = tuple[float, float]


class Classifier(Protocol):
    """A noisy classifier: ``classifier(x, t, cond) -> log p(cond | x_t)``, shape ``(batch,)``.

    ``t`` is float64 of shape ``(batch,)`` in ``[0, T]``; the result must be differentiable in
    ``x`` and per sample (no batch statistics). :class:`scoresde.NoisyClassifier` wraps a network
    that returns logits; ``GaussianMixture.classifier(sde)`` is the exact one.
    """

    def __call__(self, x: Tensor, t: Tensor, cond: Cond) -> Tensor: ...


def check_scale(scale: float, lowest: float, name: str, why: str) -> float:
    """``scale`` as a float, refusing a non-real, non-finite or too small one."""
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale):
        raise InputError(f"{name} must be a finite real number, got {scale!r}")
    if scale < lowest:
        raise InputError(f"{name} must be >= {lowest:g} ({why}), got {scale!r}")
    return float(scale)


def check_interval(interval: Interval | None, sde: SDE) -> Interval | None:
    """``(t_lo, t_hi)`` with ``0 <= t_lo < t_hi <= T``, or ``None`` (guide at every time)."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise InputError(f"interval must be a pair of times (t_lo, t_hi) or None, got {interval!r}") from None
    if not 0.0 <= lo < hi <= sde.T:
        raise InputError(f"interval must satisfy 0 <= t_lo < t_hi <= T={sde.T}, got ({lo:g}, {hi:g})")
    return lo, hi


def guidance_weight(scale: float, interval: Interval | None, t: Tensor) -> Tensor:
    """Per-sample scale ``(batch,)`` in float64: ``scale`` where ``t`` lies in ``interval``, else 0."""
    full = torch.full_like(t, scale)
    if interval is None:
        return full
    inside = (t >= interval[0]) & (t <= interval[1])
    return torch.where(inside, full, torch.zeros_like(full))


def _null_like(value: Tensor, null: Any, name: str) -> Tensor:
    """``null`` broadcast to ``value``'s shape, dtype and device."""
    null = torch.as_tensor(null, dtype=value.dtype, device=value.device)
    try:
        return null.expand_as(value)
    except RuntimeError:
        raise InputError(f"the null value of {name} must broadcast to its shape {tuple(value.shape)}, "
                         f"got shape {tuple(null.shape)}") from None


def paired_cond(cond: Cond, null_cond: Any) -> Cond:
    """The condition of the doubled batch ``[x; x]``: ``cond`` then its null version.

    A tensor ``cond`` pairs with ``null_cond`` broadcast to its shape (default: filled with
    :data:`~scoresde.analytic.NULL_LABEL`). A dict pairs each key named in the dict ``null_cond``
    with that null value; batched values of other keys are repeated, values without a batch axis
    (non-tensors, 0-d tensors) are passed as they are.
    """
    if cond is None:
        raise InputError("classifier-free guidance needs a condition: pass cond=... (class labels, say) "
                         "to sample, encode or log_likelihood")
    if isinstance(cond, Tensor):
        if isinstance(null_cond, Mapping):
            raise InputTypeError("cond is a tensor, so null_cond must be a tensor or a number, not a dict")
        null = _null_like(cond, NULL_LABEL if null_cond is None else null_cond, "cond")
        return torch.cat([cond, null])
    if not isinstance(cond, Mapping):
        raise InputTypeError(f"cond must be a tensor or a dict of network keyword arguments, "
                             f"got {type(cond).__name__}")
    if not isinstance(null_cond, Mapping):
        raise InputError("a dict condition needs null_cond as a dict of the null value of each key to drop "
                         "(e.g. {'class_labels': -1}); keys left out go to both branches unchanged")
    unknown = sorted(set(null_cond) - set(cond))
    if unknown:
        raise InputError(f"null_cond names keys {unknown} that cond does not have; "
                         f"cond's keys are {sorted(cond)}")
    paired = {}
    for key, value in cond.items():
        batched = isinstance(value, Tensor) and value.ndim > 0
        if key in null_cond:
            if not batched:
                raise InputError(f"cond[{key!r}] has no batch axis, so its null cannot differ between the "
                                 "conditional and unconditional halves of one batch")
            paired[key] = torch.cat([value, _null_like(value, null_cond[key], f"cond[{key!r}]")])
        else:
            paired[key] = torch.cat([value, value]) if batched else value
    return paired


class ClassifierFreeGuidance:
    """Classifier-free guidance of ``model`` with weight ``scale = w`` (see the module docstring).

    Args:
        model: a class-conditional :class:`~scoresde.model.DiffusionModel` that also knows the
            null condition (trained with label dropout, or an exact oracle).
        scale: ``w >= −1``; ``0`` is conditional sampling. diffusers' ``guidance_scale`` is ``1 + w``.
        null_cond: the unconditional branch's condition: for a tensor ``cond`` a tensor (or
            number) broadcast to its shape, default :data:`~scoresde.analytic.NULL_LABEL`; for a
            dict ``cond`` a dict of the null value of each key to drop.
        interval: guide only for ``t_lo <= t <= t_hi``; ``None`` guides at every time.
        rescale: φ in ``[0, 1]`` of Lin et al. 2024 (0: off).
    """

    def __init__(self, model: DiffusionModel, scale: float, *, null_cond: Any = None,
                 interval: Interval | None = None, rescale: float = 0.0):
        check_model(model)
        self.model = model
        self.scale = check_scale(scale, -1.0, "the guidance weight w",
                                 "w = −1 is unconditional; below it the guidance favours other classes")
        self.null_cond = null_cond
        self.interval = check_interval(interval, model.sde)
        why = "φ blends the rescaled and the plain guided x0"
        self.rescale = check_scale(rescale, 0.0, "rescale", why)
        if self.rescale > 1.0:
            raise InputError(f"rescale must lie in [0, 1] ({why}), got {rescale!r}")

    @property
    def sde(self) -> SDE:
        return self.model.sde

    def predict(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Prediction:
        """Both branches in one inner call; the guided prediction at ``(x, t)``."""
        t = check_times(t, x, self.sde)
        if self.rescale and x[0].numel() < 2:
            raise InputError(f"rescale needs at least 2 elements per sample for a standard deviation, "
                             f"got samples of shape {tuple(x.shape[1:])}")
        both = self.model.predict(torch.cat([x, x]), torch.cat([t, t]), paired_cond(cond, self.null_cond))
        n = x.shape[0]
        w = batch_coeff(guidance_weight(self.scale, self.interval, t), x)
        x0_c, eps_c = both.x0[:n], both.eps[:n]
        # Both fields combined with weights (1 + w, −w) summing to 1, so x = alpha·x0 + sigma·eps holds.
        x0 = x0_c + w * (x0_c - both.x0[n:])
        eps = eps_c + w * (eps_c - both.eps[n:])
        var_interp = None if both.var_interp is None else both.var_interp[:n]
        alpha, sigma = batch_coeff(self.sde.alpha(t), x), batch_coeff(self.sde.sigma(t), x)
        if not self.rescale:
            return Prediction(x=x, alpha=alpha, sigma=sigma, x0=x0, eps=eps, var_interp=var_interp)
        dims = tuple(range(1, x.ndim))
        std_c, std_w = x0_c.std(dim=dims, keepdim=True), x0.std(dim=dims, keepdim=True)
        ratio = torch.where(std_w > 0, std_c / std_w, torch.ones_like(std_w))
        factor = self.rescale * ratio + (1.0 - self.rescale)
        return prediction_from_output("x0", factor * x0, x, alpha, sigma, var_interp)


class ClassifierGuidance:
    """Classifier guidance of ``model`` by ``classifier`` with gradient scale ``scale = s``.

    Args:
        model: the diffusion model, called unconditionally unless ``conditional`` is set.
        classifier: ``classifier(x, t, cond) -> log p(cond | x_t)`` per sample (:class:`Classifier`).
        scale: ``s >= 0``; ``1`` with the exact classifier gives the exact conditional score.
        interval: guide only for ``t_lo <= t <= t_hi``; ``None`` guides at every time.
        conditional: pass ``cond`` to ``model`` too (a class-conditional model guided by a
            classifier, as in Dhariwal & Nichol's conditional rows).
    """

    def __init__(self, model: DiffusionModel, classifier: Classifier, scale: float, *,
                 interval: Interval | None = None, conditional: bool = False):
        check_model(model)
        if not callable(classifier):
            raise InputTypeError("classifier must be callable as classifier(x, t, cond) -> "
                                 f"log p(cond | x_t), got {type(classifier).__name__}")
        self.model, self.classifier = model, classifier
        self.scale = check_scale(scale, 0.0, "the classifier scale s",
                                 "s < 0 would guide away from the class")
        self.interval = check_interval(interval, model.sde)
        self.conditional = bool(conditional)

    @property
    def sde(self) -> SDE:
        return self.model.sde

    def log_prob_grad(self, x: Tensor, t: Tensor, cond: Cond) -> Tensor:
        """``∇_x log p_φ(cond | x_t)`` by autograd, shaped like ``x``; differentiable in turn when
        ``x`` carries a graph under grad mode."""
        track = torch.is_grad_enabled() and x.requires_grad
        with torch.enable_grad():
            xg = x if track else x.detach().requires_grad_(True)
            log_p = self.classifier(xg, t, cond)
            if not isinstance(log_p, Tensor) or log_p.shape != (x.shape[0],):
                got = tuple(log_p.shape) if isinstance(log_p, Tensor) else type(log_p).__name__
                raise InputError(f"the classifier must return log p(cond | x_t) per sample, shape "
                                 f"({x.shape[0]},), got {got}")
            (grad,) = torch.autograd.grad(log_p.sum(), xg, create_graph=track)
        return grad

    def predict(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Prediction:
        """The model's prediction with ``eps − s·sigma·∇log p_φ`` (and the matching ``x0``)."""
        if cond is None:
            raise InputError("classifier guidance needs a condition: pass cond=... (class labels, say) "
                             "to sample, encode or log_likelihood")
        t = check_times(t, x, self.sde)
        pred = self.model.predict(x, t, cond if self.conditional else None)
        s = batch_coeff(guidance_weight(self.scale, self.interval, t), x)
        alpha, sigma = pred.alpha, pred.sigma
        grad = self.log_prob_grad(x, t, cond)
        # x = alpha·x0 + sigma·eps is kept: alpha·Δx0 = −sigma·Δeps = s·sigma²·∇log p_φ.
        return Prediction(x=x, alpha=alpha, sigma=sigma, x0=pred.x0 + s * sigma * sigma / alpha * grad,
                          eps=pred.eps - s * sigma * grad, var_interp=pred.var_interp)
