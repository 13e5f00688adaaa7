"""Exact log-likelihoods through the probability-flow ODE (Song et al. 2021, §4.3, App. D.2).

The PF-ODE ``dx̄/dσ̄ = eps`` of :mod:`scoresde.flow` (``x̄ = x/alpha``, ``σ̄ = sigma/alpha``) is
integrated here in other coordinates: the state is ``x`` itself and the variable is
``u = asinh(σ̄)`` (≈ σ̄ for σ̄ ≪ 1, ≈ log 2σ̄ for σ̄ ≫ 1), together with the instantaneous change
of variables. With ``σ̄ = sinh u``, ``x = alpha·x̄`` and ``κ = d log alpha/dσ̄ = 2 f alpha sigma / g²``
(from ``dσ̄/dt = g²/(2 alpha sigma)``; κ = 0 for VE, ``−alpha·sigma`` for VP):

    dx/du = cosh(u)·(κ·x + alpha·eps(x, t(σ̄))),     dℓ/du = cosh(u)·alpha·div_x eps,

and from ``t = eps`` (data) to ``t = T``

    log p_eps(x) = log p_T(z) + ℓ(T) + D·log(alpha_T / alpha_eps),

with ``z = x(T)`` the latent and D the dimension: ``div_x(dx/du) = cosh(u)(D·κ + alpha·div_x eps)``,
and the ``D·κ`` part integrates in closed form to the last term. ``log p_T`` is the SDE's prior
unless ``prior_logp`` is given. Why these coordinates: the same solver at the same tolerance and
accuracy needs 15–40 % fewer evaluations on the benchmark's VP mixtures than in ``(σ̄, x̄)`` (where
VP's ``x̄`` grows to ``1/alpha_T ≈ 150`` and σ̄ spans 1e-3…150) and 0–20 % fewer on VE; a variable of
σ̄ alone does not depend on how the schedule parameterises t (benchmarks/README.md, "The VP NFE
gap").

Divergence: ``trace="exact"`` (D vector–Jacobian products per evaluation), or the
Hutchinson–Skilling estimator ``E_v[vᵀ J v]`` with ``probes`` Rademacher or Gaussian vectors,
drawn once per solve and held fixed, so that the adaptive solver sees a smooth field. The VJPs
run ``trace_chunk`` at a time as one batched backward pass (:func:`divergence`): peak memory
≈ ``trace_chunk`` × the activation memory of one VJP of the batch.

Step-size control: torchdiffeq and scipy share one step size across the batch and measure the
error with one RMS over the whole augmented state (``error_norm="batch"`` of :mod:`scoresde.ode`,
as score_sde's scipy solve does; the ``ode`` sampler holds each sample to the tolerance instead,
which here would cost about 50 % more NFE: 98 → 146 on a 64-point 2-D mixture at 1e-5), so a
sample's log-density depends on its companions within the tolerance (splitting that batch into
4 changed log p by up to 3.3e-3 nats), and NFE grows with the batch; ``batch_size`` splits the
data into independent solves. The per-sample methods (``method="torchode_dopri5"`` or
``"torchode_tsit5"``, see :mod:`scoresde.ode`) give every sample its own steps and error norm:
its log-density does not depend on its batch, and ``nfe`` is its own count.

Latent models (:class:`~scoresde.latent.LatentDiffusion`, or a wrapper of one): the density is
that of ``z = to_latent(x)`` in latent space, ``log p_eps(z)``, and the result says so
(``space="latent"``). It is not a density of the data: with a latent dimension below the data's the
model has none in data space, and for an invertible decoder the two differ by ``log|det ∂z/∂x|``
(see :mod:`scoresde.latent`). :func:`bits_per_dim` therefore refuses latent models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde import grids, ode
from scoresde.checks import check_float_dtype, check_int, check_real, check_steps, check_tensor
from scoresde.errors import InputError, InputTypeError
from scoresde.flow import Predictor
from scoresde.latent import find_latent_model
from scoresde.model import Cond, CountingModel, DiffusionModel, check_cond, check_model, split_cond
from scoresde.noise import NoiseSource, as_noise
from scoresde.sde import SDE, batch_coeff

TRACES = ("exact", "rademacher", "gaussian")
TOLERANCE = 1e-5  # rtol and atol of the adaptive solve unless given


@dataclass(frozen=True)
class LikelihoodResult:
    """Per-sample results in nats: ``logp = prior_logp + delta_logp``.

    ``nfe`` holds, for each sample, the network evaluations its solve needed: those of the
    batch solve it was part of with a shared step size, its own with a per-sample method
    (the batch then made ``nfe.max()`` calls, each evaluating all its samples).
    ``space`` is where the density lives: ``"data"``, or ``"latent"`` for a latent model
    (``logp`` is then ``log p(z)`` at ``z = to_latent(x)``, ``z`` here the prior end of the ODE).
    """

    logp: Tensor
    z: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    nfe: Tensor
    space: str = "data"


def check_trace_chunk(trace_chunk: int | None) -> None:
    if trace_chunk is not None:
        check_int(trace_chunk, "trace_chunk", 1, expected="None or an integer >= 1")


def _vjps(eps: Tensor, x: Tensor, vectors: Tensor) -> Tensor:
    """``vᵀ J`` for each ``v`` in ``vectors (k, *eps.shape)``: one backward pass, batched for k > 1."""
    if len(vectors) == 1:
        (g,) = torch.autograd.grad(eps, x, grad_outputs=vectors[0], retain_graph=True)
        return g[None]
    (g,) = torch.autograd.grad(eps, x, grad_outputs=vectors, retain_graph=True, is_grads_batched=True)
    return g


def divergence(eps: Tensor, x: Tensor, trace: str = "exact", probes: Tensor | None = None,
               chunk: int | None = None) -> Tensor:
    """Per-sample divergence ``Σ_i ∂eps_i/∂x_i`` of a graph ``eps(x)`` with ``x`` requiring grad.

    ``trace="exact"``: ``tr J = Σ_i e_iᵀ J e_i`` over the D basis vectors ``e_i`` (each set in
    every sample at once: a sample's eps depends on its own x only). Otherwise ``probes``
    ``(K, *x.shape)`` give the Hutchinson estimate ``mean_k v_kᵀ J v_k``.

    The vector–Jacobian products run ``chunk`` at a time, each chunk one batched backward pass
    (``torch.autograd.grad(..., is_grads_batched=True)``, a vmap over the backward);
    ``chunk=None`` runs all D (or K) in one pass, ``chunk=1`` one plain backward per vector.
    Memory bound: beyond the forward graph (held once), a pass holds ``chunk`` cotangents and
    intermediate gradients, so peak memory ≈ ``chunk`` × (activation memory of one VJP of the
    batch), plus the exact trace's ``chunk × batch × D`` basis vectors. With a network whose
    one backward takes M bytes, the exact trace needs ≈ ``chunk·M`` bytes in ``ceil(D/chunk)``
    passes. (Ops without a vmap rule fall back to a loop inside the pass, with a warning.)
    """
    if trace not in TRACES:
        raise InputError(f"trace must be one of {TRACES}, got {trace!r}")
    check_trace_chunk(chunk)
    batch, d = x.shape[0], x[0].numel()
    if trace == "exact":
        count = d
    elif probes is None:
        raise InputError(f"trace={trace!r} needs probe vectors")
    else:
        count = len(probes)
    step = count if chunk is None else min(int(chunk), count)
    out = torch.zeros(batch, dtype=eps.dtype, device=eps.device)
    for start in range(0, count, step):
        k = min(step, count - start)
        if trace == "exact":
            rows, idx = torch.arange(k, device=eps.device), torch.arange(start, start + k, device=eps.device)
            basis = eps.new_zeros(k, batch, d)
            basis[rows, :, idx] = 1.0
            g = _vjps(eps, x, basis.reshape(k, *eps.shape)).flatten(2)
            out = out + g[rows, :, idx].sum(0)
        else:
            v = probes[start:start + k]
            out = out + (_vjps(eps, x, v) * v).flatten(2).sum(2).sum(0)
    return out if trace == "exact" else out / count


def draw_probes(kind: str, k: int, shape: tuple[int, ...], noise: NoiseSource,
                dtype: torch.dtype, device: torch.device) -> Tensor:
    """``k`` Hutchinson probes of ``shape``: Rademacher (±1) or standard Gaussian."""
    v = torch.stack([noise.randn(shape, dtype, device) for _ in range(k)])
    return torch.sign(v) if kind == "rademacher" else v


def _check_data(x: Tensor) -> None:
    check_tensor(x, "x", min_ndim=2, floating=False)
    if not x.is_floating_point():
        raise InputError(f"x must be floating point, got {x.dtype} (for 8-bit images use bits_per_dim)")


def _solve_settings(method: str, steps: int | None, grid: str | None, rtol: float | None,
                    atol: float | None) -> tuple[int | None, str, float, float]:
    """``(steps, grid, rtol, atol)`` checked against ``method``: an adaptive method takes rtol/atol
    (default :data:`TOLERANCE`) and no grid; a fixed-step one takes steps and a grid, and refuses
    rtol/atol, which it would ignore."""
    if ode.is_adaptive(method):
        for name, value in (("steps", steps), ("grid", grid)):
            if value is not None:
                raise InputError(f"adaptive method {method!r} chooses its own steps; got {name}={value!r} "
                                 "(drop it, or use a fixed-step method such as 'heun' or 'rk4' with steps)")
        tols = [TOLERANCE if v is None else check_real(v, n) for n, v in (("rtol", rtol), ("atol", atol))]
        if not all(v > 0 for v in tols):
            raise InputError(f"rtol and atol must be > 0, got rtol={tols[0]}, atol={tols[1]}")
        return None, "", tols[0], tols[1]
    if steps is None:
        raise InputError(f"fixed-step method {method!r} needs steps (an integer >= 1)")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None:
            raise InputError(f"{name} is not used by the fixed-step method {method!r} (it takes the steps of "
                             f"its grid; uses: steps, grid); drop {name}, or use an adaptive method such as "
                             "'dopri5' with rtol/atol")
    if grid is not None and not isinstance(grid, str):
        raise InputTypeError(f"grid must be a grid's name such as 'logsnr', got {grid!r}")
    return check_steps(steps), grid or "logsnr", TOLERANCE, TOLERANCE


def likelihood_field(predict: Predictor, sde: SDE, shape: tuple[int, ...],
                     trace: str = "exact", probes: Tensor | None = None,
                     trace_chunk: int | None = None) -> ode.VectorField:
    """The PF-ODE in ``u = asinh(σ̄)`` with its divergence, on the flat state ``(x, ℓ)``.

    ``(u, y) -> cosh(u)·[κ·x + alpha·eps(x, t), alpha·div_x eps]`` for ``y = [x.flatten(1), ℓ]``
    (see the module docstring): :mod:`scoresde.flow`'s ``dx̄/dσ̄ = eps`` in other coordinates, with
    ``eps`` read from ``predict(x, t)`` at ``x = alpha·x̄`` directly. ``u`` is a scalar or one time
    per sample.
    """
    d = math.prod(shape[1:])

    def field(u: Tensor, y: Tensor) -> Tensor:
        t = sde.t_from_sigma_bar(torch.sinh(u))
        alpha, cosh = sde.alpha(t), torch.cosh(u)
        kappa = 2 * sde.f(t) * alpha * sde.sigma(t) / sde.g2(t)
        x = y[:, :d].reshape(shape).detach()
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = predict(x_in, t).eps
            div = divergence(eps, x_in, trace, probes, trace_chunk)
        dx = batch_coeff(cosh * kappa, x) * x + batch_coeff(cosh * alpha, x) * eps.detach()
        return torch.cat([dx.flatten(1), (batch_coeff(cosh * alpha, div) * div.detach())[:, None]], dim=1)

    return field


def _solve_chunk(model: DiffusionModel, cond: Cond, x: Tensor, trace: str, probes: Tensor | None,
                 trace_chunk: int | None, grid: Tensor, method: str, rtol: float, atol: float,
                 prior_logp: Callable[[Tensor], Tensor]) -> LikelihoodResult:
    sde = model.sde
    field = likelihood_field(CountingModel(model, cond).predict, sde, tuple(x.shape), trace, probes,
                             trace_chunk)
    alpha_lo, alpha_hi = sde.alpha(grid[0]), sde.alpha(grid[-1])
    y0 = torch.cat([x.flatten(1), x.new_zeros(x.shape[0], 1)], dim=1)
    # One RMS over the batch, as score_sde's scipy reference: a per-sample norm costs ~50 % more
    # NFE here for a batch dependence already below the estimator's (the torchode methods remove it).
    sol = ode.solve_with_stats(field, y0, torch.asinh(sde.sigma_bar(grid)), method, rtol, atol,
                               error_norm="batch")
    z = sol.y[:, :-1].reshape(x.shape)
    delta = sol.y[:, -1] + x[0].numel() * (torch.log(alpha_hi) - torch.log(alpha_lo)).to(x.dtype)
    prior = prior_logp(z)
    return LikelihoodResult(logp=prior + delta, z=z, prior_logp=prior, delta_logp=delta, nfe=sol.nfe)


def log_likelihood(
    model: DiffusionModel,
    x: Tensor,
    *,
    cond: Cond = None,
    trace: str = "exact",
    probes: int = 1,
    trace_chunk: int | None = None,
    method: str = "dopri5",
    rtol: float | None = None,
    atol: float | None = None,
    eps: float = 1e-5,
    steps: int | None = None,
    grid: str | None = None,
    generator: torch.Generator | NoiseSource | None = None,
    batch_size: int | None = None,
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    progress: bool = False,
) -> LikelihoodResult:
    """``log p_eps(x | cond)`` per sample, in nats, by the PF-ODE of ``model``.

    For a latent model this is ``log p_eps(z | cond)`` of ``z = to_latent(x)``, with
    ``space="latent"`` on the result (see the module docstring).

    Args:
        model: any :class:`~scoresde.model.DiffusionModel` (any SDE, any prediction type).
        x: data ``(batch, ...)``, finite floating point; its dtype is the solve's dtype
            (use float64 for tight tolerances).
        cond: the condition of each sample (batch first), passed to every network call; the
            result is then the conditional log-density.
        trace: ``"exact"``, ``"rademacher"`` or ``"gaussian"`` (Hutchinson–Skilling).
        probes: number of Hutchinson probes averaged per evaluation (held fixed per solve).
        trace_chunk: vector–Jacobian products per batched backward pass (D for the exact trace,
            ``probes`` for Hutchinson); ``None`` does all in one pass. Peak memory ≈
            ``trace_chunk`` × the activation memory of one VJP of the batch: set it (1 is the
            minimum) for the exact trace at image sizes (see :func:`divergence`).
        method: an ODE method from :func:`scoresde.ode.methods` (default torchdiffeq dopri5);
            ``"torchode_dopri5"``/``"torchode_tsit5"`` solve each sample with its own steps
            (optional torchode); fixed-step methods need ``steps`` and give fast, rough estimates.
        rtol, atol: tolerances of adaptive methods (default 1e-5); refused with a fixed-step
            method, which would ignore them.
        eps: the start time (data end), ``0 < eps < T``.
        steps, grid: the time grid of fixed-step methods (see :mod:`scoresde.grids`; grid default
            ``"logsnr"``); refused with an adaptive method.
        generator: draws the Hutchinson probes; required unless ``trace="exact"``.
        batch_size: solve in independent chunks of this many samples (progress bar per chunk);
            with a per-sample method this changes only memory and speed, not the results.
        prior_logp: ``log p_T`` (default: the SDE's Gaussian prior).
        progress: show a tqdm progress bar over the chunks.
    """
    check_model(model)
    _check_data(x)
    check_cond(cond, x.shape[0])
    latent = find_latent_model(model)
    if latent is not None:
        x = latent.to_latent(x)
    if trace not in TRACES:
        raise InputError(f"trace must be one of {TRACES}, got {trace!r}")
    ode.check_method(method)
    probes = check_int(probes, "probes", 1)
    check_trace_chunk(trace_chunk)
    sde = model.sde
    eps = check_real(eps, "eps")
    if not 0.0 < eps < sde.T:
        raise InputError(f"eps must lie in (0, T={sde.T}), got {eps}")
    steps, grid, rtol, atol = _solve_settings(method, steps, grid, rtol, atol)
    if ode.is_adaptive(method):
        time_grid = torch.tensor([eps, sde.T], dtype=torch.float64)
    else:
        time_grid = grids.make_grid(grid, sde, steps, sde.T, eps).flip(0)
    if trace != "exact" and generator is None:
        raise InputError(f"trace={trace!r} draws Hutchinson probes: pass generator= (a torch.Generator "
                         "or a NoiseSource), or use trace='exact'")
    noise = as_noise(generator) if trace != "exact" else None
    prior_logp = sde.prior_logp if prior_logp is None else prior_logp
    batch_size = len(x) if batch_size is None else check_int(batch_size, "batch_size", 1)

    chunks = list(zip(torch.split(x, int(batch_size)), split_cond(cond, int(batch_size), len(x))))
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, unit="batch", desc="log-likelihood")
    results = []
    for chunk, chunk_cond in chunks:
        v = None
        if noise is not None:
            v = draw_probes(trace, probes, tuple(chunk.shape), noise, chunk.dtype, chunk.device)
        results.append(_solve_chunk(model, chunk_cond, chunk, trace, v, trace_chunk, time_grid, method,
                                    rtol, atol, prior_logp))
    per_sample = ("logp", "z", "prior_logp", "delta_logp", "nfe")
    return LikelihoodResult(**{f: torch.cat([getattr(r, f) for r in results]) for f in per_sample},
                            space="data" if latent is None else "latent")


def dequantize(pixels: Tensor, noise: NoiseSource, data_range: tuple[float, float] = (0.0, 1.0),
               levels: int = 256, dtype: torch.dtype = torch.float64) -> tuple[Tensor, float]:
    """Uniformly dequantize integer pixels and scale them to ``data_range = (lo, hi)``.

    ``y = lo + (hi − lo)·(pixels + u)/levels`` with ``u ~ U[0, 1)`` (drawn as ``Φ(z)``, z from
    ``noise``). Returns ``y`` and the per-dimension log-Jacobian ``log((hi − lo)/levels)`` of
    the map ``pixels + u ↦ y``.
    """
    if pixels.is_floating_point() or pixels.is_complex() or pixels.dtype == torch.bool:
        raise InputError(f"pixels must be integers in [0, {levels - 1}], got dtype {pixels.dtype}")
    if pixels.min() < 0 or pixels.max() > levels - 1:
        raise InputError(
            f"pixels must lie in [0, {levels - 1}], got [{int(pixels.min())}, {int(pixels.max())}]"
        )
    lo, hi = data_range
    if not hi > lo:
        raise InputError(f"data_range must be (lo, hi) with hi > lo, got {data_range}")
    u = torch.special.ndtr(noise.randn(tuple(pixels.shape), dtype, pixels.device))
    y = lo + (hi - lo) * (pixels.to(dtype) + u) / levels
    return y, math.log((hi - lo) / levels)


@dataclass(frozen=True)
class BitsPerDim:
    """Per-sample bits/dim, their mean and standard error, and the underlying likelihoods."""

    bpd: Tensor
    likelihood: LikelihoodResult

    @property
    def mean(self) -> float:
        return float(self.bpd.mean())

    @property
    def stderr(self) -> float:
        n = len(self.bpd)
        return float(self.bpd.std() / math.sqrt(n)) if n > 1 else float("nan")


def bits_per_dim(model: DiffusionModel, x: Tensor, *, cond: Cond = None,
                 data_range: tuple[float, float] = (0.0, 1.0), levels: int = 256,
                 generator: torch.Generator | NoiseSource | None = None,
                 dtype: torch.dtype = torch.float64, **likelihood_options) -> BitsPerDim:
    """Bits per dimension of ``x`` under ``model``.

    * Integer ``x`` (8-bit pixels in ``[0, levels − 1]``): uniform dequantization to
      ``y = lo + (hi − lo)(x + u)/levels`` on the model's ``data_range = (lo, hi)``. Since
      ``log P(x) ≥ E_u log p_pix(x + u)`` and ``p_pix(x + u) = p_y(y)·((hi − lo)/levels)^D``,

          bpd = −[log p_y(y) + D·log((hi − lo)/levels)] / (D·ln 2)
              = −log p_y(y)/(D·ln 2) + log2(levels) − log2(hi − lo),

      an upper bound on the discrete bits/dim (score_sde's offset: +8 for [0, 1], +7 for
      [−1, 1] data). One ``u`` per sample, drawn from ``generator`` (required).
    * Floating-point ``x``: continuous data, no dequantization, ``bpd = −log p(x)/(D·ln 2)``.

    ``cond`` and ``likelihood_options`` go to :func:`log_likelihood` (``trace``, ``method``,
    ``rtol``…). A latent model is refused: its density is one of latents, not of the data.
    """
    if find_latent_model(model) is not None:
        raise InputError("bits_per_dim needs a density of the data, but a latent model's density is that of "
                         "its latents z = to_latent(x); use sd.log_likelihood(model, x) (space='latent', "
                         "nats) instead")
    check_tensor(x, "x", min_ndim=2, floating=False)
    check_float_dtype(dtype)
    levels = check_int(levels, "levels", 2)
    if not isinstance(data_range, tuple | list) or len(data_range) != 2:
        raise InputTypeError(f"data_range must be a pair (lo, hi), got {data_range!r}")
    data_range = (check_real(data_range[0], "data_range[0]"), check_real(data_range[1], "data_range[1]"))
    if x.is_floating_point():
        y, log_jac = x, 0.0
    else:
        if generator is None:
            raise InputError("dequantizing integer data needs a generator for the uniform noise")
        noise = as_noise(generator)
        y, log_jac = dequantize(x, noise, data_range, levels, dtype)
        likelihood_options.setdefault("generator", noise)
    if not x.is_floating_point() or "generator" not in likelihood_options:
        likelihood_options.setdefault("generator", generator)
    ll = log_likelihood(model, y, cond=cond, **likelihood_options)
    d = x[0].numel()
    bpd = -(ll.logp + d * log_jac) / (d * math.log(2.0))
    return BitsPerDim(bpd=bpd, likelihood=ll)
