"""The probability-flow ODE in DDIM coordinates, shared by every deterministic sampler.

With ``x̄ = x / alpha(t)`` and ``σ̄ = sigma(t) / alpha(t)`` the PF-ODE
``dx/dt = f x − ½ g² ∇log p_t(x)`` of any SDE here becomes (Song et al. 2021, DDIM §4.3;
Karras et al. 2022, eq. 4 with s = 1)

    dx̄ / dσ̄ = eps(alpha·x̄, t(σ̄)),

the same equation for VP, sub-VP and VE: only the map ``t ↔ σ̄`` differs. Its Euler step from
``σ̄_t`` to ``σ̄_s`` is DDIM (η = 0); in the original variables

    x_s = alpha_s · (x_t/alpha_t + (σ̄_s − σ̄_t) · eps) = alpha_s · x0 + sigma_s · eps.

:func:`eps_field` is the one PF-ODE vector field of the library: the ``ode`` sampler, ``encode``
(through the samplers) and ``log_likelihood`` (which adds the divergence) all integrate it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from scoresde import ode
from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import Prediction
from scoresde.sde import SDE, batch_coeff

Predictor = Callable[[Tensor, Tensor], Prediction]


def eps_field(predict: Predictor, sde: SDE) -> ode.VectorField:
    """``(σ̄, x̄) -> eps(alpha·x̄, t(σ̄))``: the PF-ODE in DDIM coordinates."""

    def field(sigma_bar: Tensor, x_bar: Tensor) -> Tensor:
        t = sde.t_from_sigma_bar(sigma_bar)
        return predict(batch_coeff(sde.alpha(t), x_bar) * x_bar, t).eps

    return field


def check_adaptive_ends(grid: GridTable, method: str) -> None:
    """Adaptive methods evaluate the field at both ends, where sigma must be > 0."""
    if ode.is_adaptive(method) and (grid.sigma_bar == 0).any():
        raise InputError(
            f"adaptive ODE methods evaluate the model at both ends, so they need sigma > 0 "
            f"there; got times from {grid.t[0]:.4g} to {grid.t[-1]:.4g}. "
            "Use t_end > 0 (with denoise=True for a final Tweedie step)."
        )


def integrate(predict: Predictor, sde: SDE, x: Tensor, grid: GridTable, method: str,
              rtol: float = 1e-5, atol: float = 1e-5,
              on_step: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """Carry ``x`` at ``grid.t[0]`` along the PF-ODE to ``grid.t[-1]`` (either direction).

    ``on_step(i, x)`` receives the state in the original variables after fixed step ``i``.
    """
    check_adaptive_ends(grid, method)
    sigma_bar, alpha = grid.sigma_bar, grid.alpha
    x_bar = x / batch_coeff(alpha[0], x)
    step_hook = None
    if on_step is not None:
        def step_hook(i: int, y: Tensor) -> None:
            on_step(i, y * batch_coeff(alpha[i + 1], y))
    x_bar = ode.solve(eps_field(predict, sde), x_bar, sigma_bar, method, rtol, atol, step_hook)
    return x_bar * batch_coeff(alpha[-1], x_bar)

