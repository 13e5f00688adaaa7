"""The Gaussian-mixture oracle and the ScoreModel conversions.

References are computed independently: torch.distributions for densities, autograd for
scores, the closed-form Gaussian marginal, and the conversion formulas written out here.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import SDES

import scoresde as sd

F64 = torch.float64

PREDICTIONS = ("eps", "x0", "v", "score")
TIME_INPUTS = ("continuous", "index", "scaled", "sigma")


@pytest.fixture(params=list(SDES), ids=list(SDES))
def sde(request):
    return SDES[request.param]()


def _params(dim: int, diagonal: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    K = 3
    means = 2.0 * torch.randn(K, dim, generator=g, dtype=F64)
    shape = (K, dim) if diagonal else (K,)
    stds = 0.3 + 0.5 * torch.rand(shape, generator=g, dtype=F64)
    weights = 0.2 + torch.rand(K, generator=g, dtype=F64)  # deliberately not normalised
    return means, stds, weights


def _gmm(dim: int, diagonal: bool, seed: int = 0) -> sd.GaussianMixture:
    return sd.GaussianMixture(*_params(dim, diagonal, seed))


def _torch_mixture(means, stds, weights) -> torch.distributions.Distribution:
    """The reference, built from the raw parameters (not from the object under test)."""
    D = torch.distributions
    if stds.ndim == 1:
        stds = stds[:, None].expand_as(means)
    comp = D.Independent(D.Normal(means, stds), 1)
    return D.MixtureSameFamily(D.Categorical(probs=weights / weights.sum()), comp)


def _noisy_points(gmm, sde, t, n=12, seed=1) -> torch.Tensor:
    """Points where p_t has its mass: alpha·x0 + sigma·z, plus one far outlier."""
    g = torch.Generator().manual_seed(seed)
    t = torch.as_tensor(t, dtype=F64)
    x0 = gmm.sample(n, generator=g, dtype=F64)
    a = sde.alpha(t).reshape(-1, 1)
    s = sde.sigma(t).reshape(-1, 1)
    x = a * x0 + s * torch.randn(n, gmm.dim, generator=g, dtype=F64)
    x[-1] = x[-1] + 3.0 * (1.0 + s[-1 if s.shape[0] > 1 else 0])
    return x


def _close(actual, expected, rtol=1e-8):
    """Relative agreement, with an absolute floor scaled to the tensor's size (entries near 0)."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-300))


# --- GaussianMixture itself ------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 32])
@pytest.mark.parametrize("diagonal", [False, True], ids=["isotropic", "diagonal"])
def test_log_prob_matches_torch_distributions(dim, diagonal):
    params = _params(dim, diagonal)
    gmm = sd.GaussianMixture(*params)
    ref = _torch_mixture(*params)
    g = torch.Generator().manual_seed(5)
    x = torch.cat([gmm.sample(200, generator=g, dtype=F64),
                   4.0 * torch.randn(20, dim, generator=g, dtype=F64)])  # tails too
    expected = ref.log_prob(x)
    # The same float64 logsumexp, summed in another order: ≲ 1e-13 relative.
    torch.testing.assert_close(gmm.log_prob(x), expected, rtol=1e-12, atol=1e-12)
    # Any trailing shape with D elements per sample is accepted.
    if dim == 32:
        torch.testing.assert_close(gmm.log_prob(x.reshape(-1, 4, 8)), expected, rtol=1e-12, atol=1e-12)
    # float32 input: same values to float32 rounding of x (|∂logp/∂x|·|x|·6e-8 ≲ 1e-4 here).
    torch.testing.assert_close(gmm.log_prob(x.float()).double(), expected, rtol=1e-4, atol=1e-4)


