"""``scoresde reconstruct``: encode a test batch to latents with a deterministic sampler (ddim by
default) and decode it back; originals and reconstructions side by side in ``reconstruct.png``
(+ ``.npz``), and the per-dimension MSE."""

from __future__ import annotations

import time

import numpy as np
from absl import logging

import scoresde as sd
from scoresde.cli.common import (
    FLAGS,
    decode,
    describe,
    encoder_and_options,
    load_model,
    pixels,
    steps_for,
    steps_text,
    test_split,
    workdir,
)


def main() -> None:
    """Encode → decode test points; PNG side by side and MSE."""
    from scoresde import plots

    wd = workdir()
    model, cfg = load_model()
    name, options = encoder_and_options()
    steps = steps_for(name, options, cfg.sampling.steps)
    x, spec = test_split(cfg, FLAGS.n or 64)

    start = time.perf_counter()
    enc = sd.encode(model, x, name, steps, **options)
    t_enc = time.perf_counter() - start
    start = time.perf_counter()
    dec = decode(model, enc.x, name, enc.timesteps, options)
    t_dec = time.perf_counter() - start
    x_rec = dec.x.detach().cpu()
    err = (x_rec - x).pow(2).flatten(1).mean(1)
    mse = float(err.mean())

    wd.mkdir(parents=True, exist_ok=True)
    title = (f"{describe(name, options)}, {steps_text(steps)}: encode NFE {enc.nfe}, "
             f"decode NFE {dec.nfe}; per-dim MSE {mse:.2e}")
    arrays = {"x": x.numpy(), "z": enc.x.detach().cpu().numpy(), "x_rec": x_rec.numpy(), "mse": err.numpy()}
    lines = [f"{describe(name, options)}, {steps_text(steps)}, "
             f"{len(x)} test points of {spec.name}",
             f"encode: NFE {enc.nfe}, {t_enc:.2f} s; decode: NFE {dec.nfe}, {t_dec:.2f} s",
             f"per-dimension MSE: {mse:.4e} (model's data scale)"]
    if spec.is_image:
        lo, hi = spec.data_range
        lines[-1] += f"; {mse / (hi - lo) ** 2:.4e} on the [0, 1] pixel scale"
        px, px_rec = pixels(x, spec), pixels(x_rec, spec)
        arrays["pixels"], arrays["pixels_rec"] = px.numpy(), px_rec.numpy()
        lines.append(f"pixels changed after quantizing: {float((px != px_rec).double().mean()):.2%}")
        plots.save_image_panels(wd / "reconstruct.png",
                                [plots.ImagePanel("originals (test split)", px),
                                 plots.ImagePanel("reconstructions", px_rec)], spec.levels, title)
    elif spec.shape == (2,):
        plots.save_pair_scatter(wd / "reconstruct.png", x, x_rec, title)
    else:
        logging.warning("no plot for %s data of shape %s; writing reconstruct.npz only",
                        spec.name, spec.shape)
    np.savez(wd / "reconstruct.npz", **arrays)
    print("\n".join(lines))
    print(f"wrote {wd / 'reconstruct.png'} and {wd / 'reconstruct.npz'}")
