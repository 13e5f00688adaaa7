"""Problem 3: image scale — a CIFAR-10-sized U-Net (32×32×3) and a 3072-dimensional mixture.

* **Throughput**: every fixed-step variant (ours and the diffusers peers) samples a batch with
  the U-Net of ``configs/cifar10_ddpmpp_vp.py`` (channels 128, multipliers 1-2-2-2, two
  residual blocks per level, attention at 16×16: 35.7 M parameters) at one target NFE, in
  fp32 and under bf16 autocast; images/s = batch / wall time after a warm-up run. The network
  is randomly initialised unless ``image_model`` points at trained weights of that config —
  throughput does not depend on the weights (the zero-initialised output layer gets small
  random weights, so that the output is not identically zero). The U-Net is given DDPM's schedule and the
  step-index time input, so diffusers' schedulers drive it unchanged.
* **Exact quality at D = 3072**: the analytic pipeline (:mod:`suite.analytic`) on a
  10-component mixture in 3072 dimensions, as many dimensions as a CIFAR image.
* **FID** with Inception features, only where the user has them: ``inception`` = a
  TorchScript Inception feature extractor called as ``net(uint8 NCHW, return_features=True)``
  (NVIDIA's ``pt_inception-2015-12-05`` used by StyleGAN3/EDM), ``fid_ref`` = an ``.npz`` with
  the data set's ``mu`` and ``sigma`` in those features, and ``image_model`` = trained weights
  (FID of a random network is meaningless). Otherwise the part says FID was skipped and why.

The full sizes are meant for a GPU. On a CPU the part runs at a tiny size (a small U-Net at
32×32×3, a batch of 2, a few NFE; the mixture with 64 samples) that exercises every code path
and records that no GPU was used; its numbers say nothing about image-scale speed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scoresde.data import DataSpec, to_pixels
from scoresde.experiment import load_config_file, load_trained
from scoresde.model import ScoreModel
from scoresde.nn import build_network
from suite import analytic, report
from suite.common import Variant, ddpm_sde, write_csv
from suite.frechet import FeatureStats, feature_stats, frechet_distance
from suite.runs import run_variant

REPO = Path(__file__).resolve().parents[2]
CIFAR_CONFIG = REPO / "configs" / "cifar10_ddpmpp_vp.py"
CIFAR_SPEC = DataSpec("cifar10", (3, 32, 32), 256, (-1.0, 1.0))
TINY_NETWORK = {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1}
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class ImageSettings:
    """Sizes of the image-scale part; :func:`settings_for` picks full (GPU) or tiny (CPU)."""

    size: str = "full"
    network: dict[str, Any] = field(default_factory=dict)  # overrides of the config's network
    batch: int = 128
    target_nfe: int = 20
    repeats: int = 2
    mixture: analytic.Problem | None = None
    fid_n: int = 10_000
    seed: int = 0


def mixture3072(n: int, targets: tuple[int, ...], tolerances: tuple[float, ...]) -> analytic.Problem:
    """10 components in 3072 dimensions (stds 0.1–0.3, means N(0, I)): a CIFAR-sized mixture."""
    return analytic.Problem("gmm3072d", analytic.random_mixture(3072, 10, seed=3072), n, targets, tolerances)


def settings_for(device: torch.device, quick: bool) -> ImageSettings:
    """Full sizes on a GPU; a tiny smoke-test size on a CPU or in quick mode."""
    if device.type == "cuda" and not quick:
        return ImageSettings(mixture=mixture3072(2000, (5, 10, 20, 50, 100, 200, 500), (1e-2, 1e-3, 1e-4)))
    return ImageSettings(size="tiny", network=dict(TINY_NETWORK), batch=2, target_nfe=5, repeats=1,
                         mixture=mixture3072(16, (5,), ()) if quick else mixture3072(64, (5, 10), ()),
                         fid_n=8)


def image_model(settings: ImageSettings, device: torch.device,
                weights: str | Path | None = None) -> ScoreModel:
    """The CIFAR-10 config's U-Net as a DDPM eps/index model (trained weights if given)."""
    config = load_config_file(CIFAR_CONFIG)
    if weights is not None:
        return load_trained(config, weights).to(device)
    net_config = {**config.model.network.to_dict(), **settings.network, "dropout": 0.0}
    torch.manual_seed(settings.seed)
    net = build_network(net_config).eval()
    for p in net.parameters():
        p.requires_grad_(False)
        if not p.any():  # the zero-initialised output conv: an all-zero eps makes Langevin's step infinite
            p.normal_(0.0, 0.02)
    return ScoreModel(net, ddpm_sde(), prediction="eps", time_input="index").to(device)


