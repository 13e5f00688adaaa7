"""The ODE backends against closed forms and against each other, and gradients through them.

* A linear, time-dependent ODE with a closed-form solution, solved by every method behind
  ``sd.ode.solve`` (built-in fixed-step, torchdiffeq, scipy), forwards and backwards in time,
  on an interval that does not start at 0 (the torchdiffeq path rescales time internally).
* The probability-flow ODE of the analytic oracle: torchdiffeq, scipy and the built-in RK4 agree,
  and all agree with an independent reference integrated in the original variables
  ``dx/dt = f(t)·x − ½g(t)²·∇log p_t(x)`` (the library integrates ``dx̄/dσ̄ = ε`` instead).
* ``torch.autograd.gradcheck`` through the fixed-step solvers and through a fixed-step sampler.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracles import pf_reference

import scoresde as sd

F64 = torch.float64


# --- a linear ODE with a known solution ---------------------------------------------------------
# dy/ds = (A + c·s·I) y  with A a damped rotation. A and I commute, so
# y(s) = exp(c (s² − s0²)/2) · expm(A (s − s0)) · y0.
A = torch.tensor([[-0.3, 2.0], [-2.0, -0.3]], dtype=F64)
C = -0.4


def linear_field(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y @ A.T.to(y.dtype) + C * s.to(y.dtype) * y


def linear_exact(y0: torch.Tensor, s0: float, s1: float) -> torch.Tensor:
    scale = np.exp(C * (s1 * s1 - s0 * s0) / 2)
    return scale * (y0.to(F64) @ torch.linalg.matrix_exp(A * (s1 - s0)).T)


Y0 = torch.tensor([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.7]], dtype=F64)  # a batch of 3 states

ADAPTIVE = [*sd.ode.TORCHDIFFEQ_METHODS, *sd.ode.SCIPY_METHODS]


def test_method_lists_are_consistent():
    assert set(sd.ode.methods()) == {*sd.ode.FIXED_STEP, *ADAPTIVE, *sd.ode.TORCHODE_METHODS}
    assert [sd.ode.FIXED_STEP[m].order for m in ("euler", "midpoint", "heun", "ralston3", "rk4")] == [
        1, 2, 2, 3, 4]
    for name, tab in sd.ode.FIXED_STEP.items():
        # Consistency of each tableau: Σb = 1 and c_i = Σ_j a_ij (so the order claims can hold).
        assert abs(sum(tab.b) - 1.0) < 1e-15, name
        for c_i, a_i in zip(tab.c, tab.a):
            assert abs(c_i - sum(a_i)) < 1e-15, name
    for m in sd.ode.FIXED_STEP:
        assert not sd.ode.is_adaptive(m)
    for m in ADAPTIVE:
        assert sd.ode.is_adaptive(m)
    with pytest.raises(ValueError, match=r"unknown ODE method 'rk5'.*available"):
        sd.ode.solve(linear_field, Y0, torch.tensor([0.0, 1.0]), "rk5")


# Low-order embedded pairs need many steps at tight tolerances (adaptive_heun takes ~10⁵ steps at
# 1e-9), so they are run at looser tolerances.
LOW_ORDER = ("bosh3", "adaptive_heun", "fehlberg2", "RK23")


@pytest.mark.parametrize("s0,s1", [(0.5, 2.5), (2.5, 0.5)], ids=["forward", "backward"])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_backends_match_the_closed_form(method, s0, s1):
    want = linear_exact(Y0, s0, s1)
    loose = 1e-4 if method in LOW_ORDER else 1e-6
    errs = []
    for tol in (loose, loose / 100):
        got = sd.ode.solve(linear_field, Y0, torch.tensor([s0, s1], dtype=F64), method, rtol=tol, atol=tol)
        assert got.shape == Y0.shape and got.dtype == F64
        errs.append((got - want).abs().max().item())
        # Step-size control bounds the error made per step by ~tol; the global error adds up over
        # the steps taken (10²–10⁴ here) and grows with the solution (×6 backwards, where the
        # damped system expands), so it is not bounded by tol itself. 1e4·tol covers that; any
        # wrong time handling (offset start, direction, rescaling) makes an O(0.1) error.
        assert errs[-1] < 1e4 * tol, (method, tol, errs)
    # ... and the error does follow the tolerance: 100× tighter tol -> at least 10× smaller error
    # (for an order-p controller the error scales like tol^{p/(p+1)}, i.e. ≥ 100^{1/2}).
    assert errs[1] < errs[0] / 10, (method, errs)


@pytest.mark.parametrize("method", ["dopri5", "RK45"])
def test_adaptive_backends_keep_a_float32_state(method):
    y0 = Y0.to(torch.float32)
    got = sd.ode.solve(linear_field, y0, torch.tensor([3.0, 1.0], dtype=F64), method, rtol=1e-6, atol=1e-6)
    assert got.dtype == torch.float32
    want = linear_exact(Y0, 3.0, 1.0)  # |y| grows to ~10 going backwards
    # tol 1e-6 (×~1e2 accumulated, see above) and float32 rounding (~1e-7 relative per step over
    # ~10² steps): 1e-4 relative is ample, and an O(1) error would follow from a wrong time.
    torch.testing.assert_close(got.to(F64), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", list(sd.ode.FIXED_STEP))
def test_fixed_step_methods_converge_at_their_order_on_the_linear_ode(method):
    order = sd.ode.FIXED_STEP[method].order
    want = linear_exact(Y0, 0.5, 2.5)
    errs = []
    for n in (64, 128):
        grid = torch.linspace(0.5, 2.5, n + 1, dtype=F64)
        errs.append((sd.ode.solve(linear_field, Y0, grid, method) - want).abs().max().item())
    # A smooth field and h ≤ 1/32: the asymptotic regime of every tableau (|h·λ| ≤ 0.07); the
    # error ratio of a p-th order method halving h is 2^p (up to O(h) corrections, < 0.15 in log2).
    assert abs(np.log2(errs[0] / errs[1]) - order) < 0.15, (method, errs)


def test_rk4_with_many_steps_agrees_with_the_adaptive_backends():
    grid = torch.linspace(0.5, 2.5, 401, dtype=F64)
    rk4 = sd.ode.solve(linear_field, Y0, grid, "rk4")
    # RK4 with h = 5e-3: global error ~ C·h⁴; with 128 steps it is ~2e-8 against the closed form,
    # so ~2e-10 at 400. The adaptive solvers at tol 1e-10 accumulate ≲ 1e-8 (see above).
    # 1e-7 is above both and far below any disagreement in time handling (O(0.1)).
    for method in ("dopri5", "dopri8", "RK45", "DOP853"):
        other = sd.ode.solve(linear_field, Y0, grid[[0, -1]], method, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(rk4, other, rtol=0, atol=1e-7)


def test_fixed_step_on_step_hook_and_grid_points():
    seen = []
    grid = torch.tensor([2.0, 1.5, 1.25, 0.0], dtype=F64)
    sd.ode.solve(linear_field, Y0, grid, "heun", on_step=lambda i, y: seen.append((i, y.clone())))
    assert [i for i, _ in seen] == [0, 1, 2]
    # A step that ends at s = 0 is an Euler step (the field is never evaluated at s = 0 there).
    calls = []

    def field(s, y):
        calls.append(float(s))
        return linear_field(s, y)

    sd.ode.solve(field, Y0, grid, "rk4")
    assert 0.0 not in calls
    assert len(calls) == 4 + 4 + 1


# --- the probability-flow ODE of the oracle ------------------------------------------------------
GMM = sd.GaussianMixture(
    torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]]),
    torch.tensor([0.3, 0.4, 0.25]),
    torch.tensor([0.5, 0.3, 0.2]),
)
T_END = 1e-2




@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_pf_ode_backends_agree(sde_name):
    sde = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}[sde_name]()
    model = GMM.score_model(sde, prediction="eps")
    xT = sde.prior_std * torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = pf_reference(sde, GMM, xT, T_END)
    common = dict(x_T=xT, t_end=T_END, denoise=False)
    results = {
        m: sd.sample(model, xT.shape, "ode", method=m, rtol=1e-8, atol=1e-8, **common).x
        for m in ("dopri5", "dopri8", "RK45", "DOP853")
    }
    results["rk4"] = sd.sample(model, xT.shape, "ode", 400, grid="uniform", method="rk4", **common).x
    # Each adaptive solver accumulates about (steps taken ≈ 10²) × its per-step tolerance 1e-8,
    # shrunk by the PF-ODE's contraction towards the modes; RK4 with 400 steps in t is 4th order
    # with h = 2.5e-3. 1e-6 allows 100× the ~1e-8 expected, and is still 1e5 below the
    # distance between solutions from different x_T (or a wrong t <-> σ̄ map).
    for name, x in results.items():
        torch.testing.assert_close(x, ref, rtol=0, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    assert (ref - xT).abs().max() > 0.1


def test_pf_ode_adaptive_backends_run_in_float32():
    sde = sd.VPSDE()
    model = GMM.score_model(sde, prediction="eps")
    xT = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    ref = pf_reference(sde, GMM, xT.to(F64), T_END)
    for m in ("dopri5", "RK45"):
        out = sd.sample(model, xT.shape, "ode", method=m, rtol=1e-5, atol=1e-5, x_T=xT, t_end=T_END,
                        denoise=False)
        assert out.x.dtype == torch.float32
        # tol 1e-5 plus float32 rounding (~1e-7 per step, a few hundred steps): 1e-3 is safe.
        torch.testing.assert_close(out.x.to(F64), ref, rtol=0, atol=1e-3)


# --- gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_gradcheck_through_fixed_step_solver(method):
    """d y(s1) / d(θ, φ, y0) for dy/ds = −θ·s·y + φ·sin(y): autograd vs finite differences."""
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    phi = torch.tensor([0.4, -0.2], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[0.5, -1.0], [1.5, 0.2]], dtype=F64, requires_grad=True)
    grid = torch.tensor([0.2, 0.5, 0.9, 1.0, 1.4], dtype=F64)  # non-uniform steps

    def run(theta, phi, y0):
        return sd.ode.solve(lambda s, y: -theta * s * y + phi * torch.sin(y), y0, grid, method)

    assert torch.autograd.gradcheck(run, (theta, phi, y0), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_gradcheck_through_the_ode_sampler(method):
    """Gradients of samples w.r.t. x_T through the fixed-step PF-ODE sampler (oracle network)."""
    sde = sd.VPSDE()
    model = GMM.score_model(sde, prediction="eps")
    xT = torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=F64, requires_grad=True)

    def run(x):
        return sd.sample(model, (3, 2), "ode", 4, x_T=x, method=method, grid="uniform", t_end=0.05,
                         denoise=True).x

    assert torch.autograd.gradcheck(run, (xT,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradient_of_linear_decay_matches_closed_form():
    """y' = −θ y: y(1) = y0·e^{−θ}, ∂y(1)/∂θ = −y0·e^{−θ}; RK4 with 50 steps gets it to ~1e-9."""
    theta = torch.tensor(1.3, dtype=F64, requires_grad=True)
    y0 = torch.tensor([2.0], dtype=F64)
    y1 = sd.ode.solve(lambda s, y: -theta * y, y0, torch.linspace(0, 1, 51, dtype=F64), "rk4")
    (g,) = torch.autograd.grad(y1.sum(), theta)
    assert abs(g.item() - (-2.0 * np.exp(-1.3))) < 1e-8
