"""Smoke test of the sampler benchmark (``benchmarks/samplers.py --quick``): every part runs and
writes well-formed files. No timing assertions: wall times are only checked to be numbers."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from suite.common import diffusers_version, our_variants, steps_for_nfe
from suite.frechet import feature_stats, frechet_distance
from suite.kdiffusion import sampling as kdiffusion_sampling

import scoresde as sd
from scoresde.assets import shipped_model

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIGITS_MODEL = shipped_model("digits_vp")


# One thread per benchmark process, as the test workers have (tests/conftest.py): two threads per
# process on two shared cores make the small networks far slower, not faster.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def kdiffusion_available() -> bool:
    try:
        kdiffusion_sampling()
    except ImportError:
        return False
    return True


def _rows(path: Path, columns: set[str]) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert columns <= set(reader.fieldnames), columns - set(reader.fieldnames)
        rows = list(reader)
    assert rows, f"{path} has no rows"
    return rows


def _finite(rows: list[dict[str, str]], *keys: str) -> None:
    for r in rows:
        for key in keys:
            assert math.isfinite(float(r[key])), (key, r)


def _png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(REPO / "benchmarks" / "samplers.py"), "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out / "stdout.txt").write_text(proc.stdout)
    return out


def test_analytic_files(quick_run: Path) -> None:
    rows = _rows(quick_run / "samplers_quick_analytic.csv",
                 {"device", "torch_version", "date", "problem", "sampler", "options", "nfe", "wall_s", "mmd2",
                  "sw", "logp_gap", "at_floor"})
    runs = [r for r in rows if r["library"] != "exact"]
    floors = [r for r in rows if r["library"] == "exact"]
    assert {r["problem"] for r in floors} == {"ring2d", "gmm64d"}
    _finite(floors, "mmd2", "mmd2_sd", "sw", "sw_sd", "logp_gap_sd", "floor_threshold")
    _finite(runs, "nfe", "wall_s", "mmd2", "sw", "logp_gap")
    assert {r["family"] for r in runs if r["library"] == "scoresde"} == set(sd.samplers.available())
    assert all(r["device"] and r["torch_version"] == torch.__version__ for r in rows)
    if diffusers_version() is not None:
        peers = {r["sampler"] for r in runs if r["library"] == "diffusers"}
        assert peers >= {"diffusers DDIM", "diffusers DDPM"}
    else:
        assert "diffusers skipped: not installed" in (quick_run / "stdout.txt").read_text()
    if kdiffusion_available():
        peers = {r["sampler"] for r in runs if r["library"] == "k-diffusion"}
        assert peers >= {"k-diffusion LMS", "k-diffusion Heun", "k-diffusion DPM++(2M)"}
    for name in ("ring2d", "gmm64d"):
        _png(quick_run / f"samplers_quick_analytic_{name}.png")
        _png(quick_run / f"samplers_quick_analytic_{name}_pareto.png")
    md = (quick_run / "samplers_quick_analytic.md").read_text()
    assert "noise floor" in md.lower() and "| sampler \\ NFE |" in md
    summary = (quick_run / "samplers_quick_summary.md").read_text()
    assert "smallest NFE at the floor" in summary and "ddim eta=0" in summary
    assert "Targets (measured here)" in summary and "pair (ours vs peer)" in summary


def test_overhead_files(quick_run: Path) -> None:
    rows = _rows(quick_run / "samplers_quick_overhead.csv",
                 {"sampler", "ms_per_nfe", "ratio_to_ddim_per_nfe"})
    _finite(rows, "nfe", "wall_s", "ms_per_nfe", "ratio_to_ddim_per_nfe")
    ddim = next(r for r in rows if r["sampler"] == "ddim eta=0")
    assert float(ddim["ratio_to_ddim_per_step"]) == 1.0


def test_image_files(quick_run: Path) -> None:
    rows = _rows(quick_run / "samplers_quick_image.csv", {"device", "precision", "images_per_s", "nfe"})
    _finite(rows, "images_per_s", "nfe", "wall_s")
    assert {r["precision"] for r in rows} == {"fp32", "bf16"}
    assert {r["size"] for r in rows} == {"tiny"}
    mixture = _rows(quick_run / "samplers_quick_image_gmm3072d.csv", {"mmd2", "nfe"})
    _finite([r for r in mixture if r["library"] != "exact"], "mmd2", "sw", "nfe", "wall_s")
    _png(quick_run / "samplers_quick_image_gmm3072d.png")
    md = (quick_run / "samplers_quick_image.md").read_text()
    assert "FID skipped" in md
    if not torch.cuda.is_available():
        assert "No GPU was available" in md


@pytest.mark.skipif(not DIGITS_MODEL.exists(), reason="the shipped digits model is missing")
def test_digits_files(quick_run: Path) -> None:
    rows = _rows(quick_run / "samplers_quick_digits.csv", {"sampler", "nfe", "fd", "fd_floor"})
    _finite(rows, "nfe", "wall_s", "fd", "fd_floor")
    _png(quick_run / "samplers_quick_digits.png")
    assert "bits/dim" in (quick_run / "samplers_quick_digits.md").read_text()


def test_steps_for_nfe_hits_targets_or_skips() -> None:
    heun = next(v for v in our_variants() if v.label == "ode heun")
    ddim = next(v for v in our_variants() if v.label == "ddim eta=0")
    assert steps_for_nfe(ddim, 1) == 1 and steps_for_nfe(ddim, 1000) == 1000
    assert steps_for_nfe(heun, 1) == 1  # one step into σ̄ = 0 is an Euler step
    assert steps_for_nfe(heun, 2) is None  # 1 or 3: Heun to σ̄ = 0 spends 2·steps − 1
    model = sd.GaussianMixture(torch.zeros(1, 2), torch.ones(1)).score_model(sd.VPSDE(), "eps", "index")
    out = sd.sample(model, (2, 2), "ode", steps_for_nfe(heun, 20), generator=torch.Generator().manual_seed(0),
                    method="heun")
    assert abs(out.nfe - 20) <= 1


def test_frechet_distance_matches_gaussian_formula() -> None:
    rng = np.random.default_rng(0)
    a = feature_stats(rng.normal(size=(4000, 3)))
    b = feature_stats(2.0 * rng.normal(size=(4000, 3)) + 1.0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # N(0, I) vs N(1, 4I) in 3-D: |Δμ|² + tr(I + 4I − 2·2I) = 3 + 3
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.1)


def test_shipped_classifier_loads_and_classifies() -> None:
    from suite.classifier import DEFAULT_PATH, accuracy, digits_with_labels, load_classifier

    if not DEFAULT_PATH.exists():
        pytest.skip("models/digits_classifier.pt is missing")
    model = load_classifier()
    x, y = digits_with_labels("test")
    assert accuracy(model, x, y) == pytest.approx(model.meta["test_accuracy"], abs=1e-6)
    assert model.meta["test_accuracy"] > 0.9
    assert model.features(x[:5]).shape == (5, 64)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script
def test_optional_fid_path_with_a_stand_in_detector(tmp_path: Path) -> None:
    """The Inception FID path, with a scripted stand-in for the TorchScript detector."""
    from dataclasses import replace

    from suite import image

    class Detector(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return x.float().mean(dim=(2, 3))  # (B, 3) "features" of uint8 images

    detector = tmp_path / "detector.pt"
    torch.jit.script(Detector()).save(str(detector))
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.full(3, 127.0), sigma=100.0 * np.eye(3))
    cpu = torch.device("cpu")
    settings = replace(image.settings_for(cpu, quick=True), fid_n=4)
    ddim = next(v for v in our_variants() if v.label == "ddim eta=0")
    model = image.image_model(settings, cpu)
    rows = image.run_fid([ddim], model, settings, cpu, detector, ref, log=lambda s: None)
    assert len(rows) == 1 and math.isfinite(rows[0]["fid"]) and rows[0]["n"] == 4
    assert image.fid_skip_reason(None, str(ref), None).startswith("FID skipped: no --inception")
    assert image.fid_skip_reason(str(detector), str(ref), "weights") is None


def test_guidance_benchmark_quick() -> None:
    """``benchmarks/guidance.py --quick``: three guidance weights on the shipped conditional model;
    accuracy must rise from the unconditional weight to a guided one (the check can fail)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "guidance.py"), "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = {float(w): float(a) for w, a in re.findall(r"w=([+-]\d\.\d): accuracy (\d\.\d+)", proc.stdout)}
    assert set(acc) == {-1.0, 0.0, 2.0}, proc.stdout
    assert acc[2.0] > acc[-1.0] + 0.5, acc  # 40 samples: chance 0.1 against ~1.0


def test_latent_benchmark_quick() -> None:
    """``benchmarks/latent.py --quick``: both shipped digits models (pixel and latent) run three
    samplers at 5 steps (5 NFE each) with finite FD, and the autoencoder's reconstructions score
    within 25 % of the training images' own FD (32 images: both ~8, the small-set bias; a broken
    autoencoder scores far above)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "latent.py"), "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = re.findall(r"(digits_vp|digits_latent) .* NFE +(\d+) seed 0: FD (\d+\.\d+)", proc.stdout)
    assert sorted(m for m, _, _ in runs) == ["digits_latent"] * 3 + ["digits_vp"] * 3, proc.stdout
    assert all(nfe == "5" and math.isfinite(float(fd)) for _, nfe, fd in runs), runs
    refs = re.search(r"FD floor (\S+), autoencoder reconstructions (\S+)", proc.stdout)
    floor, recon = float(refs[1]), float(refs[2])
    assert recon < 1.25 * floor, (floor, recon)
