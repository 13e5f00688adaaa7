"""What the torch.distributed tests run twice and compare: once in the test process (one process,
``scoresde.distributed.init()`` returns ``World()``) and once under ``torchrun --nproc_per_node=2``
with gloo (``dist_worker.py``). Every job is kept to about a second of work per process.

Each ``run_*`` writes what rank 0 holds to ``out/<job>.pt`` (plain tensors, read back with
``weights_only=True``); training writes its checkpoints to ``out/train/<name>``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from ml_collections import ConfigDict

import scoresde as sd
from scoresde import assets, distributed, experiment
from scoresde.cli.common import ADAPTIVE, IMAGE_ADAPTIVE, run_samplers, sampler_runs
from scoresde.config import default_config
from scoresde.data import ring_mixture, to_pixels
from scoresde.train import train

REPO = Path(__file__).resolve().parents[2]
SAMPLES, SHARD, STEPS, SEED = 3, 2, 2, 7  # 3 digits in shards [0, 2) and [2, 3), one per rank
# The adaptive samplers at loose tolerances (some 10-20 NFE on the digits model), still adaptive.
LOOSE = {"dpm_adaptive": {"rtol": 1.0, "atol": 0.5}, "adaptive_sde": {"eps_rel": 2.0, "eps_abs": 1.0},
         "ode": {"rtol": 1.0, "atol": 1.0}}
TEST_POINTS, CHUNK = 3, 2  # bits/dim of 3 test digits in solves [0, 2) and [2, 3), one per rank
QUIET = {"progress": False, "log": lambda msg: None}


def tiny_config() -> ConfigDict:
    return experiment.load_config_file(REPO / "configs" / "tiny_gmm2d.py")


def train_configs(autoencoder: Path) -> dict[str, ConfigDict]:
    """Three small experiments of a few steps each (a checkpoint half-way), batch 16 or 64 split over
    the ranks:

    * ``dsm``: the tiny 2-D MLP, continuous-time DSM with likelihood weighting and gradient clipping;
    * ``hybrid``: class-conditional (labels of the ring mixture, label dropout 0.3), learned variance,
      improved DDPM's hybrid loss on the discrete DDPM schedule: labels, their dropout, the
      learned-variance channels and the step draws all cross the ranks;
    * ``latent``: DDPM's loss on the latents of a tiny trained autoencoder of the digits.
    """
    dsm = tiny_config()
    dsm.training.steps, dsm.training.ckpt_every = 6, 3
    dsm.training.likelihood_weighting = True

    hybrid = tiny_config()
    hybrid.data.name = "gmm2d"
    hybrid.sde.name = "ddpm"
    hybrid.model.num_classes = 9
    hybrid.model.learned_variance = True
    hybrid.model.time_input = "index"
    hybrid.training.loss = "hybrid"
    hybrid.training.label_dropout = 0.3
    hybrid.training.steps, hybrid.training.ckpt_every = 4, 2

    latent = default_config()
    latent.data.name, latent.data.n = "digits", 64
    latent.latent.autoencoder = str(autoencoder)
    latent.sde.name = "ddpm"
    latent.model.time_input = "index"
    latent.model.network = ConfigDict({"name": "mlp", "dim": 32, "hidden": 32, "layers": 1, "emb_dim": 16})
    latent.training.loss = "ddpm"
    latent.training.batch_size = 16
    latent.training.steps, latent.training.ckpt_every = 4, 2
    configs = {"dsm": dsm, "hybrid": hybrid, "latent": latent}
    for config in configs.values():  # full-size steps from the first, so that every step shows
        config.training.warmup = 0
    return configs


def autoencoder_config() -> ConfigDict:
    """configs/digits_ae.py shrunk to a fraction of a second: 64 digits, 4 channels, 2 steps."""
    config = experiment.load_config_file(REPO / "configs" / "digits_ae.py")
    config.data.n = 64
    config.autoencoder.network.channels = 4
    config.training.steps, config.training.batch_size, config.training.ckpt_every = 2, 16, 2
    return config


def run_training(out: Path, autoencoder: Path) -> None:
    """Each experiment straight through; on several processes the ``dsm`` run stops at its
    half-way checkpoint and resumes from it (every rank from the checkpoint rank 0 wrote)."""
    for name, config in train_configs(autoencoder).items():
        if name == "dsm" and distributed.init().size > 1:
            half = config.copy_and_resolve_references()
            half.training.steps = config.training.ckpt_every
            train(half, out / "train" / name, **QUIET)
        train(config, out / "train" / name, **QUIET)


def digits_model() -> sd.ScoreModel:
    """The shipped digits_vp with its EMA weights, as ``--model_dir=digits_vp`` loads it."""
    path = assets.shipped_model("digits_vp")
    return experiment.load_trained(experiment.config_from_checkpoint(path), path)


def sampler_cases() -> list[tuple[str, str, dict[str, Any], int | None]]:
    """``(label, sampler, options, steps)``: every variant of the registry's table at ``STEPS`` steps,
    the adaptive ones (and the CLI's adaptive ODE solve) on their own steps at the ``LOOSE`` tolerances."""
    cases = []
    for v in [*sd.samplers.variants(), IMAGE_ADAPTIVE]:
        fixed = sd.samplers.get(v.sampler).parse(v.options).uses_grid
        options = dict(v.options) if fixed else {**v.options, **LOOSE[v.sampler]}
        label = v.label if fixed else f"{v.label} (loose)"
        cases.append((label, v.sampler, options, STEPS if fixed else None))
    return cases


def run_sampling(out: Path) -> None:
    world = distributed.init()
    model = digits_model()
    merged = {}
    for i, (label, name, options, steps) in enumerate(sampler_cases()):
        result = distributed.sample_sharded(model, (1, 8, 8), SAMPLES, out / "shards" / str(i),
                                            shard_size=SHARD, seed=SEED, sampler=name, steps=steps,
                                            world=world, **options)
        if world.is_main:
            merged[label] = result.x
            merged[label + "/nfe"] = result.nfe
    if world.is_main:
        torch.save(merged, out / "sampling.pt")


def digits_test_pixels() -> tuple[torch.Tensor, dict[str, Any]]:
    """The first test digits as integer pixels and the bits/dim settings of the digits data."""
    config = experiment.config_from_checkpoint(assets.shipped_model("digits_vp"))
    config.eval.n_test = TEST_POINTS
    x, spec = experiment.load_data(config, "test")
    options = {"data_range": spec.data_range, "levels": spec.levels, "dtype": x.dtype, "trace": "rademacher",
               "rtol": 0.05, "atol": 0.05}
    return to_pixels(x, spec), options


def run_likelihood(out: Path) -> None:
    world = distributed.init()
    pixels, options = digits_test_pixels()
    bpd = distributed.bits_per_dim_sharded(digits_model(), pixels, seed=SEED, batch_size=CHUNK, world=world,
                                           **options)
    if world.is_main:
        torch.save({"bpd": bpd.bpd, "nfe": bpd.likelihood.nfe, "mean": torch.tensor(bpd.mean),
                    "stderr": torch.tensor(bpd.stderr)}, out / "likelihood.pt")


def run_bench(out: Path) -> None:
    """``scoresde bench``'s jobs (four variants at 1 and 2 steps, the adaptive ODE) on the exact score of
    the 2-D ring mixture under the VP SDE against 64 of its points, dealt over the ranks as the bench
    mode deals them."""
    world = distributed.init()
    mixture = ring_mixture()
    model = mixture.score_model(sd.VPSDE())
    reference = mixture.sample(64, generator=torch.Generator().manual_seed(0)).float()
    runs = sampler_runs([1, 2], sd.samplers.variants()[:4], ADAPTIVE)
    rows = distributed.map_shards(
        lambda _, run: run_samplers(model, (64, 2), [run], 1, reference, progress=False)[0][0], runs, world)
    if world.is_main:
        torch.save({"label": [r.label for r in rows], "nfe": torch.tensor([r.nfe for r in rows]),
                    "mmd2": torch.tensor([math.nan if r.mmd2 is None else r.mmd2 for r in rows],
                                         dtype=torch.float64)}, out / "bench.pt")


def run_all(out: Path, autoencoder: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run_training(out, autoencoder)
    run_sampling(out)
    run_likelihood(out)
    run_bench(out)
