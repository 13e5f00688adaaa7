"""torch.distributed under ``torchrun --nproc_per_node=2`` with gloo on the CPU (issue 13's "Must show"):

(a) 2-process DDP training takes the steps of 1 process with the same global batch, to float
    summation order (three experiments: 2-D DSM, class-conditional learned-variance hybrid, latent);
(b) 2-process sharded sampling of the shipped digits model equals 1 process bit for bit, for every
    sampler variant of the registry (and the CLI's adaptive ODE solve);
(c) sharded bits/dim of test digits equals the 1-process values (per point, mean, standard error);
(d) a killed ``scoresde sample`` run resumes its missing shards only, here on another number of
    processes (killed with 1, resumed under torchrun with 2, through the command line);
plus ``scoresde bench``'s jobs dealt over the ranks come back in table order with the same numbers.

One torchrun launch (``dist_worker.py``) runs every job of ``dist_jobs`` on two processes, the test
process runs the same jobs in one, and the tests compare. Every subprocess runs one thread
(``OMP_NUM_THREADS=1``), as the test process does (tests/conftest.py), so that both sides compute the
same floats; a torchrun launch gets a free ``--master_port`` and a timeout.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import dist_jobs
import numpy as np
import pytest
import torch
from dist_launch import TIMEOUT, environment, ok, torchrun

import scoresde as sd
from scoresde import checkpoint, distributed
from scoresde.autoencoding import train_autoencoder
from scoresde.cli.common import ADAPTIVE, sampler_runs
from scoresde.data import ring_mixture

HERE = Path(__file__).resolve().parent


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(one, two)``: the outputs of every job of ``dist_jobs`` in this process and on 2 processes."""
    root = tmp_path_factory.mktemp("distributed")
    autoencoder = root / "autoencoder"
    train_autoencoder(dist_jobs.autoencoder_config(), autoencoder, **dist_jobs.QUIET)
    two = root / "two"
    ok(torchrun(str(HERE / "dist_worker.py"), str(two), str(autoencoder), cwd=root))
    one = root / "one"
    dist_jobs.run_all(one, autoencoder)
    return one, two


# --- (a) training ---------------------------------------------------------------------------------


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.distributed
@pytest.mark.parametrize("name", ["dsm", "hybrid", "latent"])
def test_ddp_training_takes_the_steps_of_one_process(runs, name) -> None:
    """Same weights and EMA as one process after a few steps (on 2 processes the dsm run stops
    half-way and resumes from its checkpoint: every rank from the one rank 0 wrote).

    Tolerance 1e-6: the two runs see the same global batch, times, noise and labels, and differ only
    in how the batch's gradient sum is split (two partial sums, all-reduced, instead of one; and the
    network's float kernels on batches of B/2 instead of B): a relative error of ~1e-6 at most in a
    float32 gradient. Adam moves each weight by at most lr = 2e-3 per step, so k steps can differ by
    about k·lr·1e-6 ~ 1e-8 (measured 1.5e-8 on the dsm run). The check can fail: the last steps
    change the weights by >= 1e-4, far beyond it.
    """
    one, two = runs
    tolerance = 1e-6
    a = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(one / "train" / name))
    b = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(two / "train" / name))
    steps = dist_jobs.train_configs(Path("unused"))[name].training.steps
    assert a["step"] == b["step"] == steps
    assert _max_difference(a["net"], b["net"]) < tolerance
    assert _max_difference(a["ema"]["shadow"], b["ema"]["shadow"]) < tolerance
    assert torch.equal(a["generator"], b["generator"])  # the same draws: the global batch on every rank
    assert "torch_rng_ranks" not in a and len(b["torch_rng_ranks"]) == 2  # dropout streams, per rank
    (_, earlier), _ = checkpoint.list_checkpoints(two / "train" / name)
    assert _max_difference(checkpoint.load_checkpoint(earlier)["net"], a["net"]) > 100 * tolerance


# --- (b) sampling ---------------------------------------------------------------------------------


@pytest.mark.distributed
def test_sharded_sampling_is_bit_for_bit_for_every_sampler(runs) -> None:
    """3 digits in shards [0, 2) and [2, 3), each drawn by another rank, equal the 1-process shards
    exactly: every sampler, stochastic ones included (PerSampleNoise keyed by the global index), and
    the adaptive ones too, because a shard is the same batch whatever process draws it."""
    one, two = (load(d / "sampling.pt") for d in runs)
    labels = [label for label, *_ in dist_jobs.sampler_cases()]
    assert len(labels) == len(sd.samplers.variants()) + 1 and one.keys() == two.keys()
    for label in labels:
        assert one[label].shape == (dist_jobs.SAMPLES, 1, 8, 8)
        assert torch.equal(one[label], two[label]), label
        assert torch.equal(one[label + "/nfe"], two[label + "/nfe"]), label
    # Different samplers give different samples: equality above is not that of constant outputs.
    assert not torch.equal(one["ddim eta=0"], one["ddim eta=1"])


