"""Peers: diffusers' schedulers on the same network, the same schedule and the same start noise.

Optional: everything here needs ``pip install diffusers`` (or ``scoresde[bench]``); the
benchmark skips the peers with a line saying so when it is missing.

Each scheduler is built with ``trained_betas`` = the SDE's own β table (so its
``alphas_cumprod`` is our ᾱ table, in diffusers' float32), ``timestep_spacing="trailing"``
and no sample clipping, then driven by the loop of a diffusers pipeline::

    scheduler.set_timesteps(steps)
    x = x_T · scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = net(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x).prev_sample

where ``net`` is the raw network called with diffusers' timestep ``t`` mapped through the
model's own time input (for a DDPM index-time network, ``t`` itself).

Why ``trailing``: it starts at the last training step (t = 999) as our samplers start at
t = T, and it is what diffusers recommends since Lin et al. (2024); the defaults (``leading``
for DDIM, ``linspace`` for the others) start lower or evaluate the network at t = 0, and
``leading`` with one step evaluates only at t = 0. With trailing spacing and a step count
that divides 1000, DDIM η = 0 visits exactly the times of our uniform-grid ``ddim``, so the two
must agree to float precision (the benchmark reports the difference). ``clip_sample`` (on by
default for DDPM and DDIM) clips x0 to [−1, 1], which is for images and would wreck the
analytic mixtures, so it is off.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from scoresde.model import ScoreModel
from suite.common import Variant

# label -> (scheduler class, config beyond the schedule, NFE per step); Heun's timesteps repeat
# every time but the first, so n steps cost 2n − 1 evaluations.
SCHEDULERS: dict[str, tuple[str, dict[str, Any], int]] = {
    "diffusers DDPM": ("DDPMScheduler", {"variance_type": "fixed_small", "clip_sample": False}, 1),
    "diffusers DDIM": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": True}, 1),
    "diffusers DPM-Solver++(2M)": ("DPMSolverMultistepScheduler",
                                   {"algorithm_type": "dpmsolver++", "solver_order": 2}, 1),
    "diffusers DPM-Solver++(3M)": ("DPMSolverMultistepScheduler",
                                   {"algorithm_type": "dpmsolver++", "solver_order": 3}, 1),
    "diffusers UniPC": ("UniPCMultistepScheduler", {"solver_order": 2}, 1),
    "diffusers Heun": ("HeunDiscreteScheduler", {}, 2),
    "diffusers Euler": ("EulerDiscreteScheduler", {}, 1),
    "diffusers Euler-ancestral": ("EulerAncestralDiscreteScheduler", {}, 1),
}
SPACING = "trailing"


def peer_variants() -> list[Variant]:
    """The schedulers above as benchmark variants (``library="diffusers"``)."""
    return [Variant(label, cls, {**config, "timestep_spacing": SPACING}, library="diffusers",
                    nfe_per_step=per_step, nfe_offset=1 - per_step)
            for label, (cls, config, per_step) in SCHEDULERS.items()]


def make_scheduler(variant: Variant, model: ScoreModel) -> Any:
    """A fresh diffusers scheduler for ``variant`` on ``model``'s discrete β table."""
    import diffusers

    sde = model.sde
    if not hasattr(sde, "discrete_betas"):
        raise ValueError(f"diffusers' schedulers need a VP schedule with a β table, got {sde!r}")
    cls = getattr(diffusers, variant.sampler)
    return cls(num_train_timesteps=sde.N, trained_betas=sde.discrete_betas.numpy(),
               prediction_type="epsilon", **variant.options)


def run_peer(variant: Variant, model: ScoreModel, x_T: Tensor, steps: int,
             generator: torch.Generator) -> tuple[Tensor, int]:
    """Sample with a diffusers scheduler from ``x_T``; returns ``(x_0, NFE)``.

    ``model`` must be an eps-predicting :class:`ScoreModel`; its raw network is called with the
    scheduler's timestep ``t`` encoded by the model's time input at ``t_cont = (t + 1)/N``.
    """
    if model.prediction != "eps":
        raise ValueError(f"the peers are run as epsilon-prediction pipelines, got {model.prediction!r}")
    scheduler = make_scheduler(variant, model)
    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T * scheduler.init_noise_sigma
    nfe = 0
    n = model.sde.N
    # Deterministic schedulers' step() takes no generator (UniPC refuses the keyword).
    noise = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps:
        t_cont = (torch.as_tensor(t, dtype=torch.float64) + 1.0) / n
        c = model.net_time(t_cont.expand(len(x))).to(device=x.device, dtype=x.dtype)
        eps = model.net(scheduler.scale_model_input(x, t), c)
        nfe += 1
        x = scheduler.step(eps, t, x, **noise).prev_sample
    return x, nfe
