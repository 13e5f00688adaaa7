"""Guidance against the exact labelled Gaussian-mixture oracle.

The oracle gives every quantity guidance combines in closed form: the conditional and
unconditional diffused scores ``∇log p_t(x | c)``, ``∇log p_t(x)`` and the class posterior
``log p_t(c | x)`` with its gradient. So

* classifier-free guidance must reproduce ``(1 + w)·∇log p_t(x | c) − w·∇log p_t(x)`` to float64
  rounding, be conditional sampling at ``w = 0`` and make one inner call per protocol call;
* classifier guidance at scale 1 with the exact classifier has the exact conditional score, so every
  sampler must draw ``p(x | c)`` — MMD² under the sampling-noise floor of two exact sets, as in
  tests/test_conditional.py (same mixture, step counts and floor);
* the exact class posterior of guided samples must rise with ``w``;
* a small trained classifier must classify noisy draws nearly as well as the exact posterior and
  its guidance must move samples toward the class.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from oracles import (
    LABELLED_LABELS,
    LABELLED_MIX,
    LABELLED_N,
    check_draws_each_class,
    high_nfe_steps,
    labelled_floor,
)

import scoresde as sd
from scoresde.analytic import NULL_LABEL
from scoresde.model import Prediction
from scoresde.nn import TimeClassifierConv, TimeClassifierMLP

F64 = torch.float64
N_PER_CLASS = LABELLED_N

MIX = LABELLED_MIX  # class 0: two modes on the left; class 1: two on the right (tests/oracles.py)
# Overlapping classes (means 1.2 apart at std 0.6–0.7, a third mode shared in the middle), so that
# p_0(c | x) of conditional samples is far from 1 and guidance has room to raise it.
OVERLAP = sd.GaussianMixture(
    means=torch.tensor([[-0.6, 0.0], [0.6, 0.0], [0.0, 1.0]], dtype=F64),
    stds=torch.tensor([0.6, 0.7, 0.5], dtype=F64),
    weights=torch.tensor([0.4, 0.4, 0.2], dtype=F64),
    labels=torch.tensor([0, 1, 1]),
)
LABELS = LABELLED_LABELS  # both classes interleaved in one batch


def _oracles(gmm: sd.GaussianMixture, sde: sd.SDE, prediction: str = "eps"):
    return (gmm.score_model(sde, prediction=prediction, conditional=True),
            gmm.score_model(sde, prediction=prediction))


# --- classifier-free guidance: exact combination, w = 0, one call ----------------------------------


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("interval", [None, (0.2, 0.6)], ids=["always", "interval"])
def test_cfg_guided_score_is_the_exact_combination(sde, prediction, interval):
    """float64 rounding only (atol 1e-10 on scores of size ~1/sigma ≲ 10³ at t ≥ 0.02)."""
    model, _ = _oracles(MIX, sde, prediction)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.02, 0.1, 0.2, 0.35, 0.6, 0.61, 0.9, 1.0], dtype=F64).repeat(3)
    labels = torch.arange(len(t)) % 2
    x = torch.randn(len(t), 2, generator=g, dtype=F64) * 2.0
    s_c, s_u = MIX.score_at(sde, x, t, labels), MIX.score_at(sde, x, t)
    inside = torch.ones_like(t, dtype=torch.bool) if interval is None else (t >= 0.2) & (t <= 0.6)
    for w in (-1.0, 0.0, 0.5, 2.0, 5.0):
        pred = sd.ClassifierFreeGuidance(model, w, interval=interval).predict(x, t, labels)
        want = torch.where(inside[:, None], (1 + w) * s_c - w * s_u, s_c)
        torch.testing.assert_close(pred.score, want, rtol=0, atol=1e-10)
        torch.testing.assert_close(pred.alpha * pred.x0 + pred.sigma * pred.eps, x, rtol=0, atol=1e-12)
    # The check can fail: at w = 2 the guided score leaves the conditional one where it guides
    # (by up to ~10 here; by ~0 deep inside a class, where p_t(c | x) ≈ 1).
    guided = sd.ClassifierFreeGuidance(model, 2.0, interval=interval).predict(x, t, labels).score
    assert (guided - s_c).norm(dim=1)[inside].max() > 1.0


@pytest.mark.parametrize("variant", ["ddim eta=0", "ancestral posterior", "dpm++ 2M"])
def test_cfg_at_w0_is_conditional_sampling(variant):
    v = {v.label: v for v in sd.samplers.variants()}[variant]
    model, _ = _oracles(MIX, sd.VPSDE())
    labels = torch.arange(64) % 2
    runs = [sd.sample(m, (64, 2), v.sampler, 20, cond=labels, dtype=F64,
                      generator=torch.Generator().manual_seed(4), **v.options)
            for m in (sd.ClassifierFreeGuidance(model, 0.0), model)]
    torch.testing.assert_close(runs[0].x, runs[1].x, rtol=0, atol=1e-12)
    assert runs[0].nfe == runs[1].nfe
    guided = sd.sample(sd.ClassifierFreeGuidance(model, 1.0), (64, 2), v.sampler, 20, cond=labels,
                       dtype=F64, generator=torch.Generator().manual_seed(4), **v.options)
    assert (guided.x - runs[1].x).abs().max() > 1e-2  # and w ≠ 0 does change the samples


class Recording:
    """A DiffusionModel that records the batch size of every call of the model it wraps."""

    def __init__(self, inner):
        self.inner, self.sde, self.batches = inner, inner.sde, []

    def predict(self, x, t, cond=None) -> Prediction:
        self.batches.append(len(x))
        return self.inner.predict(x, t, cond)


@pytest.mark.parametrize("variant", ["ddim eta=0", "edm heun", "dpm adaptive 23"])
def test_cfg_makes_one_inner_call_per_nfe(variant):
    v = {v.label: v for v in sd.samplers.variants()}[variant]
    inner = Recording(MIX.score_model(sd.VPSDE(), prediction="eps", conditional=True))
    labels = torch.arange(6) % 2
    steps = None if v.sampler == "dpm_adaptive" else 10
    out = sd.sample(sd.ClassifierFreeGuidance(inner, 3.0), (6, 2), v.sampler, steps, cond=labels,
                    dtype=F64, generator=torch.Generator().manual_seed(0), **v.options)
    assert out.nfe == len(inner.batches) > 0  # one inner call per protocol call (NFE) ...
    assert set(inner.batches) == {12}  # ... with both branches in it, on the doubled batch
    if variant == "ddim eta=0":
        assert out.nfe == 10  # one per step


def test_cfg_takes_a_dict_condition_with_a_per_key_null():
    class KeywordNet(torch.nn.Module):  # diffusers'/EDM's keyword condition, plus a shared scalar
        def __init__(self):
            super().__init__()
            self.oracle = MIX.score_model(sd.VPSDE(), prediction="eps", conditional=True).net

        def forward(self, x, c, *, class_labels, scale):
            return scale * self.oracle(x, c, class_labels)

    keyword = sd.ScoreModel(KeywordNet(), sd.VPSDE(), prediction="eps")
    model, _ = _oracles(MIX, sd.VPSDE())
    labels = torch.tensor([0, 1, 1, 0, 1])
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.full((5,), 0.4, dtype=F64)
    cond = {"class_labels": labels, "scale": torch.tensor(1.0)}  # a 0-d value goes to both halves
    got = sd.ClassifierFreeGuidance(keyword, 1.5, null_cond={"class_labels": NULL_LABEL}).predict(x, t, cond)
    want = sd.ClassifierFreeGuidance(model, 1.5).predict(x, t, labels)
    torch.testing.assert_close(got.eps, want.eps, rtol=0, atol=1e-12)
    # An explicit null other than NULL_LABEL is used: guiding class 0 against class 1.
    other = sd.ClassifierFreeGuidance(model, 1.5, null_cond=1).predict(x, t, labels)
    s0, s1 = MIX.score_at(sd.VPSDE(), x, t, labels), MIX.score_at(sd.VPSDE(), x, t, torch.ones(5, dtype=int))
    torch.testing.assert_close(other.score, 2.5 * s0 - 1.5 * s1, rtol=0, atol=1e-10)


def test_cfg_rescale_matches_the_conditional_x0_spread():
    """Lin et al.'s rescale on x0: φ = 1 gives the conditional branch's per-sample std exactly,
    φ blends linearly, and eps stays consistent with x."""
    model, _ = _oracles(MIX, sd.VPSDE())
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 2, generator=g, dtype=F64) * 2
    t = torch.linspace(0.05, 0.95, 16, dtype=F64)
    labels = torch.arange(16) % 2
    plain = sd.ClassifierFreeGuidance(model, 3.0).predict(x, t, labels)
    cond = model.predict(x, t, labels)
    full = sd.ClassifierFreeGuidance(model, 3.0, rescale=1.0).predict(x, t, labels)
    torch.testing.assert_close(full.x0.std(1), cond.x0.std(1), rtol=1e-12, atol=0)
    assert (plain.x0.std(1) - cond.x0.std(1)).abs().max() > 0.1  # so the rescale has work to do
    half = sd.ClassifierFreeGuidance(model, 3.0, rescale=0.5).predict(x, t, labels)
    torch.testing.assert_close(half.x0, 0.5 * (full.x0 + plain.x0), rtol=0, atol=1e-12)
    for p in (full, half):
        torch.testing.assert_close(p.alpha * p.x0 + p.sigma * p.eps, x, rtol=0, atol=1e-12)
    off = sd.ClassifierFreeGuidance(model, 3.0, rescale=0.0).predict(x, t, labels)
    assert torch.equal(off.x0, plain.x0)


def test_cfg_carries_the_conditional_branch_variance():
    class Halves(torch.nn.Module):  # eps 0, variance interpolation = the label (per branch)
        def forward(self, x, c, labels):
            return torch.cat([torch.zeros_like(x), labels.to(x)[:, None].expand_as(x)], dim=1)

    model = sd.ScoreModel(Halves(), sd.VPSDE(), prediction="eps", learned_variance=True)
    labels = torch.tensor([0, 1, 1])
    pred = sd.ClassifierFreeGuidance(model, 2.0).predict(torch.zeros(3, 2, dtype=F64), 0.5, labels)
    torch.testing.assert_close(pred.var_interp, labels.to(F64)[:, None].expand(3, 2))


def test_log_likelihood_runs_the_guided_ode():
    """w = 0 is the conditional density (to the solver's 1e-7 tolerance, as test_conditional's
    1e-3 nats per dimension); w = 2 is another, finite density."""
    sde = sd.VPSDE()
    model, _ = _oracles(MIX, sde)
    labels = torch.tensor([0, 1, 0, 1])
    x = MIX.sample(4, torch.Generator().manual_seed(5), F64, labels=labels)
    prior = lambda z: MIX.log_prob_at(sde, z, sde.T, labels)  # noqa: E731
    ll0 = sd.log_likelihood(sd.ClassifierFreeGuidance(model, 0.0), x, cond=labels, rtol=1e-7, atol=1e-7,
                            prior_logp=prior)
    torch.testing.assert_close(ll0.logp, MIX.log_prob_at(sde, x, 1e-5, labels), rtol=0, atol=2e-3)
    ll2 = sd.log_likelihood(sd.ClassifierFreeGuidance(model, 2.0), x, cond=labels, rtol=1e-7, atol=1e-7)
    assert torch.isfinite(ll2.logp).all() and (ll2.logp - ll0.logp).abs().min() > 0.01
    # The exact classifier at s = 1 through the likelihood's exact trace (a graph through x).
    cg = sd.ClassifierGuidance(MIX.score_model(sde, prediction="eps"), MIX.classifier(sde), 1.0)
    ll_cg = sd.log_likelihood(cg, x, cond=labels, rtol=1e-7, atol=1e-7, prior_logp=prior)
    torch.testing.assert_close(ll_cg.logp, ll0.logp, rtol=0, atol=1e-4)


def test_encode_runs_the_guided_ode():
    """The guided PF-ODE is invertible like any other: dopri5 at rtol = atol = 1e-7 reconstructs
    to < 1e-5 (as tests/test_encoding.py), and w = 0 encodes as the conditional model does."""
    model, _ = _oracles(MIX, sd.VPSDE())
    labels = torch.arange(8) % 2
    x = MIX.sample(8, torch.Generator().manual_seed(6), F64, labels=labels)
    opts = dict(method="dopri5", rtol=1e-7, atol=1e-7)
    guided = sd.ClassifierFreeGuidance(model, 2.0)
    z = sd.encode(guided, x, "ode", cond=labels, **opts)
    back = sd.sample(guided, x.shape, "ode", cond=labels, x_T=z.x, t_end=z.timesteps[0].item(),
                     denoise=False, dtype=F64, **opts)
    assert (back.x - x).abs().max() < 1e-5
    z0 = sd.encode(sd.ClassifierFreeGuidance(model, 0.0), x, "ode", cond=labels, **opts)
    torch.testing.assert_close(z0.x, sd.encode(model, x, "ode", cond=labels, **opts).x, rtol=0, atol=1e-10)
    assert (z0.x - z.x).abs().max() > 1e-2


# --- classifier guidance with the exact classifier -------------------------------------------------


def test_exact_classifier_gradient_is_the_score_difference():
    sde = sd.VPSDE()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 2, generator=g, dtype=F64) * 2
    t = torch.linspace(0.01, 1.0, 12, dtype=F64)
    labels = torch.arange(12) % 2
    log_post = MIX.class_log_posterior_at(sde, x, t)
    torch.testing.assert_close(log_post.exp().sum(1), torch.ones(12, dtype=F64), rtol=0, atol=1e-14)
    # Bayes: log p_t(c | x) = log p_t(x | c) + log p(c) − log p_t(x).
    prior = torch.tensor([0.5, 0.5], dtype=F64)
    bayes = MIX.log_prob_at(sde, x, t, labels) + prior[labels].log() - MIX.log_prob_at(sde, x, t)
    torch.testing.assert_close(log_post.gather(1, labels[:, None])[:, 0], bayes, rtol=0, atol=1e-12)
    cg = sd.ClassifierGuidance(MIX.score_model(sde, prediction="eps"), MIX.classifier(sde), 1.0)
    with torch.no_grad():  # the guidance takes its gradient even so
        grad = cg.log_prob_grad(x, t, labels)
        pred = cg.predict(x, t, labels)
    torch.testing.assert_close(grad, MIX.class_log_posterior_grad_at(sde, x, t, labels), rtol=0, atol=1e-12)
    torch.testing.assert_close(pred.score, MIX.score_at(sde, x, t, labels), rtol=0, atol=1e-10)
    torch.testing.assert_close(pred.alpha * pred.x0 + pred.sigma * pred.eps, x, rtol=0, atol=1e-12)
    half = sd.ClassifierGuidance(MIX.score_model(sde, prediction="eps"), MIX.classifier(sde), 0.5,
                                 interval=(0.3, 0.7)).predict(x, t, labels)
    inside = ((t >= 0.3) & (t <= 0.7))[:, None]
    want = MIX.score_at(sde, x, t) + torch.where(inside, 0.5 * grad, 0 * grad)
    torch.testing.assert_close(half.score, want, rtol=0, atol=1e-10)


@pytest.fixture(scope="module")
def floor() -> float:
    return labelled_floor()


REPRESENTATIVE = ("ddim eta=0", "ancestral posterior", "dpm adaptive 23")
VARIANTS = [pytest.param(v, id=v.label, marks=() if v.label in REPRESENTATIVE else pytest.mark.slow)
            for v in sd.samplers.variants()]


@pytest.mark.parametrize("variant", VARIANTS)
def test_classifier_guidance_with_the_exact_classifier_samples_the_conditional(variant, floor):
    """Unconditional exact model + s = 1 · exact ∇log p_t(c | x) = exact ∇log p_t(x | c)."""
    sde = sd.VPSDE()
    cg = sd.ClassifierGuidance(MIX.score_model(sde, prediction="eps"), MIX.classifier(sde), 1.0)
    out = sd.sample(cg, (len(LABELS), 2), variant.sampler, high_nfe_steps(variant), cond=LABELS, dtype=F64,
                    generator=torch.Generator().manual_seed(3), **variant.options)
    check_draws_each_class(out.x, floor, variant.label)  # the guidance reaches the samples


# --- the class posterior rises with the guidance weight --------------------------------------------


def test_exact_class_posterior_of_guided_samples_rises_with_w():
    """Mean exact p_0(c | x) of CFG samples (DDIM, 100 steps, the same x_T for every w).

    Anchors: w = −1 (unguided, the unconditional model) must match E_{x~p(x)} p_0(c | x) and
    w = 0 E_{x~p(x|c)} p_0(c | x), both over exact draws, within 4 standard errors of the two
    means (100 DDIM steps are at the floor here). Each step up in w must raise the mean by more
    than 5 standard errors of the paired differences.
    """
    sde = sd.VPSDE()
    model, _ = _oracles(OVERLAP, sde)
    n, c = 3000, 0
    labels = torch.full((n,), c)
    x_T = sde.prior_sample((n, 2), torch.Generator().manual_seed(8), F64)
    posts = {}
    for w in (-1.0, 0.0, 1.0, 3.0):
        x = sd.sample(sd.ClassifierFreeGuidance(model, w), (n, 2), "ddim", 100, cond=labels, x_T=x_T,
                      dtype=F64).x
        posts[w] = OVERLAP.class_log_posterior(x, 1.0, 0.0)[:, c].exp()
    g = torch.Generator().manual_seed(9)
    for w, exact in ((-1.0, OVERLAP.sample(n, g, F64)), (0.0, OVERLAP.sample(n, g, F64, labels=labels))):
        ref = OVERLAP.class_log_posterior(exact, 1.0, 0.0)[:, c].exp()
        se = math.sqrt(posts[w].var() / n + ref.var() / n)
        assert abs(posts[w].mean() - ref.mean()) < 4 * se, (w, posts[w].mean(), ref.mean())
    for lo, hi in itertools.pairwise(sorted(posts)):
        diff = posts[hi] - posts[lo]
        assert diff.mean() > 5 * diff.std() / math.sqrt(n), (lo, hi, diff.mean())


# --- a trained classifier --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> sd.NoisyClassifier:
    """The small MLP classifier trained on 4000 labelled draws of MIX (a few seconds)."""
    torch.manual_seed(0)
    clf = sd.NoisyClassifier(TimeClassifierMLP(2, 2, hidden=64, layers=2, embedding="fourier"), sd.VPSDE())
    g = torch.Generator().manual_seed(10)
    labels = torch.randint(2, (4000,), generator=g)
    x = MIX.sample(4000, g, torch.float32, labels=labels)
    sd.train_classifier(clf, x, labels, steps=400, batch_size=256, lr=3e-3, generator=g)
    return clf


def test_trained_classifier_is_nearly_bayes_optimal_on_held_out_noisy_draws(trained):
    """At t = 0.05 (Bayes accuracy ~1) and t = 0.5 (~0.7), on 2000 held-out noisy draws: accuracy
    within 3 points of the exact posterior's argmax (Bayes) on the same draws — an allowance for
    a few seconds of training; the paired sampling noise is below a point — and above chance
    (0.5) by 5 binomial standard errors (5·sqrt(0.25/2000) = 0.056). The cross-entropy (the
    training loss at that t) is within 0.05 nats of the exact posterior's, its minimum."""
    sde = sd.VPSDE()
    g = torch.Generator().manual_seed(12)
    labels = torch.randint(2, (2000,), generator=g)
    x0 = MIX.sample(2000, g, F64, labels=labels)
    for t in (0.05, 0.5):
        x_t = sde.alpha(t) * x0 + sde.sigma(t) * torch.randn(x0.shape, generator=g, dtype=F64)
        with torch.no_grad():
            acc = (trained.logits(x_t.float(), t).argmax(1) == labels).double().mean()
            ce = -trained(x_t.float(), t, labels).mean()
        log_post = MIX.class_log_posterior_at(sde, x_t, t)
        bayes = (log_post.argmax(1) == labels).double().mean()
        assert acc > bayes - 0.03 and acc > 0.5 + 5 * math.sqrt(0.25 / 2000), (t, acc, bayes)
        assert ce < -log_post.gather(1, labels[:, None]).mean() + 0.05, (t, ce)


