"""Adaptive-step reverse-SDE solver of Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast When
Generating Data with Score-Based Models", Algorithm 1), with per-sample step sizes.

The reverse SDE ``dx = [f(t)·x − g²(t)·∇log p_t(x)] dt + g(t) dw̄`` is stepped from ``t`` to
``t − h`` by a Euler–Maruyama proposal and an improved-Euler (stochastic Heun) one that share the
draw ``z``::

    x'  = x − h·[f(t)·x − g²(t)·s(x, t)] + sqrt(h)·g(t)·z
    x̃   = x − h·[f(t−h)·x' − g²(t−h)·s(x', t−h)] + sqrt(h)·g(t−h)·z
    x'' = ½·(x' + x̃)

and their difference is the error estimate, per sample, in the mixed norm

    δ = max(ε_abs, ε_rel·max(|x'|, |x'_prev|))   (elementwise; x'_prev: the last accepted x')
    E = ‖(x' − x'')/δ‖₂ / sqrt(dim).

A sample accepts its step when ``E ≤ 1`` (then ``x ← x''`` with ``extrapolate``, else ``x'``,
and ``t ← t − h``); either way its next step is ``h ← min(t − t_end, θ·h·E^{−r})``. Every sample
keeps its own ``t`` and ``h``, so the network is called with a per-sample time vector; samples
that have reached ``t_end`` ride along with ``h = 0`` (their state does not change). NFE is 2
per attempt (on the whole batch); every attempt draws one standard normal of the state's shape
from the ``NoiseSource`` (a rejected step draws afresh, as in the paper), so with
``PerSampleNoise`` a sample's result does not depend on its batch. A non-finite error estimate
counts as a rejection with ``h ← h/10``.

Paper defaults: ``θ = 0.9``, ``r = 0.9``, ``h_init = 0.01``, ``ε_abs = 0.0078`` (for data in
``[−1, 1]``), ``ε_rel`` 0.01–0.05 (0.05 here: half the NFE of 0.01 on the oracle mixtures,
at the MMD floor in 64 dimensions).

Low dimension: the acceptance test reads an error that depends on the step's own draw z (and
δ grows with |x'|), so accepting and redrawing on rejection filters the noise. In 2-D this bias
is visible (a 2-D Gaussian of std 0.1 comes out 10–40 % too wide at ε_rel = 0.005); the norm averages
over the coordinates, and in 64 dimensions the bias is below the MMD floor at n = 1000 (16: ~3 % too wide)
(tests/samplers/test_adaptive_sde.py). Images have thousands. The solve uses only the grid's ends; ``t_end``
must have ``sigma > 0`` (the score is evaluated there), and the default finishes with a Tweedie
denoising step at ``t_end = 1e-3`` (one more NFE). Reports once, at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerOptions, SamplerSpec, report
from scoresde.sde import SDE, batch_coeff


@dataclass(frozen=True)
class AdaptiveSDEOptions(SamplerOptions):
    """``eps_rel``, ``eps_abs``: the error tolerances; ``extrapolate``: continue from the Heun
    proposal x''; ``h_init``: the first step; ``theta``: safety factor; ``r``: exponent of the
    step-size update; ``max_attempts``: give up (an error) after this many attempted steps."""

    eps_rel: float = 0.05
    eps_abs: float = 0.0078
    extrapolate: bool = True
    h_init: float = 0.01
    theta: float = 0.9
    r: float = 0.9
    max_attempts: int = 100_000

    def validate(self) -> None:
        if not (0.0 < self.eps_abs < math.inf and 0.0 <= self.eps_rel < math.inf):
            raise InputError(f"tolerances must be finite with eps_abs > 0 and eps_rel >= 0, got "
                             f"eps_abs={self.eps_abs}, eps_rel={self.eps_rel}")
        if not 0.0 < self.h_init < math.inf:
            raise InputError(f"h_init must be a finite number > 0, got {self.h_init}")
        if not 0.0 < self.theta <= 1.0:
            raise InputError(f"theta must lie in (0, 1], got {self.theta}")
        if not 0.0 < self.r < math.inf:
            raise InputError(f"r must be a finite number > 0, got {self.r}")
        if self.max_attempts < 1:
            raise InputError(f"max_attempts must be an integer >= 1, got {self.max_attempts}")

    @property
    def uses_grid(self) -> bool:
        return False


def reverse_drift(sde: SDE, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
    """``f(t)·x − g²(t)·score``: the reverse SDE's drift in forward time, per-sample ``t``."""
    return sde.drift(x, t) - batch_coeff(sde.g2(t), x) * score


