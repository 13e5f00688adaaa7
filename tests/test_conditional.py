"""The conditioning contract against an exact class-conditional oracle.

The oracle is a 2-D Gaussian mixture whose components carry class labels, so ``p(x | c)`` is the
mixture of that class's components and its diffused score is exact at every t
(``GaussianMixture(..., labels=)``, ``score_model(conditional=True)``). Every registered sampler
variant, given ``cond=labels`` with both classes interleaved in one batch, must draw each
sample from its own class's conditional: the unbiased MMD² of the samples of class c to fresh
exact draws of ``p(x | c)`` must lie under the sampling-noise floor of two exact sets of that
size, and the samples of class 0 must be far from ``p(x | 1)`` (the check can fail). The PF-ODE
log-likelihood under ``cond`` must match the exact conditional log-density.
"""

from __future__ import annotations

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
from scoresde.losses import dsm_loss
from scoresde.model import CountingModel, Prediction

F64 = torch.float64
N_PER_CLASS = LABELLED_N

MIX = LABELLED_MIX  # class 0: two modes on the left; class 1: two on the right (tests/oracles.py)
LABELS = LABELLED_LABELS  # both classes interleaved in one batch


@pytest.fixture(scope="module")
def floor() -> float:
    return labelled_floor()


@pytest.mark.parametrize("variant", sd.samplers.variants(), ids=lambda v: v.label)
def test_every_sampler_draws_from_the_conditional(variant, floor):
    model = MIX.score_model(sd.VPSDE(), prediction="eps", conditional=True)
    out = sd.sample(model, (len(LABELS), 2), variant.sampler, high_nfe_steps(variant), cond=LABELS, dtype=F64,
                    generator=torch.Generator().manual_seed(3), **variant.options)
    check_draws_each_class(out.x, floor, variant.label)  # the condition reaches the network


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=["vp", "ve"])
def test_log_likelihood_matches_the_exact_conditional_density(sde):
    model = MIX.score_model(sde, prediction="eps", conditional=True)
    g = torch.Generator().manual_seed(5)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    x = MIX.sample(len(labels), g, F64, labels=labels)
    # The exact conditional p_T as the prior, so the only error left is the solver's (tol 1e-7).
    ll = sd.log_likelihood(model, x, cond=labels, rtol=1e-7, atol=1e-7,
                           prior_logp=lambda z: MIX.log_prob_at(sde, z, sde.T, labels))
    exact = MIX.log_prob_at(sde, x, 1e-5, labels)
    assert torch.allclose(ll.logp, exact, atol=2e-3), (ll.logp - exact)  # 1e-3 nats per dimension
    # ... and differs from the unconditional density by far more than that tolerance.
    assert (MIX.log_prob(x) - exact).abs().min() > 0.1
    # Chunked solves split the condition with the data (default prior for both: same numbers).
    whole = sd.log_likelihood(model, x, cond=labels, rtol=1e-7, atol=1e-7)
    chunked = sd.log_likelihood(model, x, cond=labels, rtol=1e-7, atol=1e-7, batch_size=3)
    assert torch.allclose(chunked.logp, whole.logp, atol=1e-4)


def test_null_label_is_the_unconditional_model():
    cond_model = MIX.score_model(sd.VPSDE(), prediction="eps", conditional=True)
    plain = MIX.score_model(sd.VPSDE(), prediction="eps")
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.full((6,), 0.3, dtype=F64)
    null = torch.full((6,), NULL_LABEL)
    assert torch.allclose(cond_model.eps(x, t, null), plain.eps(x, t), atol=1e-12)