def test_trained_classifier_guidance_moves_samples_toward_the_class(trained):
    """Unconditional exact model + the trained classifier at s = 1 (DDIM, 50 steps): the share of
    samples the exact posterior assigns to the target class rises from the unguided ~0.5 (the
    class prior) to above 0.95 for each class (the exact classifier gives ~1)."""
    sde = sd.VPSDE()
    plain = MIX.score_model(sde, prediction="eps")
    n = 400
    for c in (0, 1):
        labels = torch.full((n,), c)
        runs = [sd.sample(m, (n, 2), "ddim", 50, cond=cond, generator=torch.Generator().manual_seed(13))
                for m, cond in ((plain, None), (sd.ClassifierGuidance(plain, trained, 1.0), labels))]
        share = [(MIX.class_log_posterior(r.x, 1.0, 0.0).argmax(1) == c).double().mean() for r in runs]
        assert 0.4 < share[0] < 0.6 and share[1] > 0.95, (c, share)


def test_classifier_loss_and_conv_classifier():
    """The conv classifier learns a toy image task (bright top vs bottom half of an 8×8 image,
    noisy): its loss at t = 0.05 falls below 0.2 nats (chance: log 2 = 0.69) in 60 Adam steps."""
    torch.manual_seed(0)
    sde = sd.VPSDE(N=1000)
    clf = sd.NoisyClassifier(TimeClassifierConv(1, 2, channels=16), sde, time_input="index")
    g = torch.Generator().manual_seed(14)
    labels = torch.randint(2, (512,), generator=g)
    top = torch.zeros(2, 1, 8, 8)
    top[0, :, :4], top[1, :, 4:] = 1.0, 1.0
    x = top[labels] + 0.1 * torch.randn(512, 1, 8, 8, generator=g)
    before = sd.classifier_loss(clf, x, labels, g, t=0.05).item()
    losses = sd.train_classifier(clf, x, labels, steps=60, batch_size=64, lr=3e-3, generator=g, time="index")
    assert len(losses) == 60
    after = sd.classifier_loss(clf, x, labels, g, t=0.05).item()
    assert after < 0.2 < before - 0.3, (before, after)
    with torch.no_grad():
        assert clf.logits(x[:5], 0.3).shape == (5, 2)
    # Its gradient drives ClassifierGuidance on image-shaped data.
    model = sd.ScoreModel(lambda x, c: torch.zeros_like(x), sde, prediction="eps")
    pred = sd.ClassifierGuidance(model, clf, 2.0).predict(x[:5], 0.3, labels[:5])
    assert pred.eps.shape == (5, 1, 8, 8) and pred.eps.abs().sum() > 0


