"""The demo behind ``scoresde demo``: the researcher's loop on a trained model, and the exact oracle.

Two parts, both run by ``scoresde demo`` (``--problem=all``, the default):

* **digits** (:func:`run_digits_demo`): the trained 8×8-digits model shipped in
  ``models/digits_vp`` is sampled by every registered sampler from the same prior draw; one
  PNG shows the samples side by side (one image grid per sampler, titled with its NFE and
  wall time, next to test images), a table gives NFE and time, and the test-set negative
  log-likelihood in bits/dim is estimated with the PF-ODE and Hutchinson's trace estimator on
  a few test images. Skipped with a note when no trained model is there.
* **gmm** (:func:`run_demo`): a 2-D mixture of 9 Gaussians whose diffused score is known
  exactly, wrapped as a DDPM ε-network, sampled by every sampler at several step counts; the
  table adds the unbiased MMD² to exact samples and its noise floor.

:func:`run_samplers` (every sampler at a few step counts, same prior draw, NFE and time, and
MMD² to a reference set) is shared with ``scoresde bench``.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ml_collections import ConfigDict
from torch import Tensor
from tqdm.auto import tqdm

import scoresde as sd
from scoresde import checkpoint
from scoresde.data import ring_mixture, to_pixels
from scoresde.metrics import mmd2
from scoresde.model import ScoreModel
from scoresde.sde import SDE

# Where `make demo` looks for the shipped model and its config (relative to the working
# directory, else to the repository that holds this package).
DEFAULT_MODEL_DIR = "models/digits_vp"
DEFAULT_MODEL_CONFIG = "configs/digits_vp.py"
TRAIN_COMMAND = "scoresde train --config=configs/digits_vp.py --workdir=models/digits_vp"

# Options shown for each sampler (they are its defaults, spelled out so the table says what
# ran). A sampler registered later without an entry here runs with its defaults.
DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "ancestral": {"variance": "posterior"},
    "ddim": {"eta": 0.0},
    "ode": {"method": "heun"},
    "pc": {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16},
}
# One run with an adaptive solver, which picks its own steps.
ADAPTIVE_RUN: tuple[str, dict[str, Any]] = ("ode", {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5})
# On images a looser tolerance: the samples look the same and the run stays a few seconds.
IMAGE_ADAPTIVE_RUN: tuple[str, dict[str, Any]] = ("ode", {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3})

# Independent exact sets compared with the reference to measure how much MMD² scatters.
FLOOR_SETS = 5


@dataclass(frozen=True)
class NoiseFloor:
    """MMD² of one independent exact set to the reference, and its spread over several sets."""

    mmd2: float
    std: float


@dataclass(frozen=True)
class Run:
    """One sampler run to make: sampler name, options and steps (``None``: adaptive)."""

    sampler: str
    options: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None

    @property
    def label(self) -> str:
        """The sampler's name, with the ODE method where there is one (``"ode heun"``)."""
        return f"{self.sampler} {self.options['method']}" if "method" in self.options else self.sampler


@dataclass(frozen=True)
class DemoRow:
    """One sampler run: what ran, what it cost and (where a reference exists) how close it came."""

    sampler: str
    options: str
    grid: str
    steps: int | None  # None for an adaptive solver
    nfe: int
    wall_s: float
    mmd2: float | None  # None where no reference was given (images)


def make_sde(name: str) -> SDE:
    """The demo's forward SDE by name: ``vp``, ``subvp`` or ``ve`` (score_sde's defaults)."""
    factories = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}
    if name not in factories:
        raise ValueError(f"unknown SDE {name!r}; available: {sorted(factories)}")
    return factories[name]()


def format_options(options: dict[str, Any]) -> str:
    """``{"eta": 0.0, "method": "heun"}`` → ``"eta=0 method=heun"``."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())


def sampler_runs(steps: Sequence[int],
                 adaptive: tuple[str, dict[str, Any]] | None = ADAPTIVE_RUN) -> list[Run]:
    """Every registered sampler at every count in ``steps`` (options from :data:`DEMO_OPTIONS`),
    plus one run of the ``adaptive`` sampler and options after that sampler's fixed-step runs."""
    steps = sorted({int(s) for s in steps})
    if not steps or steps[0] < 1:
        raise ValueError(f"steps must be integers >= 1, got {steps}")
    runs: list[Run] = []
    for name in sd.samplers.available():
        options = DEMO_OPTIONS.get(name, {})
        runs += [Run(name, options, k) for k in steps]
        if adaptive is not None and name == adaptive[0]:
            runs.append(Run(name, adaptive[1], None))
    return runs


