"""The DDPM variational bound, checked against exact likelihoods and Monte-Carlo KLs.

The model is the exact Gaussian-mixture oracle behaving like a perfect DDPM network
(``prediction="eps"``, ``time_input="index"``) on ``VPSDE.from_betas`` tables that discretize the
continuous linear VP schedule exactly: ``β_k = −expm1(log ᾱ(k/N) − log ᾱ((k−1)/N))`` with
``log ᾱ(t) = −0.1 t − 9.95 t²`` (β_min = 0.1, β_max = 20). All DDPM quantities used as truth
(``q(x_k | x0)``, the posterior ``q(x_{k−1} | x_k, x0)`` of Ho et al. eq. 6-7, Tweedie's
``E[x0 | x_k]``) are written out here from the β table, independently of the library.

What a correct bound must satisfy, with the exact model:

* ``E[bound] ≥ E[−log p_θ(x0)] ≥ E[−log p_data(x0)]`` (Jensen, then Gibbs), so the mean bound
  is above the exact NLL; we assert it with a 3-SE allowance for the Monte-Carlo draws.
* A sharper, closed-form lower bound on the gap for each variance choice (``gap_lower_bound``):
  for step k the expected cross-entropy ``E[−log N(x_{k−1}; m_θ(x_k), σ_k²)]`` under q depends
  on σ_k² only through ``½D(ρ − 1 − log ρ)``, ``ρ = τ_k²/σ_k²``, where ``τ_k² = E|x_{k−1} −
  m_θ(x_k)|²/D = β̃_k + c_k² E tr Cov(x0 | x_k)/D`` (c_k the x0-coefficient of the posterior
  mean) is the best constant variance. Since the bound with the best variances is itself
  ≥ the data entropy, ``E[gap] ≥ Σ_k ½D(ρ_k − 1 − log ρ_k)``. By the law of total variance
  ``E tr Cov(x0|x_k)/D ≥ Σ_c w_c s_c² σ_k²/(ᾱ_k s_c² + σ_k²)`` (within-component posterior
  variance), which lower-bounds τ_k² and, as ρ − 1 − log ρ grows for ρ > 1, the gap.

Why β̃ ("posterior") does not tighten with N: near t = 0, ``1 − ᾱ(t) ≈ β_min t``, so
``β̃_k/β_k = (1 − ᾱ_{k−1})/(1 − ᾱ_k) ≈ (k − 1)/k`` whatever N is, while the true reverse
variance there is ≈ β_k (x0 is pinned by x_k only to within σ_k). The first steps are thus
mis-specified by the same factors ρ_k ≈ k/(k − 1) at every N, costing
``½D Σ_{k≥2} (1/(k−1) − log(k/(k−1))) → ½D·γ ≈ 0.58 nats`` (γ Euler's constant) for D = 2 as
N → ∞ — more at N = 100-1000, where 1 − ᾱ is still quadratic over the first steps. With β the
mismatch vanishes as N grows and the bound converges to the NLL.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

import scoresde as sd
from scoresde.bound import discretized_gaussian_log_likelihood, gaussian_kl

N_SAMPLES = 4000


def log_alpha_bar_continuous(t: torch.Tensor) -> torch.Tensor:
    return -0.1 * t - 0.5 * (20.0 - 0.1) * t * t


class Table:
    """A DDPM β table and the closed-form quantities of its forward process, indexed k = 0..N."""

    def __init__(self, n: int):
        self.N = n
        self.log_ab = log_alpha_bar_continuous(torch.arange(n + 1, dtype=torch.float64) / n)
        self.ab = torch.exp(self.log_ab)  # ᾱ_k, ᾱ_0 = 1
        self.betas = -torch.expm1(torch.diff(self.log_ab))  # β_k at index k − 1
        self.sde = sd.VPSDE.from_betas(self.betas)

    def beta(self, k: int) -> float:
        return float(self.betas[k - 1])

    def q_xk(self, x0: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
        ab = float(self.ab[k])
        return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(x0.shape, generator=g, dtype=x0.dtype)

    def posterior(self, x0: torch.Tensor, xk: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
        """Mean and variance β̃_k of q(x_{k−1} | x_k, x0) (Ho et al. eq. 7)."""
        ab, ab_prev, b = float(self.ab[k]), float(self.ab[k - 1]), self.beta(k)
        mean = (math.sqrt(ab_prev) * b / (1 - ab)) * x0 + (math.sqrt(1 - b) * (1 - ab_prev) / (1 - ab)) * xk
        return mean, (1 - ab_prev) / (1 - ab) * b

    def model_variance(self, k: int, variance: str) -> float:
        if variance == "beta":
            return self.beta(k)
        return self.posterior(torch.zeros(1), torch.zeros(1), max(k, 2))[1]  # β̃_1 = 0: use β̃_2


def tweedie_x0(gmm: sd.GaussianMixture, table: Table, xk: torch.Tensor, k: int) -> torch.Tensor:
    """``E[x0 | x_k] = (x_k + (1 − ᾱ_k) ∇log p_k(x_k)) / sqrt(ᾱ_k)`` from the mixture's score."""
    ab = float(table.ab[k])
    score = gmm.marginal_score(xk, math.sqrt(ab), math.sqrt(1 - ab))
    return (xk + (1 - ab) * score) / math.sqrt(ab)