# --- bad input -------------------------------------------------------------------------------------


def test_bad_input_gives_clear_errors():
    sde = sd.VPSDE()
    model, plain = _oracles(MIX, sde)
    clf = MIX.classifier(sde)
    x, labels = torch.zeros(4, 2, dtype=F64), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"w must be >= -1 \(w = −1 is unconditional"):
        sd.ClassifierFreeGuidance(model, -1.5)
    with pytest.raises(ValueError, match="s must be >= 0"):
        sd.ClassifierGuidance(plain, clf, -0.1)
    for bad in (math.nan, math.inf, True, "2"):
        with pytest.raises(ValueError, match="must be a finite real number"):
            sd.ClassifierFreeGuidance(model, bad)
    for interval, match in (((0.6, 0.2), "0 <= t_lo < t_hi <= T=1"), ((-0.1, 0.5), "0 <= t_lo"),
                            ((0.2, 1.5), "t_hi <= T"), ((0.3,), "a pair of times"), (0.3, "a pair of times")):
        with pytest.raises(ValueError, match=match):
            sd.ClassifierFreeGuidance(model, 1.0, interval=interval)
        with pytest.raises(ValueError, match=match):
            sd.ClassifierGuidance(plain, clf, 1.0, interval=interval)
    for phi in (-0.1, 1.5):
        with pytest.raises(ValueError, match="rescale must"):
            sd.ClassifierFreeGuidance(model, 1.0, rescale=phi)
    with pytest.raises(ValueError, match="rescale needs at least 2 elements per sample"):
        sd.ClassifierFreeGuidance(model, 1.0, rescale=0.5).predict(torch.zeros(4, 1, dtype=F64), 0.5, labels)
    # No condition for a guided model: from sample and from a direct call.
    for guided in (sd.ClassifierFreeGuidance(model, 1.0), sd.ClassifierGuidance(plain, clf, 1.0)):
        with pytest.raises(ValueError, match="guidance needs a condition: pass cond="):
            sd.sample(guided, (4, 2), "ddim", 5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"null value of cond must broadcast to its shape \(4,\)"):
        sd.ClassifierFreeGuidance(model, 1.0, null_cond=torch.zeros(3, dtype=int)).predict(x, 0.5, labels)
    with pytest.raises(TypeError, match="null_cond must be a tensor or a number"):
        sd.ClassifierFreeGuidance(model, 1.0, null_cond={"y": -1}).predict(x, 0.5, labels)
    for cond, null, match in (({"y": labels}, None, "a dict condition needs null_cond"),
                              ({"y": labels}, {"z": -1}, r"keys \['z'\] that cond does not have"),
                              ({"y": labels, "s": 1.0}, {"s": 0.0}, r"cond\['s'\] has no batch axis")):
        with pytest.raises(ValueError, match=match):
            sd.ClassifierFreeGuidance(model, 1.0, null_cond=null).predict(x, 0.5, cond)
    with pytest.raises(ValueError, match=r"classifier must return log p\(cond \| x_t\) per sample"):
        sd.ClassifierGuidance(plain, lambda x, t, c: x.sum(), 1.0).predict(x, 0.5, labels)
    with pytest.raises(TypeError, match="classifier must be callable"):
        sd.ClassifierGuidance(plain, "exact", 1.0)
    with pytest.raises(ValueError, match=r"needs a class among \[0, 1\] for every sample, got \[-1\]"):
        clf(x, 0.5, torch.full((4,), NULL_LABEL))
    noisy = sd.NoisyClassifier(TimeClassifierMLP(2, 2), sde)
    with pytest.raises(ValueError, match=r"class indices in 0..1, got \[2\]"):
        noisy(x.float(), 0.5, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="time must be one of"):
        sd.classifier_loss(noisy, x.float(), labels, torch.Generator(), time="discrete")
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        TimeClassifierMLP(2, 1)
    with pytest.raises(ValueError, match=r"TimeClassifierConv expects images \(batch, 1, H, W\)"):
        TimeClassifierConv(1, 2)(torch.zeros(4, 2), torch.zeros(4))
