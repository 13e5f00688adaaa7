"""Training losses, checked against the exact oracle.

For Gaussian data ``N(0, s² I)`` the exact score at time t is ``−x_t/v`` with
``v = alpha²s² + sigma²``, and per dimension ``u = sigma·score + z = (alpha²s²/v)·z − (sigma·alpha/v)·x0``
is ``N(0, m)`` with ``m = 1 − sigma²/v``: the irreducible value of the DSM objective. The
per-sample loss (mean over D dims) is ``m·χ²_D/D``, so its Monte-Carlo mean over n samples has
standard error ``m·sqrt(2/(D·n))`` — the tolerances below use that exact SE.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import scoresde as sd
from scoresde.losses import LOSSES, ddpm_loss, dsm_loss, get_loss, smld_loss
from scoresde.nn import TimeMLP

F64 = torch.float64
D, S = 4, 0.7  # dimension and std of the Gaussian data
SDES = {
    "vp": lambda: sd.VPSDE(N=100),
    "subvp": lambda: sd.SubVPSDE(N=100),
    "ve": lambda: sd.VESDE(sigma_min=0.01, sigma_max=10.0, N=100),
}



def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gaussian() -> sd.GaussianMixture:
    return sd.GaussianMixture(torch.zeros(1, D, dtype=F64), torch.tensor([S], dtype=F64))


def _irreducible(sde: sd.SDE, t: Tensor) -> Tensor:
    """``m(t) = 1 − sigma²/(alpha²s² + sigma²)``, float64."""
    a2, s2 = sde.alpha(t) ** 2, sde.sigma(t) ** 2
    return 1.0 - s2 / (a2 * S**2 + s2)


class _Recorder(nn.Module):
    """A network predicting eps = 0 that records the time inputs it is called with."""

    def __init__(self):
        super().__init__()
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        self.inputs.append(c.clone())
        return torch.zeros_like(x)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("t", [0.02, 0.3, 1.0])
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_dsm_of_exact_score_is_the_irreducible_value(name, t, likelihood_weighting):
    sde, n = SDES[name](), 4000
    oracle = _gaussian().score_model(sde)
    x0 = _gaussian().sample(n, generator=_gen(0), dtype=F64)
    loss = dsm_loss(oracle, x0, _gen(1), t=t, likelihood_weighting=likelihood_weighting)
    tt = torch.tensor(t, dtype=F64)
    weight = sde.g2(tt) / sde.sigma(tt) ** 2 if likelihood_weighting else 1.0
    expected = weight * _irreducible(sde, tt)
    se = expected * math.sqrt(2.0 / (D * n))
    assert abs(loss.item() - expected.item()) < 4 * se


def _expected_over_index(sde: sd.SDE, t: Tensor, n: int) -> tuple[float, float]:
    """Mean and standard error of ``m(t_i)·χ²_D/D`` for i uniform over the grid ``t``."""
    m = _irreducible(sde, t)
    var = (m**2).mean() * (1 + 2 / D) - m.mean() ** 2
    return m.mean().item(), math.sqrt(var.item() / n)


def test_ddpm_loss_of_exact_eps_index_model():
    sde, n = sd.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 1000, dtype=F64)), 20000
    oracle = _gaussian().score_model(sde, prediction="eps", time_input="index")
    x0 = _gaussian().sample(n, generator=_gen(0), dtype=F64)
    mean, se = _expected_over_index(sde, torch.arange(1, sde.N + 1, dtype=F64) / sde.N, n)
    assert abs(ddpm_loss(oracle, x0, _gen(1)).item() - mean) < 4 * se


def test_smld_loss_of_exact_model():
    sde, n = SDES["ve"](), 20000
    oracle = _gaussian().score_model(sde, prediction="score", time_input="sigma")
    x0 = _gaussian().sample(n, generator=_gen(0), dtype=F64)
    mean, se = _expected_over_index(sde, torch.linspace(0, 1, sde.N, dtype=F64), n)
    assert abs(smld_loss(oracle, x0, _gen(1)).item() - mean) < 4 * se


def test_time_grids_of_the_discrete_losses():
    x0 = torch.zeros(500, 2)
    ddpm = sd.ScoreModel(_Recorder(), sd.VPSDE(N=50), prediction="eps", time_input="index")
    ddpm_loss(ddpm, x0, _gen(0))
    i = ddpm.net.inputs[0].double()
    assert torch.allclose(i, i.round(), atol=1e-4) and set(i.round().long().tolist()) == set(range(50))

    ve = sd.VESDE(N=50)
    smld = sd.ScoreModel(_Recorder(), ve, prediction="eps", time_input="sigma")
    smld_loss(smld, x0, _gen(0))
    levels = smld.net.inputs[0].double()
    nearest = (levels[:, None] - ve.discrete_sigmas[None]).abs().min(1)
    assert (nearest.values / levels).max() < 1e-6 and len(nearest.indices.unique()) == 50


@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_dsm_times_are_uniform_on_eps_T(eps):
    model = sd.ScoreModel(_Recorder(), sd.VPSDE(), prediction="eps", time_input="continuous")
    dsm_loss(model, torch.zeros(4000, 2), _gen(0), eps=eps)
    t = model.net.inputs[0].double()
    assert t.min() >= eps and t.max() <= 1.0
    assert abs(t.mean().item() - (1 + eps) / 2) < 4 * (1 - eps) / math.sqrt(12 * len(t))


def _ring(k: int = 6) -> sd.GaussianMixture:
    angle = 2 * math.pi * torch.arange(k, dtype=F64) / k
    return sd.GaussianMixture(2.0 * torch.stack([angle.cos(), angle.sin()], 1), torch.full((k,), 0.3))


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_exact_score_beats_perturbed_scores(name, likelihood_weighting):
    """Same times and noise for both (common random numbers); the gap must exceed 4 SE."""
    sde, gmm = SDES[name](), _ring()
    oracle = gmm.score_model(sde)
    perturbed = sd.ScoreModel(lambda x, c: 1.1 * oracle.net(x, c) + 0.1, sde, prediction="score")
    gaps = []
    for seed in range(16):
        x0 = gmm.sample(256, generator=_gen(100 + seed), dtype=F64)
        losses = [dsm_loss(m, x0, _gen(seed), likelihood_weighting=likelihood_weighting)
                  for m in (oracle, perturbed)]
        gaps.append((losses[1] - losses[0]).item())
    gaps = torch.tensor(gaps, dtype=F64)
    assert gaps.mean() > 4 * gaps.std() / math.sqrt(len(gaps))


def _mlp_model(sde: sd.SDE) -> sd.ScoreModel:
    torch.manual_seed(0)
    net = TimeMLP(dim=3, hidden=16, layers=2, emb_dim=8)
    nn.init.normal_(net.out.weight, std=0.1)  # the zero-initialised output would block inner gradients
    return sd.ScoreModel(net, sde, prediction="eps", time_input="scaled")


def _loss_and_sde():
    return [("dsm", sd.VPSDE()), ("ddpm", sd.VPSDE()), ("smld", sd.VESDE())]


@pytest.mark.parametrize(("name", "sde"), _loss_and_sde(), ids=[n for n, _ in _loss_and_sde()])
def test_reduce_sum_is_D_times_mean_and_deterministic(name, sde):
    model, x0 = _mlp_model(sde), torch.randn(8, 1, 3, generator=_gen(0))
    loss = get_loss(name)
    mean = loss(model, x0, _gen(3), reduce_mean=True)
    assert torch.allclose(loss(model, x0, _gen(3), reduce_mean=False), 3 * mean, rtol=1e-6)
    assert loss(model, x0, _gen(3)).item() == mean.item()
    assert loss(model, x0, _gen(4)).item() != mean.item()


@pytest.mark.parametrize(("name", "sde"), _loss_and_sde(), ids=[n for n, _ in _loss_and_sde()])
def test_gradients_reach_every_parameter(name, sde):
    model = _mlp_model(sde)
    get_loss(name)(model, torch.randn(16, 3, generator=_gen(0)), _gen(1)).backward()
    for pname, p in model.net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE()], ids=["vp", "subvp"])
def test_smld_refuses_other_sdes(sde):
    with pytest.raises(ValueError, match="VESDE"):
        smld_loss(_mlp_model(sde), torch.zeros(4, 3), _gen(0))


def test_bad_arguments():
    model = _mlp_model(sd.VPSDE())
    for eps in (-0.1, 1.0):
        with pytest.raises(ValueError, match="eps"):
            dsm_loss(model, torch.zeros(4, 3), _gen(0), eps=eps)
    with pytest.raises(ValueError, match="times must lie"):
        dsm_loss(model, torch.zeros(4, 3), _gen(0), t=1.5)
    assert set(LOSSES) == {"dsm", "ddpm", "smld", "hybrid"} and get_loss("ddpm") is ddpm_loss
    with pytest.raises(ValueError, match=r"'ddpm', 'dsm', 'hybrid', 'smld'"):
        get_loss("nope")