def test_weights_are_normalised():
    gmm = sd.GaussianMixture(torch.zeros(3, 2), torch.ones(3), torch.tensor([1.0, 2.0, 5.0]))
    assert torch.equal(gmm.weights, torch.tensor([1 / 8, 2 / 8, 5 / 8], dtype=F64))
    uniform = sd.GaussianMixture(torch.zeros(4, 2), torch.ones(4))
    assert torch.equal(uniform.weights, torch.full((4,), 0.25, dtype=F64))
    assert uniform.dim == 2 and uniform.num_components == 4


def test_sample_components_are_the_draws_of_sample():
    """Same draws as ``sample`` from the same seed; each draw sits near its component's mean (the
    components 6 apart at std 0.1: a wrong index is 60 std off)."""
    gmm = sd.GaussianMixture(torch.tensor([[-6.0], [0.0], [6.0]], dtype=F64),
                             torch.full((3,), 0.1, dtype=F64))
    x, k = gmm.sample_components(500, torch.Generator().manual_seed(3), F64)
    assert torch.equal(x, gmm.sample(500, torch.Generator().manual_seed(3), F64))
    assert k.shape == (500,) and set(k.tolist()) == {0, 1, 2}
    assert ((x[:, 0] - gmm.means[k, 0]).abs() < 1.0).all()
    labelled = sd.GaussianMixture(gmm.means, gmm.stds[:, 0], labels=torch.tensor([0, 1, 1]))
    _, k = labelled.sample_components(200, torch.Generator().manual_seed(4), F64,
                                      labels=torch.ones(200, dtype=torch.long))
    assert set(k.tolist()) == {1, 2}  # p(x | c = 1) draws only class 1's components


def test_sample_has_the_mixture_mean_and_covariance():
    mu = torch.tensor([[-2.0, 1.0], [1.5, 0.0], [0.0, -3.0]], dtype=F64)
    s = torch.tensor([[0.5, 0.2], [0.3, 0.8], [1.0, 0.4]], dtype=F64)
    w = torch.tensor([0.25, 0.5, 0.25], dtype=F64)
    gmm = sd.GaussianMixture(mu, s, 4 * w)
    n = 200_000
    x = gmm.sample(n, generator=torch.Generator().manual_seed(11), dtype=F64)
    assert x.shape == (n, 2) and x.dtype == F64
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (torch.diag_embed(s**2) + mu[:, :, None] * mu[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]

    emp_mean = x.mean(0)
    xc = x - emp_mean
    prods = xc[:, :, None] * xc[:, None, :]
    emp_cov = prods.mean(0)
    # 5 standard errors, each estimated from the sample itself: SE(mean_i) = sqrt(cov_ii/n),
    # SE(cov_ij) = std of the products (x_i − m_i)(x_j − m_j) / sqrt(n).
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    se_cov = prods.std(0) / math.sqrt(n)
    assert ((emp_mean - mean).abs() <= 5 * se_mean).all(), (emp_mean, mean)
    assert ((emp_cov - cov).abs() <= 5 * se_cov).all(), (emp_cov, cov)

    # Default dtype float32; the generator fixes the draw.
    a = gmm.sample(5, generator=torch.Generator().manual_seed(2))
    b = gmm.sample(5, generator=torch.Generator().manual_seed(2))
    assert a.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize(
    ("means", "stds", "weights", "message"),
    [
        (torch.zeros(3), torch.ones(3), None, "means must have shape"),
        (torch.zeros(3, 2), torch.ones(4), None, "stds must have shape"),
        (torch.zeros(3, 2), torch.ones(3, 3), None, "stds must have shape"),
        (torch.zeros(3, 2), torch.ones(3), torch.ones(2), "weights must have shape"),
        (torch.zeros(3, 2), torch.tensor([1.0, 0.0, 1.0]), None, "positive"),
        (torch.zeros(3, 2), torch.tensor([1.0, -0.5, 1.0]), None, "positive"),
        (torch.zeros(2, 2), torch.tensor([[1.0, 1.0], [1.0, -1.0]]), None, "positive"),
        (torch.zeros(3, 2), torch.ones(3), torch.tensor([1.0, 0.0, 1.0]), "positive"),
        (torch.full((3, 2), float("nan")), torch.ones(3), None, "finite"),
    ],
)
def test_bad_mixture_parameters(means, stds, weights, message):
    with pytest.raises(ValueError, match=message):
        sd.GaussianMixture(means, stds, weights)


def test_bad_points_for_the_mixture():
    gmm = _gmm(2, True)
    with pytest.raises(ValueError, match="2 elements per sample"):
        gmm.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="2 elements per sample"):
        gmm.log_prob(torch.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        gmm.log_prob(torch.tensor([[0.0, float("inf")]]))


# --- exact diffused marginals and scores -------------------------------------------------------


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.5, 1.0])
def test_oracle_score_is_the_gradient_of_its_log_density(sde, t):
    gmm = _gmm(2, True)
    x = _noisy_points(gmm, sde, t).requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob_at(sde, x, t).sum(), x)
    x = x.detach()
    # Two float64 evaluations of the same analytic gradient; at t = 1e-3 the score is ~1/var
    # large, so compare relative to its size: rounding is ≲ 1e-12 of that.
    _close(gmm.score_at(sde, x, t), grad, rtol=1e-8)
    _close(gmm.score_model(sde).score(x, t), grad, rtol=1e-8)


