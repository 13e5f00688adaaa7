"""Problem 1: analytic Gaussian mixtures with the exact oracle — sampler error alone.

The oracle is the mixture's exact eps under the DDPM schedule, exposed as an eps-network with
the step-index time input (``gmm.score_model(sde, "eps", "index")``): a perfect DDPM network.
Every variant (ours and the diffusers peers) starts from the same ``x_T`` and stochastic ones
draw from generators with the same seed.

Quality of ``n`` samples ``x`` against a reference set ``y`` of ``n`` fresh exact draws:

* ``mmd2``: unbiased MMD² with Gaussian kernels at fixed bandwidths ``h·sqrt(D/2)``,
  ``h ∈ {0.1, 0.3, 1, 3}`` (the library default for D = 2; scaled so that the kernels see
  the same relative distances in every dimension);
* ``sw``: sliced Wasserstein-2 over 128 fixed random directions;
* ``logp_gap``: mean exact ``log p_0(x)`` of the samples minus that of the reference set, in
  nats per sample (negative: samples off the modes; positive: samples too concentrated on them).

Noise floor: the same three numbers for independent exact sets of ``n`` against the same
reference (mean and standard deviation over ``FLOOR_SETS`` sets). A run is *at the floor* when
its MMD² is at most the floor's mean + 2 sd.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoresde.analytic import GaussianMixture
from scoresde.data import ring_mixture
from scoresde.metrics import mmd2, sliced_wasserstein
from scoresde.sde import SDE
from suite import report
from suite.common import Variant, ddpm_sde, fmt, write_csv
from suite.runs import run_variant

TARGET_NFE = (3, 5, 8, 10, 15, 20, 50, 100)
TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4)
FLOOR_SETS = 10
BANDWIDTHS = (0.1, 0.3, 1.0, 3.0)
SW_PROJECTIONS = 128
FLOOR_SIGMAS = 2.0


@dataclass(frozen=True)
class Problem:
    """A mixture, how many samples to draw and at which NFE targets / ODE tolerances."""

    name: str
    gmm: GaussianMixture
    n: int
    targets: tuple[int, ...]
    tolerances: tuple[float, ...]
    seed: int = 0

    @property
    def dim(self) -> int:
        return self.gmm.dim

    @property
    def bandwidths(self) -> tuple[float, ...]:
        scale = math.sqrt(self.dim / 2)
        return tuple(h * scale for h in BANDWIDTHS)


def ring2d() -> GaussianMixture:
    """8 modes on a circle of radius 4 and one at the centre, all with std 0.05 (narrow: the
    modes are 80 std apart, so the last steps near the data decide the quality)."""
    return ring_mixture(std=0.05)


def random_mixture(dim: int, components: int, seed: int, spread: float = 1.0) -> GaussianMixture:
    """``components`` isotropic Gaussians in ``dim`` dimensions: means ``spread·N(0, I)``,
    stds uniform in [0.1, 0.3], weights uniform in [0.5, 1.5] (normalised)."""
    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(components, dim, generator=g, dtype=torch.float64)
    stds = 0.1 + 0.2 * torch.rand(components, generator=g, dtype=torch.float64)
    weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
    return GaussianMixture(means, stds, weights)


def default_problems(quick: bool) -> list[Problem]:
    """The 2-D ring and a 64-D mixture; ``quick`` shrinks sizes and grids to a smoke run."""
    if quick:
        return [Problem("ring2d", ring2d(), 200, (10,), (1e-2,)),
                Problem("gmm64d", random_mixture(64, 8, seed=64), 100, (5,), ())]
    return [Problem("ring2d", ring2d(), 2000, TARGET_NFE, TOLERANCES),
            Problem("gmm64d", random_mixture(64, 8, seed=64), 1000, TARGET_NFE, TOLERANCES)]


# --- quality ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Exact reference draws, the metric settings and the noise floor."""

    problem: Problem
    y: Tensor
    logp_y: float
    floor: dict[str, tuple[float, float]]  # metric -> (mean, sd) over independent exact sets

    def quality(self, x: Tensor) -> dict[str, float]:
        """``mmd2``, ``sw`` and ``logp_gap`` of samples ``x`` against the reference."""
        x = x.detach().to("cpu", torch.float64).flatten(1)
        if not torch.isfinite(x).all():
            return {"mmd2": math.nan, "sw": math.nan, "logp_gap": math.nan}
        sw_gen = torch.Generator().manual_seed(12345)  # the same directions for every run
        return {
            "mmd2": mmd2(x, self.y, self.problem.bandwidths),
            "sw": sliced_wasserstein(x, self.y, SW_PROJECTIONS, generator=sw_gen),
            "logp_gap": float(self.problem.gmm.log_prob(x).mean()) - self.logp_y,
        }

    @property
    def threshold(self) -> float:
        """The MMD² a run must not exceed to count as at the noise floor."""
        mean, sd_ = self.floor["mmd2"]
        return mean + FLOOR_SIGMAS * sd_

    def at_floor(self, q: dict[str, float]) -> bool:
        return math.isfinite(q["mmd2"]) and q["mmd2"] <= self.threshold


