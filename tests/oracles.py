"""Shared test fixtures: the SDE zoo and an independent probability-flow reference solution."""

import torch
from scipy.integrate import solve_ivp

import scoresde as sd
from scoresde.metrics import mmd2

F64 = torch.float64
DDPM_BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=F64)  # Ho et al.'s linear table

SDES = {
    "vp-linear": lambda: sd.VPSDE(),
    "vp-cosine": lambda: sd.VPSDE.cosine(),
    "vp-betas": lambda: sd.VPSDE.from_betas(DDPM_BETAS),
    "subvp": lambda: sd.SubVPSDE(),
    "ve": lambda: sd.VESDE(),
}


def pf_reference(sde: sd.SDE, gmm: sd.GaussianMixture, x_T: torch.Tensor, t_end: float) -> torch.Tensor:
    """``dx/dt = f·x − ½g²·∇log p_t(x)`` from T to ``t_end`` in the original variables (not the
    library's σ̄ coordinates) with the mixture's exact score, scipy DOP853 at rtol = atol = 1e-12."""
    shape = x_T.shape

    def rhs(t, y):
        x = torch.from_numpy(y).reshape(shape)
        tt = torch.tensor(t, dtype=F64)
        return (sde.f(tt) * x - 0.5 * sde.g2(tt) * gmm.score_at(sde, x, tt)).numpy().ravel()

    res = solve_ivp(rhs, (sde.T, t_end), x_T.numpy().ravel(), method="DOP853", rtol=1e-12, atol=1e-12)
    assert res.success
    return torch.from_numpy(res.y[:, -1]).reshape(shape)


# Order-of-convergence problem: wider modes (std 0.32–0.48) than the samplers' test mixture, so
# that trajectories reach the asymptotic regime at ~64 steps; the PF-ODE is compared at t = 1e-2.
ORDER_MIX = sd.GaussianMixture(
    torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]], dtype=F64),
    torch.tensor([0.4, 0.48, 0.32], dtype=F64),
    torch.tensor([0.5, 0.3, 0.2], dtype=F64),
)
ORDER_T_END = 1e-2
ORDER_SDES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}


def order_problem(sde_name: str):
    """``(sde, model, x_T, reference x at ORDER_T_END)`` for 16 prior draws, eps-prediction."""
    sde = ORDER_SDES[sde_name]()
    x_T = sde.prior_std * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    model = ORDER_MIX.score_model(sde, prediction="eps")
    return sde, model, x_T, pf_reference(sde, ORDER_MIX, x_T, ORDER_T_END)


class RecordingNoise:
    """A NoiseSource that draws from a seeded generator and keeps every draw, in order (for
    replaying a sampler's noise through a peer implementation)."""

    def __init__(self, seed: int):
        self.generator, self.draws = torch.Generator().manual_seed(seed), []

    def randn(self, shape, dtype, device):
        z = torch.randn(shape, generator=self.generator, dtype=dtype)
        self.draws.append(z)
        return z.to(device)


# A labelled 2-D mixture (tests/test_conditional.py, tests/test_guidance.py): class 0 two modes on
# the left, class 1 two modes on the right with other weights. Widths of 0.25–0.35 at mode
# distances >= 2 keep the stochastic samplers at the MMD floor by a few hundred steps.
LABELLED_MIX = sd.GaussianMixture(
    means=torch.tensor([[-2.0, -1.0], [-1.5, 1.5], [2.0, -1.0], [1.5, 1.5]], dtype=F64),
    stds=torch.tensor([0.3, 0.25, 0.35, 0.3], dtype=F64),
    weights=torch.tensor([0.3, 0.2, 0.1, 0.4], dtype=F64),
    labels=torch.tensor([0, 0, 1, 1]),
)
LABELLED_N = 600  # samples per class in the class-conditional sampling tests
LABELLED_LABELS = torch.arange(2 * LABELLED_N) % 2  # both classes interleaved in one batch


def labelled_floor() -> float:
    """mean + 4 sd of MMD² between 16 pairs of exact sets of ``LABELLED_N`` draws of p(x | c=0).

    A sampler that draws exactly from p(x | c) has this null distribution; 4 sd puts a false alarm
    far in the tail (the 16 replicates pin the sd to about ±20 %)."""
    g = torch.Generator().manual_seed(7)
    cls = LABELLED_MIX.conditional(0)
    vals = torch.tensor([mmd2(cls.sample(LABELLED_N, g, F64), cls.sample(LABELLED_N, g, F64))
                         for _ in range(16)])
    return float(vals.mean() + 4 * vals.std())


def high_nfe_steps(variant: sd.samplers.Variant) -> int | None:
    """Steps at which a variant reaches the floor on LABELLED_MIX: first-order stochastic samplers
    need ~500 steps for its widths, the deterministic ones 100 (2nd order: 50); None if adaptive."""
    options = sd.samplers.get(variant.sampler).parse(variant.options)
    if not options.uses_grid:
        return None
    return 500 if options.stochastic else 100


def check_draws_each_class(x: torch.Tensor, floor: float, what: str) -> None:
    """Samples ``x`` for LABELLED_LABELS: each class's share is at the MMD floor against exact draws
    of p(x | c), and the class-0 samples are far (50 floors) from p(x | 1), so the check can fail."""
    g = torch.Generator().manual_seed(11)
    for c in (0, 1):
        exact = LABELLED_MIX.conditional(c).sample(LABELLED_N, g, F64)
        assert mmd2(x[LABELLED_LABELS == c], exact) < floor, (what, c)
    wrong = LABELLED_MIX.conditional(1).sample(LABELLED_N, g, F64)
    assert mmd2(x[LABELLED_LABELS == 0], wrong) > 50 * floor, what
