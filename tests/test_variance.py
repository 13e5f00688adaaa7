"""Learned variances (Nichol & Dhariwal 2021) and Analytic-DPM's optimal variance (Bao et al. 2022),
checked against the exact Gaussian-mixture oracle.

The oracle behaves like a perfect DDPM network (``prediction="eps"``, ``time_input="index"``) on
``VPSDE.from_betas`` tables that discretize the continuous linear VP schedule exactly
(``log ᾱ(t) = −0.1 t − 9.95 t²``, as tests/test_bound.py). A learned-variance model is the
oracle's exact eps with a variance interpolation ``v`` appended on the channel axis.

What must hold:

* Analytic-DPM's variance minimises each term of the bound over constant variances (given the
  exact mean), so its bound is no worse than the better of β and β̃ at every N — checked with
  common random numbers (the same ``x_k`` draws for the three bounds) against the standard error
  of the paired difference; Γ is estimated on a batch independent of the evaluated one. A Γ table
  forced to 0 (the largest variance the clip allows) must fail the same comparison.
* ``Σ = exp(v·log β + (1 − v)·log β̃)``: v = 0 is "posterior" and v = 1 "beta" exactly, and the v
  that interpolates to the analytic σ*² reproduces the analytic bound and samples.
* The hybrid loss equals a direct computation from the β table, its L_vlb part sends no gradient
  to the eps branch but does to v, and on a single step its exact minimiser over a constant v is
  the batch's optimal variance, which agrees with the analytic one within sampling error.
* The samplers run with "learned"/"analytic" on every SDE (VP, sub-VP, VE) and the analytic
  ancestral sampler reaches the MMD floor of exact draws.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from oracles import SDES
from torch import nn

import scoresde as sd
from scoresde.bound import step_term
from scoresde.grids import GridTable
from scoresde.losses import LOSSES, ddpm_loss, hybrid_loss
from scoresde.metrics import mmd2
from scoresde.model import Prediction
from scoresde.samplers.steps import Step, step_noise_std
from scoresde.variance import AnalyticVariance, EpsMomentTable, estimate_eps_moment

F64 = torch.float64

# 3-D, three components of different widths (the analytic variance is far from β and β̃ here).
MIX = sd.GaussianMixture(torch.tensor([[-1.0, 0.5, 0.0], [1.0, -0.5, 0.5], [0.0, 1.0, -1.0]], dtype=F64),
                         torch.tensor([0.15, 0.3, 0.2], dtype=F64), torch.tensor([0.5, 0.3, 0.2], dtype=F64))


def ddpm_sde(n: int) -> sd.VPSDE:
    t = torch.arange(n + 1, dtype=F64) / n
    log_ab = -0.1 * t - 0.5 * 19.9 * t * t
    return sd.VPSDE.from_betas(-torch.expm1(torch.diff(log_ab)))


def oracle(sde: sd.SDE, time_input: str = "index") -> sd.ScoreModel:
    return MIX.score_model(sde, prediction="eps", time_input=time_input)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def se(v: torch.Tensor) -> float:
    return float(v.std()) / math.sqrt(len(v))


class LearnedVarianceNet(nn.Module):
    """The oracle's exact eps plus ``shift`` (a parameter), then ``v(c)`` on the channel axis."""

    def __init__(self, sde: sd.SDE, v, time_input: str = "index"):
        super().__init__()
        self.exact = oracle(sde, time_input).net
        self.v = v
        self.shift = nn.Parameter(torch.zeros(MIX.dim, dtype=F64))

    def forward(self, x, c):
        eps = self.exact(x, c) + self.shift.to(x.dtype)
        v = self.v(c) if callable(self.v) else self.v
        return torch.cat([eps, torch.broadcast_to(torch.as_tensor(v, dtype=x.dtype), eps.shape)], 1)


def lv_model(sde: sd.SDE, v, time_input: str = "index") -> sd.ScoreModel:
    net = LearnedVarianceNet(sde, v, time_input)
    return sd.ScoreModel(net, sde, "eps", time_input, learned_variance=True)


def step_k(sde: sd.SDE, k: int) -> Step:
    """The bound's step k: τ_k = k/N → τ_{k−1}."""
    n = sde.N
    return Step.between(sde, torch.tensor(k / n, dtype=F64), torch.tensor((k - 1) / n, dtype=F64))


