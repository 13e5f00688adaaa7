"""Latent diffusion on digits: the shipped latent model ``digits_latent`` against the pixel ``digits_vp``.

Both models use DDPM's discrete schedule (β 1e-4 → 0.02, N = 1000) with eps-prediction from the
step index; ``digits_vp`` is a 701k-parameter U-Net on the 8×8 pixels, ``digits_latent`` a
residual MLP on the 4×4×2 latents of a convolutional KL-autoencoder (``configs/digits_ae.py``,
``configs/digits_latent.py``; ``models/README.md``). For each sampler (DDIM, DPM-Solver++(2M),
ancestral) and step count, each model draws ``--n`` samples (297, the test split's size) from
each of ``--seeds`` seeds, the latent model's decoded by the autoencoder; the samples are written
as pixels (clamped and rounded to the 17 grey levels) and scored by the Fréchet distance (FD) to
the training set in the feature space of the digits classifier, as ``benchmarks/suite/digits.py``
does. NFE counts the diffusion network's calls (the decoder's one pass per sample is not an NFE,
but it is in the wall time). References computed the same way, from the same random subsets:

* ``fd_floor``: 297 training images against the training set (mean of 5 subsets);
* ``fd_recon``: the autoencoder's reconstructions ``D(E(x))`` of those subsets — the floor a
  latent model cannot beat, since its samples are decoder outputs;
* ``fd_test`` / ``fd_test_recon``: the 297 test images (other writers) and their reconstructions.

Writes ``results/latent_digits_<device>.{csv,md}`` (one CSV row per model, sampler, steps and
seed) and ``..._samples.png`` (training digits, their reconstructions, and DDIM samples of both
models at the largest step count, side by side).

    python benchmarks/latent.py            # full run (~13 min on a shared 2-core CPU, one thread)
    python benchmarks/latent.py --quick    # smoke run: 32 samples, 5 steps, one seed, prints only
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite.classifier import load_classifier
from suite.common import Variant, environment, pick_device, write_csv
from suite.digits import FLOOR_SUBSETS, FeatureSpace
from suite.runs import run_variant

import scoresde as sd
from scoresde import plots
from scoresde.assets import shipped_model
from scoresde.autoencoding import batched
from scoresde.data import to_pixels
from scoresde.experiment import config_from_checkpoint, load_data, load_trained
from scoresde.latent import LatentDiffusion

RESULTS = Path(__file__).parent / "results"
MODELS = ("digits_vp", "digits_latent")
LABELS = ("ddim eta=0", "dpm++ 2M", "ancestral posterior")
STEPS = (5, 10, 20, 50, 100)
COLUMNS = ("device", "device_name", "torch_version", "date", "threads", "model", "space", "sampler",
           "options", "steps", "nfe", "seed", "n_samples", "fd", "fd_floor", "fd_recon", "wall_s",
           "ms_per_sample")


def variants() -> list[Variant]:
    """The benchmarked sampler variants, as the library's table declares them."""
    table = {v.label: v for v in sd.samplers.variants()}
    return [Variant(label, table[label].sampler, dict(table[label].options)) for label in LABELS]


def references(space: FeatureSpace, autoencoder: Any, train: torch.Tensor, test: torch.Tensor, n: int,
               seed: int) -> dict[str, float]:
    """FD of ``n`` training images and of their reconstructions (mean over the same random subsets),
    of the first ``n`` test images and of their reconstructions."""
    g = torch.Generator().manual_seed(seed)
    subsets = [train[torch.randperm(len(train), generator=g)[:n]] for _ in range(FLOOR_SUBSETS)]
    return {"fd_floor": statistics.fmean(space.fd(x) for x in subsets),
            "fd_recon": statistics.fmean(space.fd(batched(autoencoder, x)) for x in subsets),
            "fd_test": space.fd(test[:n]), "fd_test_recon": space.fd(batched(autoencoder, test[:n]))}


