"""``scoresde likelihood``: bits/dim (and NLL in nats) of the test split by the PF-ODE.

The split is solved in chunks of ``eval.batch_size`` points; the noise of point ``i`` (its uniform
dequantization, its Hutchinson probes) comes from ``PerSampleNoise(--seed)``'s stream ``i``. Under
``torchrun`` the chunks are dealt over the processes and the per-point values gathered
(:func:`scoresde.distributed.bits_per_dim_sharded`), so the mean and standard error are those of
every point and equal the 1-process values; rank 0 prints and writes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict
from torch import Tensor

import scoresde as sd
from scoresde import distributed
from scoresde.cli.common import (
    FLAGS,
    likelihood_settings,
    load_model,
    split_bits_per_dim,
    test_split,
    to_device,
    workdir,
)
from scoresde.data import DataSpec
from scoresde.errors import InputError


def main() -> None:
    """Mean ± standard error over the test split with the config's ``eval`` settings; integer
    pixels are uniformly dequantized. Writes ``likelihood.npz``. A latent model reports the
    density of its latents instead (:func:`latent_main`)."""
    world = distributed.init()
    wd = workdir()
    model, cfg = load_model()
    to_device(model, world)
    x, spec = test_split(cfg, FLAGS.n)
    if len(x) < 2:
        raise InputError(f"likelihood needs >= 2 test points for a standard error, got {len(x)}")
    if sd.latent.find_latent_model(model) is not None:
        latent_main(model, cfg, x, spec, wd, world)
        return
    start = time.perf_counter()
    bpd = split_bits_per_dim(model, cfg, x, spec, FLAGS.seed or 0, world=world)
    wall = time.perf_counter() - start
    if not world.is_main:
        return
    nats = bpd.bpd * spec.num_dims * math.log(2.0)
    nfe = bpd.likelihood.nfe.double()
    wd.mkdir(parents=True, exist_ok=True)
    np.savez(wd / "likelihood.npz", bpd=bpd.bpd.numpy(), nll_nats=nats.numpy(),
             nfe=bpd.likelihood.nfe.numpy())
    kind = (f"uniformly dequantized {spec.levels}-level pixels on {tuple(spec.data_range)}"
            if spec.is_image else "continuous data")
    print(f"{spec.name} test split, {len(x)} points ({kind}); {likelihood_settings(cfg)}")
    print(f"bits/dim: {bpd.mean:.4f} ± {bpd.stderr:.4f} (mean ± standard error)")
    print(f"NLL: {float(nats.mean()):.4f} ± {float(nats.std() / math.sqrt(len(nats))):.4f} nats per sample")
    print(f"NFE: {float(nfe.mean()):.0f} per solve (batch_size {cfg.eval.batch_size}); time {wall:.2f} s"
          + (f" on {world.size} processes" if world.size > 1 else ""))
    print(f"wrote {wd / 'likelihood.npz'}")


def latent_main(model: sd.DiffusionModel, cfg: ConfigDict, x: Tensor, spec: DataSpec, wd: Path,
                world: distributed.World) -> None:
    """NLL in nats of the latents ``z = to_latent(x)`` of the test split: a latent model has no
    density of the pixels (:mod:`scoresde.latent`), so no bits/dim. Writes ``likelihood.npz``."""
    ev = cfg.eval
    d = math.prod(sd.latent.find_latent_model(model).latent_shape(tuple(spec.shape)))
    start = time.perf_counter()
    ll = distributed.log_likelihood_sharded(model, x.to(world.device), seed=FLAGS.seed or 0,
                                            batch_size=ev.batch_size, world=world, progress=True,
                                            trace=ev.trace, probes=ev.get("probes", 1),
                                            method=ev.get("method", "dopri5"), rtol=ev.rtol, atol=ev.atol)
    wall = time.perf_counter() - start
    if not world.is_main:
        return
    nats = -ll.logp.detach().double()
    wd.mkdir(parents=True, exist_ok=True)
    np.savez(wd / "latent_likelihood.npz", nll_nats=nats.numpy(), nfe=ll.nfe.numpy(), space=ll.space)
    se = float(nats.std() / math.sqrt(len(nats)))
    print(f"{spec.name} test split, {len(x)} points; {likelihood_settings(cfg)}")
    print(f"latent-space NLL: {float(nats.mean()):.4f} ± {se:.4f} nats per sample "
          f"({float(nats.mean()) / d:.4f} nats per latent dimension, d = {d}); the density of the "
          "autoencoder's latents z = to_latent(x), not of the pixels: no bits/dim")
    nfe = float(ll.nfe.double().mean())
    print(f"NFE: {nfe:.0f} per solve (batch_size {ev.batch_size}); time {wall:.2f} s")
    print(f"wrote {wd / 'latent_likelihood.npz'}")
