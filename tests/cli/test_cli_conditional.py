"""``scoresde sample --class --guidance`` on the shipped class-conditional digits model and ``scoresde
inpaint`` on the shipped digits model (their one-line errors: the table of test_cli_bad_inputs.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scoresde import assets

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIGITS = str(Path(__file__).resolve().parents[2] / "configs" / "digits_vp.py")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scoresde.cli", *args, f"--workdir={cwd}", "--threads=1"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cond_model() -> str:
    if "digits_vp_cond" not in assets.SHIPPED:
        pytest.fail("the class-conditional digits model digits_vp_cond is not shipped")
    return "--model_dir=digits_vp_cond"


def test_sample_a_class_with_guidance(tmp_path: Path, cond_model: str) -> None:
    proc = cli("sample", cond_model, "--class=3", "--guidance=2.0", "--guidance_interval=0.1,0.9", "--n=3",
               "--steps=4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "class 3, guidance w=2 on t in [0.1, 0.9]" in proc.stdout
    with np.load(tmp_path / "samples.npz") as z:
        assert int(z["class"]) == 3 and float(z["guidance"]) == 2.0
        assert int(z["nfe"]) == 4  # both branches in one call: one NFE per step
        assert z["x"].shape == (3, 1, 8, 8) and np.isfinite(z["x"]).all()
    assert (tmp_path / "samples.png").read_bytes().startswith(PNG_MAGIC)


def test_inpaint_writes_masked_completions_and_truths(tmp_path: Path) -> None:
    proc = cli("inpaint", "--model_dir=digits_vp", f"--config={DIGITS}", "--config.inpaint.mask=top_half",
               "--config.inpaint.method=repaint", "--config.inpaint.jump_length=2",
               "--config.inpaint.n_resample=2", "--n=3", "--steps=4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "inpaint.npz") as z:
        x, truth, mask = z["x"], z["truth"], z["mask"]
        assert x.shape == truth.shape == (3, 1, 8, 8) and mask.shape == (1, 1, 8, 8)
        assert not mask[..., :4, :].any() and mask[..., 4:, :].all()  # the top half is missing
        np.testing.assert_array_equal(x[..., 4:, :], truth[..., 4:, :])  # known pixels kept exactly
        assert int(z["nfe"]) > 4  # RePaint redoes steps
    assert (tmp_path / "inpaint.png").read_bytes().startswith(PNG_MAGIC)
