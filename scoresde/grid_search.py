"""Optimised time grids: dynamic programming over one-step errors (GITS, Chen et al. 2024).

Chen, Zhou, Wang, Shen & Lyu, "On the Trajectory Regularity of ODE-based Diffusion Sampling"
(ICML 2024) observe that PF-ODE trajectories of one model are nearly alike, so a time grid that
fits a few of them fits all. :func:`optimize_grid` does this for any deterministic fixed-step
sampler of the registry:

1. **Reference.** Draw ``n_ref`` prior samples and carry each along the PF-ODE
   ``dx̄/dσ̄ = eps`` with fixed-step RK4 through a fine candidate set ``τ_0 = t_start > τ_1 > …
   > τ_n = t_end`` (``reference_steps`` RK4 steps per candidate interval), recording the states
   ``x*(τ_k)`` (:func:`grid_reference`).
2. **Cost.** For every pair ``k < l`` take one step of the sampler being optimised from the
   reference state at ``τ_k`` to ``τ_l``; its one-step error is ``e_kl = step(x*(τ_k); τ_k → τ_l)
   − x*(τ_l)``. GITS's cost is that local error (``cost="local"``). Here the default
   (``cost="propagated"``) carries it to where sampling ends, linearised along the reference:

       C_kl = (mean over draws ‖J_l·e_kl‖²)^{p/2},   J_l = ∂x*(t_end)/∂x*(τ_l)

   (``"local"``: ``J_l = I``), with ``J_lᵀ·u`` for every ``l`` from one reverse-mode pass
   through the reference per cotangent ``u``. Why: the PF-ODE of data with narrow modes contracts
   strongly towards the data, so an error made at high noise is mostly forgotten (on the 2-D
   ring oracle ``‖J_l‖`` falls from ≈1.4 near the data to ≈0.33 at T) and the local cost spends
   too many steps there: on that oracle the ``"local"`` grid for ddim lost to the quadratic grid
   (held-out error 1.3× at NFE 5, 2.4× at NFE 10), the propagated one beats every fixed grid
   (0.79× and 0.90× the best, quadratic; tests/test_grid_search.py). The step is the sampler's own
   function run on the two-point grid ``[τ_k, τ_l]``. For one-step samplers (``ddim`` η = 0,
   ``ode`` with a fixed-step method, ``edm`` without churn) this is exactly that sampler's step.
   For multistep samplers (``dpm_solver``, ``unipc``) a two-point grid runs their warm-up step,
   which is first order (DPM-Solver++ order 1 and UniP-1 are DDIM), so the cost is a **first-order
   proxy** of their step — as in GITS, which fits the grid with a first-order step for higher-order
   solvers too; their grids equal ddim's for the same reference.
3. **Path.** Dynamic programming finds the path ``τ_0 → τ_n`` with exactly ``steps`` edges of
   least total cost (:func:`best_path`; O(steps·n²)).

``p = power``: GITS sums one-step errors raised to a coefficient; here ``p = 2`` (default) sums
mean squared (propagated) errors, ``p = 1`` root-mean-square ones (the triangle-inequality bound
of the linearised global error). On the ring oracle ``p = 2`` gave the lower held-out error.

Candidates are uniform in ``log σ̄`` (``σ̄ = sigma/alpha``) from ``t_start`` down to
``t_end``; when ``σ̄(t_end) = 0`` (a VP-family grid ending at data) the log-uniform part stops at
``t_lo = t_end + 10⁻³·(t_start − t_end)`` (DDPM's first table time for N = 1000) and the last
candidate is ``t_end`` itself; the reference takes that last interval as one Euler (Tweedie)
step, as the samplers do.

Cost: the reference is ``4·reference_steps·n + n`` network calls on a batch of ``n_ref``
(RK4 plus one prediction at every candidate state) and, for the propagated cost, one backward
pass through it per cotangent; the cost matrix then needs no further network calls for
one-call-per-step samplers (the step's single call is that prediction) but ``n²/2`` sampler
steps in Python, and ``n²/2`` batched calls for Heun-type samplers. Measured on the busy 2-core
CPU machine: the 2-D ring oracle, ``n_ref = 64``, 100 candidates, ``reference_steps = 2``:
reference with adjoints 8.5 s, ddim cost matrix 5.5 s (ode heun's: ~45 s); the shipped 8×8
digits model: see ``benchmarks/optimize_digits_grids.py`` (its JSON records the seconds).

Where it is known not to help (ring oracle, held-out draws, error against the PF-ODE): at NFE 5
the unipc grid (first-order proxy) and the ode heun grid (3 steps: steps too long for the
linearised propagation) lost about 2× to the quadratic grid; unipc at NFE 10 won (0.84×). Only
ddim's advantage is asserted by the tests.

Everything that decides the grid is float64: times and schedule coefficients always; the states
too unless ``dtype`` says otherwise (a float32 network may need ``dtype=torch.float32``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scoresde import flow
from scoresde.errors import InputError
from scoresde.grids import GridTable, check_timesteps
from scoresde.model import (
    Cond,
    CountingModel,
    DiffusionModel,
    Prediction,
    check_cond,
    check_model,
    prediction_from_output,
)
from scoresde.noise import as_noise
from scoresde.samplers.base import SamplerOptions, SamplerSpec
from scoresde.sde import SDE, batch_coeff

# The lowest log-uniform candidate when sigma_bar(t_end) = 0, as a fraction of t_start − t_end.
T_LO_FRACTION = 1e-3


@dataclass(frozen=True)
class GridReference:
    """Reference PF-ODE states at the candidate times, shared by every grid optimised from them.

    ``times``: the ``n + 1`` candidate times (float64, decreasing); ``states[k]``: the reference
    states ``x*(times[k])`` of the ``n_ref`` draws; ``predictions[k]``: the model's prediction at
    ``(states[k], times[k])`` (``None`` at a time where ``sigma = 0``); ``cond``: the condition
    the draws were made with; ``adjoints[m, k]``: ``J_kᵀ·u_m``, the reference flow's Jacobian
    ``J_k = ∂x*(t_end)/∂x*(τ_k)`` transposed applied to cotangent ``m`` (scaled so that
    ``Σ_m (adjoints[m, k]·e)² ≈ ‖J_k·e‖²``; ``None`` when not propagated); ``nfe``: network calls
    spent; ``seconds``: wall time.
    """

    times: Tensor
    states: list[Tensor]
    predictions: list[Prediction | None]
    cond: Cond
    adjoints: Tensor | None
    nfe: int
    seconds: float


def candidate_times(sde: SDE, n: int, t_start: float, t_end: float) -> Tensor:
    """``n + 1`` times from ``t_start`` to ``t_end``, uniform in ``log σ̄`` (see the module)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise InputError(f"candidates must be an integer >= 2 (or a tensor of times), got {n!r}")
    zero_end = bool(sde.sigma_bar(torch.tensor(t_end, dtype=torch.float64)) == 0)
    t_lo = t_end + T_LO_FRACTION * (t_start - t_end) if zero_end else t_end
    m = n - 1 if zero_end else n
    lo, hi = (math.log(float(sde.sigma_bar(torch.tensor(t, dtype=torch.float64)))) for t in (t_lo, t_start))
    log_sb = torch.linspace(hi, lo, m + 1, dtype=torch.float64)
    ts = sde.t_from_sigma_bar(torch.exp(log_sb)).to(torch.float64)
    ts[0], ts[-1] = t_start, t_lo
    if zero_end:
        ts = torch.cat([ts, torch.tensor([t_end], dtype=torch.float64)])
    return ts


