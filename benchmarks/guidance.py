"""Classifier-free guidance on the shipped class-conditional digits model: accuracy and FD vs w.

For each guidance weight ``w`` (Ho & Salimans' convention, ``eps_w = eps_c + w·(eps_c − eps_u)``:
``w = 0`` is conditional sampling, ``w = −1`` unconditional) the model ``digits_vp_cond``
(``configs/digits_vp_cond.py``, trained with label dropout) draws ``--per_class`` samples of
every digit 0–9 with one sampler (default DDIM, 50 steps) from the same start noise. Each
sample is written as pixels (clamped and rounded to the 17 grey levels), then

* classified by the benchmark's digits classifier (``models/digits_classifier.pt``, 96 % test
  accuracy on real digits — the ceiling the table should be read against): per-class accuracy
  (the fraction classified as the digit asked for) and the mean classifier confidence;
* measured by the Fréchet distance (FD) of all samples to the training set in the classifier's
  feature space, as ``benchmarks/samplers.py`` does; the training set is class-balanced to
  within a few percent, so FD also shows the loss of diversity at large ``w``.

Writes ``results/guidance_digits_<device>.{csv,md}``, a plot of accuracy and FD against ``w``
(``..._accuracy.png``) and a grid of samples, digits 0–9 by row and ``w`` by column block
(``..._samples.png``).

    python benchmarks/guidance.py                 # full run (~10 min on a 2-core CPU)
    python benchmarks/guidance.py --quick         # smoke run: 3 weights, 4 samples per class
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
from suite.common import environment, pick_device, write_csv
from suite.digits import FeatureSpace

import scoresde as sd
from scoresde import plots
from scoresde.assets import shipped_model
from scoresde.data import from_pixels, to_pixels
from scoresde.experiment import config_from_checkpoint, load_data, load_trained

RESULTS = Path(__file__).parent / "results"
WEIGHTS = (-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
CLASSES = tuple(range(10))
COLUMNS = ("w", "sampler", "steps", "nfe", "n", "accuracy", "confidence", "fd", "fd_floor", "wall_s",
           *(f"acc_{c}" for c in CLASSES))


def run(weights: tuple[float, ...], per_class: int, sampler: str, steps: int, device: torch.device,
        seed: int = 0) -> tuple[list[dict], dict[float, torch.Tensor], float]:
    """Samples and scores per weight; returns (rows, pixels per weight, FD floor)."""
    path = shipped_model("digits_vp_cond")
    config = config_from_checkpoint(path)
    model = load_trained(None, path).to(device)
    classifier = load_classifier()
    train, spec = load_data(config, "train")
    space = FeatureSpace(classifier, spec, train, device)
    n = per_class * len(CLASSES)
    g = torch.Generator().manual_seed(seed)
    floor = statistics.fmean(space.fd(train[torch.randperm(len(train), generator=g)[:n]]) for _ in range(5))
    labels = torch.tensor(CLASSES).repeat_interleave(per_class)
    x_T = torch.randn((n, *spec.shape), generator=torch.Generator().manual_seed(seed + 1))
    rows, grids = [], {}
    for w in weights:
        guided = sd.ClassifierFreeGuidance(model, w)
        start = time.perf_counter()
        with torch.no_grad():
            out = sd.sample(guided, (n, *spec.shape), sampler, steps, cond=labels.to(device),
                            x_T=x_T.to(device), generator=torch.Generator().manual_seed(seed + 2))
        wall = time.perf_counter() - start
        px = to_pixels(out.x.cpu(), spec)
        with torch.no_grad():
            probs = classifier(from_pixels(px, spec)).softmax(1)
        hit = probs.argmax(1) == labels
        row = {"w": w, "sampler": sampler, "steps": steps, "nfe": out.nfe, "n": n,
               "accuracy": float(hit.float().mean()),
               "confidence": float(probs[torch.arange(n), labels].mean()),
               "fd": space.fd(out.x), "fd_floor": floor, "wall_s": wall}
        row.update({f"acc_{c}": float(hit[labels == c].float().mean()) for c in CLASSES})
        rows.append(row)
        grids[w] = px
        print(f"w={w:+.1f}: accuracy {row['accuracy']:.3f}, confidence {row['confidence']:.3f}, "
              f"FD {row['fd']:.3f} (floor {floor:.3f}), NFE {out.nfe}, {wall:.1f} s")
    return rows, grids, floor


def write_markdown(path: Path, rows: list[dict], env: dict, classifier_accuracy: float | None) -> Path:
    lines = [
        "# Classifier-free guidance on digits_vp_cond",
        "",
        f"Device: {env['device']} ({env['device_name']}); torch {env['torch_version']}; "
        f"{rows[0]['sampler']} at {rows[0]['steps']} steps, "
        f"{rows[0]['n']} samples per weight ({rows[0]['n'] // len(CLASSES)} per class), same start noise.",
        f"Classifier test accuracy on real digits: {classifier_accuracy:.3f}; its confidence saturates "
        "near 0.95 (label smoothing 0.1). "
        f"FD floor ({rows[0]['n']} training images vs all): {rows[0]['fd_floor']:.3f}.",
        "w = −1 is unconditional (accuracy ≈ chance 0.1), w = 0 conditional without guidance.",
        "",
        "| w | accuracy | confidence | FD | NFE | " + " | ".join(str(c) for c in CLASSES) + " |",
        "|---|---|---|---|---|" + "---|" * len(CLASSES),
    ]
    for r in rows:
        per = " | ".join(f"{r[f'acc_{c}']:.2f}" for c in CLASSES)
        lines.append(f"| {r['w']:+.1f} | {r['accuracy']:.3f} | {r['confidence']:.3f} | "
                     f"{r['fd']:.3f} | {r['nfe']} | {per} |")
    path.write_text("\n".join(lines) + "\n")
    return path


def plot(path: Path, rows: list[dict]) -> Path:
    from matplotlib.figure import Figure

    ws = [r["w"] for r in rows]
    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    ax = fig.add_subplot()
    for c in CLASSES:
        ax.plot(ws, [r[f"acc_{c}"] for r in rows], color="0.75", lw=0.8)
    ax.plot(ws, [r["accuracy"] for r in rows], "o-", color="C0", lw=2,
            label="accuracy (mean; grey: per class)")
    ax.set_xlabel("guidance weight w  (0: conditional, −1: unconditional)")
    ax.set_ylabel("classifier accuracy")
    ax.set_ylim(0, 1.02)
    fd = ax.twinx()
    fd.plot(ws, [r["fd"] for r in rows], "s--", color="C3", label="FD to training set")
    fd.axhline(rows[0]["fd_floor"], color="C3", lw=0.8, ls=":")
    fd.set_ylabel("Fréchet distance", color="C3")
    handles = ax.get_legend_handles_labels()[0] + fd.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 weights, 4 samples per class, print only")
    parser.add_argument("--per_class", type=int, default=50)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    weights = (-1.0, 0.0, 2.0) if args.quick else WEIGHTS
    per_class = 4 if args.quick else args.per_class
    steps = 10 if args.quick else args.steps
    rows, grids, _ = run(weights, per_class, args.sampler, steps, device)
    if args.quick:
        return []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"guidance_digits_{device.type}"
    env = environment(device)
    classifier_accuracy = load_classifier().meta.get("test_accuracy")
    show = min(per_class, 6)
    keep = torch.cat([torch.arange(c * per_class, c * per_class + show) for c in CLASSES])
    panels = [plots.ImagePanel(f"w = {w:+.1f}", px[keep], ncol=show) for w, px in grids.items()]
    written = [write_csv(stem.with_suffix(".csv"), rows, COLUMNS),
               write_markdown(stem.with_suffix(".md"), rows, env, classifier_accuracy),
               plot(Path(f"{stem}_accuracy.png"), rows)]
    plots.save_image_panels(Path(f"{stem}_samples.png"), panels, 17)
    written.append(Path(f"{stem}_samples.png"))
    for p in written:
        print(f"wrote {p}")
    return written


if __name__ == "__main__":
    main()
