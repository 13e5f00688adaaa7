"""PF-ODE log-likelihoods and bits/dim, checked against densities known in closed form.

Every expected value is computed here independently of the solver: the Gaussian-mixture
oracle's exact marginal density ``log p_eps``, a hand-written single-Gaussian score, the
analytic trace of the mixture's score Jacobian, and cell integrals of normal CDFs for 8-bit
pixels. No number is copied from the code's own output.

About the prior: the likelihood is ``log p_T(z) + ∫ div``. The SDE's default prior
``N(0, prior_std²)`` is not the exact ``p_T`` of a mixture (VP keeps ``alpha_T ≈ 0.0066`` of
the means; VE's ``N(0, 50²)`` ignores the means and the data variance), so the tests of the
ODE part pass the exact ``p_T`` (``gmm.log_prob_at(sde, z, T)``) and compare with the exact
``log p_eps(x)``; ``test_default_prior_error_is_the_prior_mismatch`` checks the default prior
against a bound derived from that mismatch.

Tolerance policy: with ``rtol = atol = 1e-6`` dopri5 keeps the local error of every state
component (``x̄`` and the accumulated divergence) at ~1e-6 of its size per step, and a solve
here takes ~30-60 steps, so the accumulated log-density error is ~1e-5 nats per dimension
(the divergence integral is O(D·log(σ̄_T/σ̄_eps)) ≈ 10·D nats). We assert 1e-3 nats/dim:
100× margin for the solver, but far below what any modelling mistake costs (a missing
``D·log(alpha_T/alpha_eps)`` term is ≈ 5 nats/dim for VP, a wrong sign of the divergence ≈ 10
nats/dim). The default prior instead of the exact one costs 2e-4 to 4e-2 nats/dim here, depending
on how far the means sit from 0 — comparable to the tolerance, hence the exact p_T.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr

import scoresde as sd
from scoresde.likelihood import divergence

EPS = 1e-5
TOL = 1e-6  # rtol = atol for the accurate solves
ERR_PER_DIM = 1e-3  # nats per dimension; see the module docstring

SDES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}


def mixture_2d() -> sd.GaussianMixture:
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.0], [0.5, -1.2]], dtype=torch.float64)
    return sd.GaussianMixture(means, torch.tensor([0.4, 0.6, 0.5]), torch.tensor([0.3, 0.3, 0.4]))


def mixture_nd(d: int, k: int = 3, seed: int = 0) -> sd.GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g, dtype=torch.float64)
    stds = torch.linspace(0.5, 0.7, k, dtype=torch.float64)
    return sd.GaussianMixture(means, stds, torch.linspace(1.0, 2.0, k))


def data(gmm: sd.GaussianMixture, n: int, seed: int = 1) -> torch.Tensor:
    return gmm.sample(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def exact_prior(gmm: sd.GaussianMixture, sde: sd.SDE):
    return lambda z: gmm.log_prob_at(sde, z, sde.T)


# --- exactness on the analytic mixture ---------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 32])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_matches_exact_mixture_density(dim: int, sde_name: str) -> None:
    sde = SDES[sde_name]()
    gmm = mixture_2d() if dim == 2 else mixture_nd(dim)
    x = data(gmm, 16)
    model = gmm.score_model(sde, prediction="eps", time_input="continuous")
    res = sd.log_likelihood(model, x, rtol=TOL, atol=TOL, eps=EPS, prior_logp=exact_prior(gmm, sde))
    truth = gmm.log_prob_at(sde, x, EPS)
    err = (res.logp - truth).abs().mean() / dim
    assert err < ERR_PER_DIM, f"{sde_name} D={dim}: mean |log p − true| = {err:.2e} nats/dim"
    # The decomposition holds and NFE is one shared count per batch.
    torch.testing.assert_close(res.logp, res.prior_logp + res.delta_logp)
    assert res.logp.dtype == torch.float64 and res.z.shape == x.shape
    assert (res.nfe == res.nfe[0]).all() and res.nfe[0] > 6


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_default_prior_error_is_the_prior_mismatch(sde_name: str) -> None:
    """With the SDE's own prior the error is ``log N(z; 0, s_p²) − log p_T(z)``, which we bound.

    ``log p_T(z) = log Σ_k w_k N_k(z)`` lies between ``min_k`` and ``max_k`` of
    ``log N_k(z)`` (the weights sum to 1), so ``|log N(z; 0, s_p²) − log p_T(z)| ≤
    max_k |log N_k(z) − log N(z; 0, s_p²)|``, computed per sample in closed form with
    ``N_k = N(alpha_T μ_k, (alpha_T² s_k² + sigma_T²) I)``. The solver error adds ERR_PER_DIM.
    """
    sde = SDES[sde_name]()
    # Means moved off the origin by 3 so that the mismatch is visible: VP's prior misses the
    # mean alpha_T·μ ≈ 0.02·(1, 1) (a log-density error ≈ alpha_T μ·z ≈ 0.03 nats at |z| ≈ 1.4),
    # VE's misses μ against sigma_max² (≈ μ·z/50² ≈ 0.1 nats at |z| ≈ 50).
    base = mixture_2d()
    gmm = sd.GaussianMixture(base.means + 3.0, base.stds, base.weights)
    x = data(gmm, 16)
    model = gmm.score_model(sde, prediction="eps")
    res = sd.log_likelihood(model, x, rtol=TOL, atol=TOL)
    truth = gmm.log_prob_at(sde, x, EPS)
    z = res.z
    a_T, s_T, s_p = float(sde.alpha(sde.T)), float(sde.sigma(sde.T)), sde.prior_std
    log_prior = torch.distributions.Normal(0.0, s_p).log_prob(z).sum(1)
    comp = torch.stack([
        torch.distributions.Normal(a_T * mu, math.sqrt(a_T**2 * float(s[0]) ** 2 + s_T**2))
        .log_prob(z).sum(1)
        for mu, s in zip(gmm.means, gmm.stds)
    ])
    bound = (comp - log_prior).abs().max(0).values
    err = (res.logp - truth).abs()
    assert (err <= bound + 2 * ERR_PER_DIM).all(), (err, bound)
    # ... and the mismatch is real: above the 1e-3 nats/dim the exact-prior tests allow, which is
    # why they pass the exact p_T.
    assert err.mean() / 2 > ERR_PER_DIM, err


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_single_gaussian_closed_form(sde_name: str) -> None:
    """One Gaussian N(μ, s²I): ``p_t = N(alpha μ, alpha² s² + sigma²)``, with a hand-written score."""
    sde = SDES[sde_name]()
    mu = torch.tensor([0.7, -1.3, 0.2], dtype=torch.float64)
    s = 0.6

    def marginal(t: float) -> torch.distributions.Normal:
        a, sig = float(sde.alpha(t)), float(sde.sigma(t))
        return torch.distributions.Normal(a * mu, math.sqrt(a * a * s * s + sig * sig))

    def score_net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sig = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return -(x - a * mu) / (a * a * s * s + sig * sig)

    model = sd.ScoreModel(score_net, sde, prediction="score", time_input="continuous")
    x = mu + s * torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = sd.log_likelihood(model, x, rtol=TOL, atol=TOL, eps=EPS,
                            prior_logp=lambda z: marginal(sde.T).log_prob(z).sum(1))
    truth = marginal(EPS).log_prob(x).sum(1)
    assert ((res.logp - truth).abs() / 3 < ERR_PER_DIM).all(), (res.logp - truth)


# --- Hutchinson-Skilling -------------------------------------------------------------------------


def analytic_eps_divergence(gmm: sd.GaussianMixture, sde: sd.SDE, x: torch.Tensor, t: float) -> torch.Tensor:
    """``div_x eps = −sigma · tr ∇s`` for the mixture score ``s = Σ r_k d_k``, ``d_k = (aμ_k − x)/v_k``.

    ``∇s = −Σ r_k I/v_k + Σ r_k (d_k − s) d_kᵀ`` (since ``∇r_k = r_k (d_k − s)``), so
    ``tr ∇s = −D Σ r_k/v_k + Σ r_k |d_k|² − |s|²`` (isotropic components).
    """
    a, sig = float(sde.alpha(t)), float(sde.sigma(t))
    v = a * a * gmm.stds[:, 0] ** 2 + sig * sig  # (K,)
    d = (a * gmm.means[None] - x[:, None]) / v[None, :, None]  # (B, K, D)
    logr = torch.log(gmm.weights) - 0.5 * (v * (d * d).sum(-1) + x.shape[1] * torch.log(2 * math.pi * v))
    r = torch.softmax(logr, dim=1)
    s = (r[:, :, None] * d).sum(1)
    tr = -x.shape[1] * (r / v).sum(1) + (r * (d * d).sum(-1)).sum(1) - (s * s).sum(1)
    return -sig * tr


@pytest.mark.parametrize("trace", ["rademacher", "gaussian"])
def test_hutchinson_single_probe_is_unbiased(trace: str) -> None:
    """At fixed (x, t) the mean of 4000 single-probe estimates ``vᵀ J v`` matches the trace.

    The exact trace is first checked against the closed form above (to 1e-9 relative, float64
    rounding). Then, per point, |mean − trace| < 4 standard errors of the mean (the SE is the
    sample SD / sqrt(4000)); a 4σ miss has probability ~6e-5 per check under the CLT.
    """
    sde = sd.VPSDE()
    gmm = mixture_nd(32)
    model = gmm.score_model(sde, prediction="eps")
    t = 0.3
    x = data(gmm, 4, seed=5)
    xg = x.clone().requires_grad_(True)
    exact = divergence(model.predict(xg, t).eps, xg, "exact")
    torch.testing.assert_close(exact, analytic_eps_divergence(gmm, sde, x, t), rtol=1e-9, atol=1e-9)

    m = 4000
    rows = x.repeat_interleave(m, 0).requires_grad_(True)
    probes = torch.randn((1, *rows.shape), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    if trace == "rademacher":
        probes = torch.sign(probes)
    single = divergence(model.predict(rows, t).eps, rows, trace, probes).detach().reshape(4, m)
    se = single.std(1) / math.sqrt(m)
    assert (se > 0).all()
    assert ((single.mean(1) - exact.detach()).abs() < 4 * se).all(), (single.mean(1), exact, se)


@pytest.mark.parametrize("trace", ["rademacher", "gaussian"])
def test_hutchinson_error_shrinks_like_inverse_sqrt_probes(trace: str) -> None:
    """Per-sample error of a full solve: RMS(K=1) / RMS(K=16) ≈ sqrt(16) = 4.

    The probes are fixed per solve and the ``x̄`` path does not depend on them, so the error
    of the K-probe solve is the mean of K independent single-probe errors: variance / K.
    One point ``x`` is repeated n = 512 times (each row draws its own probes), so the errors
    are i.i.d. and the RMS estimates are not dominated by a few hard points. A single-probe
    error is a quadratic form in v, heavy-tailed (measured kurtosis κ ≈ 3 Gaussian, ≈ 8-9
    Rademacher, whose off-diagonal Jacobian is low rank); the RMS over n draws has relative SD
    ≈ ½·sqrt((κ − 1)/n) ≈ 0.06 (K=1) and ≈ 0.04 (K=16), so log(ratio) has SD ≈ 0.07 and the
    range [2.5, 6.5] (= 4·e^{−0.47}, 4·e^{+0.49}) is > 6σ wide either way. Summing instead of
    averaging the probes (ratio 4/16), reusing one probe (ratio 1) or a mis-scaled probe (bias)
    fail it. The K=1 errors must also be unbiased: |mean| < 4 SE.
    """
    sde = sd.VPSDE()
    gmm = mixture_nd(32, k=4)
    model = gmm.score_model(sde, prediction="eps")
    prior = exact_prior(gmm, sde)
    x1 = data(gmm, 1, seed=1)
    exact = sd.log_likelihood(model, x1, rtol=TOL, atol=TOL, prior_logp=prior).logp
    n = 512
    x = x1.expand(n, -1).clone()
    errs = {}
    for k, seed in ((1, 11), (16, 12)):
        res = sd.log_likelihood(model, x, trace=trace, probes=k, rtol=TOL, atol=TOL, prior_logp=prior,
                                generator=torch.Generator().manual_seed(seed))
        errs[k] = res.logp - exact
    rms = {k: float(e.pow(2).mean().sqrt()) for k, e in errs.items()}
    # The variance must be non-trivial compared with the solver error (~1e-4 nats here).
    assert rms[16] > 100 * 32 * 1e-5
    ratio = rms[1] / rms[16]
    assert 2.5 < ratio < 6.5, f"RMS error ratio K=1/K=16 = {ratio:.2f}, expected ≈ 4"
    e1 = errs[1]
    assert abs(float(e1.mean())) < 4 * float(e1.std()) / math.sqrt(n), "single-probe solves are biased"


# --- solver accuracy, backends, batching -------------------------------------------------------


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_tolerance_sweep_converges(sde_name: str) -> None:
    """Tightening rtol = atol over 1e-3, 1e-5, 1e-7 lowers the error and raises the NFE.

    Between these tolerances the error falls ~100× per step (measured ~2e-2 → 7e-5 → 2e-6 nats
    for VP), so strict monotonicity has a large margin; at 1e-7 the error must be < 1e-5
    nats/dim. For fixed-step rk4 (4th order) on the logSNR grid, the error must shrink by
    2^4 = 16 per doubling of steps once in the asymptotic range: log2(e_N/e_2N) ∈ 4 ± 0.3
    for N = 32 → 64 → 128 (± 0.3 rather than the DESIGN's ± 0.15 because the measured quantity
    is a mean of |errors| over 16 samples whose leading terms differ).
    """
    sde = SDES[sde_name]()
    gmm = mixture_2d()
    x = data(gmm, 16, seed=3)
    model = gmm.score_model(sde, prediction="eps")
    prior = exact_prior(gmm, sde)
    truth = gmm.log_prob_at(sde, x, EPS)
    errs, nfes = [], []
    for tol in (1e-3, 1e-5, 1e-7):
        res = sd.log_likelihood(model, x, rtol=tol, atol=tol, prior_logp=prior)
        errs.append(float((res.logp - truth).abs().mean()))
        nfes.append(int(res.nfe[0]))
    assert errs[0] > errs[1] > errs[2], errs
    assert nfes[0] < nfes[1] < nfes[2], nfes
    assert errs[2] / 2 < 1e-5

    rk = []
    for steps in (8, 32, 64, 128):
        res = sd.log_likelihood(model, x, method="rk4", steps=steps, prior_logp=prior)
        assert int(res.nfe[0]) == 4 * steps  # four stages per step, exactly
        rk.append(float((res.logp - truth).abs().mean()))
    assert rk[0] > rk[1] > rk[2] > rk[3], rk
    orders = [math.log2(rk[i] / rk[i + 1]) for i in (1, 2)]
    assert all(abs(p - 4.0) < 0.3 for p in orders), orders


def test_backends_agree() -> None:
    """torchdiffeq dopri5, scipy RK45 and rk4 with 256 steps give the same log p.

    Each is within ~1e-5 nats of the exact value at these settings (dopri5/RK45 at tol 1e-6;
    rk4's 4th-order error at 256 logSNR steps is ~1e-7), so they must agree to 1e-4 nats per
    sample, and each must be within 1e-4 of the truth. The latents z are VE's, of size ~σ_max = 50,
    whose error the solvers control relative to |z| (rtol 1e-6 per step, measured 1.7e-6·|z|
    after the solve): they must agree to 1e-5 relative (+ 1e-4), far below the distance between
    the latents of different points.
    """
    sde = sd.VESDE()
    gmm = mixture_2d()
    x = data(gmm, 8, seed=4)
    model = gmm.score_model(sde, prediction="eps")
    prior = exact_prior(gmm, sde)
    truth = gmm.log_prob_at(sde, x, EPS)
    runs = {
        "dopri5": sd.log_likelihood(model, x, method="dopri5", rtol=TOL, atol=TOL, prior_logp=prior),
        "RK45": sd.log_likelihood(model, x, method="RK45", rtol=TOL, atol=TOL, prior_logp=prior),
        "rk4": sd.log_likelihood(model, x, method="rk4", steps=256, prior_logp=prior),
    }
    for name, res in runs.items():
        assert (res.logp - truth).abs().max() < 1e-4, name
        torch.testing.assert_close(res.logp, runs["dopri5"].logp, rtol=0, atol=1e-4)
        torch.testing.assert_close(res.z, runs["dopri5"].z, rtol=1e-5, atol=1e-4)


def test_batch_size_splits_agree() -> None:
    """Four independent solves of 4 samples agree with one solve of 16 up to solver tolerance.

    The chunks take their own adaptive steps, so the results differ by at most the sum of the two
    solves' errors, each ≲ 1e-4 nats at tol 1e-6 (see the module docstring).
    """
    sde = sd.VPSDE()
    gmm = mixture_2d()
    x = data(gmm, 16, seed=6)
    model = gmm.score_model(sde, prediction="eps")
    prior = exact_prior(gmm, sde)
    whole = sd.log_likelihood(model, x, rtol=TOL, atol=TOL, prior_logp=prior)
    split = sd.log_likelihood(model, x, rtol=TOL, atol=TOL, prior_logp=prior, batch_size=4)
    torch.testing.assert_close(split.logp, whole.logp, rtol=0, atol=1e-4)
    assert split.logp.shape == (16,) and split.nfe.shape == (16,)
    for chunk in split.nfe.split(4):  # one NFE per independent solve
        assert (chunk == chunk[0]).all()


# --- bits per dimension --------------------------------------------------------------------------


def pixel_distribution(lo: float, hi: float) -> sd.GaussianMixture:
    """A smooth density over y ∈ [lo, hi]² whose stds (≥ 0.1 of the range) span ≥ 25 bins."""
    unit_means = torch.tensor([[0.35, 0.6], [0.65, 0.4]], dtype=torch.float64)
    return sd.GaussianMixture(lo + (hi - lo) * unit_means, (hi - lo) * torch.tensor([0.12, 0.1]),
                              torch.tensor([0.45, 0.55]))


def cell_log_prob(gmm: sd.GaussianMixture, sde: sd.SDE, pixels: torch.Tensor, lo: float, hi: float):
    """Exact ``log P(pixels)`` for y ~ p_eps (a diagonal mixture): per component a product of
    normal-CDF differences over the cells ``[lo + Δ·x, lo + Δ·(x + 1)]``, ``Δ = (hi − lo)/256``."""
    a, s = float(sde.alpha(EPS)), float(sde.sigma(EPS))
    means = (a * gmm.means).numpy()
    sds = np.sqrt(a * a * gmm.stds.numpy() ** 2 + s * s)
    delta = (hi - lo) / 256
    left = lo + delta * pixels.numpy().astype(np.float64)
    p = np.zeros(len(left))
    for w, m, sd_k in zip(gmm.weights.numpy(), means, sds):
        p += w * np.prod(ndtr((left + delta - m) / sd_k) - ndtr((left - m) / sd_k), axis=1)
    return torch.from_numpy(np.log(p))


def cell_log_density_range(gmm: sd.GaussianMixture, sde: sd.SDE, pixels: torch.Tensor,
                           lo: float, hi: float) -> torch.Tensor:
    """An upper bound R on ``max − min`` of ``log p_eps(y)`` over each pixel's cell.

    ``∂_i log p = Σ_k r_k (a μ_ki − y_i)/v_k`` is a convex combination, so over the cell
    ``|∂_i log p| ≤ max_k (|a μ_ki − c_i| + Δ/2)/v_k`` (c the cell centre), and walking the
    cell axis by axis ``R ≤ Δ Σ_i max_k (...)``.
    """
    a, s = float(sde.alpha(EPS)), float(sde.sigma(EPS))
    delta = (hi - lo) / 256
    c = lo + delta * (pixels.to(torch.float64) + 0.5)
    v = a * a * gmm.stds**2 + s * s  # (K, D)
    g = ((a * gmm.means[None] - c[:, None]).abs() + delta / 2) / v[None]  # (B, K, D)
    return delta * g.max(1).values.sum(1)


def test_bits_per_dim_on_known_discrete_distribution() -> None:
    """bits/dim of 8-bit pixels vs the exact −log2 P(pixels)/D, for data_range (0, 1) and (−1, 1).

    The pixel distribution P is the cell integral of a continuous mixture p_eps over y; the model
    is that mixture's exact score (so its dequantized density is exactly p_eps) with the exact
    p_T. With one dequantization draw u per sample,

        bpd·D·ln2 = −log p_eps(y_u) − D log Δ  and  −log P = −log(mean_cell p_eps) − D log Δ,

    so ``(bpd − b)·D·ln2 = log mean_cell p − log p(y_u)`` with b = −log2 P/D. Both logs lie in the
    cell's range of log p, so per sample |bpd − b| ≤ R/(D ln2) (R bounded in closed form above),
    and over u its mean is the Jensen gap J = log E e^L − E L ∈ [0, R²/8] (Hoeffding's lemma).
    So the mean of (bpd − b) over n samples lies in [−4SE, mean(R²/8)/(D ln2) + 4SE] (+ solver).
    A wrong offset (log2 256 − log2(hi − lo)) is off by ≥ 1 bit/dim for one of the ranges.
    The same generator seed gives the same u for both ranges, and y on (−1, 1) is the affine
    image of y on (0, 1), so the two runs must give the same ``bpd − b`` per sample (to solver
    error). (Not the same bpd: the eps-noise sigma(eps)² = 1e-6 is a different fraction of the data
    variance on the two ranges, so the two p_eps, and hence b, differ by ~1e-4 bits/dim.)
    """
    sde = sd.VPSDE()
    n, d = 64, 2
    unit = pixel_distribution(0.0, 1.0)
    y = data(unit, 4 * n, seed=8)
    keep = ((y >= 0) & (y < 1)).all(1)
    pixels = torch.floor(256 * y[keep][:n]).to(torch.uint8)
    assert len(pixels) == n
    solver = 1e-4 / (d * math.log(2))  # bits/dim: ~1e-5 nats at tol 1e-7 (measured), 10× margin
    devs = {}
    for lo, hi in ((0.0, 1.0), (-1.0, 1.0)):
        gmm = pixel_distribution(lo, hi)
        model = gmm.score_model(sde, prediction="eps")
        out = sd.bits_per_dim(model, pixels, data_range=(lo, hi), generator=torch.Generator().manual_seed(9),
                              rtol=1e-7, atol=1e-7, prior_logp=exact_prior(gmm, sde))
        b = -cell_log_prob(gmm, sde, pixels, lo, hi) / (d * math.log(2))
        r = cell_log_density_range(gmm, sde, pixels, lo, hi)
        dev = out.bpd - b
        assert (dev.abs() <= r / (d * math.log(2)) + solver).all(), (lo, hi, dev, r)
        se = float(dev.std()) / math.sqrt(n)
        jensen_max = float((r**2 / 8).mean()) / (d * math.log(2))
        assert -4 * se - solver <= float(dev.mean()) <= jensen_max + 4 * se + solver, (lo, hi, dev.mean(), se)
        assert out.mean == pytest.approx(float(out.bpd.mean()))
        assert out.stderr == pytest.approx(float(out.bpd.std()) / math.sqrt(n))
        devs[lo, hi] = dev
    torch.testing.assert_close(devs[0.0, 1.0], devs[-1.0, 1.0], rtol=0, atol=solver)


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_dequantization_fills_each_cell_uniformly(data_range) -> None:
    """``y = lo + (hi − lo)(x + u)/256`` lies in pixel x's cell, with u ~ U[0, 1) (KS test) and
    log-Jacobian log((hi − lo)/256). (The statistical bpd test above cannot see a cell that is
    off by a fraction of a bin: to first order ``E[∇log p] = 0`` averages that shift out.)"""
    from scipy.stats import kstest

    from scoresde.likelihood import dequantize
    from scoresde.noise import GeneratorNoise

    lo, hi = data_range
    pixels = torch.arange(256).repeat(40).reshape(-1, 4)  # every level, 40 times
    y, log_jac = dequantize(pixels, GeneratorNoise(torch.Generator().manual_seed(0)), data_range)
    delta = (hi - lo) / 256
    assert log_jac == pytest.approx(math.log(delta), rel=1e-12)
    u = (y - lo) / delta - pixels
    assert y.dtype == torch.float64 and (u >= 0).all() and (u < 1).all()
    assert kstest(u.flatten().numpy(), "uniform").pvalue > 1e-4


def test_bits_per_dim_continuous_input() -> None:
    """Floating-point data are not dequantized: bpd = −log p(x)/(D ln 2)."""
    sde = sd.VPSDE()
    gmm = mixture_2d()
    x = data(gmm, 8, seed=10)
    model = gmm.score_model(sde, prediction="eps")
    out = sd.bits_per_dim(model, x, rtol=TOL, atol=TOL, prior_logp=exact_prior(gmm, sde))
    expected = -gmm.log_prob_at(sde, x, EPS) / (2 * math.log(2))
    torch.testing.assert_close(out.bpd, expected, rtol=0, atol=ERR_PER_DIM / math.log(2))


# --- bad input -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    sde = sd.VPSDE()
    gmm = mixture_2d()
    return gmm.score_model(sde, prediction="eps"), data(gmm, 4)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda x: {"x": torch.where(x > 0, torch.nan, x)}, "finite"),
        (lambda x: {"x": torch.where(x > 0, torch.inf, x)}, "finite"),
        (lambda x: {"x": x[:, 0]}, "shape"),
        (lambda x: {"trace": "hutch"}, "trace"),
        (lambda x: {"method": "euler-maruyama"}, "method"),
        (lambda x: {"probes": 0, "trace": "rademacher", "generator": torch.Generator()}, "probes"),
        (lambda x: {"eps": 0.0}, "eps"),
        (lambda x: {"eps": 1.0}, "eps"),
        (lambda x: {"eps": -1e-3}, "eps"),
        (lambda x: {"steps": 10}, "steps"),  # dopri5 is adaptive
        (lambda x: {"method": "rk4"}, "steps"),  # fixed-step without steps
        (lambda x: {"trace": "rademacher"}, "generator"),
        (lambda x: {"trace": "gaussian", "generator": None}, "generator"),
        (lambda x: {"batch_size": 0}, "batch_size"),
    ],
)
def test_log_likelihood_bad_input(small, change, match) -> None:
    model, x = small
    kwargs = {"x": x, **change(x)}
    with pytest.raises(ValueError, match=match):
        sd.log_likelihood(model, kwargs.pop("x"), **kwargs)


def test_bits_per_dim_bad_input(small) -> None:
    model, _ = small
    pixels = torch.randint(0, 256, (4, 2), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="generator"):
        sd.bits_per_dim(model, pixels)  # integer data need the dequantization noise
    for bad in (pixels - 1 - pixels.max(), pixels + 256):  # below 0 / above 255
        with pytest.raises(ValueError, match=r"\[0, 255\]"):
            sd.bits_per_dim(model, bad, generator=torch.Generator())
    with pytest.raises(ValueError, match="shape"):
        sd.bits_per_dim(model, pixels[:, 0], generator=torch.Generator())
    with pytest.raises(ValueError, match="data_range"):
        sd.bits_per_dim(model, pixels, data_range=(1.0, 0.0), generator=torch.Generator())