def _check_ends(sde: SDE, t_start: float | None, t_end: float | None,
                spec: SamplerSpec) -> tuple[float, float]:
    t_start = float(sde.T if t_start is None else t_start)
    t_end = float(spec.t_end if t_end is None else t_end)  # a grid is fitted for fixed steps
    if not 0.0 <= t_end < t_start <= sde.T:
        raise InputError(f"need 0 <= t_end < t_start <= T={sde.T}, got t_end={t_end}, t_start={t_start}")
    return t_start, t_end


def grid_reference(model: DiffusionModel, *, shape: tuple[int, ...], generator: torch.Generator,
                   n_ref: int = 32, candidates: int | Tensor = 150, t_start: float | None = None,
                   t_end: float = 0.0, cond: Cond = None, reference_steps: int = 2,
                   dtype: torch.dtype = torch.float64, x_T: Tensor | None = None, propagate: bool = True,
                   probes: int | None = None) -> GridReference:
    """Reference PF-ODE states of ``n_ref`` prior draws at the candidate times (step 1 of the
    module): RK4 in ``(x̄, σ̄)`` with ``reference_steps`` equal-``log σ̄`` steps per candidate
    interval (one Euler step for an interval that ends at ``σ̄ = 0``).

    ``propagate``: also backpropagate through the reference (reverse mode, one pass per
    cotangent) for the adjoints ``J_kᵀ·u`` of the propagated cost: the unit vectors when a
    sample has at most 16 numbers and ``probes`` is None (exact), else ``probes`` (default 4)
    standard Gaussian cotangents from ``generator`` (Hutchinson: ``E (uᵀJe)² = ‖Je‖²``).

    ``shape`` is the shape of one sample (no batch axis); ``x_T`` (``(n_ref, *shape)``) replaces
    the prior draw when given (``t_start`` must then be where it lives).
    """
    import time

    check_model(model)
    sde = model.sde
    if isinstance(n_ref, bool) or not isinstance(n_ref, int) or n_ref < 1:
        raise InputError(f"n_ref must be an integer >= 1, got {n_ref!r}")
    if probes is not None and (isinstance(probes, bool) or not isinstance(probes, int) or probes < 1):
        raise InputError(f"probes must be None or an integer >= 1, got {probes!r}")
    if isinstance(reference_steps, bool) or not isinstance(reference_steps, int) or reference_steps < 1:
        raise InputError(f"reference_steps must be an integer >= 1, got {reference_steps!r}")
    shape = tuple(shape)
    if not all(isinstance(d, int) and d >= 1 for d in shape):
        raise InputError(f"shape must be the shape of one sample (positive ints, no batch axis), got {shape}")
    if isinstance(candidates, Tensor):
        times = check_timesteps(candidates, sde)
        if t_start is not None and float(times[0]) != t_start:
            raise InputError(f"candidates start at {float(times[0])}, not at t_start={t_start}")
        if len(times) < 3:
            raise InputError(f"need at least 3 candidate times, got {len(times)}")
    else:
        t_start = float(sde.T if t_start is None else t_start)
        if not 0.0 <= t_end < t_start <= sde.T:
            raise InputError(f"need 0 <= t_end < t_start <= T={sde.T}, got t_end={t_end}, t_start={t_start}")
        times = candidate_times(sde, candidates, t_start, t_end)
    check_cond(cond, n_ref)
    if x_T is None:
        if not isinstance(generator, torch.Generator):
            raise InputError(f"generator must be a torch.Generator (the prior draws come from it), "
                             f"got {type(generator).__name__}")
        if float(times[0]) != sde.T:
            raise InputError(f"starting at t={float(times[0]):.4g} < T needs x_T (the prior sits at T)")
        x = sde.prior_std * as_noise(generator).randn((n_ref, *shape), dtype, torch.device("cpu"))
    else:
        if tuple(x_T.shape) != (n_ref, *shape):
            raise InputError(f"x_T must have shape {(n_ref, *shape)}, got {tuple(x_T.shape)}")
        x = x_T.to(dtype)

    start = time.perf_counter()
    counting = CountingModel(model, cond)
    sb = sde.sigma_bar(times)
    u = torch.linspace(0.0, 1.0, reference_steps + 1, dtype=torch.float64)

    def interval(k: int) -> Tensor:
        """``reference_steps`` equal steps in log σ̄ over ``[τ_k, τ_{k+1}]`` (one to σ̄ = 0)."""
        if sb[k + 1] == 0:
            return times[k:k + 2]
        lo, hi = torch.log(sb[k + 1]), torch.log(sb[k])
        sub = sde.t_from_sigma_bar(torch.exp(hi + u * (lo - hi))).to(torch.float64)
        sub[0], sub[-1] = times[k], times[k + 1]
        return sub

    with torch.enable_grad() if propagate else torch.no_grad():
        states = [x.detach().requires_grad_(propagate)]
        for k in range(len(times) - 1):
            states.append(flow.integrate(counting.predict, sde, states[-1], GridTable.build(sde, interval(k)),
                                         "rk4"))
        adjoints = None
        if propagate:  # reverse mode through the chain: J_kᵀ·u at every candidate k at once
            d = math.prod(shape)
            if probes is None and d <= 16:
                cot = torch.eye(d, dtype=x.dtype).reshape(d, 1, *shape).expand(d, n_ref, *shape)
                weight = 1.0
            else:
                m = 4 if probes is None else probes
                if not isinstance(generator, torch.Generator):
                    raise InputError("random probes need a torch.Generator, got "
                                     f"{type(generator).__name__}")
                cot = as_noise(generator).randn((m, n_ref, *shape), x.dtype, torch.device("cpu"))
                weight = 1.0 / m
            rows = []
            for c in cot:
                grads = torch.autograd.grad(states[-1], states[:-1], grad_outputs=c.contiguous(),
                                            retain_graph=True)
                rows.append(torch.stack([*grads, c.contiguous()]))
            adjoints = torch.stack(rows) * math.sqrt(weight)  # (probes, n + 1, n_ref, *shape)
    states = [s.detach() for s in states]
    with torch.no_grad():
        sigma = sde.sigma(times)
        predictions = [counting.predict(s, t) if sigma[k] > 0 else None
                       for k, (s, t) in enumerate(zip(states, times, strict=True))]
    return GridReference(times=times, states=states, predictions=predictions, cond=cond, adjoints=adjoints,
                         nfe=counting.nfe, seconds=time.perf_counter() - start)


