"""Encoding (data -> latent with a deterministic sampler run forwards), round trips and interpolation.

Everything runs on the exact ("oracle") eps-network of a Gaussian mixture in float64, so the only
errors are the solvers'. The decoding call is always the one the docs give:
``sample(model, x.shape, <same sampler and options>, x_T=z, t_end=<same>, denoise=False)``.

**Order of the round trip.** A one-step method of order p errs by ``C(s, y)·h^{p+1}`` per step.
Encoding steps forward over the grid and decoding steps back over the *same* grid, so the round
trip is a product of pairs ``M_{−h} ∘ M_h`` (innermost first), and each pair errs by
``(1 + (−1)^{p+1})·C·h^{p+1} + O(h^{p+2})`` (the adjoint of an order-p method has error constant
``(−1)^p C``; Hairer, Lubich & Wanner, *Geometric Numerical Integration*, II.3). For odd p the two
halves add: DDIM (Euler, p = 1) reconstructs with a first-order error, twice the one-way error.
For even p the leading terms *cancel*: Heun (p = 2) and RK4 (p = 4) round-trip with order p + 1,
i.e. 3 and 5 (measured: 2.93–3.00 and 5.00–5.01 for N = 64 → 128 on all three SDEs). No explicit
Runge–Kutta method is symmetric, so the gain stops there.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import scoresde as sd
from scoresde.data import ring_mixture

F64 = torch.float64
SDES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}
T_END = 1e-3  # encode's default data end; the decoding call passes it explicitly

MEANS = torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
# Wide modes (std 0.32–0.48, as in the ODE order tests of test_sampler_convergence): with narrow
# ones, trajectories near a boundary between modes need hundreds of Euler steps before the error
# is asymptotic.
MIX = sd.GaussianMixture(MEANS, torch.tensor([0.4, 0.48, 0.32], dtype=F64), WEIGHTS)


def oracle(sde, mix: sd.GaussianMixture = MIX) -> sd.ScoreModel:
    return mix.score_model(sde, prediction="eps")


def data(n: int = 16, seed: int = 0) -> torch.Tensor:
    return MIX.sample(n, torch.Generator().manual_seed(seed), F64)


def round_trip(model, x, sampler: str, steps: int | None = None, **options):
    """encode -> decode on the same grid; returns (reconstruction, encode NFE, decode NFE)."""
    z = sd.encode(model, x, sampler, steps, **options)
    assert z.x.shape == x.shape and z.x.dtype == x.dtype
    assert (z.timesteps[1:] > z.timesteps[:-1]).all() and z.timesteps[0] == T_END
    back = sd.sample(model, x.shape, sampler, steps, x_T=z.x, t_end=T_END, denoise=False,
                     dtype=x.dtype, **options)
    torch.testing.assert_close(back.timesteps, z.timesteps.flip(0), rtol=0, atol=0)
    return back.x, z.nfe, back.nfe


# --- round trip: convergence at the reasoned order --------------------------------------------------
# (sampler, options, network calls per step, expected round-trip order, N of the (N, 2N) pair).
# N = 64 is in the asymptotic regime on all three SDEs. Measured log2(e_N/e_2N), VP/sub-VP/VE:
#   N = 16 → 32:  DDIM 1.00/1.14/1.08   Heun 2.10/3.06/3.00   RK4 6.91/5.46/4.09
#   N = 32 → 64:  DDIM 0.95/1.17/1.27   Heun 2.76/3.00/3.00   RK4 5.00/4.76/4.93
#   N = 64 → 128: DDIM 0.97/0.99/1.08   Heun 2.93/3.00/3.00   RK4 5.00/5.01/5.01
# and the smaller error stays far above float64 round-off (RK4 at 128 steps: 3e-9 to 2e-8).
ORDER_CASES = {
    "ddim": ("ddim", {}, 1, 1, 64),
    "heun": ("ode", {"method": "heun"}, 2, 3, 64),
    "rk4": ("ode", {"method": "rk4"}, 4, 5, 64),
}


@pytest.mark.parametrize("case", list(ORDER_CASES))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_round_trip_error_falls_at_the_reasoned_order(sde_name, case):
    sampler, options, stages, order, n = ORDER_CASES[case]
    model, x = oracle(SDES[sde_name]()), data()
    errs = []
    for steps in (n, 2 * n):
        xr, nfe_enc, nfe_dec = round_trip(model, x, sampler, steps, **options)
        assert nfe_enc == nfe_dec == stages * steps  # NFE exact, the same both ways
        errs.append((xr - x).abs().max().item())
    assert errs[1] > 1e-12, errs  # the measured rate is not round-off
    # DESIGN's ±0.15 (measured deviations ≤ 0.08 at N = 64); an order-2 Heun or order-4 RK4 round
    # trip (the one-way order) would fail it by ~1.
    assert abs(math.log2(errs[0] / errs[1]) - order) < 0.15, (case, errs)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_round_trip_with_dopri5_meets_the_tolerance(sde_name):
    """dopri5 keeps each step's local error under ``atol + rtol·|y|`` (RMS over the state) in
    x̄ = x/alpha; the data end has |x̄| ≈ |x| ≤ 3 and the decode flow contracts what the encoder's
    errors at large σ̄ grow into. Measured max |x_rec − x| per round trip (two solves of ~20–60
    steps): 4–7 × tol at tol = 1e-7, 10–17 × tol at 1e-5, on data with max|x| ≈ 1.9. The
    bound 30 × tol × max(1, max|x|) leaves a margin of 4–15 while a wrong step (or a round trip
    that does not converge) would be orders of magnitude off; and the error follows the tolerance
    (230–300× smaller for a 100× tighter one)."""
    model, x = oracle(SDES[sde_name]()), data()
    scale = max(1.0, x.abs().max().item())
    errs = {}
    for tol in (1e-5, 1e-7):
        xr, nfe_enc, nfe_dec = round_trip(model, x, "ode", method="dopri5", rtol=tol, atol=tol)
        errs[tol] = (xr - x).abs().max().item()
        assert errs[tol] < 30 * tol * scale, (tol, errs)
        assert nfe_enc > 0 and nfe_dec > 0
    assert errs[1e-7] < 1e-5  # the brief's "rtol = atol = 1e-7 reconstructs to < 1e-5"
    assert errs[1e-5] > 20 * errs[1e-7], errs


def test_ddim_inversion_equals_the_textbook_loop_on_ddpm_indices():
    """On the DDPM table with integer indices, encoding is DDIM inversion as users write it
    (e.g. diffusers' DDIMInverseScheduler): x0 = (x − √(1−ᾱ_t)ε)/√ᾱ_t, x_next = √ᾱ_next·x0 +
    √(1−ᾱ_next)·ε, for indices 0, 20, …, 980 — written here from ᾱ alone."""
    n_train = 1000
    betas = torch.linspace(1e-4, 0.02, n_train, dtype=F64)
    ab = torch.cumprod(1.0 - betas, 0)
    sde = sd.VPSDE.from_betas(betas)
    model = MIX.score_model(sde, prediction="eps", time_input="index")
    indices = list(range(0, n_train, 20))  # increasing: data (index 0, t = 1/N) -> noise
    ts = sd.grids.from_indices(torch.tensor(indices[::-1]), n_train, final_zero=False)
    x = data(64, seed=3)
    z = sd.encode(model, x, "ddim", timesteps=ts)
    want = x
    for i, j in itertools.pairwise(indices):
        eps = model.net(want, torch.full((len(x),), float(i), dtype=F64))
        x0 = (want - torch.sqrt(1 - ab[i]) * eps) / torch.sqrt(ab[i])
        want = torch.sqrt(ab[j]) * x0 + torch.sqrt(1 - ab[j]) * eps
    assert z.nfe == len(indices) - 1
    # Float64, O(1) states, ~50 steps; the largest amplification is 1/√ᾱ ≈ 1e2 (see test_ddim).
    torch.testing.assert_close(z.x, want, rtol=0, atol=1e-10)
    assert (z.x - x).abs().max() > 0.5  # not vacuous: the latent is far from the data


# --- latents of mixture data are distributed as the prior -------------------------------------------
# A ring of 8 modes plus a centre one (radius 4, std 0.3), moved off the origin by (4, −3) so the
# exact p_T's mean alpha_T·E[x0] is not zero: for VE (alpha = 1, prior std 50) it is
# (0.08, −0.06) in prior units, 2.7–3.6 standard errors at n = 2000, so the test has to account
# for it; for VP it is 0.0067·(4, −3), about one standard error.
RING = ring_mixture()
SHIFTED_RING = sd.GaussianMixture(RING.means + torch.tensor([4.0, -3.0], dtype=F64), RING.stds,
                                  RING.weights)
N_LATENT = 2000


def diffused(mix: sd.GaussianMixture, sde, t: float) -> sd.GaussianMixture:
    """The exact marginal p_t of the mixture under ``sde``: a mixture again."""
    tt = torch.tensor(t, dtype=F64)
    a, s = sde.alpha(tt), sde.sigma(tt)
    return sd.GaussianMixture(a * mix.means, torch.sqrt(a**2 * mix.stds**2 + s**2), mix.weights)


def latent_statistics(z: torch.Tensor, p_T: sd.GaussianMixture, prior_std: float,
                      directions: torch.Tensor) -> dict[str, object]:
    """z/prior_std against the exact p_T: standardized errors of the mean and covariance, and KS
    p-values of projections on ``directions`` (unit rows) against p_T's exact projected CDF."""
    n = len(z)
    w, mu, var = p_T.weights, p_T.means, p_T.stds**2
    mean = w @ mu
    second = torch.einsum("k,ki,kj->ij", w, mu, mu) + torch.diag(w @ var)
    cov = second - torch.outer(mean, mean)
    u, m, c = z / prior_std, mean / prior_std, cov / prior_std**2
    # Standard errors of a sample mean and (nearly Gaussian) sample covariance:
    # Var(mean_i) = c_ii/n, Var(c_ij) = (c_ij² + c_ii c_jj)/n.
    z_mean = (u.mean(0) - m) / torch.sqrt(torch.diag(c) / n)
    se_cov = torch.sqrt((c**2 + torch.outer(torch.diag(c), torch.diag(c))) / n)
    z_cov = (torch.cov(u.T) - c) / se_cov
    pvalues = []
    for v in directions:
        # The projection of a diagonal mixture on v is a 1-D mixture: means μ_k·v, var Σ_d s_kd² v_d².
        m_k, s_k = (mu @ v).numpy(), torch.sqrt(var @ v**2).numpy()

        def cdf(x, m_k=m_k, s_k=s_k):
            return (w.numpy() * stats.norm.cdf((np.asarray(x)[:, None] - m_k) / s_k)).sum(1)

        pvalues.append(stats.kstest((z @ v).numpy(), cdf).pvalue)
    return {"mean": m, "cov": c, "z_mean": z_mean, "z_cov": z_cov, "ks_p": pvalues}


def directions(dim: int, extra: int, seed: int = 11) -> torch.Tensor:
    v = torch.randn(extra, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return torch.cat([torch.eye(dim, dtype=F64), v / v.norm(dim=1, keepdim=True)])


def assert_prior_like(st_: dict, n_tests: int) -> None:
    # Mean: |z| < 4 per coordinate; covariance: |z| < 4.5 per entry (the off-diagonal pair counts
    # twice); KS: p > 1e-3 for each projection (Bonferroni over n_tests ≤ 20 keeps the family-wise
    # false-alarm rate ≤ 2 % for a random seed; the seeds are fixed, so the test is deterministic).
    assert st_["z_mean"].abs().max() < 4, st_["z_mean"]
    assert st_["z_cov"].abs().max() < 4.5, st_["z_cov"]
    assert len(st_["ks_p"]) == n_tests and min(st_["ks_p"]) > 1e-3, st_["ks_p"]


ENCODERS = {
    "rk4-100": dict(sampler="ode", steps=100, method="rk4"),
    "dopri5": dict(sampler="ode", method="dopri5", rtol=1e-6, atol=1e-6),
}


@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_encoded_mixture_data_are_distributed_as_the_prior(sde_name, encoder):
    """The PF-ODE carries p_{t_end} to p_T exactly, so exact draws of p_{t_end} encode to exact
    draws of p_T (up to the solver's ~1e-7 error). (Plain p_0 data differ from p_{t_end} by
    sigma(1e-3) ≈ 0.01 of noise on modes of std 0.3 — a 0.1 % variance change, invisible at n =
    2000 — so this is also what encoding a data set does.) p_T ≈ N(0, prior_std² I): its mean is
    alpha_T·E[x0] and its covariance alpha_T²·Cov(x0) + sigma_T²·I."""
    sde = SDES[sde_name]()
    x = diffused(SHIFTED_RING, sde, T_END).sample(N_LATENT, torch.Generator().manual_seed(1), F64)
    z = sd.encode(oracle(sde, SHIFTED_RING), x, **ENCODERS[encoder]).x
    p_T = diffused(SHIFTED_RING, sde, 1.0)
    st_ = latent_statistics(z, p_T, sde.prior_std, directions(2, 4))
    # The exact p_T is the prior up to the small mean offset (and a ≤ 1e-2 covariance change).
    assert st_["mean"].abs().max() < (0.1 if sde_name == "ve" else 0.03), st_["mean"]
    torch.testing.assert_close(st_["cov"], torch.eye(2, dtype=F64), rtol=0, atol=1e-2)
    assert_prior_like(st_, 6)


def test_encoded_latents_in_16d_are_distributed_as_the_prior():
    """The same in 16 dimensions (a 4-component mixture with per-dimension stds), VP, RK4."""
    g = torch.Generator().manual_seed(5)
    mix = sd.GaussianMixture(2 * torch.randn(4, 16, generator=g, dtype=F64),
                             0.2 + torch.rand(4, 16, generator=g, dtype=F64),
                             torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64))
    sde = sd.VPSDE()
    x = diffused(mix, sde, T_END).sample(N_LATENT, torch.Generator().manual_seed(6), F64)
    z = sd.encode(oracle(sde, mix), x, "ode", 100, method="rk4").x
    st_ = latent_statistics(z, diffused(mix, sde, 1.0), sde.prior_std, directions(16, 4))
    # 16 means (|z| < 4: family-wise 1e-3) and 136 distinct covariance entries, where |z| < 4.5
    # has family-wise false-alarm probability ≈ 136 × 6.8e-6 ≈ 1e-3.
    assert_prior_like(st_, 20)


def test_latent_statistics_reject_a_coarse_encoder():
    """The checks above have power: a 5-step DDIM encoding of the same data (NFE 5) leaves the
    latent variance ~20 standard errors short of the prior's and fails KS at p ~ 1e-27."""
    sde = sd.VPSDE()
    x = diffused(SHIFTED_RING, sde, T_END).sample(N_LATENT, torch.Generator().manual_seed(1), F64)
    z = sd.encode(oracle(sde, SHIFTED_RING), x, "ddim", 5).x
    st_ = latent_statistics(z, diffused(SHIFTED_RING, sde, 1.0), sde.prior_std, directions(2, 4))
    assert st_["z_cov"].abs().max() > 10
    assert min(st_["ks_p"]) < 1e-6


# --- interpolation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("method", sd.encoding.INTERPOLATIONS)
def test_interpolation_endpoints_are_exact_and_shape_is_n_first(method, dtype):
    g = torch.Generator().manual_seed(0)
    z0, z1 = (torch.randn(3, 1, 4, 4, generator=g, dtype=dtype) for _ in range(2))
    zs = sd.interpolate(z0, z1, 7, method=method)
    assert zs.shape == (7, 3, 1, 4, 4) and zs.dtype == dtype
    assert torch.equal(zs[0], z0) and torch.equal(zs[-1], z1)
    assert torch.isfinite(zs).all()
    one = sd.interpolate(z0[0, 0, 0], z1[0, 0, 0], 2, method=method)  # a single 1-D latent
    assert one.shape == (2, 4)


def test_slerp_keeps_the_norm_of_equal_norm_orthogonal_vectors():
    r = 3.0
    z0, z1 = torch.zeros(1, 8, dtype=F64), torch.zeros(1, 8, dtype=F64)
    z0[0, 0], z1[0, 1] = r, r
    zs = sd.interpolate(z0, z1, 9)
    u = torch.linspace(0, 1, 9, dtype=F64)
    torch.testing.assert_close(zs.norm(dim=-1).squeeze(1), torch.full((9,), r, dtype=F64), rtol=1e-14, atol=0)
    # A quarter circle at constant angular speed: z(u) = r (cos(uπ/2), sin(uπ/2), 0, …).
    torch.testing.assert_close(zs[:, 0, 0], r * torch.cos(u * math.pi / 2), rtol=0, atol=1e-14)
    torch.testing.assert_close(zs[:, 0, 1], r * torch.sin(u * math.pi / 2), rtol=0, atol=1e-14)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(2, 64), norm=st.floats(1e-3, 1e3))
