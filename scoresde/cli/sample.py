"""``scoresde sample``: draw --n samples with --sampler at --steps; ``samples.png`` and ``.npz``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from absl import logging

import scoresde as sd
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
    workdir,
)


def main() -> None:
    from scoresde import plots

    wd = workdir()
    model, cfg = load_model()
    name, options = sampler_and_options(cfg, cfg.sampling.sampler)
    if FLAGS.timesteps_file:  # an explicit grid, e.g. an optimised one (sd.optimize_grid)
        if FLAGS.steps is not None:
            raise FlagError("pass either --steps or --timesteps_file, not both")
        timesteps = timesteps_from_file(FLAGS.timesteps_file)
        steps, grid_args = len(timesteps) - 1, {"timesteps": timesteps}
    else:
        steps = steps_for(name, options, cfg.sampling.steps)
        grid_args = {"steps": steps}
    n = FLAGS.n or cfg.sampling.n
    model, cond, cond_text = conditioning(model, cfg, n)
    spec = data_spec(model, cfg)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed(cfg))
    shape = (n, *sample_shape(model, spec))
    out = sd.sample(model, shape, name, cond=cond, generator=generator, progress=True, **grid_args, **options)
    wall = time.perf_counter() - start
    x = out.x.detach().cpu()

    wd.mkdir(parents=True, exist_ok=True)
    what = describe(name, options) + (f", {cond_text}" if cond_text else "")
    title = f"{what}, {steps_text(steps)}: NFE {out.nfe}, {wall:.2f} s"
    arrays: dict[str, Any] = {"x": x.numpy(), "nfe": out.nfe, "wall_s": wall, "sampler": name,
                              "steps": -1 if steps is None else steps, "timesteps": out.timesteps.numpy(),
                              "class": -1 if cond is None else FLAGS["class"].value,
                              "guidance": float("nan") if FLAGS.guidance is None else FLAGS.guidance}
    if spec.is_image:
        px = pixels(x, spec)
        arrays["pixels"] = px.numpy()
        plots.save_image_panels(wd / "samples.png", [plots.ImagePanel(title, px)], spec.levels)
    elif spec.shape == (2,):
        plots.save_scatter_panels(wd / "samples.png", [plots.ScatterPanel(title, x)])
    else:
        logging.warning("no plot for %s data of shape %s; writing samples.npz only", spec.name, spec.shape)
    np.savez(wd / "samples.npz", **arrays)
    print(f"{what}, {steps_text(steps)}, n={n}")
    print(f"NFE {out.nfe}, time {wall:.3f} s ({n / wall:.0f} samples/s)")
    print(f"wrote {wd / 'samples.png'} and {wd / 'samples.npz'}")
