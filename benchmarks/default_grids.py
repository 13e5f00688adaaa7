"""Which time grid, end time and final denoising should each sampler use by default? Measured.

Every registered sampler's main variant runs on three hard problems — the narrow 2-D ring (std
0.05) and the 64-D mixture with their exact DDPM eps-oracles, and the shipped digits model — on
each grid (uniform, quadratic, logsnr, karras, and the floored edm / dpm) ending at t = 0, and on
the first four ending at t = 1e-3 followed by a Tweedie denoising step (edm and dpm already stop
at t_min = 1e-3 before their last step). Quality: MMD² to exact samples (floored at the noise
threshold) on the mixtures, the Fréchet distance in the digits classifier's features (floored at
the training-set floor) on digits; at 5, 10 and 20 NFE on the mixtures and 10 on digits.

Choice: per sampler, the setting with the smallest *score* = geometric mean, over every
(problem, NFE) cell, of its floored quality divided by the best setting's in that cell — one
setting good on all three problems rather than the best on one. The samplers' SPEC defaults in
``scoresde/samplers/`` are set from this table (a setting within 5 % of the best score that is
already the default is kept).

    python benchmarks/default_grids.py            # all three problems (~15 min on 2 idle cores)
    python benchmarks/default_grids.py --quick    # smoke sizes, seconds; writes *_quick files

Writes benchmarks/results/default_grids.csv and .md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import analytic, report
from suite.common import Variant, environment, fmt, write_csv
from suite.runs import run_variant

import scoresde as sd

GRIDS = ("uniform", "quadratic", "logsnr", "karras", "edm", "dpm")
SETTINGS = tuple((g, 0.0, False) for g in GRIDS) + tuple((g, 1e-3, True) for g in GRIDS[:4])
RESULTS = Path(__file__).parent / "results"
COLUMNS = ["device", "device_name", "torch_version", "date", "threads", "problem", "sampler", "label",
           "grid", "t_end", "denoise", "target_nfe", "steps", "nfe", "quality", "floor", "floored"]


def settings_for(sampler: str) -> list[tuple[str, float, bool]]:
    """The settings a sampler can run: Langevin correction needs sigma > 0 at every grid time, so
    ``pc`` only ends at t = 1e-3; adaptive samplers choose their own steps (no grid to pick)."""
    if sampler == "pc":
        return [s for s in SETTINGS if s[1] > 0]
    return list(SETTINGS)


def mixture_cells(problem: analytic.Problem, variants: list[Variant], targets: tuple[int, ...],
                  log) -> list[dict]:
    ref = analytic.reference(problem)
    oracle = problem.gmm.score_model(analytic.ddpm_sde(), prediction="eps", time_input="index")
    x_T = analytic.start_noise(problem, torch.device("cpu"))
    rows = []
    for v in variants:
        for target in targets:
            run = run_variant(v, oracle, x_T, target, seed=problem.seed + 3000)
            if run is None:
                continue
            q = ref.quality(run.x)["mmd2"]
            rows.append({"problem": problem.name, "target_nfe": target, "steps": run.steps, "nfe": run.nfe,
                         "quality": q, "floor": ref.threshold,
                         "floored": max(q, ref.threshold) if math.isfinite(q) else math.inf})
            log(f"[{problem.name}] {v.label:<40} {target:>3} NFE ({run.nfe}): MMD² {q:+.2e}")
            rows[-1].update(_setting(v))
    return rows


def digits_cells(variants: list[Variant], target: int, n: int, log) -> list[dict]:
    from suite import digits
    from suite.classifier import load_classifier

    from scoresde.experiment import config_from_checkpoint, load_data

    config = config_from_checkpoint(digits.MODEL_PATH)
    model = digits.load_model()
    train, spec = load_data(config, "train")
    space = digits.FeatureSpace(load_classifier(), spec, train, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    floor = statistics.fmean(space.fd(train[torch.randperm(len(train), generator=g)[:n]]) for _ in range(3))
    x_T = torch.randn((n, *spec.shape), generator=torch.Generator().manual_seed(0))
    rows = []
    for v in variants:
        run = run_variant(v, model, x_T, target, seed=1)
        if run is None:
            continue
        fd = space.fd(run.x) if torch.isfinite(run.x).all() else math.inf
        rows.append({"problem": "digits", "target_nfe": target, "steps": run.steps, "nfe": run.nfe,
                     "quality": fd, "floor": floor, "floored": max(fd, floor), **_setting(v)})
        log(f"[digits] {v.label:<40} {target:>3} NFE ({run.nfe}): FD {fd:.3f}")
    return rows


def _setting(v: Variant) -> dict:
    return {"sampler": v.sampler, "label": v.label.split(" [")[0], "grid": v.grid, "t_end": v.t_end,
            "denoise": v.denoise}


def sweep_variants() -> list[Variant]:
    out = []
    for main in sd.samplers.variants(main_only=True):
        spec = sd.samplers.get(main.sampler)
        if not spec.parse(main.options).uses_grid:
            continue
        for grid, t_end, denoise in settings_for(main.sampler):
            out.append(Variant(f"{main.label} [{grid}, {t_end:g}, {denoise}]", main.sampler,
                               dict(main.options), grid=grid, t_end=t_end, denoise=denoise))
    return out


def choose(rows: list[dict]) -> dict[str, list[tuple[float, tuple]]]:
    """Per sampler: ``[(score, (grid, t_end, denoise)), …]`` sorted, best first (see module)."""
    out = {}
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = [r for r in rows if r["sampler"] == sampler]
        cells = {(r["problem"], r["target_nfe"]) for r in mine}
        best = {c: min(r["floored"] for r in mine if (r["problem"], r["target_nfe"]) == c) for c in cells}
        scores = []
        for setting in dict.fromkeys((r["grid"], r["t_end"], r["denoise"]) for r in mine):
            ratios = [r["floored"] / best[(r["problem"], r["target_nfe"])] for r in mine
                      if (r["grid"], r["t_end"], r["denoise"]) == setting]
            if len(ratios) == len(cells) and all(math.isfinite(x) for x in ratios):
                scores.append((math.exp(statistics.fmean(math.log(x) for x in ratios)), setting))
        out[sampler] = sorted(scores)
    return out


def markdown(rows: list[dict], env: dict, elapsed: float, quick: bool) -> str:
    chosen = choose(rows)
    lines = [f"# Default grids, end times and final denoising ({env['date']}, {env['device']}, "
             f"torch {env['torch_version']}, {env['threads']} thread(s))", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "", __doc__.split("\n\n")[2].replace("\n", " "), "",
             f"Run time {elapsed:.0f} s{' (quick sizes)' if quick else ''}. Regenerate: "
             "`python benchmarks/default_grids.py`.", "", "## Best setting per sampler", ""]
    body = []
    for sampler, scores in chosen.items():
        spec = sd.samplers.get(sampler)
        current = (spec.grid, spec.t_end, spec.denoise)
        cur = next((s for s, setting in scores if setting == current), math.nan)
        (best, setting), *rest = scores
        runner = f"{rest[0][1][0]}, {rest[0][1][1]:g} ({rest[0][0]:.2f})" if rest else "—"
        body.append([sampler, f"{setting[0]}, {setting[1]:g}, {'yes' if setting[2] else 'no'}", f"{best:.2f}",
                     runner, f"{current[0]}, {current[1]:g}, {'yes' if current[2] else 'no'}", f"{cur:.2f}"])
    lines.append(report.table(["sampler", "best: grid, t_end, denoise", "score", "runner-up (score)",
                               "SPEC default now", "its score"], body, "llrlrr"))
    lines += ["", "Score 1.00 = best in every cell. The SPEC default is what `sd.sample` uses without "
              "`grid=`/`t_end=`/`denoise=`.", "", "## Every cell (floored quality; MMD² or FD)", ""]
    cells = sorted({(r["problem"], r["target_nfe"]) for r in rows}, key=lambda c: (c[0], c[1]))
    body = []
    for sampler in chosen:
        for setting in dict.fromkeys((r["grid"], r["t_end"], r["denoise"]) for r in rows
                                     if r["sampler"] == sampler):
            by = {(r["problem"], r["target_nfe"]): r for r in rows
                  if r["sampler"] == sampler and (r["grid"], r["t_end"], r["denoise"]) == setting}
            body.append([sampler, f"{setting[0]}, {setting[1]:g}, {'yes' if setting[2] else 'no'}",
                         *(fmt(by[c]["floored"]) + (f" ({by[c]['nfe']})" if by[c]["nfe"] != c[1] else "")
                           if c in by else "—" for c in cells)])
    lines.append(report.table(["sampler", "grid, t_end, denoise", *(f"{p} {n}" for p, n in cells)], body,
                              "ll" + "r" * len(cells)))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes: 10 NFE, few samples")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the CSV and Markdown")
    parser.add_argument("--no-digits", action="store_true", help="skip the digits model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    variants = sweep_variants()
    n_ring, n_64, targets = (300, 200, (10,)) if args.quick else (2000, 1000, (5, 10, 20))
    rows = mixture_cells(analytic.Problem("ring2d", analytic.ring2d(), n_ring, targets, ()), variants,
                         targets, print)
    gmm64 = analytic.Problem("gmm64d", analytic.random_mixture(64, 8, seed=64), n_64, targets, ())
    rows += mixture_cells(gmm64, variants, targets, print)
    if not args.no_digits:
        rows += digits_cells(variants, 10, 64 if args.quick else 297, print)
    env = environment(torch.device("cpu"))
    out = Path(args.out)
    stem = "default_grids_quick" if args.quick else "default_grids"
    write_csv(out / f"{stem}.csv", [{**env, **r} for r in rows], COLUMNS)
    (out / f"{stem}.md").write_text(markdown(rows, env, time.perf_counter() - start, args.quick))
    print(f"wrote {out / stem}.csv and .md in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
