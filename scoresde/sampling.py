"""``sample``: the one entry point that runs any registered sampler on any model.

It validates the request, builds the time grid, draws ``x_T`` from the prior, counts network
evaluations exactly and optionally finishes with a Tweedie denoising step
``x_0 = E[x_0 | x_{t_end}]`` (one more evaluation). A state that becomes non-finite is a
:class:`~scoresde.errors.NonFiniteError` naming the step and time where it first did
(:class:`FiniteRecord`: one on-device flag per step, read once, after the run). A latent model
(:class:`~scoresde.latent.LatentDiffusion`, or a wrapper of one) is sampled in its latent space and
the result decoded once through its autoencoder (not counted as an NFE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scoresde import grids, samplers
from scoresde.checks import check_flag, check_float_dtype, check_real, check_shape, check_steps, check_tensor
from scoresde.errors import InputError, InputTypeError, NonFiniteError
from scoresde.grids import GridTable
from scoresde.latent import find_latent_model
from scoresde.model import Cond, CountingModel, DiffusionModel, check_cond, check_model
from scoresde.noise import NoiseSource, as_noise
from scoresde.samplers.base import Callback, SamplerOptions, SamplerSpec


@dataclass(frozen=True)
class SampleResult:
    """Samples ``x``, the exact number of network evaluations ``nfe`` and the grid used.

    ``latents``: for a latent model, the autoencoder latents ``z`` at the data end of the run (what
    :func:`sample` decoded into ``x``, or what :func:`~scoresde.encode` started from,
    ``to_latent(x)``); ``None`` for a model in data space.
    """

    x: Tensor
    nfe: int
    timesteps: Tensor
    latents: Tensor | None = None


class FiniteRecord:
    """A per-step callback that keeps, for every report, whether the state was finite — as a device
    tensor, so that the step loop never waits for the device — and after the run names the first
    report whose state was not (one host read, made only once the run has failed). ``steps`` is the
    grid's step count, ``None`` for an adaptive solve (its reports are its accepted steps or only
    its end)."""

    def __init__(self, steps: int | None = None) -> None:
        self.steps = steps
        self.flags: list[Tensor] = []
        self.where: list[tuple[int, float]] = []

    def __call__(self, info: dict[str, Any]) -> None:
        self.flags.append(torch.isfinite(info["x"]).all())
        self.where.append((info["i"], info["t"]))

    def first_bad(self) -> tuple[int, float] | None:
        """``(i, t)`` of the first report with a non-finite state, or ``None``."""
        if not self.flags:
            return None
        bad = (~torch.stack(self.flags)).nonzero()
        return self.where[int(bad[0])] if len(bad) else None

    def describe(self, end: str = "at the end") -> str:
        """Where the run first became non-finite: step ``i`` of ``steps`` and its time, or ``end``."""
        first = self.first_bad()
        if first is None:
            return f"every step's state was finite; it became non-finite {end}"
        i, t = first
        if self.steps is None:
            return f"the state first became non-finite by t={t:.6g} (the adaptive solve's report i={i})"
        return f"the state first became non-finite at step i={i} (0-based, of {self.steps}), at t={t:.6g}"


def check_callback(callback: Any) -> None:
    """Refuse a ``callback`` that is neither ``None`` nor callable (InputTypeError)."""
    if callback is not None and not callable(callback):
        raise InputTypeError("callback must be None or a function of the step's dict, got "
                             f"{type(callback).__name__}")


def resolve_sampler(sampler: str | SamplerSpec) -> SamplerSpec:
    """A registered sampler's spec by name, or the spec itself."""
    if isinstance(sampler, SamplerSpec):
        return sampler
    if not isinstance(sampler, str):
        raise InputTypeError(f"sampler must be a name or a SamplerSpec, got {type(sampler).__name__}")
    return samplers.get(sampler)


