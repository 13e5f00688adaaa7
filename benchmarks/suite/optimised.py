"""The grid optimiser against every fixed grid, for the same sampler at the same NFE.

For each sampler in :data:`SAMPLERS` and each NFE in :data:`TARGETS`, :func:`scoresde.optimize_grid`
fits a grid on ``N_REF`` prior draws of its own (a seed different from the benchmark's start
noise, so the comparison is on held-out draws), and the sampler then runs from the problem's
``x_T`` on that grid and on each fixed grid of :data:`FIXED_GRIDS`. Quality is the problem's MMD²
(floored at the noise threshold for the ratio). The result rows carry the sampler label with
``[<grid> grid]`` so that the other tables leave them out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

import scoresde as sd
from suite import report
from suite.analytic import Problem, reference, start_noise
from suite.common import ddpm_sde, fmt

SAMPLERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ddim eta=0", "ddim", {"eta": 0.0}),
    ("dpm++ 2M", "dpm_solver", {"order": 2, "prediction": "data"}),
    ("unipc bh2 2", "unipc", {"order": 2, "variant": "bh2"}),
)
FIXED_GRIDS = ("uniform", "quadratic", "logsnr", "karras", "edm", "dpm")
TARGETS = (5, 10)
N_REF = 64
SEED = 777


def run_optimised(problem: Problem, log: Callable[[str], None] = print,
                  quick: bool = False) -> list[dict[str, Any]]:
    """Rows ``{problem, sampler, grid, nfe, mmd2, at_floor, floor_threshold, fit_s}``; ``quick``:
    ddim at 5 NFE from 8 reference draws on 30 candidate times only."""
    samplers, targets, n_ref, candidates = ((SAMPLERS[:1], TARGETS[:1], 8, 30) if quick
                                            else (SAMPLERS, TARGETS, N_REF, 100))
    sde = ddpm_sde()
    oracle = problem.gmm.score_model(sde, prediction="eps", time_input="index")
    ref = reference(problem)
    x_T = start_noise(problem, torch.device("cpu")).to(torch.float64)
    start = time.perf_counter()
    fit_ref = sd.grid_search.grid_reference(oracle, shape=(problem.dim,), n_ref=n_ref, candidates=candidates,
                                            generator=torch.Generator().manual_seed(SEED),
                                            t_start=sde.T, t_end=0.0)
    fit_s = time.perf_counter() - start
    rows = []
    for label, sampler, options in samplers:
        for nfe in targets:
            grids = {name: sd.grids.make_grid(name, sde, nfe) for name in FIXED_GRIDS}
            start = time.perf_counter()
            grids["optimised"] = sd.optimize_grid(oracle, sampler, nfe, reference=fit_ref, **options)
            seconds = fit_s + time.perf_counter() - start
            for name, ts in grids.items():
                out = sd.sample(oracle, tuple(x_T.shape), sampler, timesteps=ts, x_T=x_T, dtype=torch.float64,
                                **options)
                q = ref.quality(out.x)
                rows.append({"problem": problem.name, "sampler": f"{label} [{name} grid]", "family": label,
                             "grid": name, "library": "scoresde", "nfe": out.nfe, "target_nfe": nfe,
                             "mmd2": q["mmd2"], "at_floor": ref.at_floor(q), "floor_threshold": ref.threshold,
                             "fit_s": seconds if name == "optimised" else math.nan, "n_ref": n_ref})
                log(f"[{problem.name}] {label:<14} {name:<10} {out.nfe:>3} NFE: MMD² {q['mmd2']:+.2e}")
    return rows


def optimised_table(rows: list[dict[str, Any]]) -> str:
    """Per sampler and NFE: MMD² on every grid, the optimised grid's and the best fixed grid's."""
    body = []
    for label, _, _ in SAMPLERS:
        for nfe in TARGETS:
            cells = {r["grid"]: r for r in rows if r["family"] == label and r["target_nfe"] == nfe}
            if "optimised" not in cells:
                continue
            fixed = [cells[g] for g in FIXED_GRIDS if g in cells]
            best = min(fixed, key=lambda r: max(r["mmd2"], r["floor_threshold"]))
            opt = cells["optimised"]
            floor = opt["floor_threshold"]
            ratio = max(opt["mmd2"], floor) / max(best["mmd2"], floor)
            verdict = ("both at floor" if opt["at_floor"] and best["at_floor"]
                       else ("beats every fixed grid" if ratio < 1 else "does not beat the best fixed grid"))
            body.append([label, str(nfe), *(fmt(cells[g]["mmd2"]) for g in FIXED_GRIDS), fmt(opt["mmd2"]),
                         f"{best['grid']}", f"{ratio:.2f}", verdict])
    return report.table(["sampler", "NFE", *FIXED_GRIDS, "optimised", "best fixed", "ratio", "verdict"],
                        body, "lr" + "r" * (len(FIXED_GRIDS) + 1) + "lrl")


COLUMNS = ["problem", "family", "grid", "target_nfe", "nfe", "mmd2", "at_floor", "floor_threshold", "fit_s",
           "n_ref"]
