"""``scoresde sample``: draw --n samples with --sampler at --steps; ``samples.png`` and ``.npz``.

The draws are made in shards of --shard_size samples (:func:`scoresde.distributed.sample_sharded`):
shard ``[a, b)`` is one batch with ``PerSampleNoise(seed, offset=a)``, written atomically to
``WORKDIR/shards/<run>/`` (``<run>`` a hash of the model's weights and everything that changes a
sample), then merged in sample order into ``samples.npz``, after which the shards are deleted. A
killed run, started again with the same flags, computes the missing shards only. Under ``torchrun``
the shards are dealt over the processes and rank 0 merges; the samples are the same, bit for bit,
for any number of processes (also on resuming with another number).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import numpy as np
import torch
from absl import logging

import scoresde as sd
from scoresde import checkpoint, distributed, experiment
from scoresde.cli.common import (
    FLAGS,
    FlagError,
    conditioning,
    data_spec,
    describe,
    load_model,
    pixels,
    sample_shape,
    sampler_and_options,
    seed,
    steps_for,
    steps_text,
    timesteps_from_file,
    to_device,
    workdir,
)
from scoresde.errors import InputError
from scoresde.grids import check_timesteps

# At most this many images go into samples.png (all of them into samples.npz).
PLOTTED = 256


def main() -> None:
    from scoresde import plots

    world = distributed.init()
    wd = workdir()
    loaded, cfg = load_model()
    to_device(loaded, world)
    name, options = sampler_and_options(cfg, cfg.sampling.sampler)
    if FLAGS.timesteps_file:  # an explicit grid, e.g. an optimised one (sd.optimize_grid)
        if FLAGS.steps is not None:
            raise FlagError("pass either --steps or --timesteps_file, not both")
        try:  # before any work
            timesteps = check_timesteps(timesteps_from_file(FLAGS.timesteps_file), loaded.sde)
        except FlagError:
            raise
        except InputError as e:
            raise FlagError(f"--timesteps_file={FLAGS.timesteps_file}: {e}") from e
        steps, grid_args = len(timesteps) - 1, {"timesteps": timesteps}
    else:
        steps = steps_for(name, options, cfg.sampling.steps)
        grid_args = {"steps": steps}
    n = FLAGS.n or cfg.sampling.n
    model, cond, cond_text = conditioning(loaded, cfg, n)
    cond = None if cond is None else cond.to(world.device)
    spec = data_spec(model, cfg)
    shape = sample_shape(model, spec)
    run = run_description(loaded, cfg, name, options, grid_args, seed(cfg), shape)
    folder = distributed.run_folder(wd / "shards", run)
    if world.is_main:
        checkpoint.atomic_write(folder / "run.json", lambda f: f.write(json.dumps(run, indent=1).encode()))
    start = time.perf_counter()
    out = distributed.sample_sharded(model, shape, n, folder, shard_size=FLAGS.shard_size, seed=seed(cfg),
                                     sampler=name, cond=cond, world=world, progress=True, **grid_args,
                                     **options)
    wall = time.perf_counter() - start
    if out is None:  # ranks >= 1: rank 0 merges and writes
        return
    x, nfe = out.x, int(out.nfe.max())

    what = describe(name, options) + (f", {cond_text}" if cond_text else "")
    title = f"{what}, {steps_text(steps)}: NFE {nfe}, {wall:.2f} s"
    arrays: dict[str, Any] = {"x": x.numpy(), "nfe": nfe, "wall_s": wall, "sampler": name,
                              "steps": -1 if steps is None else steps, "timesteps": out.timesteps.numpy(),
                              "class": -1 if cond is None else FLAGS["class"].value,
                              "guidance": float("nan") if FLAGS.guidance is None else FLAGS.guidance,
                              "seed": seed(cfg), "shard_size": FLAGS.shard_size,
                              "shard_start": out.starts.numpy(), "shard_nfe": out.nfe.numpy(),
                              "shard_wall_s": out.wall_s.numpy()}
    if spec.is_image:
        px = pixels(x, spec)
        arrays["pixels"] = px.numpy()
        shown = f" (the first {PLOTTED} of {n})" if n > PLOTTED else ""
        panel = plots.ImagePanel(title + shown, px[:PLOTTED])
        plots.save_image_panels(wd / "samples.png", [panel], spec.levels)
    elif spec.shape == (2,):
        plots.save_scatter_panels(wd / "samples.png", [plots.ScatterPanel(title, x)])
    else:
        logging.warning("no plot for %s data of shape %s; writing samples.npz only", spec.name, spec.shape)
    checkpoint.atomic_write(wd / "samples.npz", lambda f: np.savez(f, **arrays))
    distributed.remove_shards(folder)
    with contextlib.suppress(OSError):  # the shards/ folder, once no other run's shards are left
        folder.parent.rmdir()
    shards = len(out.starts)
    print(f"{what}, {steps_text(steps)}, n={n}")
    per_batch = f" per batch (shards of {FLAGS.shard_size})" if shards > 1 else ""
    print(f"NFE {nfe}{per_batch}, time {wall:.3f} s ({n / wall:.0f} samples/s)")
    if shards > 1 or out.computed < shards:
        print(f"{shards} shards: {shards - out.computed} found in {folder}, {out.computed} drawn by "
              f"{world.size} process{'es' if world.size > 1 else ''}")
    print(f"wrote {wd / 'samples.png'} and {wd / 'samples.npz'}")


def run_description(model: sd.DiffusionModel, cfg: Any, name: str, options: dict[str, Any],
                    grid_args: dict[str, Any], noise_seed: int, shape: tuple[int, ...]) -> dict[str, Any]:
    """Everything that changes a sample of this run (but not ``n``): the weights' digest, the
    model's identity, the sampler, its options and grid, the condition, the seed, the shard size and
    the sample shape; its hash names the shard folder (:func:`scoresde.distributed.run_folder`)."""
    latent = sd.latent.find_latent_model(model)
    grid = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in grid_args.items()}
    return {"weights": distributed.state_digest(model), "identity": experiment.identity(cfg),
            "latent": None if latent is None else [latent.scale_factor, latent.shift_factor],
            "sampler": name, "options": options, "grid": grid, "class": FLAGS["class"].value,
            "guidance": FLAGS.guidance, "guidance_interval": FLAGS.guidance_interval, "seed": noise_seed,
            "shard_size": FLAGS.shard_size, "shape": list(shape)}