def run_steps(spec: SamplerSpec, model: CountingModel, x: Tensor, table: GridTable, noise: NoiseSource | None,
              opts: SamplerOptions, on_step: Callback, record: FiniteRecord, what: str) -> Tensor:
    """``spec.fn`` on ``x``; a sampler's own error about a non-finite state (e.g. ``pc``'s Langevin
    step) raised after a step whose state ``record`` saw non-finite is re-raised naming that step."""
    try:
        return spec.fn(model, x, table, noise, opts, on_step)
    except (InputError, FloatingPointError) as err:
        if record.first_bad() is None:
            raise
        raise NonFiniteError(f"{err} ({what}: {record.describe()})") from err


def time_grid(spec: SamplerSpec, model: DiffusionModel, options: SamplerOptions, steps: int | None,
              timesteps: Tensor | None, grid: str | None, t_start: float | None,
              t_end: float | None) -> Tensor:
    """The decreasing grid ``sample`` uses: explicit ``timesteps`` or ``steps`` on ``grid``;
    only the two ends for an adaptive solver."""
    sde = model.sde
    t_start = None if t_start is None else check_real(t_start, "t_start")
    t_end = None if t_end is None else check_real(t_end, "t_end")
    if timesteps is not None:
        if steps is not None or grid is not None or t_start is not None or t_end is not None:
            raise InputError("pass either timesteps or steps/grid/t_start/t_end, not both")
        ts = grids.check_timesteps(timesteps, sde)
        if not options.uses_grid and len(ts) > 2:
            raise InputError(
                f"an adaptive solver uses only the ends of timesteps; got {len(ts)} times "
                "(pass [t_start, t_end], or use a fixed-step method)"
            )
        return ts
    t_start = grids.default_t_start(sde, grid) if t_start is None else t_start
    t_end = spec.default_ends(options)[0] if t_end is None else t_end
    if not 0.0 <= t_end < t_start <= sde.T:
        raise InputError(f"need 0 <= t_end < t_start <= T={sde.T}, got t_end={t_end}, t_start={t_start}")
    if not options.uses_grid:
        if steps is not None or grid is not None:
            raise InputError(
                f"an adaptive solver chooses its own steps; got steps={steps!r}, grid={grid!r} "
                "(use rtol/atol, or a fixed-step method such as 'heun' or 'rk4')"
            )
        return torch.tensor([t_start, t_end], dtype=torch.float64)
    if steps is None:
        raise InputError("steps is required (an integer >= 1), or pass an explicit timesteps tensor")
    return grids.make_grid(grid or spec.grid_for(sde, options), sde, check_steps(steps), t_start, t_end)


