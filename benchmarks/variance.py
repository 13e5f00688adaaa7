"""Reverse variances on digits: fixed β̃ / β, Analytic-DPM's optimum, and a learned Σ.

Two shipped models trained with the same recipe (``configs/digits_vp.py``: 3000 steps, same seeds,
batch, learning rate): ``digits_vp`` (ε-loss, fixed variance) and ``digits_vp_lv``
(``configs/digits_vp_lv.py``: twice the output channels for the variance interpolation ``v``,
hybrid loss ``L_simple + 1e-3·L_vlb``, Nichol & Dhariwal 2021). For each model and variance:

* **the variational bound** (bits/dim) of the DDPM's N = 1000 steps on the 297 test images, with
  the discretized decoder on the 17 grey levels (``sd.variational_bound(decoder="discretized")``:
  a bound on the discrete NLL, directly comparable between the rows; one Monte-Carlo draw of
  ``x_k`` per term and image, the same draws for every row of a model);
* **ancestral samples** at ``--steps`` (default 50) on the uniform grid (improved DDPM's strided
  respacing; Γ is measured at the model's 1000 steps, t ≥ 1e-3, which the default quadratic grid
  leaves at its last steps), the same start noise and step noise for every row: Fréchet distance
  (FD) in the digits
  classifier's feature space against the training set, as ``benchmarks/samplers.py`` measures it.

Analytic-DPM (Bao et al. 2022) estimates ``Γ_t = E‖ε̂‖²/d`` at the model's 1000 steps from
``--gamma_n`` training images (``sd.estimate_eps_moment``) and uses the optimal variance
``σ*² = λ² + k²·v₀(t)`` (``sd.AnalyticVariance``, ``variance="analytic"``).

Writes ``results/variance_digits_<device>.{csv,md}``.

    python benchmarks/variance.py              # full run
    python benchmarks/variance.py --quick      # smoke run, prints only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite.classifier import load_classifier
from suite.common import environment, fmt, pick_device, write_csv
from suite.digits import FeatureSpace

import scoresde as sd
from scoresde.assets import shipped_model
from scoresde.data import to_pixels
from scoresde.experiment import config_from_checkpoint, load_data, load_trained

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("model", "variance", "bpd", "bpd_stderr", "diff_bpd", "diff_stderr", "prior_bpd", "decoder_bpd",
           "bound_nfe", "bound_wall_s",
           "steps", "fd", "fd_floor", "sample_nfe", "sample_wall_s", "n_test", "n_samples", "gamma_n")
# (model, variance) rows: the fixed-variance model under both fixed choices and Analytic-DPM's
# optimum; the learned-variance model with its own Σ (and β̃ for reference: its ε-branch alone).
ROWS = (("digits_vp", "posterior"), ("digits_vp", "beta"), ("digits_vp", "analytic"),
        ("digits_vp_lv", "learned"), ("digits_vp_lv", "posterior"))


def run(n_test: int | None, gamma_n: int, steps: int, device: torch.device, seed: int = 0) -> list[dict]:
    config = config_from_checkpoint(shipped_model("digits_vp"))
    train, spec = load_data(config, "train")
    test, _ = load_data(config, "test")
    pixels = to_pixels(test[:n_test] if n_test else test, spec)
    space = FeatureSpace(load_classifier(), spec, train, device)
    n = len(test)  # samples per FD: as many as the test split holds, as benchmarks/samplers.py
    g = torch.Generator().manual_seed(seed)
    floor = statistics.fmean(space.fd(train[torch.randperm(len(train), generator=g)[:n]]) for _ in range(5))
    gamma_x = train[torch.randperm(len(train), generator=g)[:gamma_n]]
    x_T = torch.randn((n, *spec.shape), generator=torch.Generator().manual_seed(seed + 1))
    models: dict[str, sd.DiffusionModel] = {}
    rows, first = [], None
    for name, variance in ROWS:
        if name not in models:
            models[name] = load_trained(None, shipped_model(name)).to(device)
        model = models[name]
        row = {"model": name, "variance": variance, "n_test": len(pixels), "n_samples": n, "steps": steps,
               "fd_floor": floor}
        if variance == "analytic":
            start = time.perf_counter()
            with torch.no_grad():
                table = sd.estimate_eps_moment(model, gamma_x.to(device), batch_size=256,
                                               generator=torch.Generator().manual_seed(seed + 3),
                                               data_range=spec.data_range)
            model = sd.AnalyticVariance(model, table)
            row["gamma_n"] = gamma_n
            print(f"Γ estimated on {gamma_n} training images in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        with torch.no_grad():
            bound = sd.variational_bound(model, pixels.to(device), variance=variance, decoder="discretized",
                                         data_range=spec.data_range, levels=spec.levels, dtype=torch.float32,
                                         generator=torch.Generator().manual_seed(seed + 4))
        bpd = bound.bits_per_dim
        first = bpd if first is None else first
        terms = bound.terms_bits_per_dim()
        row.update(bpd=float(bpd.mean()), bpd_stderr=float(bpd.std() / len(bpd) ** 0.5),
                   diff_bpd=float((bpd - first).mean()),
                   diff_stderr=float((bpd - first).std() / len(bpd) ** 0.5),
                   prior_bpd=float(terms["prior"]), decoder_bpd=float(terms["decoder"]), bound_nfe=bound.nfe,
                   bound_wall_s=time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            out = sd.sample(model, (n, *spec.shape), "ancestral", steps, grid="uniform", x_T=x_T.to(device),
                            variance=variance, generator=torch.Generator().manual_seed(seed + 2))
        row.update(fd=space.fd(out.x), sample_nfe=out.nfe, sample_wall_s=time.perf_counter() - start)
        rows.append(row)
        print(f"{name:<13} {variance:<9} bound {row['bpd']:.4f} ± {row['bpd_stderr']:.4f} bits/dim "
              f"({row['bound_wall_s']:.0f} s); ancestral {steps} steps FD {row['fd']:.3f} "
              f"(floor {floor:.3f})")
    return rows


def write_markdown(path: Path, rows: list[dict], env: dict) -> Path:
    r0 = rows[0]
    lines = [
        "# Reverse variances on digits: fixed, Analytic-DPM, learned",
        "",
        f"Device: {env['device']} ({env['device_name']}); torch {env['torch_version']}; {env['date']}.",
        f"Bound: DDPM's 1000 steps, discretized decoder (17 levels), the first {r0['n_test']} test images, "
        "one draw per term, the same draws in every row (± is the standard error over images; Δ is the "
        "paired difference to the first row, image by image, and its standard error). FD: ancestral "
        "sampling at "
        f"{r0['steps']} steps (uniform grid), {r0['n_samples']} samples vs the training set; "
        f"floor ({r0['n_samples']} training images vs all) {fmt(r0['fd_floor'], 3)}.",
        "Both models: the digits_vp recipe (3000 steps); digits_vp_lv adds the learned v and the hybrid "
        "loss.",
        "",
        "| model | variance | bound [bits/dim] | Δ to first row | prior | decoder | FD (ancestral) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variance']} | {r['bpd']:.4f} ± {r['bpd_stderr']:.4f} | "
                     f"{r['diff_bpd']:+.4f} ± {r['diff_stderr']:.4f} | "
                     f"{fmt(r['prior_bpd'], 4)} | {fmt(r['decoder_bpd'], 4)} | {fmt(r['fd'], 3)} |")
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 test images, 5 steps, print only")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--n_test", type=int, default=96, help="test images in the bound and samples drawn")
    parser.add_argument("--gamma_n", type=int, default=192, help="training images of the Γ estimate")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.quick:
        run(8, 16, 5, device)
        return []
    rows = run(args.n_test, args.gamma_n, args.steps, device)
    stem = Path(args.out) / f"variance_digits_{device.type}"
    env = environment(device)
    written = [write_csv(stem.with_suffix(".csv"), rows, COLUMNS),
               write_markdown(stem.with_suffix(".md"), rows, env)]
    for p in written:
        print(f"wrote {p}")
    return written


if __name__ == "__main__":
    main()