def test_slerp_is_a_rotation_between_equal_norm_vectors(seed, dim, norm):
    g = torch.Generator().manual_seed(seed)
    z0, z1 = (torch.randn(1, dim, generator=g, dtype=F64) for _ in range(2))
    z0, z1 = norm * z0 / z0.norm(), norm * z1 / z1.norm()
    theta = torch.arccos((z0 * z1).sum() / norm**2)
    if not 1e-3 < theta < math.pi - 1e-3:
        return  # (near-)parallel pairs have their own test
    zs = sd.interpolate(z0, z1, 5)[:, 0]
    torch.testing.assert_close(zs.norm(dim=-1), torch.full((5,), norm, dtype=F64), rtol=1e-10, atol=0)
    angles = torch.arccos(((zs @ z0[0]) / norm**2).clamp(-1, 1))
    torch.testing.assert_close(angles, theta * torch.linspace(0, 1, 5, dtype=F64), rtol=0, atol=1e-6)


def test_slerp_keeps_gaussian_latents_in_the_typical_set_and_linear_does_not():
    """The docstring's claim, D = 512, 64 pairs of N(0, I) draws. |z| = sqrt(χ²_D) ≈ sqrt(D) with
    sd 1/√2, i.e. |z|/sqrt(D) = 1 ± 0.031; two draws are nearly orthogonal (cos θ ≈ ±0.044), and the
    slerp midpoint's norm is ≈ sqrt((|z0|² + |z1|²)/2): 1 ± 0.022 in units of sqrt(D). The linear
    midpoint is (z0 + z1)/2 ~ N(0, I/2): its norm is sqrt(D/2)·(1 ± 0.031). Bands of ±0.15 are ≥ 4.8
    sd wide (false alarm ≈ 64 × 1.6e-6 for a random seed) and do not overlap: [19.2, 26.0] for
    slerp vs [13.6, 18.4] for linear."""
    D = 512
    g = torch.Generator().manual_seed(42)
    z0, z1 = torch.randn(64, D, generator=g, dtype=F64), torch.randn(64, D, generator=g, dtype=F64)
    slerp = sd.interpolate(z0, z1, 9, method="slerp").norm(dim=-1) / math.sqrt(D)  # (9, 64)
    linear = sd.interpolate(z0, z1, 9, method="linear").norm(dim=-1) / math.sqrt(D)
    assert ((slerp - 1).abs() < 0.15).all(), slerp.min()  # every point of every path
    assert ((linear[4] * math.sqrt(2) - 1).abs() < 0.15).all(), linear[4]  # midpoint ≈ sqrt(D/2)
    assert (linear[4] < 0.85).all() and (slerp[4] > 0.85).all()


