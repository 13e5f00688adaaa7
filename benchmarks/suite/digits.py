"""Problem 2: the shipped trained digits model (``models/digits_vp``, ``configs/digits_vp.py``).

Quality is a Fréchet distance (FD) in the 64-dimensional feature space of the shipped digits
classifier (:mod:`scoresde.classifier`), as FID does with Inception features. Generated
samples are written as pixels first (clamped and rounded to the 17 grey levels, as any saved
image would be) and compared with the features of the 1500 training images. FD is biased
upwards for small sets, so every run draws as many samples as the test split holds (297), and
two references are computed the same way:

* ``fd_floor``: 297 training images (random subsets, mean of ``FLOOR_SUBSETS``) against the
  training statistics — the finite-sample floor of a perfect sampler of the training
  distribution (slightly optimistic: the subsets belong to the reference set);
* ``fd_test``: the 297 held-out test images. scikit-learn's last 297 digits come from other
  writers (the classifier's accuracy drops from 100 % to 96 % on them), so a model that
  matches its training distribution scores *below* this; it is not a lower bound.

Likelihood: test-set bits/dim by :func:`scoresde.bits_per_dim` — uniform dequantization of
the 17-level pixels, PF-ODE solved by dopri5, Hutchinson trace with one Rademacher probe.
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

import scoresde as sd
from scoresde.assets import shipped_model
from scoresde.data import DataSpec, from_pixels, to_pixels
from scoresde.experiment import config_from_checkpoint, load_data, load_trained
from scoresde.model import ScoreModel
from suite import pairs, report
from suite.classifier import DEFAULT_PATH as CLASSIFIER_PATH
from suite.classifier import DigitsClassifier, load_classifier
from suite.common import Variant, dopri5, our_variants, write_csv
from suite.frechet import FeatureStats, feature_stats, frechet_distance
from suite.runs import run_variant

MODEL_PATH = shipped_model("digits_vp")
FLOOR_SUBSETS = 5
PEER_LABELS = ("diffusers DDIM", "diffusers DPM-Solver++(2M)", "diffusers UniPC", "k-diffusion LMS",
               "k-diffusion DPM++(2M)", "k-diffusion Heun", "k-diffusion DPM++(2M) SDE")


@dataclass(frozen=True)
class DigitsSettings:
    """Samples per run, NFE targets, dopri5 tolerances and the bits/dim set-up."""

    n: int = 297
    targets: tuple[int, ...] = (3, 5, 8, 10, 15, 20, 50, 100)
    tolerances: tuple[float, ...] = (1e-2, 1e-3)
    n_bpd: int = 64
    bpd_tol: float = 1e-4
    seed: int = 0


QUICK = DigitsSettings(n=32, targets=(5,), tolerances=(), n_bpd=4, bpd_tol=1e-2)


def digits_variants(peers: Sequence[Variant]) -> list[Variant]:
    """The variants run on digits: the main variant of every registered sampler, and the peers
    of the fast families (diffusers' DDPM and Euler equal our ancestral and ddim on the same
    network — see the analytic results)."""
    main = {v.label for v in sd.samplers.variants(main_only=True)}
    ours = [v for v in our_variants() if v.label in main]
    return ours + [v for v in peers if v.label in PEER_LABELS]


def load_model(model_path: str | Path = MODEL_PATH) -> ScoreModel:
    """The trained digits model (its config is the one stored in the checkpoint)."""
    return load_trained(None, model_path)


class FeatureSpace:
    """The classifier's features and the training set's statistics in them."""

    def __init__(self, classifier: DigitsClassifier, spec: DataSpec, train: Tensor, device: torch.device):
        self.classifier, self.spec, self.device = classifier.to(device), spec, device
        self.train = feature_stats(self.features(train))

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """Features of model-range images after writing them as pixels (clamp + round)."""
        x = from_pixels(to_pixels(x.detach().float().cpu(), self.spec), self.spec)
        return self.classifier.features(x.to(self.device))

    def fd(self, x: Tensor) -> float:
        return frechet_distance(feature_stats(self.features(x)), self.train)

    def stats(self, x: Tensor) -> FeatureStats:
        return feature_stats(self.features(x))


def bits_per_dim(model: ScoreModel, test: Tensor, spec: DataSpec, settings: DigitsSettings) -> dict[str, Any]:
    """Test-set bits/dim of the first ``settings.n_bpd`` test images."""
    pixels = to_pixels(test[: settings.n_bpd], spec)
    start = time.perf_counter()
    res = sd.bits_per_dim(model, pixels.to(next(model.net.parameters()).device), data_range=spec.data_range,
                          levels=spec.levels, generator=torch.Generator().manual_seed(settings.seed),
                          dtype=torch.float32, trace="rademacher", method="dopri5", rtol=settings.bpd_tol,
                          atol=settings.bpd_tol)
    return {"bpd": res.mean, "bpd_stderr": res.stderr, "n_images": len(pixels),
            "nfe": int(res.likelihood.nfe[0]), "wall_s": time.perf_counter() - start, "tol": settings.bpd_tol}


def run_digits(variants: Sequence[Variant], device: torch.device, settings: DigitsSettings,
               model_path: str | Path = MODEL_PATH, classifier_path: str | Path = CLASSIFIER_PATH,
               log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every variant at every target on the digits model; returns ``(rows, info)`` where
    ``info`` holds the floor, the classifier's accuracy and the bits/dim result."""
    config = config_from_checkpoint(model_path)
    model = load_model(model_path).to(device)
    classifier = load_classifier(classifier_path)
    train, spec = load_data(config, "train")
    test, _ = load_data(config, "test")
    space = FeatureSpace(classifier, spec, train, device)
    n = min(settings.n, len(test))
    g = torch.Generator().manual_seed(settings.seed)
    floor = statistics.fmean(space.fd(train[torch.randperm(len(train), generator=g)[:n]])
                             for _ in range(FLOOR_SUBSETS))
    info = {"fd_floor": floor, "fd_test": space.fd(test[:n]), "n": n,
            "classifier_test_accuracy": classifier.meta.get("test_accuracy"), "train_images": len(train)}
    log(f"[digits] FD floor ({n} training images vs all {len(train)}): {floor:.3f}; {n} test images: "
        f"{info['fd_test']:.3f}; classifier test accuracy {info['classifier_test_accuracy']:.4f}")
    x_T = torch.randn((n, *spec.shape), generator=torch.Generator().manual_seed(settings.seed)).to(device)
    rows = []
    all_variants = list(variants) + [dopri5(tol) for tol in settings.tolerances]
    for v in all_variants:
        for target in [None] if v.adaptive else settings.targets:
            run = run_variant(v, model, x_T, target, seed=settings.seed + 1)
            if run is None:
                continue
            fd = space.fd(run.x) if torch.isfinite(run.x).all() else math.nan
            rows.append({"problem": "digits", "n_samples": n, "library": v.library, "family": v.family,
                         "sampler": v.label, "options": v.options_json(), "rtol": v.options.get("rtol"),
                         "target_nfe": target, "steps": run.steps, "nfe": run.nfe, "wall_s": run.wall_s,
                         "fd": fd, "fd_floor": floor, "fd_test": info["fd_test"]})
            log(f"[digits] {v.label:<28} target {target!s:>5} nfe {run.nfe:>4} FD {fd:.3f} "
                f"({run.wall_s:.1f} s)")
    info["bpd"] = bits_per_dim(model, test, spec, settings)
    b = info["bpd"]
    log(f"[digits] bits/dim {b['bpd']:.4f} ± {b['bpd_stderr']:.4f} on {b['n_images']} test images "
        f"({b['nfe']} NFE, {b['wall_s']:.0f} s)")
    return rows, info