def test_batch_size_mismatch_is_a_clear_error():
    model = MIX.score_model(sd.VPSDE(), prediction="eps", conditional=True)
    g = torch.Generator().manual_seed(0)
    x = MIX.sample(4, g, F64)
    three = torch.tensor([0, 1, 0])
    match = r"cond must have the batch as its first axis \(4 samples\), got shape \(3,\)"
    with pytest.raises(ValueError, match=match):
        sd.sample(model, (4, 2), "ddim", 5, cond=three, generator=g)
    with pytest.raises(ValueError, match=match):
        sd.log_likelihood(model, x, cond=three)
    with pytest.raises(ValueError, match=match):
        sd.encode(model, x, "ddim", 5, cond=three)
    with pytest.raises(ValueError, match=match):
        dsm_loss(model, x, g, cond=three)
    with pytest.raises(ValueError, match=r"cond\['class_labels'\] must have the batch"):
        sd.sample(model, (4, 2), "ddim", 5, cond={"class_labels": three}, generator=g)
    with pytest.raises(TypeError, match="cond must be None, a tensor or a dict"):
        sd.sample(model, (4, 2), "ddim", 5, cond=[0, 1, 0, 1], generator=g)


class KeywordNet(torch.nn.Module):
    """A network taking its condition as a keyword, as diffusers' ``class_labels`` / EDM's."""

    def __init__(self):
        super().__init__()
        self.oracle = MIX.score_model(sd.VPSDE(), prediction="eps", conditional=True).net
        self.seen: list[int] = []

    def forward(self, x, c, *, class_labels, scale):
        self.seen.append(len(class_labels))
        return scale * self.oracle(x, c, class_labels)


def test_dict_cond_is_passed_as_keywords_and_split_with_the_batch():
    net = KeywordNet()
    model = sd.ScoreModel(net, sd.VPSDE(), prediction="eps")
    labels = torch.tensor([0, 1, 1, 0, 1])
    cond = {"class_labels": labels, "scale": torch.tensor(1.0)}  # a 0-d tensor goes to every chunk
    x = MIX.sample(5, torch.Generator().manual_seed(1), F64, labels=labels)
    ll = sd.log_likelihood(model, x, cond=cond, batch_size=2, rtol=1e-6, atol=1e-6)
    assert set(net.seen) == {2, 1}  # chunks of 2, 2, 1
    exact = sd.log_likelihood(MIX.score_model(sd.VPSDE(), prediction="eps", conditional=True), x,
                              cond=labels, batch_size=2, rtol=1e-6, atol=1e-6)
    assert torch.equal(ll.logp, exact.logp)


class TwoPassMean:
    """A wrapper (not a ScoreModel) that evaluates its inner model twice per call — as
    classifier-free guidance batches its two branches — and averages: here both branches are
    the same class, so the result equals one conditional evaluation."""

    def __init__(self, inner: sd.ScoreModel):
        self.inner, self.sde, self.passes = inner, inner.sde, 0

    def predict(self, x, t, cond=None) -> Prediction:
        both = self.inner.predict(torch.cat([x, x]), torch.as_tensor(t).expand(len(x)).repeat(2),
                                  torch.cat([cond, cond]))
        self.passes += 2
        half = len(x)
        return Prediction(x=x, alpha=both.alpha[:half], sigma=both.sigma[:half],
                          x0=0.5 * (both.x0[:half] + both.x0[half:]),
                          eps=0.5 * (both.eps[:half] + both.eps[half:]))


def test_wrappers_compose_and_nfe_counts_protocol_calls():
    inner = MIX.score_model(sd.VPSDE(), prediction="eps", conditional=True)
    wrapper = TwoPassMean(inner)
    labels = torch.tensor([0, 1, 1, 0])
    g = torch.Generator().manual_seed(2)
    out = sd.sample(wrapper, (4, 2), "ddim", 10, cond=labels, dtype=F64, generator=g)
    g.manual_seed(2)
    ref = sd.sample(inner, (4, 2), "ddim", 10, cond=labels, dtype=F64, generator=g)
    assert torch.allclose(out.x, ref.x, atol=1e-12)
    assert out.nfe == 10 and wrapper.passes == 20  # one NFE per protocol call, two network passes each
    z = sd.encode(wrapper, out.x, "ddim", 10, cond=labels)
    assert z.nfe == 10
    counting = CountingModel(wrapper, labels)
    counting.predict(out.x, 0.5)
    assert counting.nfe == 1
    with pytest.raises(TypeError, match="DiffusionModel protocol"):
        sd.sample(object(), (4, 2), "ddim", 10, generator=g)
