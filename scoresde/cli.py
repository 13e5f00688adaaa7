"""scoresde command line: ``scoresde MODE [--flag=value ...]``.

Modes:
  demo   sample a 2-D Gaussian mixture with every registered sampler at several step counts,
         using the exact score as a stand-in for a trained DDPM network; print NFE, wall time
         and MMD² to exact samples, and write a CSV table and a scatter plot to --workdir.

Examples:
  scoresde demo --workdir=demo_out
  python -m scoresde.cli demo --workdir=demo_out --n=500 --steps=5,20 --sde=ve
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import torch
from absl import app, flags
from torch import Tensor
from tqdm.auto import tqdm

import scoresde as sd
from scoresde.data import ring_mixture
from scoresde.metrics import mmd2
from scoresde.sde import SDE

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", "demo_out", "Output folder; created if missing.")
flags.DEFINE_integer("n", 2000, "Samples per sampler run (and per exact reference set).", lower_bound=2)
flags.DEFINE_integer("seed", 0, "Random seed for the data and the samplers' noise.", lower_bound=0)
flags.DEFINE_list("steps", ["5", "10", "20", "50"],
                  "Comma-separated step counts to run every fixed-step sampler at.")
flags.DEFINE_enum("sde", "vp", ["vp", "subvp", "ve"],
                  "Forward SDE: vp (DDPM's linear VP, beta 0.1..20), subvp, or ve (sigma 0.01..50).")
flags.DEFINE_integer("threads", 1,
                     "torch intra-op threads. The demo's (n, 2) tensors are too small to gain from "
                     "more, and on a busy machine extra threads only wait on each other.",
                     lower_bound=1)
flags.DEFINE_integer("plot_steps", 20,
                     "Step count shown in the scatter plot (the nearest one in --steps is used).",
                     lower_bound=1)


@flags.validator("steps", message="--steps must be a comma-separated list of integers >= 1, e.g. 5,10,20")
def _check_steps(value: list[str]) -> bool:
    try:
        return len(value) > 0 and all(int(v) >= 1 for v in value)
    except ValueError:
        return False


# --- the demo ---------------------------------------------------------------------------------

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


# Independent exact sets compared with the reference to measure how much MMD² scatters.
FLOOR_SETS = 5


@dataclass(frozen=True)
class NoiseFloor:
    """MMD² of one independent exact set to the reference, and its spread over several sets."""

    mmd2: float
    std: float


@dataclass(frozen=True)
class DemoRow:
    """One sampler run of the demo: what ran, what it cost and how close it came."""

    sampler: str
    options: str
    grid: str
    steps: int | None  # None for an adaptive solver
    nfe: int
    wall_s: float
    mmd2: float


def make_sde(name: str) -> SDE:
    """The demo's forward SDE by name: ``vp``, ``subvp`` or ``ve`` (score_sde's defaults)."""
    factories = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}
    if name not in factories:
        raise ValueError(f"unknown SDE {name!r}; available: {sorted(factories)}")
    return factories[name]()


def _format_options(options: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())


def run_demo(workdir: str, n: int = 2000, seed: int = 0, steps: Sequence[int] = (5, 10, 20, 50),
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
    steps = sorted({int(s) for s in steps})
    if not steps or steps[0] < 1:
        raise ValueError(f"steps must be integers >= 1, got {steps}")
    os.makedirs(workdir, exist_ok=True)
    sde = make_sde(sde_name)
    gmm = ring_mixture()
    model = gmm.score_model(sde, prediction="eps", time_input="index")

    data_gen = torch.Generator().manual_seed(seed)
    reference = gmm.sample(n, generator=data_gen)
    floors = [mmd2(gmm.sample(n, generator=data_gen), reference) for _ in range(FLOOR_SETS)]
    floor = NoiseFloor(floors[0], float(torch.tensor(floors, dtype=torch.float64).std()))

    runs: list[tuple[str, dict[str, Any], int | None]] = []
    for name in sd.samplers.available():
        options = DEMO_OPTIONS.get(name, {})
        runs += [(name, options, k) for k in steps]
        if name == ADAPTIVE_RUN[0]:
            runs.append((name, ADAPTIVE_RUN[1], None))
    shown = min(steps, key=lambda k: (abs(k - plot_steps), k))

    # One tiny call first, so that the first timed run does not pay torch's start-up costs.
    sd.sample(model, (2, 2), "ddim", 1, generator=torch.Generator().manual_seed(seed))

    rows: list[DemoRow] = []
    panels: list[tuple[str, Tensor, DemoRow | None]] = [("exact samples", reference, None)]
    for name, options, k in tqdm(runs, desc="demo", unit="run", disable=not progress):
        gen = torch.Generator().manual_seed(seed + 1)  # same prior draw for every run
        start = time.perf_counter()
        out = sd.sample(model, (n, 2), name, k, generator=gen, **options)
        wall = time.perf_counter() - start
        row = DemoRow(name, _format_options(options), "adaptive" if k is None else sd.samplers.get(name).grid,
                      k, out.nfe, wall, mmd2(out.x, reference))
        rows.append(row)
        if k == shown or k is None:
            label = f"{name} {options['method']}" if "method" in options else name
            panels.append((label, out.x, row))

    print(format_table(rows, floor, n, sde))
    csv_path = os.path.join(workdir, "results.csv")
    write_csv(rows, floor, csv_path)
    png_path = os.path.join(workdir, "samples.png")
    plot_panels(panels, floor, png_path, f"{type(sde).__name__}, exact eps-oracle, n={n}")
    print(f"\nwrote {csv_path} and {png_path}")
    return rows


def format_table(rows: Sequence[DemoRow], floor: NoiseFloor, n: int, sde: SDE) -> str:
    """The rows as an aligned text table, with the MMD² noise floor below it."""
    header = ("sampler", "options", "grid", "steps", "NFE", "time [s]", "MMD²")
    cells = [
        (r.sampler, r.options, r.grid, "-" if r.steps is None else str(r.steps), str(r.nfe),
         f"{r.wall_s:.3f}", f"{r.mmd2:+.2e}")
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    right = {3, 4, 5, 6}

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    out = [f"\n{sde!r}, n={n}", line(header), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    out.append(f"\nnoise floor: MMD² between two independent exact sets of {n}: {floor.mmd2:+.2e} "
               f"(std over {FLOOR_SETS} sets: {floor.std:.1e}: differences of this size are noise)")
    return "\n".join(out)


def write_csv(rows: Sequence[DemoRow], floor: NoiseFloor, path: str) -> None:
    """Write the rows to ``path``; ``steps`` is empty for the adaptive run."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sampler", "options", "grid", "steps", "nfe", "wall_s", "mmd2", "mmd2_noise_floor",
                    "mmd2_noise_std"])
        for r in rows:
            w.writerow([r.sampler, r.options, r.grid, "" if r.steps is None else r.steps, r.nfe,
                        f"{r.wall_s:.6f}", f"{r.mmd2:.6e}", f"{floor.mmd2:.6e}", f"{floor.std:.6e}"])


