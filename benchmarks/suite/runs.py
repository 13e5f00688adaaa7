"""One timed sampling run of any variant — ours through :func:`scoresde.sample`, a peer through
its diffusers loop or k-diffusion's sampler — from a given start noise."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

import scoresde as sd
from scoresde.model import ScoreModel
from suite import kdiffusion
from suite.common import Variant, cheap_model, ddpm_sde, steps_for_nfe, timed
from suite.peers import run_peer


@dataclass(frozen=True)
class Run:
    """Samples, the exact NFE spent, the step count asked for (``None``: adaptive) and wall time."""

    x: Tensor
    nfe: int
    steps: int | None
    wall_s: float


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for ``precision="bf16"``; a no-op context for ``"fp32"``."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def run_variant(variant: Variant, model: ScoreModel, x_T: Tensor, target: int | None, seed: int,
                precision: str = "fp32", steps: int | None = None) -> Run | None:
    """Sample ``len(x_T)`` points with ``variant`` at about ``target`` NFE (or exactly ``steps``
    steps when given; adaptive variants ignore both) starting from ``x_T``, the sampler's noise
    drawn from a generator seeded with ``seed`` on ``x_T``'s device, under ``precision``
    (``"fp32"`` or ``"bf16"`` autocast). ``None`` when the variant cannot reach ``target``."""
    device = x_T.device
    if variant.adaptive:
        steps = None
    elif steps is None:
        steps = steps_for_nfe(variant, target)
        if steps is None:
            return None
    generator = torch.Generator(device).manual_seed(seed)

    def draw() -> tuple[Tensor, int]:
        with torch.no_grad(), autocast(device, precision):
            if variant.library == "diffusers":
                return run_peer(variant, model, x_T, steps, generator)
            if variant.library == "k-diffusion":
                timesteps = sd.grids.make_grid(variant.grid, model.sde, steps)
                extra = ({"noise_sampler": kdiffusion.noise_sampler(generator, x_T)}
                         if variant.sampler in kdiffusion.STOCHASTIC else {})
                return kdiffusion.run(variant.sampler, model, x_T, timesteps, **variant.options, **extra)
            out = sd.sample(model, tuple(x_T.shape), variant.sampler, steps, x_T=x_T,
                            generator=generator, device=device, **variant.sample_kwargs(),
                            **variant.options)
            return out.x, out.nfe

    (x, nfe), wall = timed(draw, device)
    return Run(x=x, nfe=nfe, steps=steps, wall_s=wall)


def warm_up(variants: list[Variant], device: torch.device) -> None:
    """Run every variant once on a tiny cheap problem, so that first-call costs (imports, lazy
    initialisation, kernel selection) stay out of the timings. At least 2 NFE: k-diffusion's
    DPM++(2M) SDE fails on a one-step grid (``h`` unbound in its loop)."""
    model = cheap_model(ddpm_sde())
    x_T = torch.randn(2, 2, generator=torch.Generator().manual_seed(0)).to(device)
    for variant in variants:
        target = None if variant.adaptive else next(
            t for t in range(2, 10) if steps_for_nfe(variant, t) is not None)
        run_variant(variant, model, x_T, target, seed=0)