def test_oracle_score_with_per_sample_times(sde):
    gmm = _gmm(2, False)
    t = torch.tensor([1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0], dtype=F64)
    x = _noisy_points(gmm, sde, t, n=len(t)).requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob_at(sde, x, t).sum(), x)
    _close(gmm.score_at(sde, x.detach(), t), grad, rtol=1e-8)  # as above


def test_single_gaussian_diffuses_to_the_closed_form(sde):
    mu = torch.tensor([[1.0, -2.0, 0.5]], dtype=F64)
    s = torch.tensor([[0.7, 0.2, 1.3]], dtype=F64)
    gmm = sd.GaussianMixture(mu, s)
    g = torch.Generator().manual_seed(0)
    x = 3.0 * torch.randn(10, 3, generator=g, dtype=F64)
    for t in (1e-3, 0.2, 0.6, 1.0):
        a, sig = sde.alpha(t), sde.sigma(t)
        ref = torch.distributions.Normal(a * mu[0], torch.sqrt(a**2 * s[0] ** 2 + sig**2))
        # Same float64 Gaussian log-density, another code path: a few ulp.
        torch.testing.assert_close(gmm.log_prob_at(sde, x, t), ref.log_prob(x).sum(-1),
                                   rtol=1e-12, atol=1e-12)
        # Its score, in closed form.
        var = a**2 * s[0] ** 2 + sig**2
        _close(gmm.score_at(sde, x, t), (a * mu[0] - x) / var, rtol=1e-12)


# --- ScoreModel conversions --------------------------------------------------------------------


def _reference(gmm, sde, x, t):
    """Exact score, eps, x0 and v at (x, t), from the formulas in DESIGN.md."""
    alpha = sde.alpha(t).reshape(-1, 1)
    sigma = sde.sigma(t).reshape(-1, 1)
    score = gmm.score_at(sde, x, t)
    eps = -sigma * score
    x0 = (x - sigma * eps) / alpha
    v = alpha * eps - sigma * x0
    return {"score": score, "eps": eps, "x0": x0, "v": v}, alpha, sigma


def _check_model(model, gmm, sde, x, t, rtol=1e-8):
    ref, alpha, sigma = _reference(gmm, sde, x, t)
    got = {k: getattr(model, k)(x, t) for k in ref}
    for k in ref:
        assert got[k].dtype == F64
        _close(got[k], ref[k], rtol=rtol)
    # The identities among the model's own outputs.
    _close(got["score"], -got["eps"] / sigma, rtol=rtol)
    _close(alpha * got["x0"] + sigma * got["eps"], x, rtol=rtol)
    _close(got["v"], alpha * got["eps"] - sigma * got["x0"], rtol=rtol)
    pred = model.predict(x, t)
    _close(pred.score, ref["score"], rtol=rtol)
    _close(pred.v, ref["v"], rtol=rtol)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("time_input", TIME_INPUTS)
