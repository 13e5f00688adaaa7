"""Every sampler converges to the analytic mixture as steps grow; ODE solvers show their order.

Distribution checks use the unbiased MMD² (``scoresde.metrics.mmd2``) between n = 2000 sampler
outputs and n = 2000 fresh exact draws. Its value under equal distributions fluctuates around 0;
the *sampling-noise floor* is estimated from independent pairs of exact sample sets (see
``noise_floor``), so "converged" means "indistinguishable from exact samples at this n".

Order checks integrate the PF-ODE from a fixed x_T with explicit uniform-in-t grids ending at
t_end = 1e-2 > 0 (the field dx̄/dσ̄ = ε is smooth there and t ↦ σ̄ is a smooth map, so a uniform
grid in t is a smooth non-uniform grid in σ̄) and compare against a reference solved
independently in the original variables with scipy's DOP853 at rtol = atol = 1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracles import ORDER_T_END, order_problem

import scoresde as sd
from scoresde.metrics import mmd2

F64 = torch.float64
N = 2000

MEANS = torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
# Moderately narrow, unequal modes (std 0.08–0.15 at distance ~2): a sampler must get the mode
# weights and the mode widths right; MMD's smallest bandwidth (0.1) resolves the widths.
STDS = torch.tensor([0.1, 0.15, 0.08], dtype=F64)
MIX = sd.GaussianMixture(MEANS, STDS, WEIGHTS)

SDES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}


@pytest.fixture(scope="module")
def noise_floor() -> float:
    """mean + 4 sd of MMD² between 16 independent pairs of exact n-sample sets.

    A sampler whose output is distributed exactly as the data gives an MMD² with this same
    null distribution (it is compared with fresh exact draws of the same size), so it exceeds
    mean + 4 sd only in the far tail. 16 replicates pin the sd to about ±20 %, which the 4-sd
    margin absorbs; the null spread is ~1e-3 at n = 2000 while a 2-step sampler sits at 0.3–3.
    """
    g = torch.Generator().manual_seed(20240601)
    vals = torch.tensor([mmd2(MIX.sample(N, g, F64), MIX.sample(N, g, F64)) for _ in range(16)])
    # The estimator is unbiased: the replicate mean sits within a few standard errors of 0.
    assert abs(vals.mean()) < 4 * vals.std() / math.sqrt(len(vals)) + 1e-4
    return float(vals.mean() + 4 * vals.std())


def target(sde, t_end: float, denoise: bool) -> sd.GaussianMixture:
    """The law a converged sampler draws from: p_{t_end} (VE keeps sigma_min of noise at t = 0);
    with the final Tweedie step, p_0 itself.

    (Tweedie's E[x_0 | x_{t_end}] is slightly narrower than p_0: its per-mode std is
    s²/sqrt(s² + sigma²) ≈ s·(1 − sigma²/2s²), a 0.8 % shrink for s = 0.08 at sigma = 0.01 —
    an MMD² change of order 1e-5, two orders below the noise floor.)
    """
    if denoise:
        return MIX
    t = torch.tensor(t_end, dtype=F64)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    return sd.GaussianMixture(alpha * MEANS, torch.sqrt(alpha**2 * STDS**2 + sigma**2), WEIGHTS)


# (sampler, options, largest step count). Stochastic samplers are first order in the step (weak
# order 1): at 100 steps the narrow modes still show (MMD² ~ 1e-2 for DDPM-posterior on VP), so
# they run 1000 steps. The ODE samplers (2nd/4th order, Karras grid) are at the floor by 100.
CONFIGS = [
    ("ancestral", {"variance": "posterior"}, 1000),
    ("ancestral", {"variance": "beta"}, 1000),
    ("ddim", {"eta": 0.0}, 1000),
    ("ddim", {"eta": 1.0}, 1000),
    ("pc", {}, 1000),  # reverse_diffusion + langevin, score_sde's default
    ("pc", {"predictor": "euler_maruyama", "corrector": "none"}, 1000),
    ("pc", {"predictor": "ancestral", "corrector": "annealed_langevin"}, 1000),
    ("ode", {"method": "heun"}, 100),
    ("ode", {"method": "rk4"}, 100),
]


def _id(cfg) -> str:
    name, options, _ = cfg
    return "-".join([name, *(str(v) for v in options.values())])


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("cfg", CONFIGS, ids=[_id(c) for c in CONFIGS])
def test_sampler_converges_to_the_mixture(cfg, sde_name, noise_floor):
    sampler, options, high = cfg
    sde = SDES[sde_name]()
    model = MIX.score_model(sde, prediction="eps")
    ref_gen = torch.Generator().manual_seed(99)
    dist = {}
    for steps in (2, 10, high):
        out = sd.sample(model, (N, 2), sampler, steps, dtype=F64,
                        generator=torch.Generator().manual_seed(1000 + steps), **options)
        spec = sd.samplers.get(sampler)
        t_end = float(out.timesteps[-1])
        assert t_end == spec.t_end
        exact = target(sde, t_end, spec.denoise).sample(N, ref_gen, F64)
        dist[steps] = mmd2(out.x, exact)
    # Converged: indistinguishable from exact samples at n = 2000 ...
    assert dist[high] < noise_floor, (dist, noise_floor)
    # ... and the test can tell: 2 steps are far off (≥ 10× the floor), and the distance falls.
    assert dist[2] > 10 * noise_floor, (dist, noise_floor)
    assert dist[10] < dist[2], dist


@pytest.mark.parametrize("sde_name", list(SDES))
def test_adaptive_ode_sampler_converges(sde_name, noise_floor):
    sde = SDES[sde_name]()
    model = MIX.score_model(sde, prediction="eps")
    out = sd.sample(model, (N, 2), "ode", method="dopri5", rtol=1e-5, atol=1e-5, dtype=F64,
                    generator=torch.Generator().manual_seed(5))
    exact = MIX.sample(N, torch.Generator().manual_seed(6), F64)
    assert mmd2(out.x, exact) < noise_floor
    # The tolerance drives the work: a loose one takes fewer evaluations.
    rough = sd.sample(model, (N, 2), "ode", method="dopri5", rtol=1.0, atol=1.0, dtype=F64,
                      generator=torch.Generator().manual_seed(5))
    assert rough.nfe < out.nfe


@pytest.mark.parametrize("wrong", [
    sd.GaussianMixture(MEANS, STDS, torch.tensor([0.4, 0.4, 0.2])),  # weights off by 0.1
    sd.GaussianMixture(MEANS, STDS * 1.5, WEIGHTS),  # modes 50 % too wide
    sd.GaussianMixture(MEANS + 0.05, STDS, WEIGHTS),  # modes shifted by 0.05 (half a std)
], ids=["weights", "widths", "shift"])
def test_noise_floor_is_tight_enough_to_catch_a_wrong_mixture(wrong, noise_floor):
    """What "at the floor" rules out at n = 2000 (measured over seeds, these give MMD² 2.5–15× the
    floor; smaller errors — weights off by 0.05, widths by 20 % — are within the noise)."""
    g = torch.Generator().manual_seed(7)
    assert mmd2(wrong.sample(N, g, F64), MIX.sample(N, g, F64)) > noise_floor


# --- order of convergence of the fixed-step ODE solvers ------------------------------------------
# Wider modes here (std 0.32–0.48): with the narrow ones above, trajectories that start near a
# boundary between modes need ≥ 128 Euler steps before the error is in the asymptotic regime.
# (N, 2N) per method: the smallest N at which log2(e_N/e_2N) is within a few hundredths of the
# order for all three SDEs, with e_2N still ≥ 1e-7 (far above the ~1e-11 reference error).
ORDER_STEPS = {"euler": 64, "midpoint": 128, "heun": 64, "ralston3": 64, "rk4": 64}




@pytest.fixture(scope="module", params=list(SDES))
def problem(request):
    _, model, x_T, ref = order_problem(request.param)
    return model, x_T, ref


@pytest.mark.parametrize("method", list(ORDER_STEPS))
def test_fixed_step_ode_order_of_convergence(problem, method):
    model, x_T, ref = problem
    order = sd.ode.FIXED_STEP[method].order
    n = ORDER_STEPS[method]
    errs = []
    for steps in (n, 2 * n):
        ts = torch.linspace(1.0, ORDER_T_END, steps + 1, dtype=F64)
        out = sd.sample(model, x_T.shape, "ode", timesteps=ts, x_T=x_T, denoise=False, method=method)
        errs.append((out.x - ref).abs().max().item())
    # Halving every step of a p-th order method divides the global error by 2^p + O(h).
    assert errs[1] > 1e-9, errs  # well above the reference's and float64's error
    assert abs(math.log2(errs[0] / errs[1]) - order) < 0.15, (method, errs)


def test_fine_rk4_agrees_with_the_independent_reference(problem):
    """Not only the rate: the limit is right (the σ̄ transformation and t ↔ σ̄ maps are exact)."""
    model, x_T, ref = problem
    ts = torch.linspace(1.0, ORDER_T_END, 257, dtype=F64)
    out = sd.sample(model, x_T.shape, "ode", timesteps=ts, x_T=x_T, denoise=False, method="rk4")
    # RK4's error at 128 steps is ~4e-7 (order test above); at 256 it is 16× smaller, ~3e-8.
    torch.testing.assert_close(out.x, ref, rtol=0, atol=2e-7)
