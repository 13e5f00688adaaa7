"""ODE backends behind one interface: ``solve(func, y0, grid, method, rtol, atol)``.

``func(s, y)`` is a vector field with ``s`` a float64 time tensor and ``y`` a tensor of shape
``(batch, ...)``. ``s`` is a scalar for every method except the per-sample ones, which pass one
time per sample (shape ``(batch,)``); a field written with per-sample coefficients
(``batch_coeff``) serves both. ``grid`` is the 1-D tensor of times to step through: every point
for the fixed-step methods, only its ends for the adaptive ones. Integration may run forwards
or backwards.

* Built-in fixed-step Runge–Kutta methods are data: a :class:`ButcherTableau` and its order,
  run by one stepping function (pure torch, differentiable, on any device).
* ``torchdiffeq`` adaptive methods (``dopri5``, ``dopri8``, ``bosh3``, ``adaptive_heun``,
  ``fehlberg2``) run on the state's device.
* ``scipy`` methods (``RK45``, ``RK23``, ``DOP853``, ``LSODA``, ``Radau``, ``BDF``) run on the
  host in float64; every evaluation copies the state to and from the device.
* ``torchode`` methods (``torchode_dopri5``, ``torchode_tsit5``; an optional dependency,
  ``pip install torchode``) solve each sample of the batch as its own problem: its own times,
  step sizes and error norm (RMS over that sample's components), so a sample's solution does
  not depend on its batch. They run with torchode's integral controller (safety 0.9, step
  factor in [0.2, 10], exponent 1/5: the controller of torchdiffeq's dopri5 and scipy's RK45).
  The batch is still evaluated together: every field call covers all samples (finished ones
  at their end time), so the batch costs the NFE of its slowest sample.

The adaptive methods with a shared step size (torchdiffeq, scipy) bound every sample's error by
the tolerance: torchdiffeq's error norm is :func:`per_sample_norm` (the largest of the samples'
RMS norms) instead of its default RMS over the whole batch, which divides one sample's error by
up to ``sqrt(batch)`` when the others are easy; scipy's RMS over the whole state is given
``rtol``, ``atol`` divided by ``sqrt(batch)``, which bounds each sample's RMS norm as well (their
squares sum to at most 1), at the price of steps as if the tolerance were that much tighter. The
hardest sample still sets every sample's steps, so a sample's solution depends on its batch by
the solver's global error (a few times the tolerance), not by a diluted local error.

A step that ends at ``s = 0`` is taken with Euler whatever the tableau: the fields integrated
here (the PF-ODE in ``σ̄``) are evaluated only at ``σ̄ > 0``, as EDM's samplers do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.errors import DependencyError, InputError

VectorField = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method: nodes ``c``, matrix ``a`` (lower-triangular rows), weights ``b``."""

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]


EULER = ButcherTableau("euler", 1, c=(0.0,), a=((),), b=(1.0,))
MIDPOINT = ButcherTableau("midpoint", 2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))
HEUN = ButcherTableau("heun", 2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))
RALSTON3 = ButcherTableau(
    "ralston3", 3, c=(0.0, 0.5, 0.75), a=((), (0.5,), (0.0, 0.75)), b=(2 / 9, 1 / 3, 4 / 9)
)
RK4 = ButcherTableau(
    "rk4", 4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)

FIXED_STEP: dict[str, ButcherTableau] = {tab.name: tab for tab in (EULER, MIDPOINT, HEUN, RALSTON3, RK4)}
TORCHDIFFEQ_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "LSODA", "Radau", "BDF")
TORCHODE_METHODS = ("torchode_dopri5", "torchode_tsit5")


def methods() -> list[str]:
    """Every method name :func:`solve` accepts."""
    return [*FIXED_STEP, *TORCHDIFFEQ_METHODS, *SCIPY_METHODS, *TORCHODE_METHODS]


def is_adaptive(method: str) -> bool:
    check_method(method)
    return method not in FIXED_STEP


def is_per_sample(method: str) -> bool:
    """Whether ``method`` gives each sample its own adaptive steps (the torchode methods)."""
    check_method(method)
    return method in TORCHODE_METHODS


@dataclass(frozen=True)
class Solution:
    """``y`` at the end of the grid and ``nfe[b]``, the field evaluations sample ``b`` needed.

    With a shared step size (fixed-step, torchdiffeq, scipy) every sample needed every call.
    With a per-sample method, ``nfe[b]`` counts the calls made while sample ``b`` was still
    being solved; the batch made ``nfe.max()`` calls (each covering all samples).
    """

    y: Tensor
    nfe: Tensor


