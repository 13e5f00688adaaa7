"""The forward SDEs: schedule identities, inverses, marginals, discretizations, bad input.

Every expected value here is computed independently in the test (closed forms, finite
differences, torch.distributions, a Monte-Carlo simulation), never copied from the code.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracles import DDPM_BETAS, SDES

import scoresde as sd

N_DDPM = len(DDPM_BETAS)



@pytest.fixture(params=list(SDES), ids=list(SDES))
def sde(request):
    return SDES[request.param]()


def _is_discrete(sde) -> bool:
    return isinstance(sde, sd.VPSDE) and hasattr(sde.schedule, "betas")


def _fd_times(sde) -> tuple[torch.Tensor, float]:
    """Times in (0.01, 0.99) and a central-difference step.

    For a ``from_betas`` SDE β(t) is piecewise constant on (k/N, (k+1)/N]: take segment
    midpoints ``(k + ½)/N`` and a step far below the half-width 1/(2N) = 5e-4, so ``t ± h``
    stays inside one segment, where log ᾱ is exactly linear.
    """
    if _is_discrete(sde):
        k = torch.tensor([10, 137, 400, 611, 850, 989], dtype=torch.float64)
        return (k + 0.5) / sde.N, 1e-6
    return torch.tensor([0.013, 0.1, 0.25, 0.5, 0.73, 0.9, 0.987], dtype=torch.float64), 1e-6


# --- schedule identities ----------------------------------------------------------------------


def test_alpha_and_sigma_squared_derivatives_match_f_and_g2(sde):
    t, h = _fd_times(sde)
    # Central differences (h = 1e-6): truncation h²·|F'''/F'|/6 is worst for sub-VP near 0, where
    # σ² ∝ t² gives |F'''/F'| ≈ 2e4, so ≈ 3e-9; rounding eps·|F|/(h·|F'|) is worst where σ² is
    # flat (VP at t → 1, |F'| ≈ 1e-3), so ≈ 1e-7. 1e-6 relative covers both with margin.
    rtol = 1e-6
    dalpha = (sde.alpha(t + h) - sde.alpha(t - h)) / (2 * h)
    torch.testing.assert_close(dalpha, sde.f(t) * sde.alpha(t), rtol=rtol, atol=0.0)

    def var(s):
        return sde.sigma(s) ** 2

    dvar = (var(t + h) - var(t - h)) / (2 * h)
    torch.testing.assert_close(dvar, 2 * sde.f(t) * var(t) + sde.g2(t), rtol=rtol, atol=0.0)


def test_sigma_alpha_log_snr_are_consistent(sde):
    t = torch.linspace(0.01, 1.0, 37, dtype=torch.float64)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    # Same float64 quantities through different formulas: a few ulp apart.
    torch.testing.assert_close(sde.log_snr(t), 2 * (torch.log(alpha) - torch.log(sigma)),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sde.sigma_bar(t), sigma / alpha, rtol=1e-12, atol=0.0)
    # log_snr must strictly decrease, or the inverse below is ill-defined.
    assert (torch.diff(sde.log_snr(t)) < 0).all()


def test_t_from_log_snr_and_t_from_sigma_bar_invert(sde):
    t = torch.cat([torch.linspace(0.01, 1.0, 41, dtype=torch.float64),
                   torch.tensor([0.0123456789, 0.5 + 1e-9, 0.999], dtype=torch.float64)])
    # float64 round trip through closed forms / a linear interpolation: the inverse loses at most
    # |λ · dt/dλ| · ulp ≲ 1e-13 of t here; 1e-10 leaves room and still catches any wrong formula.
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-10, atol=0.0)
    torch.testing.assert_close(sde.t_from_sigma_bar(sde.sigma_bar(t)), t, rtol=1e-10, atol=0.0)
    # ... and the other way: log_snr(t_from_log_snr(λ)) == λ over the SDE's range.
    lam = torch.linspace(float(sde.log_snr(0.99)), float(sde.log_snr(0.02)), 23, dtype=torch.float64)
    torch.testing.assert_close(sde.log_snr(sde.t_from_log_snr(lam)), lam, rtol=1e-10, atol=1e-10)


# --- marginals against a simulation of the SDE itself ------------------------------------------


def test_marginal_prob_matches_euler_maruyama_simulation(sde):
    """Simulate dx = f(t) x dt + g(t) dw from a fixed x0 = 4 to t = 0.5 and compare moments.

    Tolerance = 5 Monte-Carlo standard errors + the Euler–Maruyama bias bound.

    * Monte-Carlo: the EM marginal of a linear SDE with Gaussian increments is exactly Gaussian,
      so the sample mean has SE s/sqrt(n) and the sample std SE s/sqrt(2(n − 1)); 5 SE
      makes a false failure a < 1e-5 event over all comparisons (and the seed is fixed).
    * Bias: EM is weak order 1, so its moment error is e(dt) ≈ C·dt. We estimate it without
      looking at ``marginal_prob``: the EM moments obey the exact deterministic recursions
      m ← (1 + f dt) m, v ← (1 + f dt)² v + g² dt, and e(dt) ≈ 2|M(dt) − M(dt/2)| by step
      halving; we allow twice that. (Using the recursion minus ``marginal_prob`` would be
      circular: it would absorb any error in ``marginal_prob``.)
    """
    # 20000 scalar paths: tensors stay under torch's 32768-element parallel grain, which keeps
    # this fast on a busy 2-core machine (OpenMP threads would spin against other processes).
    n_paths, n_steps, t_end = 20000, 1000, 0.5
    x0 = torch.tensor(4.0, dtype=torch.float64)  # large enough that the mean is many SEs from 0
    gen = torch.Generator().manual_seed(1234)

    def grid(steps):
        dt = t_end / steps
        # Coefficients at step midpoints: still first order, and never on a from_betas knot.
        mid = (torch.arange(steps, dtype=torch.float64) + 0.5) * dt
        return dt, sde.f(mid), sde.g2(mid)

    # Starting noise sigma(0): 0 for VP/sub-VP; sigma_min for VE, whose t = 0 marginal already
    # carries sigma_min of noise (score_sde's convention, documented on VESDE).
    s0 = float(sde.sigma(0.0))
    a0 = float(sde.alpha(0.0))

    def normal():
        # float32 draws (3x faster on CPU) widened to float64: their 1e-7 quantization is far
        # below the Monte-Carlo error; the state and the arithmetic stay float64.
        return torch.randn(n_paths, generator=gen).to(torch.float64)

    dt, f, g2 = grid(n_steps)
    f, g = f.tolist(), g2.sqrt().tolist()
    x = a0 * x0 + s0 * normal()
    for k in range(n_steps):
        x = x + (f[k] * dt) * x + (g[k] * math.sqrt(dt)) * normal()

    def em_moments(steps):
        dt, f, g2 = grid(steps)
        f, g2 = f.tolist(), g2.tolist()
        m, v = a0, s0**2
        for k in range(steps):
            m = (1 + f[k] * dt) * m
            v = (1 + f[k] * dt) ** 2 * v + g2[k] * dt
        return m, math.sqrt(v)

    m1, s1 = em_moments(n_steps)
    m2, s2 = em_moments(2 * n_steps)
    bias_mean = 2 * 2 * abs(m1 - m2)  # per unit of x0
    bias_std = 2 * 2 * abs(s1 - s2)

    mean, std = sde.marginal_prob(x0, t_end)
    emp_mean, emp_std = x.mean(), x.std()
    se_mean = float(std) / math.sqrt(n_paths)
    se_std = float(std) / math.sqrt(2 * (n_paths - 1))
    assert abs(float(emp_mean - mean)) <= 5 * se_mean + bias_mean * abs(float(x0)), (emp_mean, mean)
    assert abs(float(emp_std - std)) <= 5 * se_std + bias_std, (emp_std, std)
    # The bias term must stay a correction, not a licence: a sloppy simulation would hide errors.
    assert bias_mean < 0.02 and bias_std < 0.02


def test_time_zero_is_the_data_and_small_times_are_finite(sde):
    # Regression: the cosine's log ᾱ(0) once rounded to +3e-20, making sigma(0) NaN.
    assert float(sde.alpha(0.0)) == 1.0
    expected_sigma0 = sde.sigma_min if isinstance(sde, sd.VESDE) else 0.0
    assert float(sde.sigma(0.0)) == expected_sigma0
    t = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-18, 0, 50, dtype=torch.float64)])
    for name in ("alpha", "sigma", "f", "g2"):
        values = getattr(sde, name)(t)
        assert torch.isfinite(values).all(), name
    assert (sde.sigma(t) >= 0).all() and (sde.alpha(t) <= 1).all()
    assert torch.isfinite(sde.log_snr(t[1:])).all()


def test_marginal_prob_shapes_and_per_sample_times(sde):
    x0 = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.1, 0.3, 0.6, 1.0], dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    assert mean.shape == x0.shape and mean.dtype == x0.dtype
    assert std.shape == (4,) and std.dtype == torch.float64
    for i in range(4):
        torch.testing.assert_close(mean[i], (sde.alpha(t[i]) * x0[i].double()).float())
        torch.testing.assert_close(std[i], sde.sigma(t[i]))
    z = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(1))
    x_t = sde.perturb(x0, t, z)  # the draw of p_t(x_t | x0) made from z
    for i in range(4):
        expected = sde.alpha(t[i]) * x0[i].double() + sde.sigma(t[i]) * z[i]
        torch.testing.assert_close(x_t[i], expected.float())


# --- the exact discrete table ------------------------------------------------------------------


def test_from_betas_reproduces_alpha_bar_of_the_table():
    sde = sd.VPSDE.from_betas(DDPM_BETAS)
    N = N_DDPM
    assert sde.N == N
    t_i = torch.arange(1, N + 1, dtype=torch.float64) / N
    alpha_bar = torch.cumprod(1 - DDPM_BETAS, 0)
    # cumprod of 1000 factors and exp(cumsum log1p) each carry ≲ 1000 ulp ≈ 1e-13 of rounding.
    torch.testing.assert_close(sde.alpha(t_i) ** 2, alpha_bar, rtol=1e-12, atol=0.0)
    assert float(sde.alpha(0.0)) == 1.0 and float(sde.sigma(0.0)) == 0.0
    torch.testing.assert_close(sde.discrete_betas, DDPM_BETAS, rtol=0.0, atol=0.0)

    # Between knots log ᾱ is linear in t.
    log_knots = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log(alpha_bar)])
    k = torch.tensor([0, 1, 99, 500, 998, 999])
    for theta in (0.1, 0.5, 0.77):
        t = (k.to(torch.float64) + theta) / N
        expected = (1 - theta) * log_knots[k] + theta * log_knots[k + 1]
        # Interpolating rounded knot values: ≲ 1e-13 absolute for |log ᾱ| ≤ 11.
        torch.testing.assert_close(sde.log_alpha_bar(t), expected, rtol=0.0, atol=1e-12)
        # β(t) = −d log ᾱ/dt is the slope of that segment, −N log(1 − β_k).
        torch.testing.assert_close(sde.beta(t), -N * torch.log1p(-DDPM_BETAS[k]), rtol=1e-12, atol=0.0)


# N = 999 and 137 have grid times k/N whose float64 product with N rounds just above k.
@pytest.mark.parametrize("N", [1000, 999, 137, 10])
def test_from_betas_discretize_is_the_ddpm_step(N):
    betas = torch.linspace(1e-4, 0.02, N, dtype=torch.float64)
    sde = sd.VPSDE.from_betas(betas)
    i = torch.arange(N)
    t_i = (i + 1).to(torch.float64) / N
    x = torch.randn(N, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f, G = sd.VPSDE.discretize(sde, x, t_i, 1.0 / N)
    # β̂ comes from differencing knots of log ᾱ (|log ᾱ| ≤ 11): absolute error ~1e-15 on
    # log(1 − β_i) ≥ 1e-4 in size, and sqrt(1 − β̂) − 1 cancels ~β/2 — ≲ 1e-12 relative in all.
    torch.testing.assert_close(f, (torch.sqrt(1 - betas) - 1)[:, None] * x, rtol=1e-10, atol=0.0)
    torch.testing.assert_close(G, torch.sqrt(betas), rtol=1e-10, atol=0.0)
    # One scalar step too.
    f5, G5 = sde.discretize(x[5:6], (5 + 1) / N, 1.0 / N)
    torch.testing.assert_close(G5, torch.sqrt(betas[5]), rtol=1e-10, atol=0.0)
    torch.testing.assert_close(f5, (math.sqrt(1 - betas[5]) - 1) * x[5:6], rtol=1e-10, atol=0.0)
    # At its grid time t_i, step i's segment (i/N, (i+1)/N] is the one in force: β(t_i) is the
    # slope −N log(1 − β_i) (same float64 expression, so to rounding), never the next step's.
    torch.testing.assert_close(sde.beta(t_i), -N * torch.log1p(-betas), rtol=1e-14, atol=0.0)
    torch.testing.assert_close(sde.g2(t_i), -N * torch.log1p(-betas), rtol=1e-14, atol=0.0)


def test_continuous_vp_table_is_ddpm_linear_and_close_to_its_continuous_alpha_bar():
    vp = sd.VPSDE(beta_min=0.1, beta_max=20.0, N=N_DDPM)
    betas = vp.discrete_betas
    # score_sde's table linspace(β_min/N, β_max/N, N) is DDPM's linear schedule; in float64 both
    # endpoints round to the same doubles, so equality is exact.
    assert betas.dtype == torch.float64
    assert torch.equal(betas, DDPM_BETAS)

    # The exact table of those betas vs. the continuous schedule at t_i = (i+1)/N:
    #   Σ_{j≤i} log(1 − β_j)  vs  −∫_0^{t_i} β(s) ds,   with β_j = β(j/(N−1))/N.
    # (a) |log(1 − β) + β| ≤ β²/(2(1 − β)) per step;
    # (b) the Riemann sum Σ β_j vs the integral: β_j − ∫_{j/N}^{(j+1)/N} β = (Δ/N)(j/(N−1) − (j+½)/N),
    #     which sums to (Δ/N²)·((i+1)/2)·(i/(N−1) − 1), at most Δ/(8N) + Δ/N² in size.
    N = N_DDPM
    t_i = torch.arange(1, N + 1, dtype=torch.float64) / N
    discrete = sd.VPSDE.from_betas(betas)
    diff = (discrete.log_alpha_bar(t_i) - vp.log_alpha_bar(t_i)).abs()
    delta = vp.schedule.beta_max - vp.schedule.beta_min
    bound_log = float((betas**2 / (2 * (1 - betas))).sum())
    bound_riemann = delta / (8 * N) + delta / N**2
    bound = bound_log + bound_riemann + 1e-12  # + float64 rounding of the two cumulative sums
    assert float(diff.max()) <= bound, (float(diff.max()), bound)
    # And the two really differ (the table is an O(1/N) discretization, not the same ᾱ).
    assert float(diff.max()) > 1e-4


# --- VE specifics, priors ----------------------------------------------------------------------


def test_ve_discretize_is_smld():
    ve = sd.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.001, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64)
    dt = 1e-3

    def sig(s):
        return 0.01 * (50.0 / 0.01) ** s

    f, G = ve.discretize(x, t, dt)
    assert torch.equal(f, torch.zeros_like(x))
    expected = torch.tensor([math.sqrt(sig(s) ** 2 - sig(s - dt) ** 2) for s in t.tolist()],
                            dtype=torch.float64)
    # sigma² differences of neighbouring levels: cancellation costs ≈ 1/(2·log(5000)·dt) ≈ 60
    # ulp of relative accuracy; 1e-10 is ample.
    torch.testing.assert_close(G, expected, rtol=1e-10, atol=0.0)
    # The VE marginal, alpha and f.
    torch.testing.assert_close(ve.sigma(t), torch.tensor([sig(s) for s in t.tolist()], dtype=torch.float64),
                               rtol=1e-13, atol=0.0)
    assert torch.equal(ve.alpha(t), torch.ones_like(t)) and torch.equal(ve.f(t), torch.zeros_like(t))


def test_prior_logp_matches_torch_distributions(sde):
    z = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = z * sde.prior_std
    # float64 parameters: a Normal built from python floats would hold float32 ones.
    prior = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64),
                                       torch.tensor(sde.prior_std, dtype=torch.float64))
    expected = prior.log_prob(z).flatten(1).sum(1)
    # Same float64 quantity, summed in a different order.
    torch.testing.assert_close(sde.prior_logp(z), expected, rtol=1e-12, atol=1e-10)


def test_prior_sample_has_the_prior_std(sde):
    n = 200_000
    z = sde.prior_sample((n // 4, 4), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert z.shape == (n // 4, 4) and z.dtype == torch.float64
    s = sde.prior_std
    # Gaussian sample: SE(mean) = s/sqrt(n), SE(std) = s/sqrt(2(n − 1)); 5 SE.
    assert abs(float(z.mean())) <= 5 * s / math.sqrt(n)
    assert abs(float(z.std()) - s) <= 5 * s / math.sqrt(2 * (n - 1))
    # Same generator state, same draw; float32 by default.
    z1 = sde.prior_sample((3, 2), generator=torch.Generator().manual_seed(1))
    z2 = sde.prior_sample((3, 2), generator=torch.Generator().manual_seed(1))
    assert z1.dtype == torch.float32 and torch.equal(z1, z2)


# --- reverse SDE / PF-ODE ----------------------------------------------------------------------


def _score_fn(x, t):
    return -2.0 * x + 0.3 * torch.sin(x)


@pytest.mark.parametrize("probability_flow", [True, False])
def test_reverse_drift_and_diffusion(sde, probability_flow):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.7, 1.0], dtype=torch.float64)
    rev = sde.reverse(_score_fn, probability_flow=probability_flow)
    drift, diffusion = rev.sde(x, t)
    c = 0.5 if probability_flow else 1.0
    expected = sde.f(t)[:, None] * x - c * sde.g2(t)[:, None] * _score_fn(x, t)
    # Same float64 arithmetic in a different order.
    torch.testing.assert_close(drift, expected, rtol=1e-12, atol=1e-12)
    if probability_flow:
        assert torch.equal(diffusion, torch.zeros_like(diffusion))
    else:
        torch.testing.assert_close(diffusion, torch.sqrt(sde.g2(t)), rtol=1e-14, atol=0.0)

    # The discretized reverse step: rev_f = f_disc − c G² score, rev_G = 0 or G.
    dt = 1e-3
    f_disc, G = sde.discretize(x, t, dt)
    rev_f, rev_G = rev.discretize(x, t, dt)
    torch.testing.assert_close(rev_f, f_disc - c * (G**2)[:, None] * _score_fn(x, t), rtol=1e-12, atol=1e-14)
    assert torch.equal(rev_G, torch.zeros_like(G) if probability_flow else G)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: sd.VPSDE(N=0), lambda: sd.SubVPSDE(N=-3),
                                  lambda: sd.VESDE(N=2.5)])
def test_bad_step_count(make):
    with pytest.raises(ValueError, match="N must be a positive integer"):
        make()


def test_bad_ve_sigmas():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        sd.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        sd.VESDE(sigma_min=0.0, sigma_max=0.5)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.1], [-0.01, 0.2], [0.1, 1.5], [0.1, float("nan")]])
def test_from_betas_outside_unit_interval(betas):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        sd.VPSDE.from_betas(torch.tensor(betas, dtype=torch.float64))


@pytest.mark.parametrize("betas", [torch.full((2, 3), 0.1), torch.tensor(0.1), torch.empty(0)])
def test_from_betas_not_one_dimensional(betas):
    with pytest.raises(ValueError, match="1-D"):
        sd.VPSDE.from_betas(betas)


def test_bad_linear_schedule():
    with pytest.raises(ValueError, match="beta_min"):
        sd.VPSDE(beta_min=0.0, beta_max=20.0)
    with pytest.raises(ValueError, match="beta_min"):
        sd.VPSDE(beta_min=5.0, beta_max=1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("method", ["alpha", "sigma", "log_snr", "f", "g2", "marginal_prob", "discretize"])
def test_non_finite_times(sde, method, bad):
    x = torch.ones(2, 3, dtype=torch.float64)
    t = torch.tensor([0.5, bad], dtype=torch.float64)
    calls = {
        "marginal_prob": lambda: sde.marginal_prob(x, t),
        "discretize": lambda: sde.discretize(x, t, 1e-3),
    }
    call = calls.get(method, lambda: getattr(sde, method)(t))
    with pytest.raises(ValueError, match="finite"):
        call()


def test_continuous_sdes_need_no_N():
    """N is optional for continuous SDEs: samplers, likelihood and the continuous loss run
    without it; what truly needs discrete steps says so."""
    gmm = sd.GaussianMixture(torch.tensor([[0.5, -0.5]]), torch.tensor([0.7]))
    for sde in (sd.VPSDE(N=None), sd.SubVPSDE(N=None), sd.VESDE(N=None), sd.VPSDE.cosine(N=None)):
        assert sde.N is None and "N=None" in repr(sde)
        model = gmm.score_model(sde, prediction="eps")
        out = sd.sample(model, (8, 2), "ode", 10, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out.x).all()
        with pytest.raises(ValueError, match="time_input='index' needs a discrete-time SDE"):
            gmm.score_model(sde, prediction="eps", time_input="index")
    with pytest.raises(ValueError, match="DDPM variational bound needs a discrete-time SDE"):
        sd.variational_bound(gmm.score_model(sd.VPSDE(N=None), "eps"), torch.zeros(2, 2),
                             generator=torch.Generator())
    with pytest.raises(ValueError, match="discrete_betas needs a discrete-time SDE"):
        _ = sd.VPSDE(N=None).discrete_betas
    with pytest.raises(ValueError, match="N must be a positive integer or None"):
        sd.VPSDE(N=0)


def test_vp_family_takes_any_schedule():
    from scoresde.schedules import CosineSchedule, LinearSchedule

    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.equal(sd.VPSDE(schedule=CosineSchedule(), N=1000).alpha(t), sd.VPSDE.cosine().alpha(t))
    assert torch.equal(sd.VPSDE(schedule=LinearSchedule(0.1, 20.0)).sigma(t), sd.VPSDE().sigma(t))
    with pytest.raises(ValueError, match=r"either beta_min/beta_max .* or schedule="):
        sd.SubVPSDE(beta_min=0.2, schedule=CosineSchedule())
    with pytest.raises(TypeError, match=r"schedule must be a scoresde\.schedules\.Schedule"):
        sd.VPSDE(schedule="cosine")
