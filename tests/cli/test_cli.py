"""The ``scoresde`` command line end to end, in subprocesses, on the seconds-long tiny 2-D config.

train (with a ``--config.KEY=VALUE`` override) → sample → likelihood → bench → reconstruct →
interpolate on one workdir; resuming. Every subprocess runs one torch thread. Bad inputs (a bad
override key among them) are in the one-subprocess table of test_cli_bad_inputs.py.
"""

from __future__ import annotations

import csv
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ml_collections import ConfigDict

import scoresde as sd
from scoresde import checkpoint
from scoresde.cli import common as cli

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny_gmm2d.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUMBER = r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"


def scoresde(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m scoresde.cli ARGS`` with one torch thread; stdout and stderr captured."""
    return subprocess.run([sys.executable, "-m", "scoresde.cli", *args, "--threads=1"], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def ok(proc: subprocess.CompletedProcess) -> str:
    """stdout of a run that must have succeeded (else fail showing its stderr)."""
    assert proc.returncode == 0, (f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\n"
                                  f"stderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


def number_after(label: str, text: str) -> float:
    """The number printed after ``label`` in ``text``."""
    m = re.search(re.escape(label) + r"\s*" + NUMBER, text)
    assert m, f"{label!r} not found in:\n{text}"
    return float(m.group(1))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A workdir trained for 20 steps (the config says 40: the override must win)."""
    workdir = tmp_path_factory.mktemp("cli") / "run"
    out = ok(scoresde("train", f"--config={TINY}", f"--workdir={workdir}",
                      "--config.training.steps=20", cwd=workdir.parent))
    return workdir, out


def common(workdir: Path) -> list[str]:
    return [f"--config={TINY}", f"--workdir={workdir}"]


def test_train_override_sets_the_steps(trained: tuple[Path, str]) -> None:
    workdir, out = trained
    assert [step for step, _ in checkpoint.list_checkpoints(workdir)] == [20]
    assert checkpoint.load_checkpoint(checkpoint.latest_checkpoint(workdir))["step"] == 20
    assert "step 20: loss" in out and "trained to step 20" in out
    assert math.isfinite(number_after("last logged loss", out))


def test_train_resumes_from_the_checkpoint(trained: tuple[Path, str], tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(trained[0], workdir)
    out = ok(scoresde("train", *common(workdir), "--config.training.steps=30", cwd=tmp_path))
    assert re.search(r"resumed from .*ckpt_00000020\.pt at step 20", out), out
    assert "step 30: loss" in out and "step 10: loss" not in out  # continued, not restarted
    assert checkpoint.load_checkpoint(checkpoint.latest_checkpoint(workdir))["step"] == 30
    again = ok(scoresde("train", *common(workdir), "--config.training.steps=30", cwd=tmp_path))
    assert "nothing to train" in again


def test_sample_writes_png_and_npz(trained: tuple[Path, str]) -> None:
    workdir, _ = trained
    out = ok(scoresde("sample", *common(workdir), "--sampler=ddim", "--steps=7", "--n=50", cwd=workdir))
    assert number_after("NFE", out) == 7
    assert number_after("time", out) >= 0
    assert_png(workdir / "samples.png")
    with np.load(workdir / "samples.npz") as z:
        assert z["x"].shape == (50, 2) and np.isfinite(z["x"]).all()
        assert int(z["nfe"]) == 7 and int(z["steps"]) == 7 and str(z["sampler"]) == "ddim"


def test_sample_options_and_adaptive_solver(trained: tuple[Path, str]) -> None:
    workdir, _ = trained
    out = ok(scoresde("sample", *common(workdir), "--sampler=ode", "--n=20",
                      "--sampler_options=method=dopri5,rtol=1e-3,atol=1e-3", cwd=workdir))
    assert "adaptive" in out and "method=dopri5" in out
    with np.load(workdir / "samples.npz") as z:
        assert int(z["steps"]) == -1 and int(z["nfe"]) == number_after("NFE", out) > 2


def test_likelihood_prints_finite_bits_per_dim(trained: tuple[Path, str]) -> None:
    workdir, _ = trained
    out = ok(scoresde("likelihood", *common(workdir), "--n=8", "--config.eval.rtol=1e-3",
                      "--config.eval.atol=1e-3", cwd=workdir))
    mean, stderr = (float(v) for v in re.search(r"bits/dim: " + NUMBER + " ± " + NUMBER, out).groups())
    assert math.isfinite(mean) and math.isfinite(stderr) and stderr > 0
    assert number_after("NFE:", out) > 2
    assert "rtol=0.001" in out  # the override reached the solver settings
    with np.load(workdir / "likelihood.npz") as z:
        assert z["bpd"].shape == (8,) and np.isclose(z["bpd"].mean(), mean, rtol=1e-3)


def test_bench_writes_csv_with_every_sampler(trained: tuple[Path, str]) -> None:
    workdir, _ = trained
    out = ok(scoresde("bench", *common(workdir), "--steps=2,3", "--n=64", cwd=workdir))
    assert "noise floor" in out
    with open(workdir / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fixed = sorted((r["variant"], int(r["steps"])) for r in rows if r["steps"])
    gridded = [v for v in sd.samplers.variants() if sd.samplers.get(v.sampler).parse(v.options).uses_grid]
    assert fixed == sorted((v.label, k) for v in gridded for k in (2, 3))
    adaptive = len(sd.samplers.variants()) - len(gridded)
    assert len(rows) == len(fixed) + adaptive + 1  # adaptive variants once each, plus the adaptive ODE
    for r in rows:
        assert int(r["nfe"]) >= 1
        for key in ("wall_s", "mmd2", "mmd2_noise_floor", "mmd2_noise_std"):
            assert math.isfinite(float(r[key])), (key, r)


def test_reconstruct_and_interpolate(trained: tuple[Path, str]) -> None:
    workdir, _ = trained
    out = ok(scoresde("reconstruct", *common(workdir), "--n=16", "--steps=10", cwd=workdir))
    mse = number_after("per-dimension MSE:", out)
    assert math.isfinite(mse) and mse >= 0
    assert "encode: NFE 10" in out and "decode: NFE 10" in out
    assert_png(workdir / "reconstruct.png")
    with np.load(workdir / "reconstruct.npz") as z:
        assert z["x"].shape == z["x_rec"].shape == z["z"].shape == (16, 2)
        assert np.isclose(((z["x_rec"] - z["x"]) ** 2).mean(), mse, rtol=1e-3)

    out = ok(scoresde("interpolate", *common(workdir), "--n=2", "--n_interp=5", "--steps=10",
                      cwd=workdir))
    assert "encode NFE 10" in out
    assert_png(workdir / "interpolate.png")
    with np.load(workdir / "interpolate.npz") as z:
        assert z["paths"].shape == (5, 2, 2) and z["ends"].shape == (2, 2, 2)
        assert np.isfinite(z["paths"]).all()


# --- in-process: the pieces of the override check -------------------------------------------


def test_nearest_keys_and_override_parsing() -> None:
    keys = ["training", "training.steps", "training.seed", "sampling", "sampling.steps", "data.name"]
    assert cli.nearest_keys("training.stepz", keys)[0] == "training.steps"
    assert cli.nearest_keys("trainin.steps", keys)[0] == "training.steps"
    assert set(cli.nearest_keys("steps", keys)[:2]) == {"training.steps", "sampling.steps"}
    argv = ["scoresde", "train", "--config=x.py", "--config.a.b=1", "--noconfig.c", "--", "--config.d=2"]
    assert cli.override_keys(argv) == ["a.b", "c"]
    assert cli.parse_options(["method=dopri5", "rtol=1e-5", "eta=0", "grid=karras"]) == {
        "method": "dopri5", "rtol": 1e-5, "eta": 0, "grid": "karras"}


def test_check_config_overrides_on_a_real_config() -> None:
    cli.check_config_overrides(["x", f"--config={TINY}", "--config.training.steps=5",
                                "--config.model.network.hidden=8"])
    groups = r"top-level groups: autoencoder, data, eval, inpaint, latent, model, sampling, sde, training"
    with pytest.raises(cli.ConfigKeyError, match=groups):
        cli.check_config_overrides(["x", f"--config={TINY}", "--config.nonsense=1"])
    with pytest.raises(cli.ConfigKeyError, match="no --config=FILE"):
        cli.check_config_overrides(["x", "--config.training.steps=5"])
    assert cli.flatten_keys(ConfigDict({"a": {"b": 1}, "c": 2})) == ["a", "a.b", "c"]


def test_export_writes_loadable_ema_weights(trained, tmp_path):
    workdir, _ = trained
    out = tmp_path / "ship" / "checkpoints" / "ckpt_00000020.pt"
    printed = ok(scoresde("export", f"--config={TINY}", f"--workdir={workdir}", f"--out={out}",
                          cwd=tmp_path))
    assert "EMA weights only" in printed
    state = checkpoint.load_checkpoint(out)
    assert set(state) == {"net", "step"} and state["step"] == 20
