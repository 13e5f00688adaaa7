"""diffusers' timestep spacings: the same DDPM step indices as diffusers' DDIMScheduler, and the
constructions by hand (from diffusers' documented formulas) where diffusers is not installed."""

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