def normal_logpdf(x: torch.Tensor, mean: torch.Tensor, var: float) -> torch.Tensor:
    return torch.distributions.Normal(mean, math.sqrt(var)).log_prob(x).sum(1)


def gap_lower_bound(table: Table, gmm: sd.GaussianMixture, variance: str) -> float:
    """Closed-form lower bound on E[bound − NLL] from the KL terms k = 2..N (module docstring)."""
    d = gmm.dim
    s2 = gmm.stds[:, 0] ** 2  # isotropic components
    total = 0.0
    for k in range(2, table.N + 1):
        ab, ab_prev, b = float(table.ab[k]), float(table.ab[k - 1]), table.beta(k)
        c = math.sqrt(ab_prev) * b / (1 - ab)
        within = float((gmm.weights * s2 * (1 - ab) / (ab * s2 + (1 - ab))).sum())
        tau2 = (1 - ab_prev) / (1 - ab) * b + c * c * within
        rho = tau2 / table.model_variance(k, variance)
        total += 0.5 * d * (rho - 1 - math.log(rho))
    return total


def two_bumps() -> sd.GaussianMixture:
    return sd.GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64),
                              torch.tensor([0.15, 0.15]))


def se(v: torch.Tensor) -> float:
    return float(v.std()) / math.sqrt(len(v))


