"""One model contract: ``predict(x, t, cond) -> Prediction`` on ``.sde``, for every model.

:class:`DiffusionModel` is the protocol every sampler, likelihood, bound, encoder and loss
calls. :class:`ScoreModel` implements it for a network of any prediction type:
``ScoreModel(net, sde, prediction, time_input)`` calls ``net(x, c)`` (or ``net(x, c, cond)`` /
``net(x, c, **cond)``, see below) where ``c`` is the time as the network expects it, and turns
the output into a :class:`Prediction` holding ``x0`` and ``eps`` (the score and v follow from
them). Wrappers (guidance, latent models, foreign networks) implement the same protocol and
compose; :class:`CountingModel` counts the protocol calls of any of them (the NFE).

Conditioning ``cond`` is passed to the network unchanged, as EDM's ``class_labels`` /
``**model_kwargs`` and k-diffusion's ``extra_args``: ``None`` (unconditional), a tensor whose
first axis is the batch (``net(x, c, cond)``), or a dict of keyword arguments
(``net(x, c, **cond)``) whose tensor values have the batch as their first axis (0-d tensors and
non-tensor values are passed as they are).

The conversions live here and nowhere else:

* ``x_t = alpha·x0 + sigma·eps``            (definition of the marginal)
* ``score = −eps / sigma``                  (Tweedie / denoising score matching)
* ``v = alpha·eps − sigma·x0``              (Salimans & Ho), so
  ``x0 = (alpha·x − sigma·v)/(alpha² + sigma²)``, ``eps = (sigma·x + alpha·v)/(alpha² + sigma²)``.

**Learned variances** (Nichol & Dhariwal 2021). ``ScoreModel(..., learned_variance=True)`` wraps a
network whose output has twice the channels of ``x`` (axis 1): the first half is the prediction,
the second the variance interpolation ``v`` (unconstrained, as in the paper's eq. 15), carried as
:attr:`Prediction.var_interp`. A reverse step from ``t`` to ``s`` then has the variance

    Σ = exp(v·log β_{t|s} + (1 − v)·log β̃_{t|s}),

``β_{t|s}`` the forward transition variance and ``β̃_{t|s}`` the posterior one of that step (see
:mod:`scoresde.samplers.steps`), so a strided grid interpolates between the strided step's bounds,
as improved DDPM's respacing does.

**On an accelerator.** :meth:`ScoreModel.predict` checks ``t`` where it lives (:func:`check_times`):
the samplers pass their grid's host times, so no call reads the device; the network's time input
goes to the device without a blocking copy. Runtime options of :class:`ScoreModel` (off by
default; config keys ``model.autocast``, ``model.compile``, ``model.channels_last``) run the
network under bf16/fp16 ``torch.autocast`` (times, schedule and conversions keep their dtypes),
compiled by ``torch.compile``, or in the channels-last memory format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from scoresde.errors import InputError, InputTypeError
from scoresde.sde import SDE, batch_coeff

PREDICTIONS = ("eps", "x0", "v", "score")
Cond = Tensor | Mapping[str, Any] | None
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class TimeInput:
    """How time reaches a network: ``encode(t, sde)`` and, where it exists, its inverse."""

    name: str
    encode: Callable[[Tensor, SDE], Tensor]
    decode: Callable[[Tensor, SDE], Tensor] | None = None


TIME_INPUTS = {
    ti.name: ti
    for ti in (
        TimeInput("continuous", lambda t, sde: t, lambda c, sde: c),
        # DDPM step index: t_i = (i + 1)/N  <=>  i = t·N − 1.
        TimeInput("index", lambda t, sde: t * sde.require_N("time_input='index'") - 1.0,
                  lambda c, sde: (c + 1.0) / sde.require_N("time_input='index'")),
        # score_sde's continuous VP/sub-VP label.
        TimeInput("scaled", lambda t, sde: 999.0 * t, lambda c, sde: c / 999.0),
        TimeInput("sigma", lambda t, sde: sde.sigma(t), lambda c, sde: _t_from_sigma(c, sde)),
    )
}


def _t_from_sigma(sigma: Tensor, sde: SDE) -> Tensor:
    """Invert the increasing ``sde.sigma`` by bisection in float64 (to 2⁻⁶⁰·T)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    lo = torch.zeros_like(sigma, dtype=torch.float64)
    hi = torch.full_like(lo, sde.T)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = sde.sigma(mid) < sigma
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Prediction:
    """What the model says at ``(x, t)``: the denoised ``x0`` and the noise ``eps``.

    ``alpha`` and ``sigma`` are broadcast against ``x`` in its dtype. ``score`` is infinite
    where ``sigma = 0``; samplers never evaluate the model there. ``var_interp`` is the learned
    variance interpolation ``v`` (shaped like ``x``) of a model that has one, else ``None``.
    ``x0_var`` is the mean per-dimension posterior variance of x0 given x_t, ``E‖x0 − E[x0|x_t]‖²/d``
    (float64, broadcastable against ``x``), attached by
    :class:`~scoresde.variance.AnalyticVariance` for Analytic-DPM's optimal reverse variance.
    """

    x: Tensor
    alpha: Tensor
    sigma: Tensor
    x0: Tensor
    eps: Tensor
    var_interp: Tensor | None = None
    x0_var: Tensor | None = None

    @property
    def score(self) -> Tensor:
        return -self.eps / self.sigma

    @property
    def v(self) -> Tensor:
        return self.alpha * self.eps - self.sigma * self.x0