def test_every_prediction_and_time_input_gives_the_same_model(sde, prediction, time_input):
    gmm = _gmm(2, True)
    t = torch.tensor([0.01, 0.1, 0.35, 0.6, 0.85, 1.0], dtype=F64)
    x = _noisy_points(gmm, sde, t, n=len(t))
    model = gmm.score_model(sde, prediction=prediction, time_input=time_input)
    assert model.prediction == prediction and model.time_input == time_input
    # float64 end to end: the only losses are conversion cancellations (≤ 1/alpha ≈ 150 at
    # t = 1 on VP) and the sigma bisection (t to 2⁻⁶⁰); 1e-8 leaves a wide margin.
    _check_model(model, gmm, sde, x, t)
    # A scalar t is broadcast over the batch.
    _check_model(model, gmm, sde, x, torch.full((len(t),), 0.4, dtype=F64))
    _close(model.eps(x, 0.4), gmm.score_model(sde).eps(x, torch.full((len(t),), 0.4, dtype=F64)))


@settings(max_examples=30, deadline=None)
@given(
    sde_name=st.sampled_from(sorted(SDES)),
    prediction=st.sampled_from(PREDICTIONS),
    time_input=st.sampled_from(TIME_INPUTS),
    t=st.floats(min_value=0.01, max_value=1.0, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    scale=st.floats(min_value=0.1, max_value=10.0),
)
def test_round_trip_property(sde_name, prediction, time_input, t, seed, scale):
    sde = SDES[sde_name]()
    gmm = _gmm(3, True)
    x = scale * torch.randn(4, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    tt = torch.full((4,), t, dtype=F64)
    model = gmm.score_model(sde, prediction=prediction, time_input=time_input)
    # As in the exhaustive test above; scale = 10 on VE adds at most another decade of cancellation.
    _check_model(model, gmm, sde, x, tt, rtol=1e-8)


# --- ScoreModel around a plain network ---------------------------------------------------------


class Recorder:
    """A 'network' that records the time input it got and returns a fixed multiple of x."""

    def __init__(self, factor=0.5):
        self.factor, self.calls = factor, []

    def __call__(self, x, c):
        self.calls.append(c.clone())
        return self.factor * x


def test_eps_network_score_is_minus_eps_over_sigma(sde):
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.tensor([0.02, 0.2, 0.5, 0.8, 1.0], dtype=F64)
    model = sd.ScoreModel(lambda x, c: 0.5 * x, sde, prediction="eps")
    sigma = sde.sigma(t)[:, None]
    # Two float64 divisions: a few ulp.
    torch.testing.assert_close(model.score(x, t), -0.5 * x / sigma, rtol=1e-14, atol=0.0)
    torch.testing.assert_close(model.eps(x, t), 0.5 * x, rtol=0.0, atol=0.0)
    # float32 state: float32 out, the same values to float32 rounding.
    out32 = model.score(x.float(), t)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, (-0.5 * x / sigma).float(), rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("N", [1000, 10])
def test_index_time_input_passes_t_times_N_minus_one(N):
    sde = sd.VPSDE.from_betas(torch.linspace(1e-4, 0.02, N, dtype=F64))
    net = Recorder()
    model = sd.ScoreModel(net, sde, prediction="eps", time_input="index")
    x = torch.ones(4, 2, dtype=F64)
    steps = torch.tensor([0, 3, N // 2, N - 1], dtype=F64)
    model.score(x, (steps + 1) / N)  # t_i = (i + 1)/N sits at step i
    (c,) = net.calls
    assert c.shape == (4,) and c.dtype == F64
    # (i + 1)/N·N - 1 in float64: exact up to one rounding of the division.
    torch.testing.assert_close(c, steps, rtol=0.0, atol=1e-12)
    # Off-grid t and a scalar t (broadcast to the batch).
    model.score(x, 0.3456)
    expected = torch.full((4,), 0.3456 * N - 1, dtype=F64)
    torch.testing.assert_close(net.calls[-1], expected, rtol=1e-15, atol=0.0)


@pytest.mark.parametrize(
    ("time_input", "expected"),
    [
        ("continuous", lambda t, sde: t),
        ("scaled", lambda t, sde: 999.0 * t),
        ("sigma", lambda t, sde: sde.sigma(t)),
    ],
)
def test_named_time_inputs(sde, time_input, expected):
    net = Recorder()
    model = sd.ScoreModel(net, sde, time_input=time_input)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
    model.eps(torch.zeros(3, 2, dtype=F64), t)
    torch.testing.assert_close(net.calls[-1], expected(t, sde), rtol=1e-15, atol=0.0)


def test_callable_time_input():
    net = Recorder()
    sde = sd.VESDE()
    model = sd.ScoreModel(net, sde, prediction="x0", time_input=lambda t: torch.log(sde.sigma(t)) / 4)
    t = torch.tensor([0.1, 0.9], dtype=F64)
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    x0 = model.x0(x, t)
    torch.testing.assert_close(net.calls[-1], torch.log(sde.sigma(t)) / 4, rtol=1e-15, atol=0.0)
    torch.testing.assert_close(x0, 0.5 * x, rtol=0.0, atol=0.0)  # an x0 network's output is x0


def test_one_network_call_per_prediction():
    net = Recorder()
    model = sd.ScoreModel(net, sd.VPSDE(), prediction="v")
    pred = model.predict(torch.ones(2, 2, dtype=F64), 0.5)
    _ = pred.x0, pred.eps, pred.score, pred.v
    assert len(net.calls) == 1


# --- bad input ---------------------------------------------------------------------------------


def test_unknown_prediction_and_time_input():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="prediction must be one of"):
        sd.ScoreModel(lambda x, c: x, sde, prediction="noise")
    with pytest.raises(ValueError, match="time_input must be one of"):
        sd.ScoreModel(lambda x, c: x, sde, time_input="ddpm")
    with pytest.raises(ValueError, match="prediction must be one of"):
        _gmm(2, False).score_model(sde, prediction="epsilon")
    with pytest.raises(ValueError, match="time input"):
        _gmm(2, False).score_model(sde, time_input="steps")


@pytest.mark.parametrize("net", [lambda x, c: x[:, :1], lambda x, c: x.reshape(-1), lambda x, c: (x,)])
def test_network_output_of_the_wrong_shape(net):
    model = sd.ScoreModel(net, sd.VPSDE())
    with pytest.raises(ValueError, match=re.escape("(4, 3)")):
        model.score(torch.zeros(4, 3), 0.5)


@pytest.mark.parametrize("t", [1.5, -0.1, 1.0 + 1e-9, torch.tensor([0.2, 0.3, 1.2, 0.4])])
def test_times_outside_the_interval(t):
    model = sd.ScoreModel(lambda x, c: x, sd.VPSDE())
    with pytest.raises(ValueError, match=re.escape("[0, T=1.0]")):
        model.score(torch.zeros(4, 3), t)


@pytest.mark.parametrize("t", [torch.full((3,), 0.5), torch.full((4, 1), 0.5), torch.full((2, 2), 0.5)])
def test_times_of_the_wrong_shape(t):
    model = sd.ScoreModel(lambda x, c: x, sd.VPSDE())
    with pytest.raises(ValueError, match=re.escape("shape (batch,) = (4,)")):
        model.score(torch.zeros(4, 3), t)


@pytest.mark.parametrize("t", [float("nan"), float("inf"), torch.tensor([0.1, float("nan"), 0.2, 0.3])])
def test_non_finite_times(t):
    model = sd.ScoreModel(lambda x, c: x, sd.VPSDE())
    with pytest.raises(ValueError, match="finite"):
        model.score(torch.zeros(4, 3), t)
