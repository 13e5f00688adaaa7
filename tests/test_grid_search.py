"""``sd.optimize_grid`` (GITS-style time-grid search) on the narrow 2-D ring oracle.

* the grid is valid (strictly decreasing, float64, ``steps + 1`` times, the right ends);
* on held-out prior draws (not the ones the grid was fitted to) ddim's error against the
  independent DOP853 PF-ODE solution (tests/oracles.py, rtol = atol = 1e-12) is lower with the
  optimised grid than with each fixed grid (uniform, quadratic, logsnr, karras) at NFE 5 and 10;
  the MMD² of the samples to exact mixture draws is printed, not asserted;
* the dynamic programme equals brute-force enumeration on small random cost matrices;
* the NFE → steps rule and bad input.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from oracles import pf_reference

import scoresde as sd
from scoresde import grid_search as gs
from scoresde.data import ring_mixture
from scoresde.metrics import mmd2

F64 = torch.float64
FIXED = ("uniform", "quadratic", "logsnr", "karras")


@pytest.fixture(scope="module")
def ring():
    """VP-SDE, the 8-mode ring (radius 1, std 0.05) with its exact eps oracle, and a reference
    of 64 fitting draws on 100 candidates (seed 0)."""
    sde = sd.VPSDE()
    gmm = ring_mixture(modes=8, radius=1.0, std=0.05, center=False)
    model = gmm.score_model(sde, prediction="eps")
    ref = gs.grid_reference(model, shape=(2,), generator=torch.Generator().manual_seed(0), n_ref=64,
                            candidates=100, reference_steps=2, t_end=0.0)
    return sde, gmm, model, ref


@pytest.fixture(scope="module")
def held_out(ring):
    sde, gmm, _, _ = ring
    x_T = sde.prior_std * torch.randn(128, 2, generator=torch.Generator().manual_seed(123), dtype=F64)
    return x_T, pf_reference(sde, gmm, x_T, 0.0)


def test_reference_agrees_with_dop853(ring, held_out):
    """The grid search's own RK4 reference (2 steps per candidate interval, last step Tweedie from
    t = 1e-3) is close to DOP853 at 1e-12: RMS 1.5e-3, well below the samplers' errors at NFE
    ≤ 10 (> 2e-2), so it can serve as the fitting target."""
    _, _, model, _ = ring
    x_T, truth = held_out
    own = gs.grid_reference(model, shape=(2,), generator=None, n_ref=128, candidates=100, t_end=0.0,
                            x_T=x_T, propagate=False)
    assert (own.states[-1] - truth).square().sum(1).mean().sqrt() < 5e-3


@pytest.mark.parametrize("nfe", [5, 10])
def test_optimised_grid_beats_every_fixed_grid_on_held_out_draws(ring, held_out, nfe, capsys):
    sde, gmm, model, ref = ring
    x_T, truth = held_out
    grid = sd.optimize_grid(model, "ddim", nfe, reference=ref)
    # valid: float64, strictly decreasing, nfe steps for ddim, from T to ddim's t_end = 0
    assert grid.dtype == F64 and len(grid) == nfe + 1
    assert (grid[1:] < grid[:-1]).all() and grid[0] == sde.T and grid[-1] == 0.0

    def run(ts):
        out = sd.sample(model, (len(x_T), 2), "ddim", timesteps=ts, x_T=x_T)
        assert out.nfe == nfe
        return out.x, float((out.x - truth).square().sum(1).mean().sqrt())

    x_opt, e_opt = run(grid)
    fixed = {name: run(sd.grids.make_grid(name, sde, nfe, None, 0.0)) for name in FIXED}
    exact = gmm.sample(2000, generator=torch.Generator().manual_seed(7))
    with capsys.disabled():
        best = min(fixed, key=lambda k: fixed[k][1])
        print(f"\nddim NFE {nfe}: RMS error vs PF-ODE optimised {e_opt:.4g}, "
              + ", ".join(f"{k} {v[1]:.4g}" for k, v in fixed.items())
              + f"; ratio to best fixed ({best}) {e_opt / fixed[best][1]:.3f}; MMD² optimised "
              f"{mmd2(x_opt, exact):.3g}, "
              + ", ".join(f"{k} {mmd2(v[0], exact):.3g}" for k, v in fixed.items()))
    for name, (_, e) in fixed.items():
        assert e_opt < e, (name, e_opt, e)


def _brute_force(cost: torch.Tensor, steps: int) -> float:
    n = cost.shape[0] - 1
    best = float("inf")
    for inner in itertools.combinations(range(1, n), steps - 1):
        path = (0, *inner, n)
        best = min(best, sum(float(cost[a, b]) for a, b in itertools.pairwise(path)))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_dynamic_programme_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(8, 8, generator=g, dtype=F64)
    for steps in range(1, 8):
        path = gs.best_path(cost, steps)
        assert path[0] == 0 and path[-1] == 7 and len(path) == steps + 1
        assert all(a < b for a, b in itertools.pairwise(path))
        total = sum(float(cost[a, b]) for a, b in itertools.pairwise(path))
        assert total == pytest.approx(_brute_force(cost, steps), rel=1e-12)


def test_steps_follow_each_samplers_nfe_rule():
    sde = sd.VPSDE()
    for name, options, nfe, steps in [("ddim", {}, 7, 7), ("dpm_solver", {}, 7, 7), ("unipc", {}, 7, 7),
                                      ("ode", {"method": "heun"}, 7, 4), ("ode", {"method": "rk4"}, 9, 3),
                                      ("edm", {}, 9, 5)]:
        spec = sd.samplers.get(name)
        assert gs.steps_for_nfe(spec, spec.parse(options), sde, nfe, 1.0, 0.0) == steps, name
    spec = sd.samplers.get("ode")
    assert gs.steps_for_nfe(spec, spec.parse({"method": "heun"}), sde, 8, 1.0, 1e-3) == 4  # σ̄(t_end) > 0
    with pytest.raises(ValueError, match="nfe must be one of 1, 3, 5"):
        gs.steps_for_nfe(spec, spec.parse({"method": "heun"}), sde, 8, 1.0, 0.0)


def test_optimise_heun_grid_end_to_end():
    """A Heun grid (2 calls per step, Euler into σ̄ = 0) from scratch, with the ``ode`` sampler's
    own t_end = 0: 9 NFE = 5 steps."""
    sde = sd.VPSDE()
    model = ring_mixture(modes=8, radius=1.0, std=0.05, center=False).score_model(sde)
    grid = sd.optimize_grid(model, "ode", 9, shape=(2,), generator=torch.Generator().manual_seed(1),
                            n_ref=8, candidates=12, reference_steps=1, method="heun")
    assert len(grid) == 6 and grid[0] == 1.0 and grid[-1] == 0.0
    assert sd.sample(model, (4, 2), "ode", timesteps=grid, generator=torch.Generator(), method="heun",
                     denoise=False).nfe == 9


def test_bad_input(ring):
    _, _, model, ref = ring
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="deterministic sampler"):
        sd.optimize_grid(model, "ddim", 5, reference=ref, eta=0.5)
    with pytest.raises(ValueError, match="deterministic sampler"):
        sd.optimize_grid(model, "euler_ancestral", 5, reference=ref)
    with pytest.raises(ValueError, match="adaptive"):
        sd.optimize_grid(model, "ode", 5, reference=ref, method="dopri5")
    with pytest.raises(ValueError, match="no option 'etta'"):
        sd.optimize_grid(model, "ddim", 5, reference=ref, etta=0.0)
    with pytest.raises(ValueError, match="nfe must be an integer >= 1"):
        sd.optimize_grid(model, "ddim", 0, reference=ref)
    with pytest.raises(ValueError, match="only 100 candidate intervals"):
        sd.optimize_grid(model, "ddim", 101, reference=ref)
    with pytest.raises(ValueError, match="pass either reference or n_ref"):
        sd.optimize_grid(model, "ddim", 5, reference=ref, n_ref=4)
    with pytest.raises(ValueError, match="generator"):
        sd.optimize_grid(model, "ddim", 5, shape=(2,))
    with pytest.raises(ValueError, match="shape"):
        sd.optimize_grid(model, "ddim", 5, generator=g)
    with pytest.raises(ValueError, match="cost must be"):
        sd.optimize_grid(model, "ddim", 5, reference=ref, cost="global")
    with pytest.raises(ValueError, match="power must be"):
        sd.optimize_grid(model, "ddim", 5, reference=ref, power=0)
    with pytest.raises(ValueError, match="need 0 <= t_end < t_start"):
        sd.optimize_grid(model, "ddim", 5, shape=(2,), generator=g, t_start=0.5, t_end=0.6)
    with pytest.raises(ValueError, match="candidates must be an integer >= 2"):
        sd.optimize_grid(model, "ddim", 1, shape=(2,), generator=g, candidates=1)
    with pytest.raises(ValueError, match="steps must be an integer in"):
        gs.best_path(torch.zeros(4, 4, dtype=F64), 4)


def test_shipped_digits_grids_are_valid_and_bad_names_are_refused():
    """Every shipped digits grid is a valid sampling grid with the NFE its key says (one call per
    step for ddim, dpm_solver and unipc); an unknown sampler or NFE names what is available."""
    from scoresde import assets
    from scoresde.experiment import load_trained

    sde = load_trained(None, assets.shipped_model("digits_vp")).sde
    for sampler in ("ddim", "dpm_solver", "unipc"):
        for nfe in (5, 10, 20):
            grid = sd.grids.check_timesteps(assets.digits_grid(sampler, nfe), sde)
            assert len(grid) == nfe + 1 and grid[0] == sde.T
    with pytest.raises(ValueError, match="available: ddim"):
        assets.digits_grid("pc", 10)
    with pytest.raises(ValueError, match="available: 5"):
        assets.digits_grid("ddim", 7)
