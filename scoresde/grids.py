"""Time grids for samplers: pure functions ``(sde, steps, t_start, t_end) -> times``.

A grid is a float64 tensor of ``steps + 1`` strictly decreasing times in ``[0, T]``, from
``t_start`` (the prior, usually T) to ``t_end`` (where sampling stops). Samplers evaluate the
model at every time but the last, so a grid may end at ``t = 0`` even for networks that are
singular there.

* ``uniform``   equal steps in t (DDPM/DDIM's "uniform" skip when ``t_end = 0``).
* ``quadratic`` ``t = t_end + (t_start − t_end)·(1 − i/n)²``: denser near the data (DDIM).
* ``logsnr``    equal steps in ``λ = log(alpha²/sigma²)`` (DPM-Solver's default).
* ``karras``    equal steps in ``σ̄^{1/ρ}`` with ``σ̄ = sigma/alpha`` (EDM, ρ = 7).
* ``leading``, ``trailing``, ``linspace``: diffusers' DDIM timestep spacings on a discrete
  N-step table (``VPSDE.from_betas``), so a diffusers run can be reproduced exactly.
* ``edm``       the papers' recommendations with a floor: Karras et al.'s grid (ρ = 7) from
* ``dpm``       ``t_start`` down to the smallest noise level the model was trained at,
                ``t_min = 1/N`` (``1e-3`` for a continuous SDE without N: Song et al.'s and
                DPM-Solver's ``eps``), then one step to ``t_end``; ``dpm`` is DPM-Solver's
                log-SNR grid to the same ``t_min`` (Lu et al. 2022, App. D). On a DDPM table
                ``edm`` is exactly k-diffusion's ``get_sigmas_karras(n, sigma_min, sigma_max)``
                with ``append_zero``.

Where the default grid starts (:func:`default_t_start`): at T, except on a VP-family SDE whose
``σ̄(T)`` exceeds :data:`PRIOR_SIGMA_BAR` = 160 (the clipped cosine DDPM table: 2·10⁴), where it
starts at ``σ̄ = 160``. The marginal there is as close to the prior as the linear schedule's is at
T, but a grid uniform in t (or quadratic) from T spans σ̄ = 2·10⁴ → 6 in its first step, where a
higher-order step in σ̄ (Heun, RK4, the noise-form DPM-Solvers) weights the end-point slope by
the whole step. On a 2-D mixture oracle (mean |x₁| = 2.00), ``ode`` Heun at 10 steps gave 264 on
the quadratic grid, 38 on the uniform one and 2.24 on the log-SNR grid (which spent 5 of its 10
steps above σ̄ = 160); starting at σ̄ = 160 they give 4.1, 2.36 and 2.06.

``logsnr`` and ``karras`` need a finite ``λ(t_end)``; when ``t_end`` is 0 for a VP-family SDE
(``σ̄ = 0``) the grid is built to the first positive time of a uniform grid and finished with
one step to 0, as EDM appends ``σ = 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.checks import check_steps
from scoresde.errors import InputError
from scoresde.sde import SDE

GridFn = Callable[..., Tensor]


@dataclass(frozen=True)
class GridTable:
    """A time grid and its schedule coefficients, all float64, computed once per sampling call.

    ``t[i]`` are the times (decreasing when sampling, increasing when encoding); ``alpha``,
    ``sigma``, ``log_snr = log(alpha²/sigma²)`` and ``sigma_bar = sigma/alpha`` are their values
    there (``log_snr = +inf`` and ``sigma_bar = 0`` where ``sigma = 0``). Multistep samplers read
    their step sizes (e.g. ``h = log_snr[i+1]/2 − log_snr[i]/2``) from here instead of
    re-evaluating the schedule at every step.
    """

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    log_snr: Tensor
    sigma_bar: Tensor

    @classmethod
    def build(cls, sde: SDE, t: Tensor) -> GridTable:
        t = torch.as_tensor(t, dtype=torch.float64)
        return cls(t=t, alpha=sde.alpha(t), sigma=sde.sigma(t), log_snr=sde.log_snr(t),
                   sigma_bar=sde.sigma_bar(t))

    @property
    def steps(self) -> int:
        """Number of steps: one fewer than the number of times."""
        return len(self.t) - 1

    def flip(self) -> GridTable:
        """The same grid run the other way (decoding grid ↔ encoding grid)."""
        return GridTable(*(v.flip(0) for v in (self.t, self.alpha, self.sigma, self.log_snr,
                                                self.sigma_bar)))


def check_timesteps(timesteps: Tensor, sde: SDE) -> Tensor:
    """Validate an explicit grid: 1-D, at least two finite times, strictly decreasing, in [0, T]."""
    ts = torch.as_tensor(timesteps, dtype=torch.float64)
    if ts.ndim != 1 or len(ts) < 2:
        raise InputError(f"timesteps must be a 1-D tensor of at least 2 times, got shape {tuple(ts.shape)}")
    if not torch.isfinite(ts).all():
        raise InputError("timesteps must be finite")
    if not (ts[1:] < ts[:-1]).all():
        raise InputError(
            f"timesteps must be strictly decreasing (from noise to data), got {ts.tolist()[:8]}…"
        )
    if ts[-1] < 0 or ts[0] > sde.T:
        raise InputError(f"timesteps must lie in [0, T={sde.T}], got [{ts[-1]:.6g}, {ts[0]:.6g}]")
    return ts


# The noise level σ̄ = sigma/alpha above which default grids do not start on a VP-family SDE. For
# data of unit scale the marginal at σ̄ is N(0, I) up to KL ≈ 1/(2σ̄²) per dimension: 2e-5 nats at
# 160, as for the linear schedule at T (σ̄(T) = 152; DDPM's table 157, the cosine schedule 119, all
# left as they are). VE is not clipped: its σ_max is chosen against the data's scale, which the
# SDE does not know.
PRIOR_SIGMA_BAR = 160.0


def default_t_start(sde: SDE, grid: str | None = None) -> float:
    """Where a grid starts when the caller gives no ``t_start``: ``T``, or on a VP-family SDE whose
    ``σ̄(T)`` exceeds :data:`PRIOR_SIGMA_BAR`, the time where ``σ̄ = PRIOR_SIGMA_BAR`` (a prior draw
    is the state there as well as at T, to ~2e-5 nats per dimension). The diffusers spacings
    (``leading``, ``trailing``, ``linspace``) always start at the table's own last time."""
    no_decay = float(sde.alpha(sde.T)) == 1.0  # VE: its σ_max is set against the data's scale
    if grid in TABLE_SPACINGS or no_decay or float(sde.sigma_bar(sde.T)) <= PRIOR_SIGMA_BAR:
        return sde.T
    return float(sde.t_from_sigma_bar(torch.tensor(PRIOR_SIGMA_BAR, dtype=torch.float64)))