def run_samplers(model: ScoreModel, shape: tuple[int, ...], runs: Sequence[Run], seed: int = 0,
                 reference: Tensor | None = None, progress: bool = True,
                 desc: str = "samplers") -> list[tuple[DemoRow, Tensor]]:
    """Run each of ``runs`` on ``model`` and measure it.

    Every run starts from the same prior draw (generator seeded with ``seed + 1``); wall time
    is measured around :func:`scoresde.sample` only, after one tiny warm-up call so the first
    run does not pay torch's start-up costs. With ``reference`` the unbiased MMD² of the
    samples to it is recorded as well.

    Returns:
        ``(row, samples)`` per run, in the order of ``runs``.
    """
    sd.sample(model, (2, *shape[1:]), "ddim", 1, generator=torch.Generator().manual_seed(seed))
    results: list[tuple[DemoRow, Tensor]] = []
    for run in tqdm(runs, desc=desc, unit="run", disable=not progress):
        gen = torch.Generator().manual_seed(seed + 1)  # same prior draw for every run
        start = time.perf_counter()
        out = sd.sample(model, shape, run.sampler, run.steps, generator=gen, **run.options)
        wall = time.perf_counter() - start
        grid = "adaptive" if run.steps is None else sd.samplers.get(run.sampler).grid
        distance = None if reference is None else mmd2(out.x, reference)
        results.append((DemoRow(run.sampler, format_options(run.options), grid, run.steps, out.nfe, wall,
                                distance), out.x))
    return results