def clipped_posterior_var(sde: sd.SDE, k: int) -> torch.Tensor:
    """β̃ of step k, with improved DDPM's clip β̃_1 → β̃_2 (the lower end of the learned range)."""
    return step_k(sde, max(k, 2)).posterior_std ** 2


# --- Analytic-DPM's bound against β and β̃ ------------------------------------------------------

BATCH = 1000


@pytest.fixture(scope="module")
def data():
    """Γ is estimated on one batch, the bound evaluated on another (independent draws)."""
    return MIX.sample(BATCH, gen(1), F64), MIX.sample(BATCH, gen(2), F64)


def bounds(n: int, data, table_fn=lambda table: table) -> dict[str, torch.Tensor]:
    x_est, x = data
    sde = ddpm_sde(n)
    model = oracle(sde)
    table = table_fn(estimate_eps_moment(model, x_est, generator=gen(3)))
    out = {}
    for variance, m in (("beta", model), ("posterior", model), ("analytic", AnalyticVariance(model, table))):
        # The same seed: the same x_k draws for every variance (common random numbers).
        out[variance] = sd.variational_bound(m, x, variance=variance, generator=gen(100 + n)).total
    return out


@pytest.mark.parametrize("n", [10, 20, 50, 100, 200])
def test_analytic_bound_is_no_worse_than_beta_or_posterior(n, data):
    """mean(analytic − best fixed) ≤ 3 SE of the paired difference (the claim), and in fact below
    −3 SE: measured −0.74, −0.57, −0.31, −0.17, −0.09 nats (SE 0.06 … 0.003) at N = 10 … 200,
    the bound falling to 0.36 nats above the data's 0.40-nat entropy estimate at N = 200."""
    out = bounds(n, data)
    best = min(("beta", "posterior"), key=lambda v: float(out[v].mean()))
    diff = out["analytic"] - out[best]
    assert float(diff.mean()) <= 3 * se(diff), (n, best, float(diff.mean()), se(diff))
    assert float(diff.mean()) < -3 * se(diff), (n, best, float(diff.mean()), se(diff))


def test_a_wrong_gamma_table_fails_the_comparison(data):
    """The comparison can fail: Γ ≡ 0 (x0_var at its upper clip σ²/α²) loses to β by > 3 SE."""
    out = bounds(50, data, lambda table: replace(table, gamma=torch.zeros_like(table.gamma)))
    diff = out["analytic"] - out["beta"]
    assert float(diff.mean()) > 3 * se(diff), (float(diff.mean()), se(diff))


# --- the formulas -------------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_analytic_variance_is_bao_et_al_theorem_1(eta):
    """σ*² from the steps' maths equals Thm 1 written in the paper's notation from the β table:
    ``λ² + (sqrt(β̄_t·ᾱ_s/ᾱ_t) − sqrt(β̄_s − λ²))²·(1 − Γ)`` with ``λ² = η²β̃`` (ᾱ_t/ᾱ_s is the
    strided step's α_n), for single and strided steps."""
    sde = ddpm_sde(100)
    betas = sde.discrete_betas
    ab = torch.cat([torch.ones(1, dtype=F64), torch.cumprod(1 - betas, 0)])  # ᾱ at k = 0..N
    gamma = 0.3
    for k_t, k_s in ((2, 1), (10, 9), (60, 40), (100, 50)):
        abt, abs_ = ab[k_t], ab[k_s]
        tilde = (1 - abs_) / (1 - abt) * (1 - abt / abs_)
        lam2 = eta**2 * tilde
        paper = lam2 + (torch.sqrt((1 - abt) * abs_ / abt) - torch.sqrt(1 - abs_ - lam2)) ** 2 * (1 - gamma)
        step = Step.between(sde, torch.tensor(k_t / 100, dtype=F64), torch.tensor(k_s / 100, dtype=F64))
        x = torch.zeros(1, 3, dtype=F64)
        pred = Prediction(x=x, alpha=x, sigma=x, x0=x, eps=x,
                          x0_var=((1 - abt) / abt * (1 - gamma)).reshape(1, 1))
        ours = step_noise_std(step, eta, "analytic", pred) ** 2
        torch.testing.assert_close(ours, paper.reshape(1, 1), rtol=1e-10, atol=0)