def sample(
    model: DiffusionModel,
    shape: tuple[int, ...],
    sampler: str | SamplerSpec = "ddim",
    steps: int | None = None,
    *,
    cond: Cond = None,
    generator: torch.Generator | NoiseSource | None = None,
    timesteps: Tensor | None = None,
    grid: str | None = None,
    t_start: float | None = None,
    t_end: float | None = None,
    denoise: bool | None = None,
    x_T: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    **options: Any,
) -> SampleResult:
    """Draw ``shape`` samples from ``model`` with ``sampler``.

    Args:
        model: any :class:`~scoresde.model.DiffusionModel` (a :class:`~scoresde.ScoreModel`
            or a wrapper of one).
        shape: ``(batch, ...)`` of the samples; for a latent model the latent shape
            ``(batch, *ldm.latent_shape(data_shape))`` (``.x`` is then the decoded data).
        cond: the condition passed to every network call: a tensor whose first axis is the
            batch (e.g. class labels) or a dict of network keyword arguments.
        sampler: a name from ``scoresde.samplers.available()`` or a ``SamplerSpec``.
        steps: number of grid steps (fixed-step samplers); NFE follows from it exactly.
        generator: a ``torch.Generator`` or :class:`~scoresde.PerSampleNoise`; required
            unless the sampler is deterministic and ``x_T`` is given.
        timesteps: an explicit strictly decreasing grid in ``[0, T]`` instead of ``steps``.
        grid: ``"uniform"``, ``"quadratic"``, ``"logsnr"`` or ``"karras"`` (default: the
            sampler's measured default).
        t_start, t_end: ends of the grid (default ``T`` — where ``σ̄ = 160`` on a VP schedule whose
            ``σ̄(T)`` is larger, :func:`scoresde.grids.default_t_start` — and the sampler's default).
        denoise: finish with ``x_0 = x0(x, t_end)`` (one more network call).
        x_T: the starting state at ``t_start`` (default: a draw from the prior).
        callback: called after every step with ``{"i", "t", "x", "x0"}``.
        dtype: the samples' floating-point dtype (when ``x_T`` is not given).
        device: where to draw ``x_T`` (default: the CPU).
        progress: show a tqdm progress bar over the steps.
        **options: the sampler's declared options (``sd.samplers.get(name).options``), e.g.
            ``eta`` (ddim), ``predictor``, ``corrector``, ``snr``, ``n_corrector`` (pc),
            ``method``, ``rtol``, ``atol`` (ode), ``variance`` (ancestral). A name the
            sampler does not declare is an error listing the valid ones.

    Returns:
        a :class:`SampleResult` with ``.x`` and ``.nfe`` (and ``.latents`` for a latent model).

    Raises:
        InputError: an argument that is not accepted (an :class:`~scoresde.errors.InputTypeError`
            for a value of the wrong type), saying what was expected.
        NonFiniteError: the state became non-finite; the message names the first step (and its
            time) whose state was not finite.
    """
    check_model(model)
    spec = resolve_sampler(sampler)
    opts = spec.parse(options)
    sde = model.sde
    shape = check_shape(shape)
    dtype = check_float_dtype(dtype)
    try:
        device = torch.device(device or "cpu")
    except (RuntimeError, TypeError):
        raise InputError(f"device must be a torch.device or a name such as 'cpu' or 'cuda:0', got "
                         f"{device!r}") from None
    check_flag(progress, "progress")
    check_callback(callback)
    check_cond(cond, shape[0])
    ts = time_grid(spec, model, opts, steps, timesteps, grid, t_start, t_end)
    denoise = spec.default_ends(opts)[1] if denoise is None else check_flag(denoise, "denoise")
    if denoise and sde.sigma(ts[-1]) == 0:
        raise InputError("denoise=True needs a grid ending where sigma > 0 (t_end > 0)")

    if x_T is not None:
        check_tensor(x_T, "x_T")
        if tuple(x_T.shape) != shape:
            raise InputError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
    elif ts[0] < grids.default_t_start(sde, grid):  # T, or where σ̄ = 160 if σ̄(T) is larger
        raise InputError(f"starting at t={float(ts[0]):.4g} < T needs x_T (the prior sits at T)")
    needs_noise = opts.stochastic or x_T is None
    noise = as_noise(generator) if needs_noise or generator is not None else None
    if x_T is None:
        x = sde.prior_std * noise.randn(shape, dtype, device)
    else:
        x = x_T

    counting = CountingModel(model, cond)
    table = GridTable.build(sde, ts)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=table.steps, unit="step", desc=spec.name)

    record = FiniteRecord(table.steps if opts.uses_grid else None)

    def on_step(info: dict[str, Any]) -> None:
        record(info)
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(info)

    what = f"{spec.name!r}, {table.steps} steps, options {opts}"
    try:
        x = run_steps(spec, counting, x, table, noise, opts, on_step, record, what)
        if denoise:
            x = counting.predict(x, ts[-1]).x0
    finally:
        if bar is not None:
            bar.close()
    if not torch.isfinite(x).all():  # the run's one host read of the state
        end = f"in the final denoising step x0(x, t_end={float(ts[-1]):.6g})" if denoise else "at the end"
        where = record.describe(end)
        raise NonFiniteError(f"sampling produced non-finite values ({what}): {where}; check the model's "
                             "outputs there (a network returning NaN or inf) and the grid")
    latent = find_latent_model(model)
    if latent is not None:
        return SampleResult(x=latent.to_data(x), nfe=counting.nfe, timesteps=ts, latents=x)
    return SampleResult(x=x, nfe=counting.nfe, timesteps=ts)