# --- (c) bits/dim ---------------------------------------------------------------------------------


@pytest.mark.distributed
def test_sharded_bits_per_dim_equals_one_process(runs) -> None:
    """Per point, mean and standard error are those of one process, exactly: chunk [a, b) is one
    solve with its noise from PerSampleNoise(seed, offset=a) on whichever rank, and the per-point
    values are all-gathered before the mean and standard error are taken."""
    one, two = (load(d / "likelihood.pt") for d in runs)
    assert one["bpd"].shape == (dist_jobs.TEST_POINTS,) and torch.isfinite(one["bpd"]).all()
    for key in ("bpd", "nfe", "mean", "stderr"):
        assert torch.equal(one[key], two[key]), key
    assert float(two["stderr"]) == pytest.approx(float(one["bpd"].std() / math.sqrt(dist_jobs.TEST_POINTS)))


def test_sharded_likelihood_of_one_chunk_is_the_library_value() -> None:
    """With one chunk the sharded value is ``bits_per_dim`` with ``PerSampleNoise(seed)`` (exactly);
    with chunks, chunk [a, b) is ``bits_per_dim`` of its points with offset a. The noise matters
    (another seed moves the estimate), so these equalities are not those of a constant."""
    mixture = ring_mixture()
    model = mixture.score_model(sd.VPSDE())
    x = mixture.sample(5, generator=torch.Generator().manual_seed(0))
    options = {"trace": "rademacher", "rtol": 1e-3, "atol": 1e-3}
    whole = distributed.bits_per_dim_sharded(model, x, seed=3, batch_size=5, **options)
    direct = sd.bits_per_dim(model, x, generator=sd.PerSampleNoise(3), **options)
    assert torch.equal(whole.bpd, direct.bpd) and whole.stderr == direct.stderr
    chunked = distributed.bits_per_dim_sharded(model, x, seed=3, batch_size=2, **options)
    last = sd.bits_per_dim(model, x[4:], generator=sd.PerSampleNoise(3, offset=4), **options)
    assert torch.equal(chunked.bpd[4:], last.bpd) and len(chunked.likelihood.nfe) == 5
    other = distributed.bits_per_dim_sharded(model, x, seed=4, batch_size=5, **options)
    assert not torch.equal(other.bpd, whole.bpd)


# --- benchmarks -----------------------------------------------------------------------------------


@pytest.mark.distributed
def test_sharded_bench_rows_come_back_in_table_order(runs) -> None:
    one, two = (load(d / "bench.pt") for d in runs)
    expected = [r.variant.label for r in sampler_runs([1, 2], sd.samplers.variants()[:4], ADAPTIVE)]
    assert one["label"] == two["label"] == expected
    assert torch.equal(one["nfe"], two["nfe"])
    assert torch.equal(one["mmd2"], two["mmd2"]) and torch.isfinite(one["mmd2"]).all()


# --- (d) a killed run resumes -----------------------------------------------------------------------


