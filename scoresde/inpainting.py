"""Inpainting / imputation: sample the missing part of ``y`` given its observed part, for any
data shape, with any unconditional (or conditional) model.

``y`` is a batch ``(batch, ...)``; ``mask`` is broadcastable to it and is 1/True where a
coordinate is observed ("known", the convention of score_sde's inpainting and of RePaint) and
0/False where it is to be filled in. Every method runs a reverse chain over a decreasing time
grid ``t_0 = T > t_1 > … > t_n = t_end`` and keeps the known coordinates on the forward
marginal of the observation: after each reverse step to ``s`` they are replaced by a fresh draw

    x_s[known] = alpha(s)·y + sigma(s)·z,     z ~ N(0, I)

(Song et al. 2021, App. I.2; Lugmayr et al. 2022, eq. 8), while the missing coordinates take the
model's reverse step. The methods:

* ``"replace"``: score_sde's PC inpainting with its reverse-diffusion/ancestral predictor and
  no corrector — one ancestral step (:func:`~scoresde.samplers.steps.reverse_step`, the
  ``ancestral`` sampler's variance choices) per grid step, then replacement. score_sde draws the
  replacement at the step's start time; here it is drawn at the time the step lands on, where the
  state now sits.
* ``"repaint"``: RePaint (Lugmayr et al. 2022, Alg. 1) with the resampling schedule of its code
  (:func:`repaint_schedule`): the same step-and-replace, but every ``jump_length`` steps the
  combined state is sent back up ``jump_length`` grid steps by the forward transitions
  ``q(x_t | x_s)`` and the steps are redone, ``n_resample − 1`` extra times, so that the missing
  part is harmonised with the known part. ``steps ≤ jump_length`` (or ``n_resample = 1``) is
  ``"replace"``.
* ``"ddim"``: deterministic DDIM (η = 0) steps for the missing part with the same replacement —
  diffusers' ``RePaintPipeline`` at ``eta=0, jump_n_sample=1`` (the replacement trick on DDIM).
  Only the known part's draws are random.

The forward transition between grid times ``s < t`` is the SDE's own Gaussian kernel

    x_t = (alpha_t/alpha_s)·x_s + sigma_t·sqrt(1 − δ)·z,   δ = (alpha_t·sigma_s/(alpha_s·sigma_t))²,

(:class:`~scoresde.samplers.steps.Step`), so every VP and VE SDE works; only ``alpha``,
``sigma`` and the grid's float64 table are used. One Gaussian draw per move serves both parts: its
entries at the known coordinates noise the observation, those at the missing ones the step (the
two sets are disjoint, so the draws stay independent), as diffusers' RePaint scheduler does.

None of these samples the exact conditional ``p(x_miss | y)`` in general: the missing part is
steered only by the current noisy draw of the known part, not by ``y`` itself, and where the
conditional is multimodal the modes' proportions come out wrong (``"replace"`` and ``"ddim"``
most; RePaint's resampling reduces the error at a cost in NFE). ``tests/test_inpainting.py``
measures this against the exact conditional of a Gaussian mixture
(:meth:`~scoresde.analytic.GaussianMixture.condition_on`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import torch
from torch import Tensor

from scoresde import samplers
from scoresde.errors import InputError, NonFiniteError
from scoresde.grids import GridTable
from scoresde.latent import find_latent_model
from scoresde.model import Cond, CountingModel, DiffusionModel, Prediction, check_cond, check_model
from scoresde.noise import NoiseSource, as_noise
from scoresde.samplers.steps import Step, Variance, resolve_variance, reverse_step
from scoresde.sampling import time_grid
from scoresde.sde import batch_coeff

Method = Literal["replace", "repaint", "ddim"]
METHODS = ("replace", "repaint", "ddim")
# The sampler whose step (and measured default grid and ends) each method uses.
_STEP_SAMPLER = {"replace": "ancestral", "repaint": "ancestral", "ddim": "ddim"}
REPAINT_DEFAULTS = {"jump_length": 10, "n_resample": 10}  # RePaint's paper and code


@dataclass(frozen=True)
class InpaintResult:
    """The completed batch ``x`` (known coordinates exactly ``y``), the exact number of network
    evaluations ``nfe``, the grid ``timesteps`` and the grid positions visited (``path``: 0 is
    ``t_start``, ``len(timesteps) − 1`` is ``t_end``; a rise is a forward jump)."""

    x: Tensor
    nfe: int
    timesteps: Tensor
    path: tuple[int, ...]


def repaint_schedule(steps: int, jump_length: int, n_resample: int) -> tuple[int, ...]:
    """The grid positions RePaint's sampler visits, from 0 (``t_start``) to ``steps`` (``t_end``).

    RePaint's ``get_schedule_jump`` (with its defaults for the second and third jump levels, which
    are off) in a grid of ``steps`` steps: the chain descends one position at a time; on landing at
    position ``p`` with ``τ = steps − 1 − p`` in ``range(0, steps − jump_length, jump_length)``
    (RePaint's state index τ, where τ = −1 is the data) it climbs back ``jump_length`` positions, one
    forward transition each, and descends again — ``n_resample − 1`` times per such position. The last
    step (onto ``t_end``) is never resampled. Reverse steps, hence NFE::

        steps + (n_resample − 1)·jump_length·len(range(0, steps − jump_length, jump_length)),

    e.g. 2410 for RePaint's 250 steps at j = r = 10 (4570 transitions with the 2160 forward ones).
    diffusers' ``RePaintScheduler`` builds the same list but reads its entries as model-call
    timesteps rather than states, which moves every jump one state down (it also resamples the
    step onto the data); the NFE is the same.
    """
    for name, value in (("steps", steps), ("jump_length", jump_length), ("n_resample", n_resample)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    jumps = {tau: n_resample - 1 for tau in range(0, steps - jump_length, jump_length)}
    path, p = [0], 0
    while p < steps:
        p += 1
        path.append(p)
        tau = steps - 1 - p
        if jumps.get(tau, 0) > 0:
            jumps[tau] -= 1
            for _ in range(jump_length):
                p -= 1
                path.append(p)
    return tuple(path)


def observed_draw(y: Tensor, mask: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
    """``x`` with its known coordinates replaced by the forward draw ``alpha·y + sigma·z``."""
    return torch.where(mask, batch_coeff(alpha, y) * y + batch_coeff(sigma, y) * z, x)


def forward_transition(x: Tensor, grid: GridTable, i: int, z: Tensor) -> Tensor:
    """``x_t ~ q(x_t | x_s)`` from ``s = grid.t[i+1]`` up to ``t = grid.t[i]``:
    ``x_t = (alpha_t/alpha_s)·x_s + sigma_t·sqrt(1 − δ)·z`` (``Step.forward_std``)."""
    step = Step.of(grid, i)
    return batch_coeff(step.alpha_t / step.alpha_s, x) * x + batch_coeff(step.forward_std, x) * z


def _reverse_step(method: str, variance: str, pred: Prediction, grid: GridTable, i: int, z: Tensor) -> Tensor:
    """The unknown part's step from ``grid.t[i]`` to ``grid.t[i+1]`` (no noise on the grid's last step)."""
    if method == "ddim":
        return reverse_step(pred, grid, i, None, eta=0.0)
    last = i == grid.steps - 1
    variance = resolve_variance(variance, pred, "posterior")
    return reverse_step(pred, grid, i, None if last else z, variance=variance)


def _check_mask(mask: Tensor | bool, y: Tensor) -> Tensor:
    mask = torch.as_tensor(mask, device=y.device)
    try:
        shape = torch.broadcast_shapes(mask.shape, y.shape)
    except RuntimeError:
        shape = None
    if shape != y.shape:
        raise InputError(f"mask must be broadcastable to y's shape {tuple(y.shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
            bad = mask[(mask != 0) & (mask != 1)].flatten()[:4].tolist()
            raise InputError(f"mask must hold 0/1 or bools (1 = observed), got values such as {bad}")
        mask = mask == 1
    return mask


def inpaint(
    model: DiffusionModel,
    y: Tensor,
    mask: Tensor,
    *,
    method: Method = "replace",
    steps: int | None = None,
    generator: torch.Generator | NoiseSource,
    cond: Cond = None,
    timesteps: Tensor | None = None,
    grid: str | None = None,
    t_end: float | None = None,
    denoise: bool | None = None,
    variance: Variance = "auto",
    jump_length: int | None = None,
    n_resample: int | None = None,
) -> InpaintResult:
    """Fill in the coordinates of ``y`` where ``mask`` is 0, keeping those where it is 1.

    Args:
        model: any :class:`~scoresde.model.DiffusionModel` of the data ``y`` comes from.
        y: ``(batch, ...)``, finite where observed; entries where ``mask`` is 0 are ignored
            (they may be NaN, as missing values often are).
        mask: broadcastable to ``y``, 0/1 or bools, 1 = observed (e.g. ``(1, C, H, W)`` for one
            mask over the batch, or ``y.shape`` for one per sample).
        method: ``"replace"``, ``"repaint"`` or ``"ddim"`` (see the module docstring).
        steps: grid steps (or ``timesteps``: an explicit decreasing grid from T).
        generator: a ``torch.Generator`` or :class:`~scoresde.PerSampleNoise` (every method draws
            the known part's forward noise).
        cond: the condition passed to every network call, as in :func:`scoresde.sample`.
        grid, t_end, denoise: as in :func:`scoresde.sample`; the defaults are those of the
            sampler whose step the method takes (``ancestral`` for replace/repaint, ``ddim``).
        variance: the ancestral step's noise, as the ``ancestral`` sampler's option: β̃
            (``"posterior"``), β (``"beta"``, score_sde's reverse-diffusion predictor), the model's
            learned Σ (``"learned"``), Analytic-DPM's (``"analytic"``) or ``"auto"`` (learned when the
            model has it, else posterior); replace/repaint only.
        jump_length, n_resample: RePaint's ``j`` and ``r`` (default 10 and 10); repaint only.

    Returns:
        an :class:`InpaintResult`; ``nfe`` is the number of reverse steps (see
        :func:`repaint_schedule`) plus one with ``denoise``.
    """
    check_model(model)
    if find_latent_model(model) is not None:
        raise InputError("inpaint replaces the observed part of the diffusion's state, but a latent model's "
                         "state is its autoencoder's latents, where a data mask has no meaning; inpaint a "
                         "pixel-space model")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if method != "repaint" and (jump_length is not None or n_resample is not None):
        raise InputError(f"jump_length and n_resample are RePaint's options (method='repaint'), "
                         f"got them with method={method!r}")
    if method == "ddim" and variance != "auto":
        raise InputError("variance is the ancestral step's option (method='replace' or 'repaint'); "
                         f"method='ddim' takes deterministic steps, got variance={variance!r}")
    if not isinstance(y, Tensor) or not y.is_floating_point() or y.ndim < 2:
        got = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise InputError(f"y must be a floating-point tensor of shape (batch, ...), got {got}")
    mask = _check_mask(mask, y)
    if not torch.isfinite(torch.where(mask, y, 0.0)).all():
        raise InputError("y must be finite where mask is 1 (the observed coordinates)")
    check_cond(cond, y.shape[0])
    spec = samplers.get(_STEP_SAMPLER[method])
    opts = spec.parse({"variance": variance} if method != "ddim" else {})
    sde = model.sde
    ts = time_grid(spec, model, opts, steps, timesteps, grid, None, t_end)
    if ts[0] != sde.T:
        raise InputError(f"inpainting starts from the prior at t = T = {sde.T}; timesteps start at "
                         f"{float(ts[0]):.6g}")
    denoise = spec.default_ends(opts)[1] if denoise is None else bool(denoise)
    if denoise and sde.sigma(ts[-1]) == 0:
        raise InputError("denoise=True needs a grid ending where sigma > 0 (t_end > 0)")
    n = len(ts) - 1
    if method == "repaint":
        j = REPAINT_DEFAULTS["jump_length"] if jump_length is None else jump_length
        r = REPAINT_DEFAULTS["n_resample"] if n_resample is None else n_resample
        path = repaint_schedule(n, j, r)
    else:
        path = tuple(range(n + 1))

    noise = as_noise(generator)
    table = GridTable.build(sde, ts)
    counting = CountingModel(model, cond)
    y = torch.where(mask, y, 0.0)
    z = noise.randn(tuple(y.shape), y.dtype, y.device)
    x = observed_draw(y, mask, sde.prior_std * z, table.alpha[0], table.sigma[0], z)
    for p, q in pairwise(path):
        z = noise.randn(tuple(y.shape), y.dtype, y.device)
        if q == p + 1:
            x = _reverse_step(method, variance, counting.predict(x, table.t[p]), table, p, z)
            x = observed_draw(y, mask, x, table.alpha[q], table.sigma[q], z)
        else:
            x = forward_transition(x, table, q, z)
    if denoise:
        x = counting.predict(x, ts[-1]).x0
    x = torch.where(mask, y, x)
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"inpainting produced non-finite values (method {method!r}, {n} steps); "
                             "check the model's outputs and the grid")
    return InpaintResult(x=x, nfe=counting.nfe, timesteps=ts, path=path)
