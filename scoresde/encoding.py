"""Deterministic encoding (data → latent) with the PF-ODE run forwards, and latent interpolation.

A deterministic sampler is an invertible map between ``x`` at the data end of its grid and
``x_T``. :func:`encode` runs it over the same grid in increasing time: DDIM (η = 0) becomes the
usual DDIM inversion ``x_s = alpha_s·x0(x_t) + sigma_s·eps(x_t)`` for ``s > t``, and the ``ode``
sampler integrates ``dx̄/dσ̄ = eps`` upwards. Decoding is ``sample(..., x_T=z)`` with the same
grid and ``denoise=False``; the round trip errs by the solver's discretization error.

The data are placed at ``t_end`` (default 1e-3, sigma ≈ 0.01 for the default VP) rather than at
0, since the first forward step evaluates the model at its starting time and networks are not
defined at ``sigma = 0``.

A latent model (:class:`~scoresde.latent.LatentDiffusion`, or a wrapper of one) first maps the data
to its autoencoder latents ``z = to_latent(x)`` (one encoder call, not an NFE) and runs the sampler
forward from ``z``; ``sample(model, z.shape, ..., x_T=...)`` decodes back to data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scoresde.checks import check_tensor
from scoresde.errors import InputError, NonFiniteError
from scoresde.grids import GridTable
from scoresde.latent import find_latent_model
from scoresde.model import Cond, CountingModel, DiffusionModel, check_cond, check_model
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerSpec
from scoresde.sampling import (
    FiniteRecord,
    SampleResult,
    check_callback,
    resolve_sampler,
    run_steps,
    time_grid,
)

ENCODE_T_END = 1e-3


def encode(
    model: DiffusionModel,
    x: Tensor,
    sampler: str | SamplerSpec = "ddim",
    steps: int | None = None,
    *,
    cond: Cond = None,
    timesteps: Tensor | None = None,
    grid: str | None = None,
    t_start: float | None = None,
    t_end: float | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | NoiseSource | None = None,
    **options: Any,
) -> SampleResult:
    """Map data ``x`` (placed at ``t_end``) to latents at ``t_start`` (default T).

    Arguments mirror :func:`scoresde.sample`: ``timesteps`` is the *decoding* grid (strictly
    decreasing); the encoder runs it in reverse. Only deterministic samplers can encode:
    ``"ddim"`` with ``eta=0`` and ``"ode"`` (fixed-step or adaptive ``method``).
    Returns a :class:`SampleResult` whose ``.x`` is the latent and ``.timesteps`` the
    increasing grid that was used. ``cond`` is passed to every network call, as in
    :func:`~scoresde.sample`. ``generator`` is accepted so that the arguments of a
    :func:`~scoresde.sample` call can be reused, and ignored: encoding draws no noise.
    For a latent model ``x`` is data: the run starts from ``to_latent(x)``, returned as
    ``.latents``.
    """
    del generator  # deterministic: nothing to draw
    check_model(model)
    spec = resolve_sampler(sampler)
    opts = spec.parse(options)
    if opts.stochastic:
        raise InputError(
            f"sampler {spec.name!r} with {opts} is stochastic and cannot encode; "
            "use 'ddim' with eta=0 or 'ode'"
        )
    check_tensor(x, "x")
    check_callback(callback)
    check_cond(cond, x.shape[0])
    if timesteps is None and t_end is None:
        t_end = ENCODE_T_END
    ts = time_grid(spec, model, opts, steps, timesteps, grid, t_start, t_end).flip(0)
    table = GridTable.build(model.sde, ts)
    if table.sigma[0] == 0:
        raise InputError(
            "encoding starts at the grid's data end, where the model would be evaluated at "
            "sigma = 0; use a grid ending at t_end > 0"
        )
    latent = find_latent_model(model)
    start = x if latent is None else latent.to_latent(x)
    counting = CountingModel(model, cond)
    record = FiniteRecord(table.steps if opts.uses_grid else None)

    def on_step(info: dict[str, Any]) -> None:
        record(info)
        if callback is not None:
            callback(info)

    what = f"{spec.name!r}, {table.steps} steps, options {opts}"
    z = run_steps(spec, counting, start, table, None, opts, on_step, record, what)
    if not torch.isfinite(z).all():
        where = record.describe()
        raise NonFiniteError(f"encoding produced non-finite latents ({what}): {where}; check the model's "
                             "outputs there")
    return SampleResult(x=z, nfe=counting.nfe, timesteps=ts, latents=None if latent is None else start)


INTERPOLATIONS = ("slerp", "linear")


def interpolate(z0: Tensor, z1: Tensor, n: int, method: str = "slerp") -> Tensor:
    """``n`` latents from ``z0`` to ``z1`` (both included), shape ``(n, *z0.shape)``.

    The first axis of ``z0`` is the batch: each pair ``(z0[i], z1[i])`` is interpolated on its own.

    ``"slerp"`` (Shoemake 1985) follows the great circle,
    ``z(u) = sin((1 − u)θ)/sin θ · z0 + sin(uθ)/sin θ · z1`` with ``cos θ = ⟨z0, z1⟩/(|z0||z1|)``.
    It suits Gaussian latents: a D-dimensional N(0, I) draw has norm ≈ sqrt(D), and slerp
    between two such draws keeps that norm, whereas the linear midpoint of two nearly orthogonal
    draws has norm ≈ sqrt(D/2) — far outside the prior's typical set, where a decoder was never
    trained (DDIM §5.4, used for its interpolation figures).
    ``"linear"`` is ``(1 − u) z0 + u z1``.
    """
    if method not in INTERPOLATIONS:
        raise InputError(f"method must be one of {INTERPOLATIONS}, got {method!r}")
    if z0.shape != z1.shape:
        raise InputError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise InputError(f"n must be an integer >= 2 (both ends included), got {n!r}")
    if not (torch.isfinite(z0).all() and torch.isfinite(z1).all()):
        raise InputError("latents must be finite")
    u = torch.linspace(0.0, 1.0, int(n), dtype=torch.float64).reshape((int(n),) + (1,) * z0.ndim)
    a, b = z0.to(torch.float64), z1.to(torch.float64)
    if method == "linear":
        return ((1.0 - u) * a + u * b).to(z0.dtype)
    batch = z0.shape[:1] if z0.ndim >= 2 else ()
    af, bf = a.reshape(*batch, -1), b.reshape(*batch, -1)
    norms = af.norm(dim=-1) * bf.norm(dim=-1)
    # A zero latent has no direction: cos = 1 sends it to the linear fallback below (not 0/0 = NaN).
    cos = torch.where(norms > 0, (af * bf).sum(-1) / torch.where(norms > 0, norms, 1.0), 1.0)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))  # rounding can push |cos| a hair past 1
    theta = theta.reshape(theta.shape + (1,) * (z0.ndim - len(batch)))
    sin = torch.sin(theta)
    # (Anti)parallel pairs: the great circle is undefined, fall back to linear. arccos turns
    # cos's rounding (~1e-16) into θ errors of ~1e-8 near 0 and π, so an exactly antiparallel
    # pair has |sin θ| ≈ 1e-8, not 0; below 1e-6, slerp and linear differ by O(θ²) near 0.
    parallel = sin.abs() < 1e-6
    safe_sin = torch.where(parallel, 1.0, sin)
    w0 = torch.where(parallel, 1.0 - u, torch.sin((1.0 - u) * theta) / safe_sin)
    w1 = torch.where(parallel, u, torch.sin(u * theta) / safe_sin)
    out = w0 * a + w1 * b
    return out.to(z0.dtype)