class _Cached:
    """The model with the reference prediction at ``(states[k], times[k])`` served from memory
    (recognised by the state tensor's identity and the time); every other call goes through."""

    def __init__(self, model: DiffusionModel, reference: GridReference):
        self.inner = CountingModel(model, reference.cond)
        self.sde = model.sde
        self.served: dict[int, tuple[float, Prediction]] = {
            id(s): (float(t), p) for s, t, p in zip(reference.states, reference.times, reference.predictions,
                                                     strict=True) if p is not None}

    def predict(self, x: Tensor, t: Tensor | float, cond: Cond = None) -> Prediction:
        hit = self.served.get(id(x))
        if hit is not None and float(t) == hit[0]:
            return hit[1]
        return self.inner.predict(x, t)


class _ZeroModel:
    """``eps = 0`` everywhere: a free stand-in for counting a sampler's calls."""

    def __init__(self, sde: SDE):
        self.sde = sde

    def predict(self, x: Tensor, t: Tensor | float, cond: Cond = None) -> Prediction:
        t = torch.as_tensor(t, dtype=torch.float64)
        alpha, sigma = batch_coeff(self.sde.alpha(t), x), batch_coeff(self.sde.sigma(t), x)
        return prediction_from_output("eps", torch.zeros_like(x), x, alpha, sigma)