def reference(problem: Problem) -> Reference:
    """Draw the reference set and measure the noise floor with independent exact sets."""
    g = torch.Generator().manual_seed(problem.seed + 1000)
    y = problem.gmm.sample(problem.n, generator=g, dtype=torch.float64)
    ref = Reference(problem, y, float(problem.gmm.log_prob(y).mean()), {})
    sets = [ref.quality(problem.gmm.sample(problem.n, generator=g)) for _ in range(FLOOR_SETS)]
    floor = {k: (statistics.fmean(s[k] for s in sets), statistics.stdev(s[k] for s in sets))
             for k in sets[0]}
    return Reference(problem, y, ref.logp_y, floor)


# --- the grid -----------------------------------------------------------------------------------


def start_noise(problem: Problem, device: torch.device) -> Tensor:
    """The ``x_T`` every variant starts from: standard normal (the VP prior), fixed seed."""
    g = torch.Generator().manual_seed(problem.seed + 2000)
    return torch.randn(problem.n, problem.dim, generator=g).to(device)


def floor_rows(problem: Problem, ref: Reference) -> list[dict[str, Any]]:
    """The noise floor as a result row (``sampler = "exact"``)."""
    row = {"problem": problem.name, "dim": problem.dim, "n_samples": problem.n, "library": "exact",
           "family": "exact", "sampler": "exact samples (noise floor)", "options": "{}"}
    for metric, (mean, sd_) in ref.floor.items():
        row[metric], row[f"{metric}_sd"] = mean, sd_
    row["floor_threshold"] = ref.threshold
    return [row]


def grid_points(problem: Problem, variant: Variant) -> list[tuple[int | None, Variant]]:
    """``(target NFE, variant)`` pairs: the NFE targets, or one per tolerance for dopri5."""
    if variant.adaptive:
        return [(None, variant)]
    return [(target, variant) for target in problem.targets]