def test_x0_var_is_the_exact_posterior_variance():
    """``v₀ = (σ²/α²)(1 − Γ)`` from one batch equals ``E‖x0 − E[x0|x_t]‖²/d`` measured directly with
    the oracle's exact posterior mean on another (Tweedie), within 4 combined SEs."""
    sde = sd.VPSDE()
    model = oracle(sde, "continuous")
    times = torch.tensor([0.05, 0.3, 0.7], dtype=F64)
    table = estimate_eps_moment(model, MIX.sample(4000, gen(4), F64), generator=gen(5), times=times)
    x0 = MIX.sample(4000, gen(6), F64)
    g = gen(7)
    for j, t in enumerate(times):
        x_t = sde.alpha(t) * x0 + sde.sigma(t) * torch.randn(x0.shape, generator=g, dtype=F64)
        direct = (x0 - model.x0(x_t, t)).square().mean(1)
        v0 = table.x0_var(sde, t)
        tol = 4 * math.hypot(se(direct), float(sde.sigma_bar(t) ** 2 * table.se[j]))
        assert abs(float(direct.mean() - v0)) < tol, (float(t), float(direct.mean()), float(v0), tol)
    # The table interpolates linearly in t and refuses to extrapolate.
    mid = table.gamma_at(torch.tensor(0.5, dtype=F64))
    torch.testing.assert_close(mid, 0.5 * (table.gamma[1] + table.gamma[2]), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"Γ table covers t in \[0.05, 0.7\]"):
        table.gamma_at(torch.tensor(0.9, dtype=F64))


def test_x0_var_clips_into_bao_et_al_theorem_2_bounds():
    """Γ̂ > 1 gives x0_var = 0 (σ*² = λ²); Γ̂ < 0 cannot occur but would give σ²/α²; with a data
    range [a, b], x0_var ≤ ((b − a)/2)²."""
    sde = sd.VPSDE()
    t = torch.tensor([0.2, 0.9], dtype=F64)
    table = EpsMomentTable(t=t, gamma=torch.tensor([-0.5, 1.2], dtype=F64), se=torch.zeros(2, dtype=F64), n=1)
    expected = torch.stack([sde.sigma_bar(t[0]) ** 2, torch.zeros((), dtype=F64)])
    torch.testing.assert_close(table.x0_var(sde, t), expected)
    bounded = replace(table, gamma=torch.tensor([0.0, 0.0], dtype=F64), x0_var_max=0.25)
    assert float(bounded.x0_var(sde, t).max()) == 0.25


# --- learned Σ ---------------------------------------------------------------------------------