def test_interpolation_handles_each_pair_of_a_batch_independently():
    g = torch.Generator().manual_seed(1)
    z0, z1 = torch.randn(5, 2, 3, generator=g, dtype=F64), torch.randn(5, 2, 3, generator=g, dtype=F64)
    z1[2] = -0.5 * z0[2]  # one anti-parallel pair must not disturb the others
    for method in sd.encoding.INTERPOLATIONS:
        zs = sd.interpolate(z0, z1, 6, method=method)
        for i in range(5):
            alone = sd.interpolate(z0[i:i + 1], z1[i:i + 1], 6, method=method)[:, 0]
            torch.testing.assert_close(zs[:, i], alone, rtol=1e-14, atol=1e-14)
    # Pair 0 alone on its (flattened) great circle: the angle is measured over the whole latent.
    a, b = z0[0].flatten(), z1[0].flatten()
    theta = torch.arccos(a @ b / (a.norm() * b.norm()))
    w = torch.sin(0.5 * theta) / torch.sin(theta)  # both weights at u = 1/2
    mid = sd.interpolate(z0, z1, 3)[1, 0]
    torch.testing.assert_close(mid, w * (z0[0] + z1[0]), rtol=0, atol=1e-13)


def test_slerp_of_parallel_antiparallel_and_zero_latents_falls_back_to_linear():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 16, generator=g, dtype=F64)
    zero = torch.zeros_like(z)
    for z1 in (2.5 * z, -z, -3 * z, zero, z.clone()):
        for z0 in (z, zero):
            zs = sd.interpolate(z0, z1, 5)
            assert torch.isfinite(zs).all()
            linear = sd.interpolate(z0, z1, 5, method="linear")
            torch.testing.assert_close(zs, linear, rtol=1e-7, atol=1e-12)


