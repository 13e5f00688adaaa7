"""Named grids against their references: diffusers' timestep spacings (the same DDPM step
indices as diffusers' DDIMScheduler, and the constructions by hand from diffusers' documented
formulas where diffusers is not installed), and the floored ``edm``/``dpm`` grids (k-diffusion's
Karras sigmas; equal steps to the smallest trained time)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scoresde as sd

DDPM = sd.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 50, 999, 1000])
def test_spacings_equal_diffusers_ddim_scheduler(spacing, steps):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    expected = sd.grids.from_indices(torch.as_tensor(np.asarray(scheduler.timesteps)), 1000)
    assert torch.equal(sd.grids.make_grid(spacing, DDPM, steps), expected)


def test_spacings_by_hand():
    def indices(name):
        return (sd.grids.make_grid(name, DDPM, 7)[:-1] * 1000 - 1).round().long().tolist()

    assert indices("leading") == [852, 710, 568, 426, 284, 142, 0]
    assert indices("trailing") == [999, 856, 713, 570, 428, 285, 142]
    assert indices("linspace") == [999, 832, 666, 500, 333, 166, 0]
    assert sd.grids.make_grid("trailing", DDPM, 7, t_end=1e-3)[-1] == 1e-3


def test_spacings_bad_input():
    with pytest.raises(ValueError, match="the 'leading' grid needs a discrete-time SDE"):
        sd.grids.make_grid("leading", sd.VPSDE(N=None), 10)
    with pytest.raises(ValueError, match="t_start must be T"):
        sd.grids.make_grid("trailing", DDPM, 10, t_start=0.5)
    with pytest.raises(ValueError, match="at most N=1000 steps"):
        sd.grids.make_grid("linspace", DDPM, 1001)
    with pytest.raises(ValueError, match="not above t_end"):
        sd.grids.make_grid("leading", DDPM, 10, t_end=0.5)


@pytest.mark.parametrize("steps", [1, 2, 5, 10, 40])
def test_edm_grid_equals_k_diffusion_karras_sigmas(steps):
    """On DDPM's table, ``edm`` is k-diffusion's ``get_sigmas_karras(n, σ̄(1/N), σ̄(T))`` with its
    appended zero. k-diffusion builds the ramp ``σ^{1/ρ}`` in float32 (unit roundoff 6e-8) and
    raises it to ρ = 7, which multiplies relative errors by 7: a few roundings give ~1e-6, so the
    bar is 5e-6 relative (a wrong end or exponent is off by > 1e-2)."""
    kd = pytest.importorskip("suite.kdiffusion")
    sde = DDPM
    ours = sde.sigma_bar(sd.grids.make_grid("edm", sde, steps))
    sigma_min = float(sde.sigma_bar(torch.tensor(1 / 1000, dtype=torch.float64)))
    theirs = kd.sampling().get_sigmas_karras(steps, sigma_min, float(sde.sigma_bar(1.0))).double()
    torch.testing.assert_close(ours, theirs, rtol=5e-6, atol=0)


@pytest.mark.parametrize("name", ["edm", "dpm"])
@pytest.mark.parametrize("make_sde", [lambda: DDPM, sd.VPSDE, sd.VESDE,
                                      lambda: sd.VPSDE(N=None)])
def test_floored_grids_stop_at_the_smallest_trained_time(name, make_sde):
    """``edm``/``dpm``: equal steps in σ̄^{1/7} / λ from T to ``t_min`` (1/N, or 1e-3 without N),
    then one step to ``t_end = 0``; with ``t_end ≥ t_min`` they are ``karras``/``logsnr``."""
    sde = make_sde()
    t_min = 1 / sde.N if sde.N else 1e-3
    ts = sd.grids.make_grid(name, sde, 8)
    assert len(ts) == 9 and ts[0] == sde.T and ts[-1] == 0
    torch.testing.assert_close(ts[-2], torch.tensor(t_min, dtype=torch.float64), rtol=1e-9, atol=0)
    level = (sde.sigma_bar(ts[:-1]) ** (1 / 7) if name == "edm" else sde.log_snr(ts[:-1]))
    steps = level[1:] - level[:-1]
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-7, atol=0)
    plain = {"edm": "karras", "dpm": "logsnr"}[name]
    torch.testing.assert_close(sd.grids.make_grid(name, sde, 8, t_end=0.01),
                               sd.grids.make_grid(plain, sde, 8, t_end=0.01))