def run_throughput(variants: Sequence[Variant], model: ScoreModel, settings: ImageSettings,
                   device: torch.device, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Images/s of every fixed-step variant at ``settings.target_nfe`` in fp32 and bf16."""
    params = sum(p.numel() for p in model.net.parameters())
    x_T = torch.randn(settings.batch, *CIFAR_SPEC.shape,
                      generator=torch.Generator().manual_seed(settings.seed)).to(device)
    rows = []
    for precision in PRECISIONS:
        for v in variants:
            if v.adaptive:
                continue
            try:
                if run_variant(v, model, x_T, settings.target_nfe, seed=1, precision=precision) is None:
                    continue  # cannot reach the target; the first call doubles as the warm-up
                runs = [run_variant(v, model, x_T, settings.target_nfe, seed=1, precision=precision)
                        for _ in range(settings.repeats)]
            except FloatingPointError as e:  # sd.sample refuses non-finite output; record, go on
                log(f"[image {settings.size}] {precision} {v.label}: {e}")
                continue
            wall = min(r.wall_s for r in runs)
            rows.append({"size": settings.size, "params": params, "batch": settings.batch,
                         "library": v.library,
                         "sampler": v.label, "options": v.options_json(), "precision": precision,
                         "target_nfe": settings.target_nfe, "nfe": runs[0].nfe, "wall_s": wall,
                         "images_per_s": settings.batch / wall, "ms_per_nfe": 1e3 * wall / runs[0].nfe})
            log(f"[image {settings.size}] {precision} {v.label:<28} nfe {runs[0].nfe:>3} "
                f"{settings.batch / wall:.2f} images/s")
    return rows


# --- FID (optional) -----------------------------------------------------------------------------


def fid_skip_reason(inception: str | None, fid_ref: str | None, weights: str | None) -> str | None:
    """Why FID cannot run, or ``None`` when it can."""
    needs = (("--inception (a TorchScript Inception feature extractor)", inception),
             ("--fid-ref (an .npz with the data set's mu and sigma)", fid_ref),
             ("--image-model (trained CIFAR-10 weights)", weights))
    missing = [what for what, value in needs if not value]
    return None if not missing else "FID skipped: no " + ", no ".join(missing) + " given."


def load_reference_stats(path: str | Path) -> FeatureStats:
    with np.load(path) as ref:
        return FeatureStats(np.asarray(ref["mu"], np.float64), np.asarray(ref["sigma"], np.float64), -1)


def run_fid(variants: Sequence[Variant], model: ScoreModel, settings: ImageSettings, device: torch.device,
            inception: str | Path, fid_ref: str | Path,
            log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """FID of ``settings.fid_n`` samples per fixed-step variant at the target NFE."""
    with warnings.catch_warnings():  # the Inception files in use are TorchScript archives
        warnings.simplefilter("ignore", DeprecationWarning)
        detector = torch.jit.load(str(inception), map_location=device).eval()
    ref = load_reference_stats(fid_ref)
    rows = []
    for v in variants:
        if v.adaptive:
            continue
        feats = []
        for start in range(0, settings.fid_n, settings.batch):
            b = min(settings.batch, settings.fid_n - start)
            x_T = torch.randn(b, *CIFAR_SPEC.shape,
                              generator=torch.Generator().manual_seed(settings.seed + start)).to(device)
            run = run_variant(v, model, x_T, settings.target_nfe, seed=settings.seed + start)
            if run is None:
                break
            with torch.no_grad():
                feats.append(detector(to_pixels(run.x, CIFAR_SPEC).to(device), return_features=True).cpu())
        if not feats:
            continue
        fid = frechet_distance(feature_stats(torch.cat(feats)), ref)
        rows.append({"sampler": v.label, "library": v.library, "target_nfe": settings.target_nfe,
                     "nfe": run.nfe, "n": settings.fid_n, "fid": fid})
        log(f"[image FID] {v.label:<28} nfe {run.nfe:>3} FID {fid:.2f}")
    return rows


# --- result files -------------------------------------------------------------------------------

COLUMNS = ["device", "device_name", "gpu_available", "torch_version", "diffusers_version", "date", "threads",
           "size", "params", "batch", "library", "sampler", "options", "precision", "target_nfe", "nfe",
           "wall_s", "images_per_s", "ms_per_nfe"]
FID_COLUMNS = ["device", "date", "sampler", "library", "target_nfe", "nfe", "n", "fid"]


def write_results(rows: Sequence[dict[str, Any]], mixture_rows: Sequence[dict[str, Any]],
                  fid_rows: Sequence[dict[str, Any]], fid_note: str, settings: ImageSettings,
                  env: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.csv`` (throughput), ``<stem>_gmm3072d.csv``/``.png``, ``<stem>_fid.csv`` (when run)
    and ``<stem>.md``."""
    rows = [{**env, **r} for r in rows]
    written = [write_csv(out_dir / f"{stem}.csv", rows, COLUMNS)]
    no_gpu = "" if env["gpu_available"] else (
        "**No GPU was available**: this is the tiny CPU smoke size (a small U-Net at 32×32×3, batch "
        f"{settings.batch}); its throughput says nothing about image-scale speed. On a GPU run "
        "`python benchmarks/samplers.py --parts image --device cuda` for the full sizes.")
    params = rows[0]["params"] if rows else 0
    lines = [f"# Image scale: U-Net throughput and a 3072-D mixture ({env['date']})", "",
             f"device `{env['device']}` ({env['device_name']}), GPU available: {env['gpu_available']}, "
             f"torch {env['torch_version']}, size `{settings.size}`.", ""]
    if no_gpu:
        lines += [no_gpu, ""]
    body = [[r["sampler"], r["library"], r["precision"], str(r["nfe"]), f"{r['images_per_s']:.3g}",
             f"{r['ms_per_nfe']:.3g}"] for r in rows]
    lines += [f"## Throughput: U-Net ({params / 1e6:.2f} M parameters), batch {settings.batch}, "
              f"target {settings.target_nfe} NFE", "",
              report.table(["sampler", "library", "precision", "NFE", "images/s", "ms/NFE"], body,
                           "lllrrr"), ""]
    if mixture_rows and settings.mixture is not None:
        problem = settings.mixture
        mrows = [{**env, **r} for r in mixture_rows]
        written.append(write_csv(out_dir / f"{stem}_{problem.name}.csv", mrows, analytic.COLUMNS))
        png = report.plot_quality(mrows, problem.name, f"{problem.name}: quality vs NFE",
                                  out_dir / f"{stem}_{problem.name}.png")
        written.append(png)
        lines += [analytic.problem_markdown(mrows, problem, None), "", f"![{problem.name}]({png.name})", ""]
    lines += ["## FID", ""]
    if fid_rows:
        frows = [{**env, **r} for r in fid_rows]
        written.append(write_csv(out_dir / f"{stem}_fid.csv", frows, FID_COLUMNS))
        lines += [report.table(["sampler", "library", "NFE", "samples", "FID"],
                               [[r["sampler"], r["library"], str(r["nfe"]), str(r["n"]), f"{r['fid']:.2f}"]
                                for r in frows], "llrrr"), ""]
    lines += [fid_note, ""]
    md = out_dir / f"{stem}.md"
    md.write_text("\n".join(lines))
    written.append(md)
    return written