# --- bad input -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vp_model():
    return oracle(sd.VPSDE())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_encode_rejects_non_finite_data(vp_model, bad):
    x = data(4)
    x[1, 0] = bad
    with pytest.raises(ValueError, match="finite"):
        sd.encode(vp_model, x, "ddim", 10)


@pytest.mark.parametrize("sampler, options", [
    ("ancestral", {}),
    ("pc", {}),
    ("pc", {"corrector": "none"}),
    ("ddim", {"eta": 0.5}),
    ("ddim", {"eta": 1.0}),
])
def test_encode_rejects_stochastic_samplers(vp_model, sampler, options):
    with pytest.raises(ValueError, match="stochastic"):
        sd.encode(vp_model, data(4), sampler, 10, **options)


def test_encode_refuses_a_data_end_at_sigma_zero(vp_model):
    for kwargs in ({"t_end": 0.0}, {"timesteps": torch.linspace(1.0, 0.0, 11, dtype=F64)}):
        with pytest.raises(ValueError, match="sigma = 0"):
            sd.encode(vp_model, data(4), "ddim", None if "timesteps" in kwargs else 10, **kwargs)
    with pytest.raises(ValueError, match="sigma = 0"):
        sd.encode(vp_model, data(4), "ode", method="dopri5", t_end=0.0)
    # VE keeps sigma_min of noise at t = 0, so there t_end = 0 is a valid data end.
    ve = oracle(sd.VESDE())
    assert torch.isfinite(sd.encode(ve, data(4), "ddim", 10, t_end=0.0).x).all()