@pytest.mark.parametrize("v, fixed", [(0.0, "posterior"), (1.0, "beta")])
def test_v_zero_is_posterior_and_v_one_is_beta(v, fixed):
    """Bound (every term) and samples with the same noise: learned Σ at v ∈ {0, 1} equals the
    fixed variance to float64 rounding; "auto" picks the learned Σ for such a model."""
    sde = ddpm_sde(20)
    lv, plain = lv_model(sde, v), oracle(sde)
    x = MIX.sample(200, gen(8), F64)
    a = sd.variational_bound(lv, x, variance="learned", generator=gen(9))
    b = sd.variational_bound(plain, x, variance=fixed, generator=gen(9))
    auto = sd.variational_bound(lv, x, generator=gen(9))
    for got in (a, auto):
        torch.testing.assert_close(got.kl, b.kl, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got.decoder, b.decoder, rtol=1e-10, atol=1e-12)
    runs = [("ancestral", {}), ("pc", {"predictor": "ancestral", "corrector": "none"})]
    if fixed == "posterior":
        runs.append(("ddim", {"eta": 0.5}))
    for sampler, options in runs:
        got = sd.sample(lv, (64, 3), sampler, 10, dtype=F64, generator=gen(10), variance="learned", **options)
        auto = sd.sample(lv, (64, 3), sampler, 10, dtype=F64, generator=gen(10), **options)
        want = sd.sample(plain, (64, 3), sampler, 10, dtype=F64, generator=gen(10), variance=fixed, **options)
        torch.testing.assert_close(got.x, want.x, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(auto.x, want.x, rtol=1e-10, atol=1e-12)


def test_ddim_eta_one_with_learned_variance_is_the_learned_ancestral_step():
    """η = 1 keeps the posterior mean, so DDIM-η with the learned Σ is the learned ancestral sampler;
    η = 0 stays deterministic (no noise drawn, equal to the fixed-variance DDIM)."""
    sde = ddpm_sde(20)
    lv = lv_model(sde, 0.3)
    a = sd.sample(lv, (64, 3), "ddim", 10, dtype=F64, generator=gen(11), eta=1.0)
    b = sd.sample(lv, (64, 3), "ancestral", 10, dtype=F64, generator=gen(11))
    torch.testing.assert_close(a.x, b.x, rtol=1e-12, atol=1e-12)
    x_T = torch.randn(8, 3, generator=gen(12), dtype=F64)
    c = sd.sample(lv, (8, 3), "ddim", 10, x_T=x_T)
    d = sd.sample(oracle(sde), (8, 3), "ddim", 10, x_T=x_T)
    torch.testing.assert_close(c.x, d.x, rtol=1e-12, atol=1e-12)


def test_learned_v_at_the_analytic_optimum_reproduces_the_analytic_bound_and_samples(data):
    """v_k = (log σ*²_k − log β̃_k)/(log β_k − log β̃_k) on the model's N steps (β̃ clipped at k = 1
    as the bound does) gives the analytic bound term for term, and on the N-step grid the same
    ancestral samples from the same noise."""
    n = 20
    sde = ddpm_sde(n)
    model = oracle(sde)
    x_est, x = data
    table = estimate_eps_moment(model, x_est, generator=gen(3))
    analytic = AnalyticVariance(model, table)
    v = []
    for k in range(1, n + 1):
        step, lo = step_k(sde, k), clipped_posterior_var(sde, k)
        x0_var = table.x0_var(sde, torch.tensor(k / n, dtype=F64))
        opt = step.posterior_std ** 2 + step.x0_coef(1.0) ** 2 * x0_var
        v.append((torch.log(opt) - torch.log(lo)) / (torch.log(step.forward_std ** 2) - torch.log(lo)))
    v = torch.stack(v)
    lv = lv_model(sde, lambda c: v[c.round().long()][:, None])  # c = k − 1 (time_input="index")
    a = sd.variational_bound(lv, x, variance="learned", generator=gen(13))
    b = sd.variational_bound(analytic, x, variance="analytic", generator=gen(13))
    torch.testing.assert_close(a.kl, b.kl, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(a.decoder, b.decoder, rtol=1e-9, atol=1e-12)
    grid = torch.arange(n, -1, -1, dtype=F64) / n
    s1 = sd.sample(lv, (64, 3), "ancestral", timesteps=grid, dtype=F64, generator=gen(14))
    s2 = sd.sample(analytic, (64, 3), "ancestral", timesteps=grid, dtype=F64, generator=gen(14),
                   variance="analytic")
    torch.testing.assert_close(s1.x, s2.x, rtol=1e-9, atol=1e-12)


# --- the hybrid loss ---------------------------------------------------------------------------


def direct_hybrid(sde: sd.VPSDE, model: sd.ScoreModel, x0: torch.Tensor, seed: int,
                  lam: float) -> torch.Tensor:
    """improved-diffusion's RESCALED_MSE hybrid written out from the β table (Ho et al. eq. 6–7,
    Nichol & Dhariwal eq. 15), independently of the library's step maths."""
    g = gen(seed)
    N = sde.N
    i = torch.randint(N, (x0.shape[0],), generator=g)
    z = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    betas = sde.discrete_betas
    ab = torch.cumprod(1 - betas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=F64), ab[:-1]])
    post = betas * (1 - ab_prev) / (1 - ab)
    log_post_clipped = torch.log(torch.cat([post[1:2], post[1:]]))
    a, b, bt = ab[i][:, None], ab_prev[i][:, None], betas[i][:, None]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * z
    out = model.net(x_t, i.to(F64))
    eps, v = out.chunk(2, 1)
    mse = (eps - z).square().mean(1)
    x0_hat = (x_t - (1 - a).sqrt() * eps.detach()) / a.sqrt()
    c1, c2 = b.sqrt() * bt / (1 - a), (1 - bt).sqrt() * (1 - b) / (1 - a)
    mean_p, mean_q = c1 * x0_hat + c2 * x_t, c1 * x0 + c2 * x_t
    logvar = v * torch.log(bt) + (1 - v) * log_post_clipped[i][:, None]
    logq = torch.log(torch.where(i[:, None] == 0, 1.0, post[i][:, None]))  # unused where i = 0
    kl = 0.5 * (logvar - logq + torch.exp(logq - logvar) + (mean_q - mean_p) ** 2 * torch.exp(-logvar) - 1)
    nll = 0.5 * ((x0 - mean_p) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
    term = torch.where(i == 0, nll.sum(1), kl.sum(1))
    return (mse + lam * N * term / (x0.shape[1] * math.log(2))).mean()


def test_hybrid_loss_equals_a_direct_computation():
    """With v = 0.4 everywhere and a shifted eps (so L_simple ≠ 0) at N = 20, over 512 samples
    (every step drawn, the decoder step included): equal to float64 rounding. λ = 0 is DDPM's loss."""
    sde = ddpm_sde(20)
    model = lv_model(sde, 0.4)
    with torch.no_grad():
        model.net.shift.fill_(0.05)
    x0 = MIX.sample(512, gen(15), F64)
    got = hybrid_loss(model, x0, gen(16), vlb_weight=0.01)
    torch.testing.assert_close(got, direct_hybrid(sde, model, x0, 16, 0.01), rtol=1e-10, atol=0)
    assert bool((torch.randint(20, (512,), generator=gen(16)) == 0).any())  # the decoder term was drawn
    torch.testing.assert_close(hybrid_loss(model, x0, gen(16), vlb_weight=0.0), ddpm_loss(model, x0, gen(16)),
                               rtol=0, atol=0)
    assert LOSSES["hybrid"] is hybrid_loss


def test_hybrid_vlb_trains_only_the_variance():
    """The L_vlb part sends no gradient to the eps branch (stop-gradient on the mean) and a
    non-zero one to v; without the stop-gradient the same term would move the eps branch."""
    sde = ddpm_sde(20)
    w = nn.Parameter(torch.tensor(0.3, dtype=F64))
    model = lv_model(sde, lambda c: w.expand(c.shape[0], 1))
    shift = model.net.shift
    x0 = MIX.sample(256, gen(17), F64)
    g_hybrid = torch.autograd.grad(hybrid_loss(model, x0, gen(18), vlb_weight=1.0), [shift, w])
    g_simple = torch.autograd.grad(hybrid_loss(model, x0, gen(18), vlb_weight=0.0), [shift])
    assert torch.equal(g_hybrid[0], g_simple[0]) and bool(g_simple[0].abs().sum() > 0)
    assert float(g_hybrid[1].abs()) > 0
    # Negative check: the same term with the mean NOT frozen has an eps gradient.
    t = torch.tensor(0.5, dtype=F64)
    x_t = sde.alpha(t) * x0 + sde.sigma(t) * torch.randn(x0.shape, generator=gen(19), dtype=F64)
    pred = model.predict(x_t, t)
    term = step_term(sde, 10, x0, torch.zeros_like(x0), pred, variance="learned").mean()
    assert float(torch.autograd.grad(term, shift)[0].abs().sum()) > 0


@pytest.mark.parametrize("i", [0, 4, 15])
def test_hybrid_loss_is_minimised_at_the_optimal_variance(i, data):
    """At a fixed step, as a function of one constant v the batch's L_vlb is minimised exactly where
    ``Σ(v) = λ² + k²·mean‖x0 − x0̂‖²/D`` (λ² = β̃, k the posterior mean's x0 coefficient; the
    decoder step i = 0 has λ = 0, k = 1): the gradient vanishes there (to rounding, relative to
    its size one unit of v away), the loss rises on both sides, and this Σ agrees with the analytic
    σ*² from Γ on an independent batch within 4 combined SEs."""
    n = 20
    sde = ddpm_sde(n)
    x_est, x0 = data
    w = nn.Parameter(torch.tensor(0.0, dtype=F64))
    model = lv_model(sde, lambda c: w.expand(c.shape[0], 1))
    k = i + 1
    t = torch.tensor(k / n, dtype=F64)
    step = step_k(sde, k)
    x_t = sde.alpha(t) * x0 + sde.sigma(t) * torch.randn(x0.shape, generator=gen(20), dtype=F64)
    err = (x0 - oracle(sde).x0(x_t, t)).square().mean(1)  # the same z as the loss draws with gen(20)
    lam2 = step.posterior_std ** 2
    best = lam2 + step.x0_coef(1.0) ** 2 * err.mean()
    lo = clipped_posterior_var(sde, k)
    hi = step.forward_std ** 2
    v_best = float((torch.log(best) - torch.log(lo)) / (torch.log(hi) - torch.log(lo)))

    def loss_and_grad(v: float) -> tuple[float, float]:
        with torch.no_grad():
            w.fill_(v)
        loss = hybrid_loss(model, x0, gen(20), step=i)
        return float(loss.detach()), float(torch.autograd.grad(loss, w)[0])

    l0, g0 = loss_and_grad(v_best)
    _, g1 = loss_and_grad(v_best + 1.0)
    assert abs(g0) < 1e-9 * abs(g1), (g0, g1)
    for h in (-0.1, 0.1):
        assert loss_and_grad(v_best + h)[0] > l0
    table = estimate_eps_moment(oracle(sde), x_est, generator=gen(3))
    analytic = lam2 + step.x0_coef(1.0) ** 2 * table.x0_var(sde, t)
    j = k - 1
    tol = 4 * float(step.x0_coef(1.0) ** 2) * math.hypot(se(err), float(sde.sigma_bar(t) ** 2 * table.se[j]))
    assert abs(float(best - analytic)) < tol, (i, float(best), float(analytic), tol)


def test_hybrid_loss_discretized_decoder_and_bad_input():
    """Image-like data on 17 levels in [−1, 1] with the discretized decoder: finite loss and
    gradients with every step drawn; clear errors for a model without a learned variance, data off
    the pixel grid, a bad step or weight."""
    sde = ddpm_sde(10)
    w = nn.Parameter(torch.tensor(0.5, dtype=F64))
    model = lv_model(sde, lambda c: w.expand(c.shape[0], 1))
    pixels = torch.randint(17, (256, 3), generator=gen(21))
    x0 = -1.0 + 2.0 * pixels.to(F64) / 16
    loss = hybrid_loss(model, x0, gen(22), decoder="discretized", levels=17)
    grads = torch.autograd.grad(loss, [w, model.net.shift])
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="learned_variance=True"):
        hybrid_loss(oracle(sde), x0, gen(0))
    with pytest.raises(ValueError, match="17 values spanning data_range"):
        hybrid_loss(model, x0 + 0.01, gen(0), decoder="discretized", levels=17)
    with pytest.raises(ValueError, match=r"step must be integers in \[0, 9\]"):
        hybrid_loss(model, x0, gen(0), step=10)
    with pytest.raises(ValueError, match="vlb_weight"):
        hybrid_loss(model, x0, gen(0), vlb_weight=-1.0)


