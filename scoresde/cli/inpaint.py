"""``scoresde inpaint``: complete masked test points; ``inpaint.png`` (masked, completed, truth) and ``.npz``.

The mask and the method come from the config's ``inpaint`` group (``--config.inpaint.mask=top_half``
and so on): for images ``left_half``, ``right_half``, ``top_half``, ``bottom_half`` (the half that
is *missing*), ``center`` (the middle half of each side missing) or ``random`` (each coordinate
observed with probability ``observed_fraction``, per sample); other data take ``random`` only.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import scoresde as sd
from scoresde.cli.common import FLAGS, load_model, one_steps, pixels, seed, test_split, workdir
from scoresde.data import DataSpec
from scoresde.errors import InputError

IMAGE_MASKS = ("left_half", "right_half", "top_half", "bottom_half", "center")
MASKS = (*IMAGE_MASKS, "random")


def make_mask(name: str, spec: DataSpec, n: int, observed_fraction: float,
              generator: torch.Generator) -> torch.Tensor:
    """The boolean mask (True = observed) of ``n`` samples of ``spec``: ``(1, C, H, W)`` for the
    image masks (one for the batch), ``(n, ...)`` for ``random``."""
    if name not in MASKS:
        raise InputError(f"config inpaint.mask must be one of {', '.join(MASKS)}, got {name!r}")
    if name == "random":
        if not 0.0 < observed_fraction < 1.0:
            raise InputError(f"config inpaint.observed_fraction must lie in (0, 1), "
                             f"got {observed_fraction!r}")
        return torch.rand((n, *spec.shape), generator=generator) < observed_fraction
    if not spec.is_image:
        raise InputError(f"mask {name!r} needs image data; {spec.name!r} has shape {spec.shape}: use random")
    _, h, w = spec.shape
    known = torch.ones((1, *spec.shape), dtype=torch.bool)
    if name == "left_half":
        known[..., : w // 2] = False
    elif name == "right_half":
        known[..., w // 2:] = False
    elif name == "top_half":
        known[..., : h // 2, :] = False
    elif name == "bottom_half":
        known[..., h // 2:, :] = False
    else:
        known[..., h // 4: h - h // 4, w // 4: w - w // 4] = False
    return known


def masked_pixels(x: torch.Tensor, mask: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Integer pixels of images ``x`` with the unobserved ones (``mask`` False) shown mid-grey."""
    shown = pixels(x, spec)
    shown[~mask.expand_as(shown)] = spec.levels // 2
    return shown


def main() -> None:
    from scoresde import plots

    wd = workdir()
    model, cfg = load_model()
    ic = cfg.inpaint
    n = FLAGS.n or ic.n
    steps = one_steps(ic.steps)
    truth, spec = test_split(cfg, n)
    generator = torch.Generator().manual_seed(seed(cfg))
    mask = make_mask(ic.mask, spec, len(truth), ic.observed_fraction, generator)
    repaint = {"jump_length": ic.jump_length, "n_resample": ic.n_resample} if ic.method == "repaint" else {}
    start = time.perf_counter()
    out = sd.inpaint(model, truth, mask, method=ic.method, steps=steps, generator=generator, **repaint)
    wall = time.perf_counter() - start
    x = out.x.detach().cpu()
    missing = ~mask.expand_as(truth)
    mse = float((x - truth)[missing].pow(2).mean())

    wd.mkdir(parents=True, exist_ok=True)
    how = f"{ic.method}" + (f" j={ic.jump_length} r={ic.n_resample}" if repaint else "")
    arrays = {"x": x.numpy(), "truth": truth.numpy(), "mask": mask.numpy(), "nfe": out.nfe, "wall_s": wall,
              "method": ic.method, "steps": steps}
    if spec.is_image:
        panels = [plots.ImagePanel(f"masked inputs ({ic.mask} missing)", masked_pixels(truth, mask, spec)),
                  plots.ImagePanel(f"{how}, {steps} steps: NFE {out.nfe}", pixels(x, spec)),
                  plots.ImagePanel("truth", pixels(truth, spec))]
        plots.save_image_panels(wd / "inpaint.png", panels, spec.levels,
                                f"inpainting {len(truth)} test images; MSE on the missing pixels {mse:.4f}")
    np.savez(wd / "inpaint.npz", **arrays)
    print(f"inpaint {how}, {steps} steps, mask {ic.mask}, n={len(truth)}")
    print(f"NFE {out.nfe}, time {wall:.3f} s; MSE on the missing coordinates {mse:.5f}")
    print(f"wrote {wd / 'inpaint.npz'}" + (f" and {wd / 'inpaint.png'}" if spec.is_image else ""))
