"""Deterministic sampling by solving the probability-flow ODE ``dx̄/dσ̄ = eps`` (see ``flow``).

Fixed-step Runge–Kutta methods (``euler`` = DDIM, ``heun`` = EDM's 2nd-order sampler,
``midpoint``, ``ralston3``, ``rk4``) step through the time grid; adaptive methods
(torchdiffeq's ``dopri5``…, scipy's ``RK45``…) use only its ends and meet ``rtol``/``atol``.
Adaptive solves report to ``callback`` once, at the end. A fixed step that ends at
``sigma = 0`` is an Euler step (a Tweedie denoising step), so the network is never evaluated
at ``sigma = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from scoresde import flow, ode
from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, DeterministicOptions, SamplerSpec, report


@dataclass(frozen=True)
class ODEOptions(DeterministicOptions):
    """``method``: any of :func:`scoresde.ode.methods`; ``rtol``/``atol``: adaptive methods only."""

    method: str = "heun"
    rtol: float = 1e-5
    atol: float = 1e-5

    def validate(self) -> None:
        ode.check_method(self.method)
        if not (self.rtol > 0 and self.atol > 0):
            raise InputError(f"rtol and atol must be > 0, got rtol={self.rtol}, atol={self.atol}")

    def unused(self) -> dict[str, str]:
        if ode.is_adaptive(self.method):
            return {}
        why = (f"with method={self.method!r} (a fixed-step method, stepping through the grid; rtol/atol "
               f"are for the adaptive methods, e.g. 'dopri5')")
        return {"rtol": why, "atol": why}

    @property
    def uses_grid(self) -> bool:
        return not ode.is_adaptive(self.method)


def probability_flow(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None,
                     options: ODEOptions, callback: Callback | None = None) -> Tensor:
    """Integrate the PF-ODE from ``grid.t[0]`` to ``grid.t[-1]`` with ``options.method``."""

    def on_step(i: int, y: Tensor) -> None:
        report(callback, i, grid.t[i + 1], y)

    x = flow.integrate(model.predict, model.sde, x, grid, options.method, options.rtol, options.atol,
                       on_step if callback is not None else None)
    if ode.is_adaptive(options.method):  # one report for the whole adaptive solve
        report(callback, 0, grid.t[-1], x)
    return x


SPEC = SamplerSpec(
    "ode", probability_flow, ODEOptions, grid="logsnr", adaptive_ends=(1e-3, True),
    variants=(("ode heun", {"method": "heun"}), ("ode euler", {"method": "euler"}),
              ("ode rk4", {"method": "rk4"})),
    paper="probability-flow ODE, Song et al. 2021; torchdiffeq / scipy solvers",
    order="the method's (euler 1, heun 2, rk4 4, …)", nfe="stages·steps (a last step to σ = 0 is Euler); "
    "adaptive: the solver's",
)