@pytest.mark.distributed
def test_a_killed_sampling_run_resumes_its_missing_shards_on_another_world_size(tmp_path: Path) -> None:
    """``scoresde sample`` of 6 digits in shards of 1 is killed (SIGTERM) once its first shard is
    written; ``torchrun --nproc_per_node=2 -m scoresde.cli sample`` with the same flags draws only the
    missing shards and merges all six. A shard found on disk is taken as it is, not drawn again: one
    is overwritten with a marker before the resume and the marker is what lands in samples.npz; the
    other rows equal the 1-process draws of the same shards bit for bit."""
    steps, n = 10, 6
    flags = ["sample", "--model_dir=digits_vp", f"--workdir={tmp_path}", "--sampler=pc", f"--steps={steps}",
             "--shard_size=1", "--threads=1"]
    killed = subprocess.Popen([sys.executable, "-m", "scoresde.cli", *flags, f"--n={n}"], cwd=tmp_path,
                              env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    found: list[Path] = []
    while not found and killed.poll() is None and time.monotonic() < deadline:
        found = list(tmp_path.glob("shards/*/samples_*.npz"))
        time.sleep(0.02)
    killed.send_signal(signal.SIGTERM)
    _, err = killed.communicate(timeout=60)
    assert found, f"no shard was written before the run ended (exit {killed.returncode}):\n{err[-3000:]}"
    assert killed.returncode != 0 and not (tmp_path / "samples.npz").exists()
    present = sorted(tmp_path.glob("shards/*/samples_*.npz"))
    assert 1 <= len(present) < n
    marked = present[0]
    with np.load(marked) as z:
        arrays = dict(z)
    start = int(marked.name.split("_")[1])
    arrays["x"] = np.full_like(arrays["x"], 42.0)
    np.savez(marked, **arrays)

    out = ok(torchrun("-m", "scoresde.cli", *flags, f"--num_samples={n}", cwd=tmp_path))
    assert f"{n} shards: {len(present)} found" in out and f"{n - len(present)} drawn by 2 processes" in out
    with np.load(tmp_path / "samples.npz") as z:
        x = torch.from_numpy(z["x"])
    assert not list(tmp_path.glob("shards/*"))  # merged: the shards are gone

    model = dist_jobs.digits_model()
    seed = 1  # digits_vp's sampling.seed
    reference = distributed.sample_sharded(model, (1, 8, 8), n, tmp_path / "reference", shard_size=1,
                                           seed=seed, sampler="pc", steps=steps).x
    assert torch.equal(x[start], torch.full_like(x[start], 42.0))
    rest = [i for i in range(n) if i != start]
    assert torch.equal(x[rest], reference[rest])


# --- single-process pieces ------------------------------------------------------------------------


def test_shards_are_sample_ranges() -> None:
    assert distributed.shard_ranges(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert distributed.shard_ranges(4, 10) == [(0, 4)]
    for bad in ((0, 2), (5, 0), (5, 1.5), (True, 2)):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            distributed.shard_ranges(*bad)
    assert distributed.shard_path("f", 2, 4).name == "samples_000000002_000000004.npz"


def test_run_folders_tell_runs_apart(tmp_path: Path) -> None:
    a = {"sampler": "ddim", "steps": 10, "seed": 1}
    assert distributed.run_folder(tmp_path, a) == distributed.run_folder(tmp_path, dict(reversed(a.items())))
    assert distributed.run_folder(tmp_path, a) != distributed.run_folder(tmp_path, {**a, "seed": 2})


def test_one_process_world() -> None:
    world = distributed.init()  # no torchrun environment here
    assert world == distributed.World() and world.is_main and world.size == 1
    assert distributed.map_shards(lambda i, v: (i, v * 2), [3, 4, 5], world) == [(0, 6), (1, 8), (2, 10)]
    assert distributed.World(rank=1, size=3).rows(9) == slice(3, 6)
    with pytest.raises(ValueError, match="a global batch of 5 cannot be split evenly over 2 processes"):
        distributed.World(rank=0, size=2).rows(5)
    with pytest.raises(ValueError, match="needs a process group of >= 2 processes"):
        distributed.DataParallelModel(sd.ScoreModel(torch.nn.Identity(), sd.VPSDE()), world)
    assert distributed.rank_seed(0, 1) != distributed.rank_seed(0, 2) != distributed.rank_seed(1, 1)


def test_samples_do_not_depend_on_the_shard_size_for_fixed_grid_samplers(tmp_path: Path) -> None:
    """Sample i draws from PerSampleNoise stream i whatever shard holds it, so a fixed-grid stochastic
    sampler gives the same samples in shards of 2 as in one batch of 5, to float rounding (1e-5: the
    exact 2-D mixture score in float32 over 20 steps). The check can fail: noise drawn per batch
    from one generator makes other samples."""
    mixture = ring_mixture()
    model = mixture.score_model(sd.VPSDE())
    kwargs = {"seed": 5, "sampler": "ddim", "steps": 20, "eta": 1.0}
    sharded = distributed.sample_sharded(model, (2,), 5, tmp_path / "a", shard_size=2, **kwargs)
    whole = distributed.sample_sharded(model, (2,), 5, tmp_path / "b", shard_size=5, **kwargs)
    assert sharded.computed == 3 and whole.computed == 1 and sharded.nfe.tolist() == [20, 20, 20]
    torch.testing.assert_close(sharded.x, whole.x, rtol=0, atol=1e-5)
    per_batch = sd.sample(model, (5, 2), "ddim", 20, eta=1.0, generator=torch.Generator().manual_seed(5)).x
    assert (per_batch - whole.x).abs().max() > 0.1
    again = distributed.sample_sharded(model, (2,), 5, tmp_path / "a", shard_size=2, **kwargs)
    assert again.computed == 0 and torch.equal(again.x, sharded.x)  # all found: nothing drawn
    distributed.remove_shards(tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_a_damaged_shard_is_named(tmp_path: Path) -> None:
    mixture = ring_mixture()
    model = mixture.score_model(sd.VPSDE())
    np.savez(distributed.shard_path(tmp_path, 0, 2), x=np.zeros((3, 2)), nfe=1, wall_s=0.0,
             timesteps=np.ones(2))
    with pytest.raises(ValueError, match=r"samples_000000000_000000002\.npz holds 3 samples, expected 2"):
        distributed.sample_sharded(model, (2,), 4, tmp_path, shard_size=2, seed=0, sampler="ddim", steps=2)