# --- result files -------------------------------------------------------------------------------

COLUMNS = ["device", "device_name", "torch_version", "diffusers_version", "date", "threads", "problem",
           "n_samples", "library", "family", "sampler", "options", "rtol", "target_nfe", "steps", "nfe",
           "wall_s", "fd", "fd_floor", "fd_test"]


def write_results(rows: Sequence[dict[str, Any]], info: dict[str, Any], settings: DigitsSettings,
                  env: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.csv``, ``<stem>.md`` and ``<stem>.png``."""
    rows = [{**env, **r} for r in rows]
    written = [write_csv(out_dir / f"{stem}.csv", rows, COLUMNS)]
    written.append(report.plot_metric(rows, "fd", info["fd_floor"], "floor: training images",
                                      "Fréchet distance (classifier features)", "digits model: FD vs NFE",
                                      out_dir / f"{stem}.png"))
    written.append(report.plot_pareto(rows, "fd", info["fd_floor"], "Fréchet distance (classifier features)",
                                      "digits model: Pareto front of FD vs NFE",
                                      out_dir / f"{stem}_pareto.png"))
    b = info["bpd"]
    fixed = report.metric_table(rows, settings.targets, lambda r: f"{r['fd']:.3g}")
    adaptive = report.adaptive_rows(rows)
    lines = [f"# Digits model: Fréchet distance vs NFE, and test bits/dim ({env['date']})", "",
             f"device `{env['device']}` ({env['device_name']}), GPU available: {env['gpu_available']}, "
             f"torch {env['torch_version']}, {env['threads']} thread(s). Model `models/digits_vp` "
             "(configs/digits_vp.py: DDPM schedule, eps-prediction U-Net, step-index time input). "
             "Regenerate: `python benchmarks/samplers.py --parts digits`.", "",
             f"FD in the 64-d feature space of the shipped classifier `models/digits_classifier.pt` "
             f"(test accuracy {info['classifier_test_accuracy']:.1%}; `python -m scoresde.classifier`), "
             f"{info['n']} samples per run against the statistics of the {info['train_images']} training "
             f"images. **Floor** ({info['n']} training images, mean over {FLOOR_SUBSETS} random subsets): "
             f"FD = {info['fd_floor']:.3f}. The {info['n']} held-out test images score FD = "
             f"{info['fd_test']:.3f}: they come from other writers (the classifier's accuracy drops to "
             f"{info['classifier_test_accuracy']:.0%} on them), so samples that match the training "
             "distribution score below them.",
             "", "## Targets (measured here; FD ratios, not floored)", "",
             *pairs.targets_lines(rows, "digits", metric="fd"),
             "", "## FD by target NFE (actual NFE in parentheses where it differs)", "", fixed]
    if adaptive:
        lines += ["", "## Adaptive samplers (they choose their own steps)", "",
                  report.table(["sampler", "options", "NFE", "FD", "wall (s)"],
                               [[r["sampler"], r["options"], str(r["nfe"]), f"{r['fd']:.3g}",
                                 f"{r['wall_s']:.3g}"] for r in adaptive], "llrrr")]
    lines += ["", "## Wall time per run (s)", "", report.metric_table(rows, settings.targets,
                                                                    lambda r: f"{r['wall_s']:.3g}"),
              "", "## Test-set bits/dim", "",
              f"{b['bpd']:.4f} ± {b['bpd_stderr']:.4f} (standard error) bits/dim on the first "
              f"{b['n_images']} "
              f"test images: `sd.bits_per_dim` with uniform dequantization of the 17 grey levels, "
              f"dopri5 at rtol = atol = {b['tol']:g}, one Rademacher probe per image (Hutchinson); "
              f"{b['nfe']} NFE, {b['wall_s']:.0f} s.", "", f"![FD vs NFE]({stem}.png)", "",
              f"![FD Pareto front]({stem}_pareto.png)", ""]
    md = out_dir / f"{stem}.md"
    md.write_text("\n".join(lines))
    written.append(md)
    return written

