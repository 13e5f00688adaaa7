"""Smoke tests of ``scoresde demo`` end to end (the 2-D oracle part and the trained-model part on
a tiny digits model trained here), and of the command line's usage errors."""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

import scoresde as sd

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


REPO = Path(__file__).resolve().parents[2]
DIGITS = str(REPO / "configs" / "digits_vp.py")
# A U-Net small enough to train and sample in seconds; the demo must be given the same keys.
SMALL_UNET = ("--config.model.network.channels=8", "--config.model.network.attn_resolutions=()")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scoresde.cli", *args, "--threads=1"], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_demo_writes_table_and_plot(tmp_path: Path) -> None:
    workdir = tmp_path / "out"
    # No trained model in --model_dir: the demo says so and runs the 2-D oracle part only.
    proc = _cli("demo", f"--workdir={workdir}", "--n=300", "--steps=2,5",
                f"--model_dir={tmp_path / 'no_model'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no trained model in" in proc.stdout and "2-D oracle demo only" in proc.stdout
    assert "noise floor" in proc.stdout
    assert not (workdir / "digits_samples.png").exists()

    with open(workdir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fixed = [r for r in rows if r["steps"] != ""]
    main = sd.samplers.variants(main_only=True)
    gridded = [v.sampler for v in main if sd.samplers.get(v.sampler).parse(v.options).uses_grid]
    assert sorted((r["sampler"], int(r["steps"])) for r in fixed) == sorted(
        (name, k) for name in gridded for k in (2, 5)
    )
    # adaptive samplers run once each, plus the one adaptive ODE run
    assert len(rows) == len(fixed) + len(main) - len(gridded) + 1
    for r in rows:
        for key in ("nfe", "wall_s", "mmd2", "mmd2_noise_floor", "mmd2_noise_std"):
            assert math.isfinite(float(r[key])), (key, r)
        assert int(r["nfe"]) >= (int(r["steps"]) if r["steps"] else 1)

    png = (workdir / "samples.png").read_bytes()
    assert len(png) > 1000
    assert png.startswith(PNG_MAGIC)


def test_unknown_mode_lists_modes(tmp_path: Path) -> None:
    proc = _cli("no-such-mode", cwd=tmp_path)
    assert proc.returncode != 0
    assert "unknown mode 'no-such-mode'" in proc.stderr
    modes = ("train, train_autoencoder, export, sample, likelihood, bench, reconstruct, inpaint, "
             "interpolate, demo")
    assert f"available modes: {modes}" in proc.stderr


def test_digits_demo_on_a_trained_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    proc = _cli("train", f"--config={DIGITS}", f"--workdir={model_dir}", *SMALL_UNET,
                "--config.training.steps=4", "--config.training.batch_size=16", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    workdir = tmp_path / "out"
    proc = _cli("demo", "--problem=digits", f"--workdir={workdir}", f"--model_dir={model_dir}",
                f"--config={DIGITS}", *SMALL_UNET, "--config.eval.rtol=1e-2", "--config.eval.atol=1e-2",
                "--digits_steps=3", "--digits_n=4", "--nll_n=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"test NLL ([-+\d.e]+) ± ([-+\d.e]+) bits/dim \(3 test images", proc.stdout)
    assert m, proc.stdout
    assert all(math.isfinite(float(v)) for v in m.groups())
    assert "noise floor" not in proc.stdout  # --problem=digits: no oracle part

    with open(workdir / "digits_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    main = sd.samplers.variants(main_only=True)
    gridded = [v.sampler for v in main if sd.samplers.get(v.sampler).parse(v.options).uses_grid]
    assert sorted((r["sampler"], int(r["steps"])) for r in rows if r["steps"]) == sorted(
        (name, 3) for name in gridded)
    assert len(rows) == len(main) + 1  # adaptive samplers once each, plus the adaptive ODE run
    for r in rows:
        assert int(r["nfe"]) >= 1 and math.isfinite(float(r["wall_s"]))
    png = (workdir / "digits_samples.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_digits_demo_without_a_model_is_an_error(tmp_path: Path) -> None:
    proc = _cli("demo", "--problem=digits", f"--model_dir={tmp_path / 'none'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "no trained model in" in proc.stderr
    assert "scoresde train --config=FILE" in proc.stderr


def test_missing_or_extra_arguments_are_usage_errors() -> None:
    from absl import app

    from scoresde import cli

    with pytest.raises(app.UsageError, match=r"missing mode.*demo"):
        cli.main(["scoresde"])
    with pytest.raises(app.UsageError, match="unexpected arguments"):
        cli.main(["scoresde", "demo", "extra"])