# --- samplers ----------------------------------------------------------------------------------

SAMPLER_RUNS = [
    ("ancestral", {}),
    ("pc", {"predictor": "ancestral", "corrector": "none"}),
    ("pc", {"predictor": "ancestral", "corrector": "annealed_langevin"}),
    ("ddim", {"eta": 0.5}),
    ("ddim", {"eta": 1.0}),
]


@pytest.mark.parametrize("sde_name", list(SDES))
def test_samplers_run_with_learned_and_analytic_variances_on_every_sde(sde_name):
    """Shape, dtype (float32 and float64 in turn), finiteness and exact NFE on VP (linear, cosine,
    β table), sub-VP and VE, on a 10-step uniform grid (the Γ table on the grid's times); η = 0 with
    "analytic" (Analytic-DDIM) is stochastic."""
    sde = SDES[sde_name]()
    ts = torch.linspace(sde.T, 0.0, 11, dtype=F64)
    lv = lv_model(sde, 0.5, "continuous")
    table = estimate_eps_moment(oracle(sde, "continuous"), MIX.sample(500, gen(23), F64), generator=gen(24),
                                times=ts[:-1].flip(0))
    analytic = AnalyticVariance(oracle(sde, "continuous"), table)
    for model, variance in ((lv, "learned"), (analytic, "analytic")):
        runs = SAMPLER_RUNS + ([("ddim", {"eta": 0.0})] if variance == "analytic" else [])
        for j, (sampler, options) in enumerate(runs):
            dtype = (torch.float32, F64)[j % 2]
            out = sd.sample(model, (16, 3), sampler, timesteps=ts, dtype=dtype, generator=gen(25),
                            denoise=False, variance=variance, **options)
            per_step = 2 if options.get("corrector", "none") != "none" else 1
            assert out.x.shape == (16, 3) and out.x.dtype == dtype and torch.isfinite(out.x).all()
            assert out.nfe == 10 * per_step, (sampler, options, out.nfe)
    a = sd.sample(analytic, (16, 3), "ddim", timesteps=ts, dtype=F64, generator=gen(26), variance="analytic")
    b = sd.sample(analytic, (16, 3), "ddim", timesteps=ts, dtype=F64, generator=gen(27), variance="analytic")
    assert not torch.equal(a.x, b.x)


