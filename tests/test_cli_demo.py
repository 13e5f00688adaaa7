"""Smoke tests of the ``scoresde`` command line: the demo end to end, and its usage errors."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

import scoresde as sd

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scoresde.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_demo_writes_table_and_plot(tmp_path: Path) -> None:
    workdir = tmp_path / "out"
    proc = _cli("demo", f"--workdir={workdir}", "--n=300", "--steps=2,5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "noise floor" in proc.stdout

    with open(workdir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fixed = [r for r in rows if r["steps"] != ""]
    assert sorted((r["sampler"], int(r["steps"])) for r in fixed) == sorted(
        (name, k) for name in sd.samplers.available() for k in (2, 5)
    )
    assert len(rows) == len(fixed) + 1  # plus the one adaptive ODE run
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
    assert "available modes: demo" in proc.stderr


def test_missing_or_extra_arguments_are_usage_errors() -> None:
    from absl import app

    from scoresde import cli

    with pytest.raises(app.UsageError, match=r"missing mode.*demo"):
        cli.main(["scoresde"])
    with pytest.raises(app.UsageError, match="unexpected arguments"):
        cli.main(["scoresde", "demo", "extra"])