def plot_panels(panels: Sequence[tuple[str, Tensor, DemoRow | None]], floor: NoiseFloor, path: str,
                title: str) -> None:
    """Scatter plots, one panel per sample set, titled with NFE and MMD², saved as a PNG."""
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 4.3 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (label, x, row) in zip(axes.flat, panels):
        x = x.detach().cpu().numpy()
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.35, color="C0" if row is None else "C1",
                   rasterized=True)
        if row is None:
            ax.set_title(f"{label}\nnoise floor MMD² = {floor.mmd2:+.1e} (±{floor.std:.0e})", fontsize=10)
        else:
            steps = "adaptive" if row.steps is None else f"{row.steps} steps"
            ax.set_title(f"{label} ({steps})\nNFE = {row.nfe}, MMD² = {row.mmd2:+.1e}", fontsize=10)
        ax.set_xlim(-6.5, 6.5)
        ax.set_ylim(-6.5, 6.5)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_mode() -> None:
    """``scoresde demo``: run :func:`run_demo` with the command-line flags."""
    torch.set_num_threads(FLAGS.threads)
    run_demo(FLAGS.workdir, n=FLAGS.n, seed=FLAGS.seed, steps=[int(s) for s in FLAGS.steps],
             sde_name=FLAGS.sde, plot_steps=FLAGS.plot_steps)


# --- modes and entry point --------------------------------------------------------------------

MODES: dict[str, Callable[[], None]] = {
    "demo": demo_mode,
}


def main(argv: Sequence[str]) -> None:
    """absl main: ``argv[1]`` is the mode; everything else arrived as flags."""
    modes = ", ".join(sorted(MODES))
    if len(argv) < 2:
        raise app.UsageError(f"missing mode: run `scoresde MODE [flags]` with MODE one of: {modes}")
    if len(argv) > 2:
        raise app.UsageError(f"unexpected arguments {list(argv[2:])}; flags are written --name=value")
    mode = argv[1]
    if mode not in MODES:
        raise app.UsageError(f"unknown mode {mode!r}; available modes: {modes}")
    MODES[mode]()


def run() -> None:
    """Console-script entry point (``scoresde``)."""
    main_module = sys.modules["__main__"]
    if main_module.__doc__ is None:
        # absl prints __main__'s docstring and the flags of the module named sys.argv[0] as
        # usage; the console-script wrapper has neither, so lend it this module's.
        main_module.__doc__ = __doc__
        for flag in FLAGS.get_flags_for_module(__name__):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)


if __name__ == "__main__":
    run()