def uniform(sde: SDE, steps: int, t_start: float | None = None, t_end: float = 0.0) -> Tensor:
    steps = check_steps(steps)
    t_start = sde.T if t_start is None else t_start
    return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)


def quadratic(sde: SDE, steps: int, t_start: float | None = None, t_end: float = 0.0) -> Tensor:
    steps = check_steps(steps)
    t_start = sde.T if t_start is None else t_start
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return t_end + (t_start - t_end) * u * u


def _in_noise_level(sde: SDE, steps: int, t_start: float | None, t_end: float,
                    to_level: Callable[[Tensor], Tensor],
                    from_level: Callable[[Tensor], Tensor]) -> Tensor:
    """Equal steps in ``to_level(λ)``, with a final step to ``t_end`` where λ(t_end) = ∞."""
    steps = check_steps(steps)
    t_start = sde.T if t_start is None else float(t_start)
    lam_start = sde.log_snr(t_start)
    lam_end = sde.log_snr(t_end)
    if torch.isfinite(lam_end):
        u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        lev_start, lev_end = to_level(lam_start), to_level(lam_end)
        ts = sde.t_from_log_snr(from_level(lev_end + u * (lev_start - lev_end)))
        ts[0], ts[-1] = t_start, t_end
        return ts
    if steps == 1:
        return torch.tensor([t_start, t_end], dtype=torch.float64)
    t_last = t_end + (t_start - t_end) / steps
    head = _in_noise_level(sde, steps - 1, t_start, t_last, to_level, from_level)
    return torch.cat([head, torch.tensor([t_end], dtype=torch.float64)])


def logsnr(sde: SDE, steps: int, t_start: float | None = None, t_end: float = 0.0) -> Tensor:
    return _in_noise_level(sde, steps, t_start, t_end, lambda lam: lam, lambda lev: lev)


def karras(sde: SDE, steps: int, t_start: float | None = None, t_end: float = 0.0,
           rho: float = 7.0) -> Tensor:
    # σ̄ = exp(−λ/2); level = σ̄^{1/ρ} = exp(−λ/(2ρ)).
    return _in_noise_level(
        sde, steps, t_start, t_end,
        lambda lam: torch.exp(-lam / (2.0 * rho)),
        lambda lev: -2.0 * rho * torch.log(lev),
    )


def smallest_time(sde: SDE) -> float:
    """``t_min``: the smallest time a model is trained at — ``1/N`` (DDPM's step index 0), or
    ``1e-3`` for a continuous SDE without ``N``."""
    return 1.0 / sde.N if sde.N else 1e-3