def run(n: int, steps: tuple[int, ...], seeds: tuple[int, ...], device: torch.device
        ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, torch.Tensor]]:
    """Every model × variant × steps × seed; returns (rows, references, image panels' pixels)."""
    models = {name: load_trained(None, shipped_model(name)).to(device) for name in MODELS}
    config = config_from_checkpoint(shipped_model("digits_vp"))
    train, spec = load_data(config, "train")
    test, _ = load_data(config, "test")
    space = FeatureSpace(load_classifier(), spec, train, device)
    autoencoder = models["digits_latent"].autoencoder
    refs = references(space, autoencoder, train, test, n, seed=0)
    print(f"FD floor {refs['fd_floor']:.3f}, autoencoder reconstructions {refs['fd_recon']:.3f} ({n} "
          f"training images); test images {refs['fd_test']:.3f}, reconstructed {refs['fd_test_recon']:.3f}",
          flush=True)
    shown = train[:64]
    panels = {"training digits": to_pixels(shown, spec), "their reconstructions D(E(x))":
              to_pixels(batched(autoencoder, shown), spec)}
    rows = []
    for name, model in models.items():
        latent = isinstance(model, LatentDiffusion)
        shape = (n, *model.latent_shape(spec.shape)) if latent else (n, *spec.shape)
        for seed in seeds:
            x_T = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
            for v in variants():
                for s in steps:
                    out = run_variant(v, model, x_T, None, seed=seed + 1000, steps=s)
                    fd = space.fd(out.x)
                    rows.append({"model": name, "space": "latent" if latent else "pixel", "sampler": v.label,
                                 "options": v.options_json(), "steps": s, "nfe": out.nfe, "seed": seed,
                                 "n_samples": n, "fd": fd, "fd_floor": refs["fd_floor"],
                                 "fd_recon": refs["fd_recon"], "wall_s": out.wall_s,
                                 "ms_per_sample": 1000 * out.wall_s / n})
                    print(f"{name:<14} {v.label:<20} steps {s:>4} NFE {out.nfe:>4} seed {seed}: FD {fd:.3f} "
                          f"({out.wall_s:.2f} s)", flush=True)
                    if seed == seeds[0] and v.label == "ddim eta=0" and s == max(steps):
                        panels[f"{name}, DDIM {s} steps"] = to_pixels(out.x[:64].cpu(), spec)
    return rows, refs, panels


def _mean_sd(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.3f}{spread}"


def write_markdown(path: Path, rows: list[dict[str, Any]], refs: dict[str, Any], env: dict[str, Any],
                   seeds: tuple[int, ...]) -> Path:
    n = rows[0]["n_samples"]
    lines = [
        "# Latent diffusion on digits: digits_latent vs digits_vp", "",
        f"device `{env['device']}` ({env['device_name']}), torch {env['torch_version']}, {env['threads']} "
        f"thread(s), {env['date']}. Regenerate: `python benchmarks/latent.py`.", "",
        f"FD in the digits classifier's feature space, {n} samples per run against the 1500 training images, "
        f"mean ± sd over seeds {', '.join(map(str, seeds))}. References ({n} images, mean of {FLOOR_SUBSETS} "
        f"random training subsets): **floor** FD = {refs['fd_floor']:.3f}; the autoencoder's "
        f"**reconstructions** of the same subsets FD = {refs['fd_recon']:.3f} (the floor of the latent "
        f"model); test images {refs['fd_test']:.3f}, their reconstructions {refs['fd_test_recon']:.3f}. "
        "NFE counts the diffusion network's calls; the latent model's wall time includes decoding.", "",
        "| model | sampler | steps | NFE | FD | ms / sample |", "|---|---|---|---|---|---|"]
    keys = sorted({(r["sampler"], r["steps"], r["model"]) for r in rows},
                  key=lambda k: (LABELS.index(k[0]), k[1], MODELS.index(k[2])))
    for sampler, steps, model in keys:
        group = [r for r in rows if (r["sampler"], r["steps"], r["model"]) == (sampler, steps, model)]
        fd = _mean_sd([r["fd"] for r in group])
        ms = statistics.fmean(r["ms_per_sample"] for r in group)
        lines.append(f"| {model} | {sampler} | {steps} | {group[0]['nfe']} | {fd} | {ms:.3g} |")
    stem = path.stem
    lines += ["", f"![samples]({stem}_samples.png)", ""]
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 samples, 5 steps, one seed, print only")
    parser.add_argument("--n", type=int, default=297)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    n, steps, seeds = (32, (5,), (0,)) if args.quick else (args.n, STEPS, tuple(range(args.seeds)))
    rows, refs, panels = run(n, steps, seeds, device)
    if args.quick:
        return []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"latent_digits_{device.type}"
    env = environment(device)
    written = [write_csv(stem.with_suffix(".csv"), [{**env, **r} for r in rows], COLUMNS),
               write_markdown(stem.with_suffix(".md"), rows, refs, env, seeds)]
    png = Path(f"{stem}_samples.png")
    plots.save_image_panels(png, [plots.ImagePanel(title, px, ncol=8) for title, px in panels.items()], 17)
    written.append(png)
    for p in written:
        print(f"wrote {p}")
    return written


if __name__ == "__main__":
    main()
