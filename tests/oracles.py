"""Shared test fixtures: the SDE zoo and an independent probability-flow reference solution."""

import torch
from scipy.integrate import solve_ivp

import scoresde as sd

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