def check_method(method: str) -> None:
    if method not in methods():
        raise InputError(f"unknown ODE method {method!r}; available: {methods()}")


def rk_step(func: VectorField, s: Tensor, y: Tensor, h: Tensor, tableau: ButcherTableau) -> Tensor:
    """One explicit Runge–Kutta step ``y(s) -> y(s + h)``."""
    k: list[Tensor] = []
    for c_i, a_i in zip(tableau.c, tableau.a):
        y_i = y
        for a_ij, k_j in zip(a_i, k):
            if a_ij != 0.0:
                y_i = y_i + (h * a_ij).to(y.dtype) * k_j
        k.append(func(s + c_i * h, y_i))
    update = sum((h * b_i).to(y.dtype) * k_i for b_i, k_i in zip(tableau.b, k) if b_i != 0.0)
    return y + update


def integrate_fixed(func: VectorField, y0: Tensor, grid: Tensor, tableau: ButcherTableau,
                    on_step: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """Step through every point of ``grid``; ``on_step(i, y)`` after step ``i``."""
    y = y0
    for i in range(len(grid) - 1):
        s, h = grid[i], grid[i + 1] - grid[i]
        y = rk_step(func, s, y, h, EULER if grid[i + 1] == 0 else tableau)
        if on_step is not None:
            on_step(i, y)
    return y


def _solve_torchdiffeq(func: VectorField, y0: Tensor, s0: Tensor, s1: Tensor, method: str,
                       rtol: float, atol: float, error_norm: str) -> Tensor:
    from torchdiffeq import odeint

    # Solve in u ∈ [0, 1], s = s0 + u (s1 − s0), so that a float32 state does not round the
    # end times (torchdiffeq keeps time in the state's dtype).
    span = s1 - s0

    def rescaled(u: Tensor, y: Tensor) -> Tensor:
        # torchdiffeq's initial-step heuristic probes one point without regard to the end of
        # the interval; keep that probe inside it (solution steps never leave it: step_t).
        u = u.to(torch.float64).clamp(0.0, 1.0)
        return (span * func(s0 + u * span, y).to(torch.float64)).to(y.dtype)

    unit = torch.tensor([0.0, 1.0], device=y0.device, dtype=y0.dtype)
    # step_t stops the solver at u = 1 instead of stepping past it and interpolating back:
    # beyond the end the field may not exist (sigma_bar < 0).
    options = {"step_t": unit[1:], **({"norm": per_sample_norm} if error_norm == "per_sample" else {})}
    return odeint(rescaled, y0, unit, method=method, rtol=rtol, atol=atol, options=options)[-1]


def per_sample_norm(scaled_error: Tensor) -> Tensor:
    """The error norm of a batched state ``(batch, ...)``: the largest of the samples' RMS norms.

    A step is accepted when this is ≤ 1, i.e. when every sample's own RMS error, measured in units
    of ``atol + rtol·|y|``, is within the tolerance; an RMS over the whole batch would accept a
    step in which one hard sample's error is ``sqrt(batch)`` times its tolerance.
    """
    return scaled_error.reshape(scaled_error.shape[0], -1).pow(2).mean(1).sqrt().max()


def _solve_torchode(func: VectorField, y0: Tensor, s0: Tensor, s1: Tensor, method: str,
                    rtol: float, atol: float) -> Solution:
    try:
        import torchode
    except ImportError as err:
        raise DependencyError(f"ODE method {method!r} needs torchode, an optional dependency: "
                              "pip install torchode") from err

    shape, batch = y0.shape, y0.shape[0]
    calls = 0

    def flat(s: Tensor, y: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return func(s, y.reshape(shape)).reshape(batch, -1)

    term = torchode.ODETerm(flat, with_stats=False)
    step = {"torchode_dopri5": torchode.Dopri5, "torchode_tsit5": torchode.Tsit5}[method](term=term)
    controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
    ends = [s.to(device=y0.device, dtype=torch.float64).expand(batch) for s in (s0, s1)]
    problem = torchode.InitialValueProblem(y0=y0.reshape(batch, -1), t_start=ends[0], t_end=ends[1])
    sol = torchode.AutoDiffAdjoint(step, controller).solve(problem)
    failed = (sol.status != torchode.Status.SUCCESS.value).nonzero().flatten().tolist()
    if failed:
        codes = sorted({torchode.Status(int(sol.status[i])).name for i in failed})
        raise RuntimeError(f"torchode {method} failed for samples {failed[:10]} "
                           f"({len(failed)} of {batch}): {', '.join(codes)}")
    # Every loop iteration evaluates the whole batch (FSAL: the first stage is the last one of
    # the previous step); a sample that finished early sat out max(n_steps) − n_steps of them.
    per_step = step.tableau.n_stages - int(step.tableau.fsal)
    n_steps = sol.stats["n_steps"].cpu()
    nfe = calls - per_step * (n_steps.max() - n_steps)
    return Solution(sol.ys[:, -1].reshape(shape), nfe)


def _solve_scipy(func: VectorField, y0: Tensor, s0: Tensor, s1: Tensor, method: str,
                 rtol: float, atol: float, error_norm: str) -> Tensor:
    import numpy as np
    from scipy.integrate import solve_ivp

    shape, dtype, device = y0.shape, y0.dtype, y0.device

    def rhs(s: float, y: np.ndarray) -> np.ndarray:
        yt = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        out = func(torch.tensor(s, dtype=torch.float64), yt)
        return out.detach().to("cpu", torch.float64).numpy().ravel()

    y_np = y0.detach().to("cpu", torch.float64).numpy().ravel()
    # solve_ivp's norm is one RMS over the whole state; with the tolerances divided by
    # sqrt(batch) it bounds the sum of the samples' squared RMS norms by 1, so each one's too.
    shrink = shape[0] ** 0.5 if len(shape) > 0 and error_norm == "per_sample" else 1.0
    res = solve_ivp(rhs, (float(s0), float(s1)), y_np, method=method, rtol=rtol / shrink, atol=atol / shrink)
    if not res.success:
        raise RuntimeError(f"scipy solve_ivp({method}) failed: {res.message}")
    return torch.from_numpy(res.y[:, -1]).reshape(shape).to(device=device, dtype=dtype)


def solve_with_stats(func: VectorField, y0: Tensor, grid: Tensor, method: str = "dopri5",
                     rtol: float = 1e-5, atol: float = 1e-5,
                     on_step: Callable[[int, Tensor], None] | None = None,
                     error_norm: str = "per_sample") -> Solution:
    """Integrate ``dy/ds = func(s, y)`` from ``grid[0]`` to ``grid[-1]``: ``y(grid[-1])`` and NFE.

    Fixed-step methods visit every grid point (``on_step`` is called after each step);
    adaptive ones use only the ends and choose their own steps to meet ``rtol``/``atol``:
    measured over the whole state for torchdiffeq and scipy (a batch shares one step size), per
    sample for the torchode methods (``func`` then receives one time per sample).

    ``error_norm`` (torchdiffeq and scipy): ``"per_sample"`` (default) holds every sample's own
    RMS error to the tolerance; ``"batch"`` is the solvers' own single RMS over the whole state
    (cheaper: the easy samples dilute the hard ones' errors; score_sde's likelihood uses it).
    """
    check_method(method)
    if error_norm not in ("per_sample", "batch"):
        raise InputError(f"error_norm must be 'per_sample' or 'batch', got {error_norm!r}")
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if method not in FIXED_STEP and not (rtol > 0 and atol > 0):
        raise InputError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if method in TORCHODE_METHODS:
        return _solve_torchode(func, y0, grid[0], grid[-1], method, rtol, atol)
    calls = 0

    def counted(s: Tensor, y: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return func(s, y)

    if method in FIXED_STEP:
        y = integrate_fixed(counted, y0, grid, FIXED_STEP[method], on_step)
    else:
        solver = _solve_torchdiffeq if method in TORCHDIFFEQ_METHODS else _solve_scipy
        y = solver(counted, y0, grid[0], grid[-1], method, rtol, atol, error_norm)
    return Solution(y, torch.full((y0.shape[0],), calls, dtype=torch.long))


def solve(func: VectorField, y0: Tensor, grid: Tensor, method: str = "dopri5",
          rtol: float = 1e-5, atol: float = 1e-5,
          on_step: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """:func:`solve_with_stats` without the counts: returns ``y(grid[-1])``."""
    return solve_with_stats(func, y0, grid, method, rtol, atol, on_step).y