def _nfe_of(spec: SamplerSpec, opts: SamplerOptions, sde: SDE, times: Tensor) -> int:
    model = CountingModel(_ZeroModel(sde))
    with torch.no_grad():
        spec.fn(model, torch.zeros(1, 1, dtype=torch.float64), GridTable.build(sde, times), None, opts, None)
    return model.nfe


def steps_for_nfe(spec: SamplerSpec, opts: SamplerOptions, sde: SDE, nfe: int, t_start: float,
                  t_end: float) -> int:
    """The number of grid steps at which ``spec`` spends exactly ``nfe`` network calls on a grid
    from ``t_start`` to ``t_end``, read off the sampler by counting its calls on a free stand-in
    model (NFE = a·steps + b, e.g. 2·steps − 1 for Heun ending at σ̄ = 0); a ``ValueError`` when
    no step count gives ``nfe``."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise InputError(f"nfe must be an integer >= 1, got {nfe!r}")

    def count(steps: int) -> int:
        return _nfe_of(spec, opts, sde, torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64))

    one, two = count(1), count(2)
    per_step, offset = two - one, 2 * one - two
    if per_step < 1 or (nfe - offset) % per_step or (nfe - offset) // per_step < 1:
        allowed = ", ".join(str(per_step * k + offset) for k in range(1, 6))
        raise InputError(f"sampler {spec.name!r} ({opts}) spends {per_step}·steps + {offset} network "
                         f"calls on this grid, so nfe must be one of {allowed}, …; got {nfe}")
    steps = (nfe - offset) // per_step
    if count(steps) != nfe:
        raise InputError(f"sampler {spec.name!r}: its NFE is not affine in the steps; cannot match nfe={nfe}")
    return steps


def cost_matrix(model: DiffusionModel, spec: SamplerSpec, opts: SamplerOptions, reference: GridReference,
                power: float = 2.0, cost: str = "propagated") -> Tensor:
    """``C[k, l] = (mean over draws ‖W_l·(step(x*(τ_k); τ_k → τ_l) − x*(τ_l))‖²)^{power/2}`` for
    ``k < l`` (``inf`` elsewhere), float64, ``(n + 1, n + 1)`` (step 2 of the module), with
    ``W_l = J_l`` (``cost="propagated"``, needs ``reference.adjoints``) or ``I`` (``"local"``)."""
    if cost not in ("propagated", "local"):
        raise InputError(f"cost must be 'propagated' or 'local', got {cost!r}")
    if cost == "propagated" and reference.adjoints is None:
        raise InputError("cost='propagated' needs a reference built with propagate=True")
    sde = model.sde
    times = reference.times
    table = GridTable.build(sde, times)
    served = CountingModel(_Cached(model, reference))
    n = len(times)
    out = torch.full((n, n), math.inf, dtype=torch.float64)
    with torch.no_grad():
        for k in range(n - 1):
            for j in range(k + 1, n):
                pair = GridTable(*(v[[k, j]] for v in (table.t, table.alpha, table.sigma, table.log_snr,
                                                       table.sigma_bar)))
                x_hat = spec.fn(served, reference.states[k], pair, None, opts, None)
                err = (x_hat.to(torch.float64) - reference.states[j].to(torch.float64)).flatten(1)
                if cost == "propagated":  # (J_l·e)² summed over cotangents, per draw
                    adj = reference.adjoints[:, j].flatten(2).to(torch.float64)
                    err = torch.einsum("mbd,bd->bm", adj, err)
                out[k, j] = err.square().sum(1).mean() ** (0.5 * power)
    return out


def best_path(cost: Tensor, steps: int) -> list[int]:
    """Node indices ``0 = k_0 < k_1 < … < k_steps = n`` minimising ``Σ_i cost[k_i, k_{i+1}]``:
    dynamic programming over ``D_s(l) = min_k D_{s−1}(k) + cost[k, l]`` (step 3 of the module).
    Entries with ``l <= k`` are never used; ties go to the smallest ``k``."""
    cost = torch.as_tensor(cost, dtype=torch.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < 2:
        raise InputError(f"cost must be a square matrix of at least 2×2, got shape {tuple(cost.shape)}")
    n = cost.shape[0] - 1
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= n:
        raise InputError(f"steps must be an integer in [1, {n}] (the candidate intervals), got {steps!r}")
    forward = torch.triu(torch.ones(n + 1, n + 1, dtype=torch.bool), diagonal=1)
    c = torch.where(forward, cost, torch.full_like(cost, math.inf))
    best = torch.full((n + 1,), math.inf, dtype=torch.float64)
    best[0] = 0.0
    parents = []
    for _ in range(steps):
        total = best[:, None] + c  # total[k, l]: reach k, then step k → l
        best, parent = total.min(dim=0)
        parents.append(parent)
    if not math.isfinite(float(best[n])):
        raise InputError("no finite-cost path with this many steps (the cost matrix has inf/NaN entries)")
    path = [n]
    for parent in reversed(parents):
        path.append(int(parent[path[-1]]))
    return path[::-1]


def optimize_grid(model: DiffusionModel, sampler: str | SamplerSpec, nfe: int, *,
                  shape: tuple[int, ...] | None = None, generator: torch.Generator | None = None,
                  n_ref: int | None = None, candidates: int | Tensor | None = None,
                  t_start: float | None = None, t_end: float | None = None, cond: Cond = None,
                  reference_steps: int | None = None, cost: str = "propagated", power: float = 2.0,
                  probes: int | None = None, dtype: torch.dtype = torch.float64,
                  reference: GridReference | None = None,
                  **sampler_options: Any) -> Tensor:
    """A time grid for ``sampler`` at ``nfe`` network calls, fitted to ``model``'s trajectories.

    Returns a strictly decreasing float64 grid from ``t_start`` (default T) to ``t_end``
    (default the sampler's) for ``sd.sample(model, ..., sampler, timesteps=grid, **options)``;
    the method (GITS) and its cost are in the module docstring.

    Args:
        model: any :class:`~scoresde.model.DiffusionModel`.
        sampler: a deterministic fixed-step sampler (name or spec): ``ddim`` (η = 0), ``ode``
            with a fixed-step method, ``edm`` without churn, ``dpm_solver``, ``unipc`` (these two
            through a first-order proxy cost). Stochastic and adaptive runs are refused.
        nfe: network calls of the run (the final ``denoise`` call, if any, not included); the
            step count follows from the sampler's own count, e.g. ``steps = (nfe + 1)/2`` for
            ``ode`` heun ending at ``σ̄ = 0``.
        shape: shape of one sample (no batch axis), e.g. ``(2,)`` or ``(1, 8, 8)``.
        generator: draws the ``n_ref`` prior samples (required unless ``reference`` is given).
        n_ref: reference trajectories (default 32). candidates: number of candidate intervals
            (default 150) or an explicit decreasing tensor of candidate times.
        t_start, t_end: ends of the grid. cond: the condition of the reference draws (batch
            ``n_ref``). reference_steps: RK4 steps per candidate interval (default 2).
        cost: ``"propagated"`` (the one-step error carried to ``t_end`` by the reference flow's
            Jacobian; default) or ``"local"`` (GITS's one-step error at the step's end).
        power: ``p`` of the cost ``e^{p/2}`` (2: summed mean squared errors).
        probes: cotangents for the propagated cost (see :func:`grid_reference`).
        dtype: the states' dtype. reference: a :func:`grid_reference` to reuse (then ``shape``,
            ``generator``, ``n_ref``, ``candidates``, ``t_start``, ``t_end``, ``cond`` and
            ``reference_steps`` come from it and must not be passed).
        **sampler_options: the sampler's declared options (the grid is optimised for them).
    """
    from scoresde.sampling import resolve_sampler

    check_model(model)
    spec = resolve_sampler(sampler)
    opts = spec.parse(sampler_options)
    sde = model.sde
    if cost not in ("propagated", "local"):
        raise InputError(f"cost must be 'propagated' or 'local', got {cost!r}")
    if opts.stochastic:
        raise InputError(f"optimize_grid needs a deterministic sampler (its cost compares one step with "
                         f"the PF-ODE); {spec.name!r} with {opts} draws noise. Supported: ddim (eta=0), "
                         "dpm_solver, unipc, ode (fixed-step methods), edm (s_churn=0)")
    if not opts.uses_grid:
        raise InputError(f"{spec.name!r} with {opts} is adaptive and uses no grid; use a fixed-step method")
    if not (isinstance(power, int | float) and not isinstance(power, bool) and 0 < power < math.inf):
        raise InputError(f"power must be a positive number, got {power!r}")
    if reference is None:
        if shape is None:
            raise InputError("shape (of one sample, no batch axis) is required unless reference is given")
        if not isinstance(generator, torch.Generator):
            raise InputError("generator (a torch.Generator for the reference draws) is required, got "
                             f"{type(generator).__name__}")
        t_start, t_end = _check_ends(sde, t_start, t_end, spec)
        reference = grid_reference(model, shape=shape, generator=generator,
                                   n_ref=32 if n_ref is None else n_ref,
                                   candidates=150 if candidates is None else candidates, t_start=t_start,
                                   t_end=t_end, cond=cond, dtype=dtype, propagate=cost == "propagated",
                                   probes=probes,
                                   reference_steps=2 if reference_steps is None else reference_steps)
    else:
        given = [name for name, v in (("shape", shape), ("generator", generator), ("n_ref", n_ref),
                                      ("candidates", candidates), ("t_start", t_start), ("t_end", t_end),
                                      ("cond", cond), ("reference_steps", reference_steps)) if v is not None]
        if given:
            raise InputError(f"pass either reference or {', '.join(given)}: the reference fixes them")
    times = reference.times
    steps = steps_for_nfe(spec, opts, sde, nfe, float(times[0]), float(times[-1]))
    if steps > len(times) - 1:
        raise InputError(f"nfe={nfe} needs {steps} steps but there are only {len(times) - 1} candidate "
                         "intervals; pass more candidates")
    path = best_path(cost_matrix(model, spec, opts, reference, power, cost), steps)
    return check_timesteps(times[path].clone(), sde)