@pytest.fixture(scope="module")
def sweep():
    """Bounds for N ∈ {10, 100, 1000} and both variances on the same 4000 data points."""
    gmm = two_bumps()
    x = gmm.sample(N_SAMPLES, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    nll = -gmm.log_prob(x)
    out = {}
    for n in (10, 100, 1000):
        table = Table(n)
        model = gmm.score_model(table.sde, prediction="eps", time_input="index")
        for variance in ("beta", "posterior"):
            b = sd.variational_bound(model, x, variance=variance,
                                     generator=torch.Generator().manual_seed(n))
            assert b.nfe == n and b.kl.shape == (n - 1, N_SAMPLES)
            out[n, variance] = (b.total, gap_lower_bound(table, gmm, variance))
    return nll, out


@pytest.mark.parametrize("variance", ["beta", "posterior"])
@pytest.mark.parametrize("n", [10, 100, 1000])
def test_bound_is_above_exact_nll(sweep, n: int, variance: str) -> None:
    """mean(bound − NLL) ≥ (closed-form gap lower bound ≥ 0) − 3 SE, per sample paired."""
    nll, out = sweep
    total, lower = out[n, variance]
    gap = total - nll
    assert lower >= 0
    assert float(gap.mean()) >= lower - 3 * se(gap), (n, variance, float(gap.mean()), lower, se(gap))


def test_beta_bound_tightens_with_n(sweep) -> None:
    """With β the bound falls towards the NLL: N = 10 > 100 > 1000, each step by > 3 paired SEs
    (measured ≈ 1.45, 0.21, 0.04 nats above the NLL of this 2-D mixture)."""
    _, out = sweep
    for a, b in ((10, 100), (100, 1000)):
        diff = out[a, "beta"][0] - out[b, "beta"][0]
        assert float(diff.mean()) > 3 * se(diff), (a, b, float(diff.mean()), se(diff))


def test_posterior_bound_does_not_tighten(sweep) -> None:
    """With β̃ the gap stays ≳ 0.8 nats at N = 100 and 1000 (see the module docstring): the
    closed-form lower bound says so, and the N = 1000 bound is > 0.5 nats above the β one."""
    _, out = sweep
    for n in (100, 1000):
        lower = out[n, "posterior"][1]
        assert lower > 0.75, (n, lower)  # ≈ 0.88, 0.81; the N → ∞ limit is γ·D/2 ≈ 0.58
    diff = out[1000, "posterior"][0] - out[1000, "beta"][0]
    assert float(diff.mean()) - 3 * se(diff) > 0.5


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_kl_closed_form_matches_monte_carlo_at_fixed_xk(variance: str) -> None:
    """For fixed (x0, x_k): E_{x_{k−1} ~ q}[log q − log p_θ] = gaussian_kl(q ‖ p_θ), within 4 SE."""
    table = Table(10)
    gmm = two_bumps()
    g = torch.Generator().manual_seed(1)
    x0 = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    m = 40000
    for k in (2, 5, 10):
        xk = table.q_xk(x0, k, g)
        mean_q, var_q = table.posterior(x0, xk, k)
        mean_p, _ = table.posterior(tweedie_x0(gmm, table, xk, k), xk, k)
        var_p = table.model_variance(k, variance)
        draws = mean_q + math.sqrt(var_q) * torch.randn(m, 2, generator=g, dtype=torch.float64)
        log_ratio = normal_logpdf(draws, mean_q, var_q) - normal_logpdf(draws, mean_p, var_p)
        closed = gaussian_kl(mean_q, torch.full_like(x0, math.log(var_q)),
                             mean_p, torch.full_like(x0, math.log(var_p)))
        assert abs(float(log_ratio.mean() - closed)) < 4 * se(log_ratio), (k, variance)


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_each_bound_term_matches_monte_carlo(variance: str) -> None:
    """Every term of variational_bound, averaged over copies of one x0, equals an independent
    Monte-Carlo estimate over the joint (x_k, x_{k−1}) ~ q of log q − log p_θ (KL terms), of
    −log p_θ(x0 | x_1) (decoder); the prior KL is deterministic and checked in closed form.
    Each comparison allows 4 combined SEs (2 × 10 comparisons: a false alarm ~1e-3)."""
    table = Table(10)
    gmm = two_bumps()
    model = gmm.score_model(table.sde, prediction="eps", time_input="index")
    m = 20000
    x0 = torch.tensor([[0.9, 0.1]], dtype=torch.float64).expand(m, 2).clone()
    b = sd.variational_bound(model, x0, variance=variance, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    for k in range(1, table.N + 1):
        xk = table.q_xk(x0, k, g)
        mean_p, _ = table.posterior(tweedie_x0(gmm, table, xk, k), xk, k)
        var_p = table.model_variance(k, variance)
        if k == 1:
            mine, theirs = -normal_logpdf(x0, mean_p, var_p), b.decoder
        else:
            mean_q, var_q = table.posterior(x0, xk, k)
            prev = mean_q + math.sqrt(var_q) * torch.randn(m, 2, generator=g, dtype=torch.float64)
            mine = normal_logpdf(prev, mean_q, var_q) - normal_logpdf(prev, mean_p, var_p)
            theirs = b.kl[k - 2]
        tol = 4 * math.hypot(se(mine), se(theirs))
        assert abs(float(mine.mean() - theirs.mean())) < tol, (k, float(mine.mean()), float(theirs.mean()))
    ab_n = float(table.ab[-1])
    prior = 0.5 * (ab_n * x0**2 + (1 - ab_n) - 1 - math.log(1 - ab_n)).sum(1)
    torch.testing.assert_close(b.prior, prior, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(b.total, b.prior + b.kl.sum(0) + b.decoder)
    torch.testing.assert_close(b.bits_per_dim, b.total / (2 * math.log(2)))


# --- the discretized decoder ----------------------------------------------------------------


@pytest.mark.parametrize("mean, std", [(0.0, 0.5), (0.9, 0.01), (-1.0, 0.002), (0.3, 2.0), (-0.2, 0.05)])
def test_discretized_gaussian_matches_cdf_differences(mean: float, std: float) -> None:
    """256 bins spanning [−1, 1] (end bins open): probabilities sum to 1 and equal direct normal
    CDF differences (scipy, upper-tail form where both CDFs are near 1)."""
    lo, hi = -1.0, 1.0
    centres = torch.linspace(lo, hi, 256, dtype=torch.float64)[:, None]
    half = (hi - lo) / (2 * 255)
    logp = discretized_gaussian_log_likelihood(centres, torch.full_like(centres, mean),
                                               torch.full_like(centres, 2 * math.log(std)), half, lo, hi)
    assert float(torch.logsumexp(logp, 0).exp()) == pytest.approx(1.0, abs=1e-12)

    c = centres[:, 0].numpy()
    upper, lower = (c + half - mean) / std, (c - half - mean) / std
    direct = np.where(lower > 0, norm.sf(lower) - norm.sf(upper), norm.cdf(upper) - norm.cdf(lower))
    direct[0], direct[-1] = norm.cdf(upper[0]), norm.sf(lower[-1])
    ok = direct > 1e-250  # where the direct difference is representable
    assert ok.sum() >= 1
    np.testing.assert_allclose(np.exp(logp.numpy()[ok]), direct[ok], rtol=1e-7, atol=0)


def test_discretized_gaussian_sums_to_one_jointly() -> None:
    """Over all 256² pixel pairs of a 2-D Gaussian the per-dimension log-probabilities add up."""
    lo, hi = 0.0, 1.0
    levels = torch.linspace(lo, hi, 256, dtype=torch.float64)
    grid = torch.cartesian_prod(levels, levels)
    mean = torch.tensor([0.3, 0.8], dtype=torch.float64).expand_as(grid)
    logvar = torch.log(torch.tensor([0.1, 0.02], dtype=torch.float64) ** 2).expand_as(grid)
    logp = discretized_gaussian_log_likelihood(grid, mean, logvar, 0.5 / 255, lo, hi)
    assert float(torch.logsumexp(logp, 0).exp()) == pytest.approx(1.0, abs=1e-10)


# --- options and bad input ---------------------------------------------------------------------


def test_callable_variance_equals_beta() -> None:
    """A callable returning log β_k for the step at t = k/N reproduces variance="beta"."""
    table = Table(50)
    gmm = two_bumps()
    model = gmm.score_model(table.sde, prediction="eps", time_input="index")
    x = gmm.sample(64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def log_beta(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = round(float(t) * table.N)
        return torch.tensor(math.log(table.beta(k)), dtype=torch.float64)

    ref = sd.variational_bound(model, x, variance="beta", generator=torch.Generator().manual_seed(5))
    got = sd.variational_bound(model, x, variance=log_beta, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got.total, ref.total, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got.kl, ref.kl, rtol=1e-10, atol=1e-10)


def test_discretized_decoder_term_is_exact() -> None:
    """A network that always predicts the same x0 = c makes the decoder's mean exactly c (at k = 1
    the posterior mean is ``1·x0 + 0·eps`` since ᾱ_0 = 1), so with a callable log-variance the
    decoder term is ``−log P(pixel)`` under N(c, s²) with the DDPM bins: pixel p ↦ lo + (hi − lo)p/255,
    half-width (hi − lo)/510, end bins open. Computed here with scipy."""
    table = Table(10)
    lo, hi = -1.0, 1.0
    centre = torch.tensor([0.1, -0.95], dtype=torch.float64)
    s = 0.07
    model = sd.ScoreModel(lambda x, c: centre.expand_as(x).to(x.dtype), table.sde, prediction="x0",
                          time_input="index")
    pixels = torch.tensor([[0, 255], [127, 3], [140, 0], [255, 128]])
    b = sd.variational_bound(model, pixels, decoder="discretized", data_range=(lo, hi),
                             variance=lambda x_t, t: torch.tensor(2 * math.log(s), dtype=torch.float64),
                             generator=torch.Generator().manual_seed(0))
    v = lo + (hi - lo) * pixels.numpy() / 255.0
    half = (hi - lo) / 510
    up = np.where(pixels.numpy() == 255, np.inf, v + half)
    low = np.where(pixels.numpy() == 0, -np.inf, v - half)
    zu, zl = (up - centre.numpy()) / s, (low - centre.numpy()) / s
    prob = np.where(zl > 0, norm.sf(zl) - norm.sf(zu), norm.cdf(zu) - norm.cdf(zl))  # no cancellation
    expected = -np.log(prob).sum(1)
    np.testing.assert_allclose(b.decoder.numpy(), expected, rtol=1e-9)


def test_discretized_decoder_on_pixels() -> None:
    """8-bit pixels from a mixture on [−1, 1], rounded to the 256 levels (clipping = open end bins):
    every term is ≥ 0 (KLs, and −log of a probability ≤ 1), bits/dim are finite, and the mean
    bound is ≥ the exact discrete entropy estimate mean(−log P(pixels)) − 3 SE."""
    table = Table(100)
    lo, hi = -1.0, 1.0
    gmm = sd.GaussianMixture(torch.tensor([[-0.4, 0.3], [0.5, -0.2]], dtype=torch.float64),
                             torch.tensor([0.3, 0.2]))
    y = gmm.sample(500, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    pixels = torch.round((y - lo) / (hi - lo) * 255).clamp(0, 255).to(torch.uint8)
    model = gmm.score_model(table.sde, prediction="eps", time_input="index")
    b = sd.variational_bound(model, pixels, decoder="discretized", data_range=(lo, hi),
                             generator=torch.Generator().manual_seed(7))
    assert torch.isfinite(b.bits_per_dim).all()
    assert (b.kl >= 0).all() and (b.decoder >= 0).all() and (b.prior >= 0).all()

    c = (lo + (hi - lo) * pixels.numpy().astype(np.float64) / 255)
    half = (hi - lo) / (2 * 255)
    up = np.where(pixels.numpy() == 255, np.inf, c + half)
    low = np.where(pixels.numpy() == 0, -np.inf, c - half)
    p = np.zeros(len(c))
    for w, mu, s in zip(gmm.weights.numpy(), gmm.means.numpy(), gmm.stds.numpy()):
        p += w * np.prod(norm.cdf((up - mu) / s) - norm.cdf((low - mu) / s), axis=1)
    gap = b.total - torch.from_numpy(-np.log(p))
    assert float(gap.mean()) >= -3 * se(gap)


@pytest.fixture(scope="module")
def small():
    table = Table(10)
    gmm = two_bumps()
    model = gmm.score_model(table.sde, prediction="eps", time_input="index")
    return model, gmm.sample(4, dtype=torch.float64)


@pytest.mark.parametrize(
    "make_x, options, match",
    [
        (lambda x: x, {"decoder": "logistic"}, "decoder"),
        (lambda x: x, {"variance": "learned"}, "variance"),
        (lambda x: x, {"decoder": "discretized"}, "integer pixels"),  # float data
        (lambda x: torch.full((4, 2), 256), {"decoder": "discretized"}, "integer pixels"),
        (lambda x: torch.full((4, 2), -1), {"decoder": "discretized"}, "integer pixels"),
        (lambda x: torch.full((4, 2), 3), {}, "floating-point"),  # integer data, gaussian decoder
        (lambda x: x[:, 0], {}, "shape"),
        (lambda x: torch.where(x > 0, torch.nan, x), {}, "finite"),
    ],
)
def test_bad_input(small, make_x, options, match) -> None:
    model, x = small
    with pytest.raises(ValueError, match=match):
        sd.variational_bound(model, make_x(x), generator=torch.Generator(), **options)
