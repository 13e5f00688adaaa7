"""``scoresde sample --timesteps_file``: an explicit (e.g. optimised) grid read from a file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from scoresde import assets


def sample(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scoresde.cli", "sample", "--model_dir=digits_vp",
                           f"--workdir={cwd}", "--n=4", "--threads=1", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_sample_reads_the_grid_from_a_file(tmp_path: Path) -> None:
    grid = assets.digits_grid("ddim", 5)
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid.tolist()))
    proc = sample("--sampler=ddim", f"--timesteps_file={path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "samples.npz") as z:
        assert int(z["nfe"]) == 5 and int(z["steps"]) == 5
        np.testing.assert_array_equal(z["timesteps"], grid.numpy())  # exactly the file's times
        assert z["x"].shape == (4, 1, 8, 8) and np.isfinite(z["x"]).all()
    (tmp_path / "grid.txt").write_text("1.0 0.5, 0.0")  # plain numbers work too
    proc = sample("--sampler=ddim", f"--timesteps_file={tmp_path / 'grid.txt'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "samples.npz") as z:
        assert int(z["nfe"]) == 2 and z["timesteps"].tolist() == [1.0, 0.5, 0.0]