def test_encode_rejects_other_bad_requests(vp_model):
    with pytest.raises(ValueError, match="unknown sampler"):
        sd.encode(vp_model, data(4), "euler_a", 10)
    with pytest.raises(ValueError, match="adaptive"):
        sd.encode(vp_model, data(4), "ode", 10, method="dopri5")
    with pytest.raises(ValueError, match="steps is required"):
        sd.encode(vp_model, data(4), "ddim")
    with pytest.raises(ValueError, match="t_end"):
        sd.encode(vp_model, data(4), "ddim", 10, t_end=1.5)


def test_interpolate_rejects_bad_input():
    z = torch.randn(2, 8)
    with pytest.raises(ValueError, match="same shape"):
        sd.interpolate(z, torch.randn(2, 9), 4)
    with pytest.raises(ValueError, match="same shape"):
        sd.interpolate(z, torch.randn(3, 8), 4)
    for n in (1, 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n must be an integer >= 2"):
            sd.interpolate(z, z.flip(0), n)
    with pytest.raises(ValueError, match="method must be one of"):
        sd.interpolate(z, z.flip(0), 4, method="cubic")
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        sd.interpolate(z, bad, 4)


# --- determinism -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler, options", [("ddim", {}), ("ode", {"method": "heun"})])
def test_encoding_is_deterministic_batch_invariant_and_needs_no_generator(vp_model, sampler, options):
    x = data(32, seed=4)
    a = sd.encode(vp_model, x, sampler, 20, **options)
    b = sd.encode(vp_model, x.clone(), sampler, 20, **options)
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe
    # A noise source is irrelevant (accepted so a sample() call's arguments can be reused).
    for noise in (sd.PerSampleNoise(0), sd.PerSampleNoise(7, offset=3), torch.Generator().manual_seed(1)):
        assert torch.equal(sd.encode(vp_model, x, sampler, 20, generator=noise, **options).x, a.x)
    # Fixed-step encoding acts on each sample alone: a sub-batch encodes to the same latents.
    torch.testing.assert_close(sd.encode(vp_model, x[5:9], sampler, 20, **options).x, a.x[5:9],
                               rtol=0, atol=1e-13)
    # Decoding from the latent needs no generator either, and ignores one.
    dec = [sd.sample(vp_model, x.shape, sampler, 20, x_T=a.x, t_end=T_END, denoise=False, dtype=F64,
                     generator=noise, **options).x
           for noise in (None, sd.PerSampleNoise(0), torch.Generator().manual_seed(1))]
    assert torch.equal(dec[0], dec[1]) and torch.equal(dec[0], dec[2])
    assert torch.equal(x, data(32, seed=4)), "encode must not modify its input in place"


DETERMINISTIC = [v for v in sd.samplers.variants()
                 if not sd.samplers.get(v.sampler).parse(v.options).stochastic] + [
    sd.samplers.Variant("euler ancestral eta=0", "euler_ancestral", {"eta": 0.0})]


@pytest.mark.parametrize("variant", DETERMINISTIC, ids=lambda v: v.label)
def test_every_deterministic_sampler_encodes_and_decodes(variant):
    """Every registered deterministic variant runs backwards as an encoder; the round trip's
    error is its discretization error, which falls with the steps (first-order methods by ~4×
    from 20 to 80 steps, higher orders by 100× and more) or, for an adaptive sampler, with its
    tolerance (100× tighter)."""
    model = oracle(sd.VPSDE())
    x = data(64)
    opts = sd.samplers.get(variant.sampler).parse(variant.options)
    if opts.uses_grid:
        runs = [((steps,), variant.options) for steps in (20, 80)]
    else:
        tight = {**variant.options, "rtol": opts.rtol / 100, "atol": opts.atol / 100}
        runs = [((), variant.options), ((), tight)]
    errs = []
    for args, options in runs:
        enc = sd.encode(model, x, variant.sampler, *args, **options)
        dec = sd.sample(model, tuple(x.shape), variant.sampler, timesteps=enc.timesteps.flip(0), x_T=enc.x,
                        denoise=False, dtype=x.dtype, **options)
        errs.append(float((dec.x - x).pow(2).mean()))
    assert errs[1] < errs[0] / 3 and errs[1] < 1e-2, errs  # first order at 80 steps: 1e-3 to 3e-3
