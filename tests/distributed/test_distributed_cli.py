"""The README's torchrun commands end to end: ``torchrun --nproc_per_node=2 -m scoresde.cli train``,
``likelihood`` and ``bench`` against the same commands in one process (gloo on the CPU). Slow (six
launches of the command line); the default run shows the same things through the library functions
these modes call (test_distributed.py) and ``sample`` through the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_launch import REPO, ok, scoresde, torchrun

from scoresde import checkpoint

TINY = str(REPO / "configs" / "tiny_gmm2d.py")
pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def test_train_likelihood_and_bench_under_torchrun_equal_one_process(tmp_path: Path) -> None:
    """Training: the weights of 1 process to 1e-6 (float summation order, see
    test_distributed.test_ddp_training_takes_the_steps_of_one_process), checkpoints written once.
    Likelihood: every per-point bits/dim equal (chunks of 3 of 8 points dealt over the ranks).
    Bench: the same rows in the same order (NFE and MMD² equal; only wall times differ)."""
    train = ["train", f"--config={TINY}", "--config.training.steps=6", "--config.training.ckpt_every=3",
             "--config.training.warmup=0", "--threads=1"]
    ok(scoresde(*train, f"--workdir={tmp_path / 'one'}", cwd=tmp_path))
    ok(torchrun("-m", "scoresde.cli", *train, f"--workdir={tmp_path / 'two'}", cwd=tmp_path))
    a, b = (checkpoint.load_checkpoint(checkpoint.latest_checkpoint(tmp_path / w)) for w in ("one", "two"))
    assert a["step"] == b["step"] == 6 and len(b["torch_rng_ranks"]) == 2
    assert max(float((a["net"][k] - b["net"][k]).abs().max()) for k in a["net"]) < 1e-6

    model = [f"--config={TINY}", f"--model_dir={tmp_path / 'one'}", "--threads=1"]
    likelihood = ["likelihood", *model, "--config.eval.batch_size=3", "--config.eval.rtol=1e-3",
                  "--config.eval.atol=1e-3"]
    ok(scoresde(*likelihood, "--n=8", f"--workdir={tmp_path / 'll1'}", cwd=tmp_path))
    out = ok(torchrun("-m", "scoresde.cli", *likelihood, "--num_samples=8", f"--workdir={tmp_path / 'll2'}",
                      cwd=tmp_path))
    assert "on 2 processes" in out
    z1, z2 = (dict(np.load(tmp_path / w / "likelihood.npz")) for w in ("ll1", "ll2"))
    assert z1["bpd"].shape == (8,) and np.array_equal(z1["bpd"], z2["bpd"])
    assert np.array_equal(z1["nfe"], z2["nfe"])

    bench = ["bench", *model, "--steps=2", "--n=64"]
    ok(scoresde(*bench, f"--workdir={tmp_path / 'b1'}", cwd=tmp_path))
    ok(torchrun("-m", "scoresde.cli", *bench[:-1], "--num_samples=64", f"--workdir={tmp_path / 'b2'}",
                cwd=tmp_path))
    rows = []
    for w in ("b1", "b2"):
        with open(tmp_path / w / "bench.csv", newline="") as f:
            rows.append([{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)])
    assert len(rows[0]) > 30 and rows[0] == rows[1]
    assert torch.isfinite(torch.tensor([float(r["mmd2"]) for r in rows[0]])).all()