def error_norm(x1: Tensor, x2: Tensor, x1_prev: Tensor, eps_abs: float, eps_rel: float) -> Tensor:
    """``E = ‖(x1 − x2)/δ‖₂/sqrt(dim)`` per sample, ``δ = max(ε_abs, ε_rel·max(|x1|, |x1_prev|))``,
    as float64 of shape ``(batch,)``."""
    delta = torch.clamp(eps_rel * torch.maximum(x1.abs(), x1_prev.abs()), min=eps_abs)
    ratio = ((x1 - x2) / delta).flatten(1)
    return ratio.pow(2).mean(dim=1).sqrt().to(torch.float64)


def adaptive_sde(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None,
                 options: AdaptiveSDEOptions, callback: Callback | None = None) -> Tensor:
    """Algorithm 1 of Jolicoeur-Martineau et al. from ``grid.t[0]`` to ``grid.t[-1]``, per sample."""
    if grid.sigma[-1] == 0:
        raise InputError(
            f"adaptive_sde evaluates the score at t_end, so it needs sigma > 0 there; got t_end = "
            f"{float(grid.t[-1]):.4g}. Use t_end > 0 (with denoise=True for a final Tweedie step).")
    sde, batch = model.sde, x.shape[0]
    # Per-sample times live on the state's device, beside the error estimates they are updated from.
    t_end = grid.t[-1].to(device=x.device, dtype=torch.float64)
    t = grid.t[0].to(device=x.device, dtype=torch.float64).expand(batch).clone()
    h = torch.minimum(torch.full_like(t, options.h_init), t - t_end)
    x_prev = x  # x' of the last accepted step (the start state before the first)
    attempts = 0
    while (t > t_end).any():
        if attempts == options.max_attempts:
            raise RuntimeError(
                f"adaptive_sde did not reach t_end within max_attempts={options.max_attempts} attempted "
                f"steps ({int((t > t_end).sum())} of {batch} samples left, largest t = "
                f"{float(t.max()):.4g}); "
                "loosen eps_rel/eps_abs or raise max_attempts")
        attempts += 1
        active = t > t_end
        last = h >= t - t_end
        s = torch.where(last, t_end, torch.clamp(t - h, min=t_end))  # t − h, exactly t_end at the end
        z = noise.randn(x.shape, x.dtype, x.device)
        root_h = batch_coeff(torch.sqrt(h), x)
        score = model.predict(x, t).score
        x1 = (x - batch_coeff(h, x) * reverse_drift(sde, x, t, score)
              + root_h * batch_coeff(sde.g2(t).sqrt(), x) * z)
        score1 = model.predict(x1, s).score
        x_tilde = (x - batch_coeff(h, x) * reverse_drift(sde, x1, s, score1)
                   + root_h * batch_coeff(sde.g2(s).sqrt(), x) * z)
        x2 = 0.5 * (x1 + x_tilde)
        E = error_norm(x1, x2, x_prev, options.eps_abs, options.eps_rel)
        finite = torch.isfinite(E)
        accept = active & finite & (E <= 1.0)
        keep = accept.reshape(accept.shape + (1,) * (x.ndim - 1))
        x = torch.where(keep, x2 if options.extrapolate else x1, x)
        x_prev = torch.where(keep, x1, x_prev)
        t = torch.where(accept, s, t)
        factor = options.theta * E.clamp(min=1e-300) ** (-options.r)
        h_next = torch.where(finite, h * factor, 0.1 * h)
        h = torch.where(t > t_end, torch.minimum(t - t_end, h_next), torch.zeros_like(h))
    report(callback, 0, grid.t[-1], x)
    return x


SPEC = SamplerSpec(
    "adaptive_sde", adaptive_sde, AdaptiveSDEOptions, grid="uniform", t_end=1e-3, denoise=True,
    variants=(("adaptive sde", {}), ("adaptive sde tight", {"eps_rel": 0.01})),
    paper="Gotta Go Fast, Jolicoeur-Martineau et al. 2021, Alg. 1 (step size per sample)",
    order="adaptive (eps_rel, eps_abs)", nfe="2 × attempted steps (adaptive)",
)