def format_table(rows: Sequence[DemoRow]) -> str:
    """The rows as an aligned text table (the MMD² column only if some row has one)."""
    with_mmd = any(r.mmd2 is not None for r in rows)
    header = ("sampler", "options", "grid", "steps", "NFE", "time [s]") + (("MMD²",) if with_mmd else ())
    cells = [
        (r.sampler, r.options, r.grid, "-" if r.steps is None else str(r.steps), str(r.nfe),
         f"{r.wall_s:.3f}")
        + ((("-" if r.mmd2 is None else f"{r.mmd2:+.2e}"),) if with_mmd else ())
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    right = {3, 4, 5, 6}

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def format_floor(floor: NoiseFloor, n: int, what: str = "two independent exact sets") -> str:
    """One sentence on the MMD² noise floor, for under a table."""
    return (f"noise floor: MMD² between {what} of {n}: {floor.mmd2:+.2e} "
            f"(std over {FLOOR_SETS} sets: {floor.std:.1e}: differences of this size are noise)")


def write_csv(rows: Sequence[DemoRow], path: str | Path, floor: NoiseFloor | None = None) -> None:
    """Write the rows to ``path``.

    Columns: sampler, options, grid, steps (empty for the adaptive run), nfe, wall_s, mmd2
    (empty where not measured) and, with ``floor``, mmd2_noise_floor and mmd2_noise_std.
    """
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        extra = ["mmd2_noise_floor", "mmd2_noise_std"] if floor is not None else []
        w.writerow(["sampler", "options", "grid", "steps", "nfe", "wall_s", "mmd2", *extra])
        for r in rows:
            values = [r.sampler, r.options, r.grid, "" if r.steps is None else r.steps, r.nfe,
                      f"{r.wall_s:.6f}", "" if r.mmd2 is None else f"{r.mmd2:.6e}"]
            if floor is not None:
                values += [f"{floor.mmd2:.6e}", f"{floor.std:.6e}"]
            w.writerow(values)


def noise_floor(draw: Any, reference: Tensor, sets: int = FLOOR_SETS) -> NoiseFloor:
    """MMD² of ``sets`` independent sets ``draw()`` to ``reference``: the first, and their std."""
    floors = [mmd2(draw(), reference) for _ in range(sets)]
    return NoiseFloor(floors[0], float(torch.tensor(floors, dtype=torch.float64).std()))


# --- the 2-D oracle demo ----------------------------------------------------------------------


def run_demo(workdir: str | Path, n: int = 2000, seed: int = 0, steps: Sequence[int] = (5, 10, 20, 50),
             sde_name: str = "vp", plot_steps: int = 20, progress: bool = True) -> list[DemoRow]:
    """Run every registered sampler on the exact Gaussian-mixture oracle and report.

    The oracle is ``gmm.score_model(sde, prediction="eps", time_input="index")``: it is called
    exactly like a DDPM noise-prediction network, and returns the exact diffused score.
    Each fixed-step sampler runs at each count in ``steps`` (with its default grid, end time
    and final denoising), and the ODE sampler once more with the adaptive ``dopri5``. Every run
    starts from the same prior draw. Quality is the unbiased MMD² (:func:`scoresde.metrics.mmd2`)
    to ``n`` fresh exact samples; the noise floor is the MMD² between two independent exact
    sets of the same size, and its standard deviation over ``FLOOR_SETS`` independent sets says
    which differences between rows are noise.

    Writes ``results.csv`` and ``samples.png`` to ``workdir``, prints the table and returns its
    rows.
    """
    from scoresde.plots import ScatterPanel, save_scatter_panels

    runs = sampler_runs(steps)
    os.makedirs(workdir, exist_ok=True)
    sde = make_sde(sde_name)
    gmm = ring_mixture()
    model = gmm.score_model(sde, prediction="eps", time_input="index")

    data_gen = torch.Generator().manual_seed(seed)
    reference = gmm.sample(n, generator=data_gen)
    floor = noise_floor(lambda: gmm.sample(n, generator=data_gen), reference)
    shown = min((r.steps for r in runs if r.steps is not None), key=lambda k: (abs(k - plot_steps), k))

    results = run_samplers(model, (n, 2), runs, seed, reference, progress, desc="gmm demo")
    rows = [row for row, _ in results]
    panels = [ScatterPanel(f"exact samples\nnoise floor MMD² = {floor.mmd2:+.1e} (±{floor.std:.0e})",
                           reference, "C0")]
    for run, (row, x) in zip(runs, results):
        if run.steps == shown or run.steps is None:
            steps_text = "adaptive" if row.steps is None else f"{row.steps} steps"
            panels.append(ScatterPanel(f"{run.label} ({steps_text})\nNFE = {row.nfe}, MMD² = {row.mmd2:+.1e}",
                                       x))

    print(f"\n{sde!r}, exact eps-oracle of a 2-D mixture of 9 Gaussians, n={n}")
    print(format_table(rows))
    print("\n" + format_floor(floor, n))
    csv_path = os.path.join(workdir, "results.csv")
    write_csv(rows, csv_path, floor)
    png_path = os.path.join(workdir, "samples.png")
    save_scatter_panels(png_path, panels, f"{type(sde).__name__}, exact eps-oracle, n={n}", lim=(-6.5, 6.5))
    print(f"\nwrote {csv_path} and {png_path}")
    return rows


# --- the trained digits model -----------------------------------------------------------------


def resolve_path(path: str | Path) -> Path:
    """``path`` as given if it exists (relative to the working directory), else relative to the
    repository holding this package (an editable install), else as given."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    in_repo = Path(__file__).resolve().parents[1] / p
    return in_repo if in_repo.exists() else p


def load_config_file(path: str | Path, argument: str | None = None) -> ConfigDict:
    """Run a config file's ``get_config()`` (``get_config(argument)`` when given), as
    ``ml_collections.config_flags`` does for ``--config=path[:argument]``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    spec = importlib.util.spec_from_file_location(f"scoresde_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load {path} as a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config()")
    return module.get_config(argument) if argument is not None else module.get_config()


def find_model(source: str | Path) -> Path | None:
    """The checkpoint file a trained model would be loaded from, or ``None`` if there is none.

    ``source`` may be a checkpoint file (e.g. one written by :func:`scoresde.train.export_model`),
    a workdir (its latest intact checkpoint under ``checkpoints/``), or a folder holding
    checkpoint ``.pt`` files directly (the last by name).
    """
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        return None
    latest = checkpoint.latest_checkpoint(source)
    if latest is not None:
        return latest
    files = sorted(p for p in source.glob("*.pt") if p.is_file())
    return files[-1] if files else None


@dataclass(frozen=True)
class DigitsReport:
    """What :func:`run_digits_demo` measured: sampler rows and the test-set bits/dim."""

    rows: list[DemoRow]
    bpd_mean: float
    bpd_stderr: float
    nll_n: int
    nll_nfe: float  # mean NFE per likelihood solve
    nll_wall_s: float
    png: Path
    csv: Path


def run_digits_demo(workdir: str | Path, config: ConfigDict, source: str | Path, steps: int = 20,
                    n: int = 64, nll_n: int = 64, seed: int = 0, progress: bool = True) -> DigitsReport:
    """Sample a trained image model with every sampler, and estimate its NLL.

    ``source`` is a checkpoint file or a workdir (see :func:`find_model`) of ``config``.

    * Samples: ``n`` images from every registered sampler at ``steps`` steps (options from
      :data:`DEMO_OPTIONS`) and one adaptive ``dopri5`` PF-ODE solve (rtol = atol = 1e-3),
      all from one prior draw; ``digits_samples.png`` shows them side by side with ``n``
      test images, each panel titled with NFE and wall time; ``digits_results.csv`` and the
      printed table hold the numbers.
    * Likelihood: bits/dim of the first ``nll_n`` test images by :func:`scoresde.bits_per_dim`
      — uniform dequantization of the integer pixels, the PF-ODE solved by the config's
      ``eval`` method settings (``trace``, ``rtol``, ``atol``, Hutchinson's estimator for
      ``rademacher``/``gaussian``) — reported as mean ± standard error over the images.

    The model is loaded with its EMA weights via :func:`scoresde.train.load_trained`.
    """
    from scoresde.plots import ImagePanel, save_image_panels
    from scoresde.train import load_data, load_trained

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    found = find_model(source)
    if found is None:
        raise FileNotFoundError(f"no trained model in {source} (train it with `{TRAIN_COMMAND}`)")
    model = load_trained(config, found)
    test, spec = load_data(config, "test")
    if not spec.is_image:
        raise ValueError(f"the image demo needs image data; {spec.name!r} is continuous")
    if nll_n > len(test) or n > len(test):
        raise ValueError(f"the test split has {len(test)} images; asked for n={n} and nll_n={nll_n}")

    runs = sampler_runs([steps], IMAGE_ADAPTIVE_RUN)
    results = run_samplers(model, (n, *spec.shape), runs, seed, None, progress, desc="digits samplers")
    rows = [row for row, _ in results]
    ncol = math.ceil(math.sqrt(n))
    panels = [ImagePanel(f"test images ({n})", to_pixels(test[:n], spec), ncol)]
    for run, (row, x) in zip(runs, results):
        steps_text = "adaptive" if row.steps is None else f"{row.steps} steps"
        panels.append(ImagePanel(f"{run.label}, {steps_text}\nNFE {row.nfe}, {row.wall_s:.2f} s",
                                 to_pixels(x, spec), ncol))

    ev = config.eval
    pixels = to_pixels(test[:nll_n], spec)
    start = time.perf_counter()
    method = ev.get("method", "dopri5")
    bpd = sd.bits_per_dim(model, pixels, data_range=spec.data_range, levels=spec.levels,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float32,
                          trace=ev.trace, probes=ev.get("probes", 1), method=method, rtol=ev.rtol,
                          atol=ev.atol, batch_size=ev.batch_size, progress=progress)
    nll_wall = time.perf_counter() - start
    nll_nfe = float(bpd.likelihood.nfe.double().mean())

    nll_text = (f"test NLL {bpd.mean:.3f} ± {bpd.stderr:.3f} bits/dim "
                f"({nll_n} test images, {ev.trace} trace, {method} rtol={ev.rtol:g})")
    png = workdir / "digits_samples.png"
    csv_path = workdir / "digits_results.csv"
    save_image_panels(png, panels, spec.levels, f"trained {spec.name} model ({source}): {nll_text}",
                      cols=3)
    write_csv(rows, csv_path)
    print(f"\nTrained {spec.name} model from {found}: {type(model.sde).__name__}, "
          f"{n} samples per sampler, same prior draw")
    print(format_table(rows))
    print(f"\n{nll_text}: NFE {nll_nfe:.0f} per solve, {nll_wall:.1f} s "
          f"(uniform dequantization: an upper bound on the discrete NLL)")
    print(f"\nwrote {png} and {csv_path}")
    return DigitsReport(rows, bpd.mean, bpd.stderr, nll_n, nll_nfe, nll_wall, png, csv_path)
