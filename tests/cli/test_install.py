"""A non-editable ``pip install .`` into a fresh virtual environment, then ``scoresde demo`` run
from a directory outside the checkout: the installed package must carry everything the demo
needs (the shipped model is package data; no path points into the repository).

The environment sees the system's site-packages for torch and the other dependencies (no
download), installs scoresde itself with ``--no-deps`` (pip fetches the build backend, setuptools, into its
isolated build environment), and the test checks that the demo ran the installed copy, not the
checkout, and writes both parts' tables (this also stands for the demo's end-to-end test on a trained
model: the shipped digits model is one).
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from pathlib import Path

import scoresde as sd

REPO = Path(__file__).resolve().parents[2]


def test_pip_install_then_demo_from_anywhere(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-cache-dir", str(REPO)]
    proc = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where, *listed = subprocess.run(
        [str(python), "-c", "import scoresde as sd; print(sd.__file__, *sd.samplers.available())"],
        cwd=elsewhere, capture_output=True, text=True, check=True).stdout.split()
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
    # Both parts' tables: every sampler's main variant at the grid's steps, the adaptive ones once
    # each, plus the one adaptive ODE run (the sampler table comes from the installed copy).
    main = sd.samplers.variants(main_only=True)
    gridded = [v.sampler for v in main if sd.samplers.get(v.sampler).parse(v.options).uses_grid]
    for name in ("results.csv", "digits_results.csv"):
        with open(out / name, newline="") as f:
            rows = list(csv.DictReader(f))
        assert {r["sampler"] for r in rows} == set(listed) == set(sd.samplers.available()), name
        assert sorted(r["sampler"] for r in rows if r["steps"]) == sorted(gridded), name
        assert all(int(r["steps"]) == 3 for r in rows if r["steps"]), name
        assert len(rows) == len(main) + 1, name
        for r in rows:
            assert int(r["nfe"]) >= 1 and math.isfinite(float(r["wall_s"])), (name, r)
    m = re.search(r"test NLL ([-+\d.e]+) ± ([-+\d.e]+) bits/dim \(2 test images", proc.stdout)
    assert m and all(math.isfinite(float(v)) for v in m.groups()), proc.stdout
