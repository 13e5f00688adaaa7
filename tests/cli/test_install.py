"""A non-editable ``pip install .`` into a fresh virtual environment, then ``scoresde demo`` run
from a directory outside the checkout: the installed package must carry everything the demo
needs (the shipped model is package data; no path points into the repository).

The environment sees the system's site-packages for torch and the other dependencies (no
download), installs scoresde itself with ``--no-deps`` (pip fetches the build backend,
setuptools, into its isolated build environment), and the test checks that the demo ran
the installed copy, not the checkout.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_pip_install_then_demo_from_anywhere(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                           "--no-cache-dir", str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import scoresde; print(scoresde.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where  # the installed copy

    out = elsewhere / "demo_out"
    proc = subprocess.run([str(venv / "bin" / "scoresde"), "demo", f"--workdir={out}", "--threads=1",
                           "--n=200", "--steps=3", "--digits_steps=3", "--digits_n=4", "--nll_n=2"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Trained digits model from" in proc.stdout and "digits_vp.pt" in proc.stdout
    assert "test NLL" in proc.stdout and "noise floor" in proc.stdout
    for name in ("digits_samples.png", "digits_results.csv", "samples.png", "results.csv"):
        assert (out / name).stat().st_size > 100, name
    with open(out / "results.csv", newline="") as f:
        assert {r["sampler"] for r in csv.DictReader(f)} == set(
            subprocess.run([str(python), "-c", "import scoresde as sd; print(*sd.samplers.available())"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout.split())
