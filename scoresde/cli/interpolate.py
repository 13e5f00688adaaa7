"""``scoresde interpolate``: decode --n_interp slerp (or linear) interpolations between the latents
of pairs of test points; a strip per pair in ``interpolate.png`` (+ ``.npz``)."""

from __future__ import annotations

import time

import numpy as np
import torch
from absl import flags, logging

import scoresde as sd
from scoresde import experiment
from scoresde.cli.common import (
    FLAGS,
    decode,
    encoder_and_options,
    load_model,
    pixels,
    steps_for,
    steps_text,
    test_split,
    workdir,
)

flags.DEFINE_integer("n_interp", 8, "interpolate: latents per path, both ends included.", lower_bound=2)
flags.DEFINE_enum("interpolation", "slerp", ["slerp", "linear"],
                  "interpolate: slerp (keeps Gaussian latents at their typical norm) or linear.")


def main() -> None:
    """Decode interpolations between latents of pairs of test points."""
    from scoresde import plots

    wd = workdir()
    model, cfg = load_model()
    name, options = encoder_and_options()
    steps = steps_for(name, options, cfg.sampling.steps)
    pairs, k = FLAGS.n or 4, FLAGS.n_interp
    x, spec = test_split(cfg, 2 * pairs)

    start = time.perf_counter()
    enc = sd.encode(model, x, name, steps, **options)
    z = enc.x.detach()
    zs = sd.interpolate(z[0::2], z[1::2], k, method=FLAGS.interpolation)  # (k, pairs, ...)
    dec = decode(model, zs.reshape(k * pairs, *z.shape[1:]), name, enc.timesteps, options)
    wall = time.perf_counter() - start
    paths = dec.x.detach().cpu().reshape(k, pairs, *spec.shape)
    ends = torch.stack([x[0::2], x[1::2]])  # (2, pairs, ...)

    wd.mkdir(parents=True, exist_ok=True)
    title = (f"{FLAGS.interpolation} interpolation of {name} latents ({steps_text(steps)}), "
             f"{k} per path; encode NFE {enc.nfe}, decode NFE {dec.nfe}")
    arrays = {"ends": ends.numpy(), "latents": zs.cpu().numpy(), "paths": paths.numpy()}
    if spec.is_image:
        # One row per pair: the first test image, the k decoded latents, the second test image.
        strip = torch.cat([ends[0][None], paths, ends[1][None]]).transpose(0, 1)  # (pairs, k + 2, ...)
        px = pixels(strip.reshape(pairs * (k + 2), *spec.shape), spec)
        arrays["pixels"] = px.numpy()
        panel = plots.ImagePanel(title + "\nfirst and last columns: the test images", px, k + 2)
        plots.save_image_panels(wd / "interpolate.png", [panel], spec.levels,
                                panel_inches=max(1.6, 0.8 * pairs))
    elif spec.shape == (2,):
        background, _ = experiment.load_data(cfg, "train")
        plots.save_path_scatter(wd / "interpolate.png", background, paths, ends,
                                title + "\n(grey: training data; stars: the test points joined)")
    else:
        logging.warning("no plot for %s data of shape %s; writing interpolate.npz only",
                        spec.name, spec.shape)
    np.savez(wd / "interpolate.npz", **arrays)
    print(f"{pairs} pairs of {spec.name} test points, {k} {FLAGS.interpolation} latents per path; "
          f"{name} {steps_text(steps)}: encode NFE {enc.nfe}, decode NFE {dec.nfe}, {wall:.2f} s")
    print(f"wrote {wd / 'interpolate.png'} and {wd / 'interpolate.npz'}")
