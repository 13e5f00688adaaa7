"""Deterministic sampling by solving the probability-flow ODE ``dx̄/dσ̄ = eps`` (see ``flow``).

Fixed-step Runge–Kutta methods (``euler`` = DDIM, ``heun`` = EDM's 2nd-order sampler,
``midpoint``, ``ralston3``, ``rk4``) step through the time grid; adaptive methods
(torchdiffeq's ``dopri5``…, scipy's ``RK45``…) use only its ends and meet ``rtol``/``atol``.
Adaptive solves report to ``callback`` once, at the end. A fixed step that ends at
``sigma = 0`` is an Euler step (a Tweedie denoising step), so the network is never evaluated
at ``sigma = 0``.
"""

from __future__ import annotations

from torch import Tensor

from scoresde import flow, ode
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, CountingModel, report


def probability_flow(model: CountingModel, x: Tensor, timesteps: Tensor, noise: NoiseSource,
                     callback: Callback | None = None, method: str = "heun",
                     rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    """Integrate the PF-ODE from ``timesteps[0]`` to ``timesteps[-1]`` with ``method``."""

    def on_step(i: int, y: Tensor) -> None:
        report(callback, i, timesteps[i + 1], y)

    x = flow.integrate(model.predict, model.sde, x, timesteps, method, rtol, atol,
                       on_step if callback is not None else None)
    if ode.is_adaptive(method):  # one report for the whole adaptive solve
        report(callback, 0, timesteps[-1], x)
    return x