@runtime_checkable
class DiffusionModel(Protocol):
    """What every consumer of a model calls: one evaluation at ``(x, t)`` under ``cond``.

    ``t`` is a scalar or of shape ``(batch,)`` in ``[0, sde.T]``; ``cond`` is ``None``, a tensor
    with the batch as its first axis, or a dict of keyword arguments for the network.
    """

    sde: SDE

    def predict(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Prediction: ...


def check_model(model: Any) -> None:
    """Refuse an object that does not implement :class:`DiffusionModel`."""
    if not (callable(getattr(model, "predict", None)) and isinstance(getattr(model, "sde", None), SDE)):
        raise InputTypeError("model must implement the DiffusionModel protocol (a .sde attribute and "
                             f".predict(x, t, cond)), e.g. a scoresde.ScoreModel; got {type(model).__name__}")


def check_cond(cond: Cond, batch: int) -> None:
    """Refuse a condition whose batch axis does not match ``batch`` samples."""
    if cond is None:
        return
    if isinstance(cond, Tensor):
        items = {"cond": cond}
    elif isinstance(cond, Mapping):  # a 0-d tensor keyword (a scale, say) has no batch axis
        items = {f"cond[{k!r}]": v for k, v in cond.items() if not (isinstance(v, Tensor) and v.ndim == 0)}
    else:
        raise InputTypeError(f"cond must be None, a tensor or a dict of network keyword arguments, "
                             f"got {type(cond).__name__}")
    for name, value in items.items():
        if isinstance(value, Tensor) and (value.ndim == 0 or value.shape[0] != batch):
            raise InputError(f"{name} must have the batch as its first axis ({batch} samples), "
                             f"got shape {tuple(value.shape)}")


def split_cond(cond: Cond, size: int, batch: int) -> list[Cond]:
    """``cond`` of ``batch`` samples cut along its batch axis into chunks of ``size``, as
    ``torch.split`` cuts the data (values without a batch axis go to every chunk)."""
    n = -(-batch // size)
    if cond is None:
        return [None] * n
    if isinstance(cond, Tensor):
        return list(torch.split(cond, size))
    parts = {k: torch.split(v, size) if isinstance(v, Tensor) and v.ndim > 0 else None
             for k, v in cond.items()}
    return [{k: (parts[k][i] if parts[k] is not None else v) for k, v in cond.items()} for i in range(n)]


class CountingModel:
    """Any :class:`DiffusionModel` with ``cond`` bound, counting protocol calls (the NFE).

    One NFE is one ``predict`` call on the whole batch. A wrapper that batches several network
    passes into one call (classifier-free guidance evaluates the conditional and unconditional
    branches together) counts once, as k-diffusion and diffusers count it.
    """

    def __init__(self, model: DiffusionModel, cond: Cond = None):
        check_model(model)
        self.model = model
        self.cond = cond
        self.nfe = 0

    @property
    def sde(self) -> SDE:
        return self.model.sde

    def predict(self, x: Tensor, t: float | Tensor) -> Prediction:
        self.nfe += 1
        return self.model.predict(x, t, self.cond)


def prediction_from_output(kind: str, out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor,
                           var_interp: Tensor | None = None) -> Prediction:
    """Convert a raw network output of type ``kind`` at ``x`` into a :class:`Prediction`."""
    if kind == "eps":
        eps, x0 = out, (x - sigma * out) / alpha
    elif kind == "x0":
        x0, eps = out, (x - alpha * out) / sigma
    elif kind == "score":
        eps, x0 = -sigma * out, (x + sigma * sigma * out) / alpha
    elif kind == "v":
        norm = alpha * alpha + sigma * sigma
        x0, eps = (alpha * x - sigma * out) / norm, (sigma * x + alpha * out) / norm
    else:
        raise InputError(f"prediction must be one of {PREDICTIONS}, got {kind!r}")
    return Prediction(x=x, alpha=alpha, sigma=sigma, x0=x0, eps=eps, var_interp=var_interp)


def compile_network(net: Callable[..., Tensor], options: bool | Mapping[str, Any]) -> Callable[..., Tensor]:
    """``net`` compiled by ``torch.compile(**options)`` (``True``: its defaults; ``False``: ``net``
    itself). A module is compiled in place (``nn.Module.compile``), so its ``state_dict`` keys stay."""
    if options is False:
        return net
    if options is not True and not isinstance(options, Mapping):
        raise InputTypeError(f"compile must be True, False or a dict of torch.compile keyword arguments, "
                             f"got {options!r}")
    kwargs = {} if options is True else dict(options)
    if isinstance(net, nn.Module):
        net.compile(**kwargs)
        return net
    return torch.compile(net, **kwargs)


class ScoreModel(nn.Module):
    """Wrap ``net(x, c[, cond]) -> tensor shaped like x`` as a :class:`DiffusionModel` on ``sde``.

    Args:
        net: the network; called as ``net(x, c)`` with ``c`` of shape ``(batch,)``, and with the
            condition as ``net(x, c, cond)`` (a tensor) or ``net(x, c, **cond)`` (a dict).
        sde: the forward SDE the network was trained for.
        prediction: what the network outputs: ``"eps"``, ``"x0"``, ``"v"`` or ``"score"``.
        time_input: how ``t ∈ [0, T]`` is given to the network: ``"continuous"`` (t),
            ``"index"`` (DDPM step ``t·N − 1``), ``"scaled"`` (``999·t``, score_sde's VP label),
            ``"sigma"`` (``sigma(t)``, score_sde's VE label) or a callable ``t -> c``.
        learned_variance: the network returns ``2·C`` channels on axis 1: the prediction, then
            the variance interpolation ``v`` (see the module docstring).
        autocast: run the network under ``torch.autocast`` in this dtype (``torch.bfloat16`` or
            ``torch.float16``; ``None``, the default: off). Only the network call is autocast: times
            and schedule coefficients stay float64 and the state keeps its dtype.
        channels_last: run an image network (inputs ``(batch, C, H, W)``) in the channels-last
            memory format: a module's 4-D weights are converted once, in place, and every input
            before the call. The numbers agree with the contiguous layout to float rounding.
        compile: compile the network with ``torch.compile``: ``True`` with its defaults, or a dict
            of its keyword arguments (``{"backend": "eager"}``, ``{"mode": "max-autotune"}``). A
            module is compiled in place (``nn.Module.compile``), so its ``state_dict`` keys stay.

    The network's output is returned in the dtype of ``x`` and, with ``channels_last``, in the
    layout of ``x``.
    """

    def __init__(
        self,
        net: Callable[..., Tensor],
        sde: SDE,
        prediction: str = "eps",
        time_input: str | Callable[[Tensor], Tensor] = "continuous",
        learned_variance: bool = False,
        *,
        autocast: torch.dtype | None = None,
        channels_last: bool = False,
        compile: bool | Mapping[str, Any] = False,
    ):
        super().__init__()
        if not callable(net):
            raise InputTypeError(f"net must be a callable network (an nn.Module), got {type(net).__name__}")
        if not isinstance(sde, SDE):
            raise InputTypeError(f"sde must be an SDE such as scoresde.VPSDE(), got {sde!r} "
                                 f"({type(sde).__name__})")
        if not isinstance(learned_variance, bool):
            raise InputTypeError(f"learned_variance must be True or False, got {learned_variance!r}")
        if prediction not in PREDICTIONS:
            raise InputError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if isinstance(time_input, str) and time_input not in TIME_INPUTS:
            raise InputError(
                f"time_input must be one of {sorted(TIME_INPUTS)} or a callable, got {time_input!r}"
            )
        if not (isinstance(time_input, str) or callable(time_input)):
            raise InputTypeError(f"time_input must be a string or a callable, got {type(time_input)}")
        if time_input == "index":
            sde.require_N("time_input='index'")
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise InputError(f"autocast must be None or one of {AUTOCAST_DTYPES}, got {autocast!r}")
        if not isinstance(channels_last, bool):
            raise InputTypeError(f"channels_last must be True or False, got {channels_last!r}")
        if channels_last and isinstance(net, nn.Module):
            net.to(memory_format=torch.channels_last)
        self.net = compile_network(net, compile)
        self.sde = sde
        self.prediction = prediction
        self.time_input = time_input
        self.learned_variance = bool(learned_variance)
        self.autocast = autocast
        self.channels_last = channels_last

    def net_time(self, t: Tensor) -> Tensor:
        """The network's time input for float64 times ``t``."""
        if callable(self.time_input):
            return self.time_input(t)
        return TIME_INPUTS[self.time_input].encode(t, self.sde)

    def predict(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Prediction:
        """One network call at ``(x, t)`` under ``cond``; ``t`` a scalar or ``(batch,)`` in ``[0, T]``."""
        t = check_times(t, x, self.sde)
        check_cond(cond, x.shape[0])
        # The host's float64 times to the device without a blocking copy (which would wait for the
        # device's queue to drain: a synchronisation per call).
        c = self.net_time(t).to(x.dtype).to(x.device, non_blocking=True)
        out = self.call_network(x, c, cond)
        expected = x.shape if not self.learned_variance else (x.shape[0], 2 * x.shape[1], *x.shape[2:])
        if not isinstance(out, Tensor) or out.shape != expected:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            what = ("shaped like its input" if not self.learned_variance else
                    "with twice its input's channels on axis 1 (prediction, then variance interpolation)")
            raise InputError(f"the network must return a tensor {what} {tuple(expected)}, got {got}")
        out = out.to(x.dtype)
        if self.channels_last and x.is_contiguous():
            out = out.contiguous()
        var_interp = None
        if self.learned_variance:
            out, var_interp = out.chunk(2, dim=1)
        alpha = batch_coeff(self.sde.alpha(t), x)
        sigma = batch_coeff(self.sde.sigma(t), x)
        return prediction_from_output(self.prediction, out, x, alpha, sigma, var_interp)

    def call_network(self, x: Tensor, c: Tensor, cond: Cond = None) -> Tensor:
        """The raw network output at ``(x, c)``, with the model's ``channels_last`` and ``autocast``."""
        if self.channels_last:
            if x.ndim != 4:
                raise InputError(f"channels_last needs image inputs (batch, C, H, W), got shape "
                                 f"{tuple(x.shape)}")
            x = x.contiguous(memory_format=torch.channels_last)
        context = torch.autocast(x.device.type, self.autocast) if self.autocast is not None else nullcontext()
        with context:
            if cond is None:
                return self.net(x, c)
            if isinstance(cond, Tensor):
                return self.net(x, c, cond)
            return self.net(x, c, **cond)

    def forward(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Prediction:
        return self.predict(x, t, cond)

    def score(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Tensor:
        return self.predict(x, t, cond).score

    def eps(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Tensor:
        return self.predict(x, t, cond).eps

    def x0(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Tensor:
        return self.predict(x, t, cond).x0

    def v(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Tensor:
        return self.predict(x, t, cond).v


def check_times(t: float | Tensor, x: Tensor, sde: SDE) -> Tensor:
    """Validate ``t`` against a batch ``x`` and return it as float64 of shape ``(batch,)``, on the
    device it came on (Python numbers: the host).

    Host times — numbers and CPU tensors, which is what every sampler passes (its grid's float64
    table lives on the host) — are checked on the host, which never waits for an accelerator; the
    caller moves what it needs to ``x``'s device (:meth:`ScoreModel.predict` moves the network's
    time input without a blocking copy). A ``t`` already on an accelerator is checked there, and
    reading the verdict back synchronises host and device once; only direct callers, the training
    losses (times drawn on the device) and the adaptive solvers (per-sample times) pass such times.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise InputError(f"times must be finite, got {t}")
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    elif t.shape != (x.shape[0],):
        raise InputError(
            f"t must be a scalar or of shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}"
        )
    if (t < 0).any() or (t > sde.T).any():
        raise InputError(f"times must lie in [0, T={sde.T}], got min {t.min():.6g}, max {t.max():.6g}")
    return t