def _floored(grid_fn: GridFn, sde: SDE, steps: int, t_start: float | None, t_end: float) -> Tensor:
    """``grid_fn`` from ``t_start`` to ``t_min`` in ``steps − 1`` steps, then one step to
    ``t_end`` (just ``grid_fn`` to ``t_end`` where ``t_end ≥ t_min``, or for one step)."""
    steps = check_steps(steps)
    t_min = smallest_time(sde)
    if t_end >= t_min or steps == 1:
        return grid_fn(sde, steps, t_start, t_end)
    head = grid_fn(sde, steps - 1, t_start, t_min)
    return torch.cat([head, torch.tensor([t_end], dtype=torch.float64)])


def edm(sde: SDE, steps: int, t_start: float | None = None, t_end: float = 0.0) -> Tensor:
    return _floored(karras, sde, steps, t_start, t_end)


def dpm(sde: SDE, steps: int, t_start: float | None = None, t_end: float = 0.0) -> Tensor:
    return _floored(logsnr, sde, steps, t_start, t_end)


def _spacing(name: str, sde: SDE, steps: int, t_start: float | None, t_end: float) -> Tensor:
    """diffusers' DDIMScheduler timestep spacings on the SDE's N-step table (step offset 0):

    * ``leading``  ``i = (N // k)·[k−1, …, 1, 0]``;
    * ``trailing`` ``i = round(N, N − N/k, …) − 1`` (starts at the last index, N − 1);
    * ``linspace`` ``i = round(linspace(N − 1, 0, k))``;

    at ``t_i = (i + 1)/N``, followed by ``t_end`` (DDIM's final step to ᾱ = 1 for ``t_end = 0``).
    Other diffusers schedulers space slightly differently; ``from_indices(scheduler.timesteps, N)``
    reproduces any of them exactly.
    """
    import numpy as np

    k, N = check_steps(steps), sde.require_N(f"the {name!r} grid")
    if t_start is not None and t_start != sde.T:
        raise InputError(f"the {name!r} grid starts from the table's own timesteps; t_start must be "
                         f"T={sde.T}, got {t_start}")
    if k > N:
        raise InputError(f"the {name!r} grid takes at most N={N} steps, got {k}")
    if name == "leading":
        idx = (np.arange(0, k) * (N // k))[::-1]
    elif name == "trailing":
        idx = np.round(np.arange(N, 0, -N / k)) - 1
    else:
        idx = np.linspace(0, N - 1, k).round()[::-1]
    ts = from_indices(torch.as_tensor(idx.copy()), N, final_zero=False)
    if not ts[-1] > t_end:
        raise InputError(f"the {name!r} grid's last table time {float(ts[-1]):.4g} is not above "
                         f"t_end={t_end}")
    return torch.cat([ts, torch.tensor([t_end], dtype=torch.float64)])


def leading(sde: SDE, steps: int, t_start: float | None = None, t_end: float = 0.0) -> Tensor:
    return _spacing("leading", sde, steps, t_start, t_end)


def trailing(sde: SDE, steps: int, t_start: float | None = None, t_end: float = 0.0) -> Tensor:
    return _spacing("trailing", sde, steps, t_start, t_end)


def linspace(sde: SDE, steps: int, t_start: float | None = None, t_end: float = 0.0) -> Tensor:
    return _spacing("linspace", sde, steps, t_start, t_end)


TABLE_SPACINGS = ("leading", "trailing", "linspace")
GRIDS: dict[str, GridFn] = {
    "uniform": uniform,
    "quadratic": quadratic,
    "logsnr": logsnr,
    "karras": karras,
    "edm": edm,
    "dpm": dpm,
    "leading": leading,
    "trailing": trailing,
    "linspace": linspace,
}


def make_grid(name: str, sde: SDE, steps: int, t_start: float | None = None,
              t_end: float = 0.0) -> Tensor:
    """Build the grid called ``name`` (one of :data:`GRIDS`) and validate it."""
    if name not in GRIDS:
        raise InputError(f"unknown grid {name!r}; available: {sorted(GRIDS)}")
    return check_timesteps(GRIDS[name](sde, steps, t_start, t_end), sde)


def from_indices(indices: Tensor, N: int, final_zero: bool = True) -> Tensor:
    """Times for DDPM step indices (descending), ``t_i = (i + 1)/N``, with ``t = 0`` appended.

    E.g. DDIM's ``[980, 960, …, 0]`` with N = 1000 ends with a step to ``ᾱ = 1``.
    """
    idx = torch.as_tensor(indices, dtype=torch.float64)
    ts = (idx + 1.0) / N
    if final_zero:
        ts = torch.cat([ts, torch.zeros(1, dtype=torch.float64)])
    return ts