def test_missing_variance_fields_are_clear_errors():
    sde = sd.VPSDE()
    plain = oracle(sde, "continuous")
    for sampler, options in SAMPLER_RUNS:
        with pytest.raises(ValueError, match=r"learned_variance=True"):
            sd.sample(plain, (4, 3), sampler, 5, generator=gen(0), variance="learned", **options)
        with pytest.raises(ValueError, match=r"AnalyticVariance"):
            sd.sample(plain, (4, 3), sampler, 5, generator=gen(0), variance="analytic", **options)
    with pytest.raises(ValueError, match="learned_variance=True"):
        sd.variational_bound(oracle(ddpm_sde(10)), MIX.sample(4, gen(0), F64), variance="learned",
                             generator=gen(0))
    # A Γ table that does not cover the grid: no extrapolation.
    table = estimate_eps_moment(plain, MIX.sample(100, gen(0), F64), generator=gen(0),
                                times=torch.tensor([0.5, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="Γ table covers"):
        sd.sample(AnalyticVariance(plain, table), (4, 3), "ancestral", 5, generator=gen(0),
                  variance="analytic")
    with pytest.raises(ValueError, match="sigma > 0"):
        estimate_eps_moment(plain, MIX.sample(100, gen(0), F64), generator=gen(0),
                            times=torch.tensor([0.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="variance"):
        sd.sample(plain, (4, 3), "ancestral", 5, generator=gen(0), variance="small")


RING = sd.GaussianMixture(torch.tensor([[-2.0, -1.0], [-1.5, 1.5], [2.0, -1.0], [1.5, 1.5]], dtype=F64),
                          torch.tensor([0.3, 0.25, 0.35, 0.3], dtype=F64),
                          torch.tensor([0.3, 0.2, 0.1, 0.4], dtype=F64))
N_SAMPLES = 1000


@pytest.fixture(scope="module")
def floor() -> float:
    """mean + 4 sd of MMD² between 16 pairs of exact sets of N_SAMPLES (as test_conditional)."""
    g = gen(7)
    vals = torch.tensor([mmd2(RING.sample(N_SAMPLES, g, F64), RING.sample(N_SAMPLES, g, F64))
                         for _ in range(16)])
    return float(vals.mean() + 4 * vals.std())


def test_analytic_ancestral_sampler_reaches_the_data(floor):
    """On the continuous VP SDE's default (quadratic) grid: MMD² of the analytic ancestral samples
    to exact draws is under the floor at 20 and 100 steps (measured 0.02 and 0.27 floors; the
    posterior variance needs ≥ 20 steps, 2.0 floors at 10). The check can fail: a Γ ≡ 0 table
    (the largest clipped variance) is at 1.9 floors at 20 steps."""
    sde = sd.VPSDE()
    model = RING.score_model(sde, prediction="eps")
    x_est = RING.sample(2000, gen(1), F64)
    exact = RING.sample(N_SAMPLES, gen(11), F64)
    for steps in (20, 100):
        ts = sd.grids.make_grid("quadratic", sde, steps, 1.0, 0.0)
        table = estimate_eps_moment(model, x_est, generator=gen(2), times=ts[:-1].flip(0))
        out = sd.sample(AnalyticVariance(model, table), (N_SAMPLES, 2), "ancestral", timesteps=ts, dtype=F64,
                        generator=gen(3), variance="analytic")
        assert mmd2(out.x, exact) < floor, steps
        if steps == 20:
            wrong = AnalyticVariance(model, replace(table, gamma=torch.zeros_like(table.gamma)))
            out = sd.sample(wrong, (N_SAMPLES, 2), "ancestral", timesteps=ts, dtype=F64, generator=gen(3),
                            variance="analytic")
            assert mmd2(out.x, exact) > floor


def test_grid_table_step_matches_step_between():
    """``Step.of(grid, i)`` and ``Step.between(sde, t, s)`` describe the same step."""
    sde = sd.VPSDE.cosine()
    grid = GridTable.build(sde, torch.tensor([0.9, 0.4], dtype=F64))
    a, b = Step.of(grid, 0), Step.between(sde, torch.tensor(0.9, dtype=F64), torch.tensor(0.4, dtype=F64))
    for name in ("delta", "posterior_std", "forward_std"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-14, atol=0)