def run_problem(problem: Problem, variants: Sequence[Variant], device: torch.device,
                log: Callable[[str], None] = print, sde: SDE | None = None) -> list[dict[str, Any]]:
    """Every variant at every target NFE on ``problem``; one row per run plus the floor row."""
    sde = sde or ddpm_sde()
    oracle = problem.gmm.score_model(sde, prediction="eps", time_input="index")
    start = time.perf_counter()
    ref = reference(problem)
    x_T = start_noise(problem, device)
    rows = floor_rows(problem, ref)
    log(f"[{problem.name}] D={problem.dim}, n={problem.n}: MMD² floor "
        f"{ref.floor['mmd2'][0]:+.2e} ± {ref.floor['mmd2'][1]:.1e} (threshold {ref.threshold:.2e})")
    for variant in variants:
        for target, v in grid_points(problem, variant):
            run = run_variant(v, oracle, x_T, target, seed=problem.seed + 3000)
            if run is None:
                continue
            q = ref.quality(run.x)
            rows.append({"problem": problem.name, "dim": problem.dim, "n_samples": problem.n,
                         "library": v.library, "family": v.family, "sampler": v.label,
                         "options": v.options_json(), "rtol": v.options.get("rtol"),
                         "target_nfe": target, "steps": run.steps,
                         "nfe": run.nfe, "wall_s": run.wall_s, **q, "at_floor": ref.at_floor(q),
                         "floor_threshold": ref.threshold})
            log(f"[{problem.name}] {v.label:<28} target {target!s:>5} nfe {run.nfe:>5} "
                f"mmd2 {q['mmd2']:+.2e} sw {q['sw']:.3f} logp_gap {q['logp_gap']:+.3f} "
                f"({run.wall_s:.2f} s)")
    log(f"[{problem.name}] done in {time.perf_counter() - start:.0f} s")
    return rows


def ddim_agreement(problem: Problem, device: torch.device, steps: int = 10) -> float | None:
    """max |x_ours − x_diffusers| between our ``ddim`` (η = 0) and diffusers' DDIM (trailing)
    from the same ``x_T`` at ``steps`` steps — they must agree to float precision. ``None``
    without diffusers."""
    from suite.common import diffusers_version
    from suite.peers import peer_variants

    if diffusers_version() is None:
        return None
    oracle = problem.gmm.score_model(ddpm_sde(), prediction="eps", time_input="index")
    x_T = start_noise(problem, device)
    ddim = next(v for v in peer_variants() if v.sampler == "DDIMScheduler")
    ours = run_variant(Variant("ddim", "ddim", {"eta": 0.0}), oracle, x_T, steps, seed=0)
    theirs = run_variant(ddim, oracle, x_T, steps, seed=0)
    return float((ours.x - theirs.x).abs().max())



# --- result files -------------------------------------------------------------------------------

ENV_COLUMNS = ["device", "device_name", "gpu_available", "torch_version", "diffusers_version", "date",
               "threads", "cpu_count"]
COLUMNS = [*ENV_COLUMNS, "problem", "dim", "n_samples", "library", "family", "sampler", "options", "rtol",
           "target_nfe", "steps", "nfe", "wall_s", "mmd2", "mmd2_sd", "sw", "sw_sd", "logp_gap",
           "logp_gap_sd", "at_floor", "floor_threshold"]


