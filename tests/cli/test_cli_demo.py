"""Smoke tests of ``scoresde demo`` end to end (the 2-D oracle part and the trained-model part on
a tiny digits model trained here), and of the command line's usage errors."""

from __future__ import annotations

import csv
import math
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


def test_digits_demo_without_a_model_is_an_error(tmp_path: Path) -> None:
    proc = _cli("demo", "--problem=digits", f"--model_dir={tmp_path / 'none'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "no trained model in" in proc.stderr
    assert "scoresde train --config=FILE" in proc.stderr


def test_missing_or_extra_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """One line and exit status 2 (an unknown mode: tests/cli/test_cli_bad_inputs.py's table)."""
    from scoresde import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["scoresde"])
    assert exit_.value.code == 2 and "missing mode" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["scoresde", "demo", "extra"])
    assert exit_.value.code == 2 and "scoresde demo: unexpected arguments" in capsys.readouterr().err
