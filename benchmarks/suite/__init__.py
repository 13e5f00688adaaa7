"""Sampler benchmarks: NFE versus quality and wall time for every registered sampler, beside
diffusers' schedulers on the same network and noise.

Parts (each writes CSV + Markdown, and PNG plots where there is a curve, under ``out``):

``analytic``  exact-oracle Gaussian mixtures in 2 and 64 dimensions: MMD², sliced Wasserstein
              and the exact log-density of the samples at NFE 1…1000, against a measured
              noise floor (:mod:`~suite.analytic`); writes the summary table too.
``overhead``  time per step of each sampler with a network of negligible cost
              (:mod:`~suite.overhead`).
``digits``    the shipped digits model: Fréchet distance in a shipped classifier's features
              and test bits/dim (:mod:`~suite.digits`).
``image``     a CIFAR-10-sized U-Net's throughput in fp32/bf16, a 3072-D mixture, optional
              Inception FID; tiny on a CPU (:mod:`~suite.image`).

The peers need ``pip install diffusers`` (``scoresde[bench]``); without it they are skipped
with a line saying so. Entry points: :func:`run` and :func:`main` (``python
benchmarks/samplers.py``). This package lives in the repository, not in the installed library;
it reads the sampler variants from :func:`scoresde.samplers.variants`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import scoresde as sd
from suite import analytic, kdiffusion, optimised, overhead, pairs, report
from suite.common import (
    Variant,
    diffusers_version,
    environment,
    kdiffusion_version,
    our_variants,
    pick_device,
    write_csv,
)
from suite.peers import peer_variants
from suite.runs import warm_up

PARTS = ("analytic", "overhead", "digits", "image")
DEFAULT_OUT = Path("benchmarks") / "results"


def peers_or_note(log: Callable[[str], None]) -> tuple[list[Variant], str]:
    """The peers' variants (diffusers' schedulers, k-diffusion's samplers) and a line for the
    results saying which ran; a missing peer is skipped with a line saying how to add it."""
    peers, notes = [], []
    version = diffusers_version()
    if version is None:
        notes.append("diffusers skipped: not installed (`pip install diffusers` or `scoresde[bench]`).")
    else:
        peers += peer_variants()
        notes.append(f"diffusers {version}: DDPM, DDIM, DPM-Solver++(2M, 3M), UniPC, Heun, Euler, "
                     "Euler-ancestral schedulers (trailing timestep spacing, no clipping) on the same "
                     "network and start noise.")
    try:
        kdiffusion.sampling()
        peers += kdiffusion.peer_variants()
        notes.append(f"k-diffusion {kdiffusion_version()}: Euler, Heun, LMS, DPM++(2M), Euler-ancestral, "
                     "DPM++(2M/3M) SDE on its recommended Karras grid (our `edm` grid), the same start "
                     "noise, per-step noise from a seeded generator.")
    except ImportError as err:
        notes.append(f"k-diffusion skipped: {err}.")
    note = "Peers: " + " ".join(notes)
    log(note)
    return peers, note


def run_analytic(out: Path, stem: str, quick: bool, device: torch.device, peers: list[Variant],
                 peers_note: str, log: Callable[[str], None]) -> list[Path]:
    problems = analytic.default_problems(quick)
    ours = our_variants(problems[0].tolerances)
    variants = ours + peers + pairs.pair_variants(ours, peers)
    warm_up(variants, device)
    rows, agreements = [], {}
    for problem in problems:
        rows += analytic.run_problem(problem, [v for v in variants if not v.adaptive or v.sampler != "ode"
                                               or v.options["rtol"] in problem.tolerances], device, log)
        agreements[problem.name] = analytic.ddim_agreement(problem, device) if peers else None
    env = environment(device)
    written = analytic.write_results(rows, problems, env, out, f"{stem}_analytic", agreements, peers_note)
    grid_rows = [r for p in problems for r in optimised.run_optimised(p, log, quick)]
    written.append(write_csv(out / f"{stem}_optimised_grids.csv", [{**env, **r} for r in grid_rows],
                             [*env, *optimised.COLUMNS]))
    written.append(write_summary(rows, grid_rows, problems, env, out / f"{stem}_summary.md"))
    return written


def write_summary(rows: list[dict], grid_rows: list[dict], problems: Sequence[analytic.Problem], env: dict,
                  path: Path) -> Path:
    """The README table: per variant, the smallest NFE at the floor and MMD² at 10 and 20 NFE."""
    lines = [f"# Summary: NFE to reach the noise floor ({env['date']}, {env['device']}, "
             f"torch {env['torch_version']}, diffusers {env['diffusers_version']})", ""]
    for problem in problems:
        floor = next(r for r in rows if r["problem"] == problem.name and r["library"] == "exact")
        lines += [f"## {problem.name} (D = {problem.dim}, n = {problem.n}; MMD² floor threshold "
                  f"{floor['floor_threshold']:.1e})", "", "Targets (measured here):", "",
                  *pairs.targets_lines(rows, problem.name), "",
                  "Each family beside its peer implementation (MMD² ratio ours / peer; equal grid: ours "
                  "on the peer's grid):", "",
                  pairs.pairs_table([r for r in rows if r["problem"] == problem.name]),
                  "", f"The grid optimiser (`sd.optimize_grid`, fitted on {grid_rows[0]['n_ref']} other "
                  "prior "
                  "draws) against every fixed grid, same sampler and NFE (MMD²; ratio optimised / best "
                  "fixed, floored):", "",
                  optimised.optimised_table([r for r in grid_rows if r["problem"] == problem.name]),
                  "", report.summary_table(rows, problem.name), ""]
    path.write_text("\n".join(lines))
    return path


def run(quick: bool = False, out: str | Path = DEFAULT_OUT, parts: Sequence[str] | None = None,
        device: str | None = None, threads: int = 1, digits_model: str | Path | None = None,
        image_model: str | Path | None = None, inception: str | None = None, fid_ref: str | None = None,
        log: Callable[[str], None] = print) -> list[Path]:
    """Run the benchmark ``parts`` (default: all) and write their files under ``out``.

    Args:
        quick: smoke sizes (about a minute on 2 CPU cores); files are named ``samplers_quick_*``
            so that they never overwrite the full results (``samplers_*``).
        out: output folder.
        parts: a subset of :data:`PARTS`.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        threads: torch CPU threads (``0`` keeps torch's default).
        digits_model: trained digits weights (default: the shipped ``digits_vp``).
        image_model, inception, fid_ref: the optional FID path of the image part.
        log: where progress lines go.

    Returns:
        the files written.
    """
    parts = tuple(parts or PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown benchmark parts {unknown}; available: {', '.join(PARTS)}")
    if threads > 0:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "samplers_quick" if quick else "samplers"
    peers, peers_note = peers_or_note(log)
    log(f"device {dev}, GPU available: {torch.cuda.is_available()}, {torch.get_num_threads()} thread(s)")
    written: list[Path] = []
    for part in parts:
        start = time.perf_counter()
        if part == "analytic":
            written += run_analytic(out, stem, quick, dev, peers, peers_note, log)
        elif part == "overhead":
            rows = overhead.run_overhead(our_variants() + peers, dev, steps=10 if quick else 100,
                                         repeats=1 if quick else 5, log=log)
            written += overhead.write_results(rows, environment(dev), out, f"{stem}_overhead")
        elif part == "digits":
            written += run_digits_part(out, stem, quick, dev, peers, digits_model, log)
        else:
            written += run_image_part(out, stem, quick, dev, peers, image_model, inception, fid_ref, log)
        log(f"part {part} done in {time.perf_counter() - start:.0f} s")
    for path in written:
        log(f"wrote {path}")
    return written


def run_digits_part(out: Path, stem: str, quick: bool, device: torch.device, peers: list[Variant],
                    model_path: str | Path | None, log: Callable[[str], None]) -> list[Path]:
    from suite import digits

    model_path = Path(model_path or digits.MODEL_PATH)
    if not model_path.exists():
        log(f"digits part skipped: no trained digits model at {model_path} "
            "(train one: `scoresde train --config=configs/digits_vp.py`, then export it)")
        return []
    settings = digits.QUICK if quick else digits.DigitsSettings()
    rows, info = digits.run_digits(digits.digits_variants(peers), device, settings, model_path, log=log)
    return digits.write_results(rows, info, settings, environment(device), out, f"{stem}_digits")


def run_image_part(out: Path, stem: str, quick: bool, device: torch.device, peers: list[Variant],
                   weights: str | Path | None, inception: str | None, fid_ref: str | None,
                   log: Callable[[str], None]) -> list[Path]:
    from suite import image

    settings = image.settings_for(device, quick)
    if device.type != "cuda":
        log("image part: no GPU in use — running the tiny CPU smoke size")
    model = image.image_model(settings, device, weights)
    variants = our_variants() + peers
    if quick:  # the smoke run checks the code path: each sampler's main variant and one peer per library
        main = {v.label for v in sd.samplers.variants(main_only=True)}
        firsts = {v.library: v for v in reversed(peers)}
        variants = [v for v in our_variants() if v.label in main] + list(firsts.values())
    rows = image.run_throughput(variants, model, settings, device, log)
    mixture_rows = analytic.run_problem(settings.mixture, variants, device, log) if settings.mixture else []
    reason = image.fid_skip_reason(inception, fid_ref, weights)
    fid_rows = [] if reason else image.run_fid(variants, model, settings, device, inception, fid_ref, log)
    note = reason or (f"FID of {settings.fid_n} samples per sampler with the Inception features of "
                      f"{inception}.")
    log(note)
    return image.write_results(rows, mixture_rows, fid_rows, note, settings, environment(device), out,
                               f"{stem}_image")


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """``python benchmarks/samplers.py [--quick] [--parts a,b] [--out DIR] [--device D]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes, about a minute on 2 CPU cores")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default benchmarks/results)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the states are small, and on a busy machine more "
                             "threads only wait on each other); 0 keeps torch's default")
    parser.add_argument("--digits-model", default=None, help="digits weights (default: shipped digits_vp)")
    parser.add_argument("--image-model", default=None, help="trained configs/cifar10_ddpmpp_vp.py weights")
    parser.add_argument("--inception", default=None, help="TorchScript Inception feature extractor for FID")
    parser.add_argument("--fid-ref", default=None, help=".npz with the data set's Inception mu and sigma")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    written = run(quick=args.quick, out=args.out, parts=[p for p in args.parts.split(",") if p],
                  device=args.device, threads=args.threads, digits_model=args.digits_model,
                  image_model=args.image_model, inception=args.inception, fid_ref=args.fid_ref)
    print(f"total {time.perf_counter() - start:.0f} s")
    return written


__all__ = ["PARTS", "main", "run"]