def problem_markdown(rows: Sequence[dict[str, Any]], problem: Problem,
                     agreement: float | None) -> str:
    """The tables of one problem: MMD², SW, log-p gap and wall time by target NFE, and dopri5."""
    rows = [r for r in rows if r["problem"] == problem.name]
    floor = next(r for r in rows if r["library"] == "exact")
    targets = problem.targets
    parts = [
        f"## {problem.name}: D = {problem.dim}, {problem.gmm.num_components} components, "
        f"n = {problem.n} samples per run",
        "",
        f"Noise floor over {FLOOR_SETS} independent exact sets against the same reference: "
        f"MMD² {floor['mmd2']:+.2e} ± {floor['mmd2_sd']:.1e} (a run is **at the floor** when MMD² ≤ "
        f"{floor['floor_threshold']:.2e} = mean + {FLOOR_SIGMAS:g} sd), SW {floor['sw']:.3g} ± "
        f"{floor['sw_sd']:.2g}, log-p gap {floor['logp_gap']:+.3f} ± {floor['logp_gap_sd']:.3f} nats. "
        f"MMD bandwidths {', '.join(f'{h:.3g}' for h in problem.bandwidths)}.",
        "",
    ]
    same = ("`ancestral posterior` = `ddim eta=1` = `diffusers DDPM`, and `ddim eta=0` = `diffusers DDIM` "
            "= `diffusers Euler` (to diffusers' float32 precision)"
            if any(r["library"] == "diffusers" for r in rows) else "`ancestral posterior` = `ddim eta=1`")
    parts += [f"Same noise, same update, so these lines coincide in the plots: {same}.", ""]
    if agreement is not None:
        parts += [f"Consistency check: our `ddim` (η = 0) and diffusers' DDIM (trailing) at 10 steps "
                  f"from the same x_T differ by at most {agreement:.1e} (diffusers keeps ᾱ in float32).",
                  ""]
    parts += ["### MMD² by target NFE (bold: at the floor; actual NFE in parentheses where it differs)",
              "",
              report.metric_table(rows, targets,
                                  lambda r: f"**{fmt(r['mmd2'])}**" if r["at_floor"] else fmt(r["mmd2"])),
              "", "### Sliced Wasserstein-2 by target NFE", "",
              report.metric_table(rows, targets, lambda r: f"{r['sw']:.3g}"),
              "", "### Mean log p(samples) − mean log p(exact samples), nats, by target NFE", "",
              report.metric_table(rows, targets, lambda r: f"{r['logp_gap']:+.3g}"),
              "", "### Wall time per run (s) by target NFE", "",
              report.metric_table(rows, targets, lambda r: f"{r['wall_s']:.3g}")]
    adaptive = report.adaptive_rows(rows)
    if adaptive:
        body = [[r["sampler"], r["options"], str(r["nfe"]),
                 fmt(r["mmd2"]) + (" (floor)" if r["at_floor"] else ""), f"{r['sw']:.3g}",
                 f"{r['logp_gap']:+.3g}", f"{r['wall_s']:.3g}"] for r in adaptive]
        parts += ["", "### Adaptive samplers (they choose their own steps): by options", "",
                  report.table(["sampler", "options", "NFE", "MMD²", "SW", "log-p gap", "wall (s)"], body,
                               "llrrrrr")]
    return "\n".join(parts)


def write_results(rows: Sequence[dict[str, Any]], problems: Sequence[Problem], env: dict[str, Any],
                  out_dir: Path, stem: str, agreements: dict[str, float | None],
                  peers_note: str) -> list[Path]:
    """``<stem>.csv``, ``<stem>.md`` and one ``<stem>_<problem>.png`` per problem."""
    rows = [{**env, **r} for r in rows]
    written = [write_csv(out_dir / f"{stem}.csv", rows, COLUMNS)]
    head = [f"# Samplers on analytic mixtures: quality vs NFE ({env['date']})", "",
            f"device `{env['device']}` ({env['device_name']}), GPU available: {env['gpu_available']}, "
            f"torch {env['torch_version']}, diffusers {env['diffusers_version']}, "
            f"{env['threads']} thread(s) of {env['cpu_count']} CPUs. Exact eps-oracle of each mixture "
            "under DDPM's linear schedule (N = 1000, step-index time input); every run starts from the "
            "same x_T. Regenerate: `python benchmarks/samplers.py --parts analytic`.", "", peers_note, ""]
    for problem in problems:
        png = report.plot_quality(rows, problem.name, f"{problem.name} (D = {problem.dim}): quality vs NFE",
                                  out_dir / f"{stem}_{problem.name}.png")
        floor = next(r for r in rows if r["problem"] == problem.name and r["library"] == "exact")
        pareto = report.plot_pareto([r for r in rows if r["problem"] == problem.name], "mmd2",
                                    floor["floor_threshold"], "MMD² to exact samples",
                                    f"{problem.name} (D = {problem.dim}): Pareto front of MMD² vs NFE",
                                    out_dir / f"{stem}_{problem.name}_pareto.png")
        written += [png, pareto]
        head += [problem_markdown(rows, problem, agreements.get(problem.name)), "",
                 f"![{problem.name}]({png.name})", "", f"![{problem.name} Pareto front]({pareto.name})", ""]
    md = out_dir / f"{stem}.md"
    md.write_text("\n".join(head))
    written.append(md)
    return written
