"""Per-sample adaptive likelihood solves (torchode) and the memory-bounded divergence.

* Per-sample solves: each sample of a batch has its own step sizes and error norm, so a point's
  log-density and NFE are the same alone and inside batches of any companions. In float64 the
  only batch dependence left is rounding: BLAS kernels may sum a row in another order at another
  batch size, and torchode reads the end state of a sample that finished early from an
  interpolant at its end point (exact up to rounding). That is ~1e-15 relative per evaluation,
  so we assert 1e-10 nats on log-densities of size ~1-10, while a shared step size (torchdiffeq)
  moves them by the solver error, ~1e-7 nats at tol 1e-6 (the negative check).
* Accuracy: against the mixture's exact ``log p_eps`` with the tolerance policy of
  test_likelihood.py (1e-3 nats/dim at tol 1e-6, ~100× the solver's expected error).
* Divergence in chunks: a sum of the same D vector–Jacobian products regrouped, equal to
  rounding (float64: 1e-12 relative). Batched Hutchinson: the same probes give the same
  estimate as a loop over them, in one backward call.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from oracles import pf_reference
from test_likelihood import ERR_PER_DIM, analytic_eps_divergence, data, exact_prior, mixture_2d, mixture_nd

import scoresde as sd
from scoresde.likelihood import divergence

F64 = torch.float64
TOL = 1e-6
SDES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}


class CallCounter:
    """A DiffusionModel that counts the batch calls made to it."""

    def __init__(self, model: sd.DiffusionModel):
        self.model, self.sde, self.calls = model, model.sde, 0

    def predict(self, x, t, cond=None):
        self.calls += 1
        return self.model.predict(x, t, cond)


# --- per-sample solves ------------------------------------------------------------------------------


def test_per_sample_log_density_does_not_depend_on_the_batch() -> None:
    """The same point alone, among 3 companions and among 7 others: the same logp (1e-10) and NFE.

    The companions are drawn from other modes and far out (x·3), so that a shared step size would
    be set by them; with torchdiffeq's shared steps the point's logp moves by > 1e-9 (it must, or
    this test could not tell the two apart), with torchode's it must not.
    """
    pytest.importorskip("torchode")
    sde = sd.VPSDE()
    gmm = mixture_2d()
    model = gmm.score_model(sde, prediction="eps")
    prior = exact_prior(gmm, sde)
    point = data(gmm, 1, seed=11)
    batches = {"alone": point,
               "with 3": torch.cat([data(gmm, 2, seed=12), point, 3 * data(gmm, 1, seed=13)]),
               "with 7": torch.cat([3 * data(gmm, 7, seed=14), point])}
    where = {"alone": 0, "with 3": 2, "with 7": 7}

    own = {k: sd.log_likelihood(model, x, method="torchode_dopri5", rtol=TOL, atol=TOL, prior_logp=prior)
           for k, x in batches.items()}
    logp = {k: own[k].logp[where[k]] for k in own}
    nfe = {k: int(own[k].nfe[where[k]]) for k in own}
    for k in own:
        assert abs(float(logp[k] - logp["alone"])) < 1e-10, (k, logp)
        assert nfe[k] == nfe["alone"], (k, nfe)
        torch.testing.assert_close(own[k].z[where[k]], own["alone"].z[0], rtol=0, atol=1e-10)
    # The companions need other step counts (otherwise the check above would be trivial).
    assert own["with 7"].nfe.min() != own["with 7"].nfe.max(), own["with 7"].nfe
    truth = gmm.log_prob_at(sde, point, 1e-5)
    assert abs(float(logp["alone"] - truth[0])) / 2 < ERR_PER_DIM

    shared = {k: sd.log_likelihood(model, batches[k], rtol=TOL, atol=TOL, prior_logp=prior)
              for k in ("alone", "with 7")}
    moved = abs(float(shared["with 7"].logp[where["with 7"]] - shared["alone"].logp[0]))
    assert moved > 1e-9, f"shared steps moved the point's logp by only {moved:.1e}"


@pytest.mark.parametrize("sde_name,dim", [("vp", 8), ("subvp", 2), ("ve", 2)])
def test_per_sample_solve_matches_the_exact_density_and_counts_its_own_nfe(sde_name: str, dim: int) -> None:
    """torchode dopri5 at tol 1e-6 gives the exact mixture log-density to 1e-3 nats/dim.

    NFE: each sample reports its own count, and the batch's network calls (counted independently
    here) are those of its slowest sample; with the test above (a sample alone makes exactly its
    count) this pins the per-sample count.
    """
    pytest.importorskip("torchode")
    sde = SDES[sde_name]()
    gmm = mixture_2d() if dim == 2 else mixture_nd(dim)
    x = data(gmm, 6, seed=3)
    model = CallCounter(gmm.score_model(sde, prediction="eps"))
    res = sd.log_likelihood(model, x, method="torchode_dopri5", rtol=TOL, atol=TOL,
                            prior_logp=exact_prior(gmm, sde))
    err = (res.logp - gmm.log_prob_at(sde, x, 1e-5)).abs() / dim
    assert (err < ERR_PER_DIM).all(), (sde_name, dim, err)
    assert res.nfe.dtype == torch.long and res.nfe.shape == (6,)
    assert model.calls == int(res.nfe.max())
    torch.testing.assert_close(res.logp, res.prior_logp + res.delta_logp)


def test_torchode_methods_on_the_linear_ode_and_the_pf_ode_sampler() -> None:
    """The ODE backend itself: a linear ODE with a closed form, forwards and backwards, float64
    and float32 states; and the ``ode`` sampler driven per sample (times of shape (batch,) reach
    the PF-ODE field) against the oracle's reference trajectory.

    Tolerances as in test_ode_backends.py: 1e4·tol covers the accumulated global error of 10²
    steps on the closed form, 1e-6 at tol 1e-8 on the PF-ODE; a wrong time map errs by O(0.1).
    """
    pytest.importorskip("torchode")
    a = torch.tensor([[-0.3, 2.0], [-2.0, -0.3]], dtype=F64)

    def field(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ a.T.to(y.dtype) - 0.4 * sd.sde.batch_coeff(s, y) * y

    y0 = torch.tensor([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.7]], dtype=F64)
    for method in sd.ode.TORCHODE_METHODS:
        assert sd.ode.is_adaptive(method) and sd.ode.is_per_sample(method)
        for s0, s1 in ((0.5, 2.5), (2.5, 0.5)):
            want = math.exp(-0.4 * (s1 * s1 - s0 * s0) / 2) * (y0 @ torch.linalg.matrix_exp(a * (s1 - s0)).T)
            for dtype, tol in ((F64, 1e-7), (torch.float32, 1e-5)):
                sol = sd.ode.solve_with_stats(field, y0.to(dtype), torch.tensor([s0, s1], dtype=F64), method,
                                              tol, tol)
                assert sol.y.dtype == dtype and sol.nfe.shape == (3,)
                torch.testing.assert_close(sol.y.to(F64), want, rtol=0, atol=1e4 * tol)
    assert not sd.ode.is_per_sample("dopri5")

    sde = sd.VPSDE()
    gmm = sd.GaussianMixture(torch.tensor([[-1.0, -0.5], [1.0, 1.0]]), torch.tensor([0.3, 0.4]))
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = sd.sample(gmm.score_model(sde, prediction="eps"), x_T.shape, "ode", method="torchode_dopri5",
                    rtol=1e-8, atol=1e-8, x_T=x_T, t_end=1e-2, denoise=False)
    torch.testing.assert_close(out.x, pf_reference(sde, gmm, x_T, 1e-2), rtol=0, atol=1e-6)


def test_torchode_missing_is_a_clear_import_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchode", None)  # makes `import torchode` fail
    y0 = torch.ones(2, 3, dtype=F64)
    with pytest.raises(ImportError, match=r"'torchode_dopri5' needs torchode.*pip install torchode"):
        sd.ode.solve(lambda s, y: -y, y0, torch.tensor([0.0, 1.0]), "torchode_dopri5")


# --- the divergence in chunks, batched Hutchinson -------------------------------------------------


class TinyConvNet(torch.nn.Module):
    """eps(x) of an image-shaped input (B, 2, 3, 3): conv → tanh → conv, random float64 weights."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(0.5 * torch.randn(4, 2, 3, 3, generator=g, dtype=F64))
        self.w2 = torch.nn.Parameter(0.5 * torch.randn(2, 4, 3, 3, generator=g, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(torch.nn.functional.conv2d(x, self.w1, padding=1))
        return torch.nn.functional.conv2d(h, self.w2, padding=1) + 0.1 * x**2


def jacobian_traces(fn, x: torch.Tensor) -> torch.Tensor:
    """Per-sample ``tr ∂fn(x_b)/∂x_b`` from full Jacobians (torch.func), independent of divergence()."""
    jac = torch.func.vmap(torch.func.jacrev(lambda xb: fn(xb[None])[0]))(x)
    d = x[0].numel()
    return jac.reshape(len(x), d, d).diagonal(dim1=1, dim2=2).sum(1)


def test_exact_trace_in_chunks_equals_the_unchunked_one() -> None:
    """Chunks of 1, 3, 7, 18 (= D) and None VJPs; 3 and 7 do not divide D = 18 (image-shaped) nor
    D = 32 (the mixture). All equal to 1e-12 relative, and equal to independent references: full
    Jacobians for the conv net, the closed-form trace for the mixture (1e-9, as test_likelihood)."""
    net = TinyConvNet()
    x = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=F64).requires_grad_(True)
    eps = net(x)
    want = jacobian_traces(net, x.detach())
    for chunk in (1, 3, 7, 18, None):
        got = divergence(eps, x, "exact", chunk=chunk)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"chunk={chunk}")

    sde = sd.VPSDE()
    gmm = mixture_nd(32)
    model = gmm.score_model(sde, prediction="eps")
    xg = data(gmm, 4, seed=5).requires_grad_(True)
    eps = model.predict(xg, 0.3).eps
    closed = analytic_eps_divergence(gmm, sde, xg.detach(), 0.3)
    ref = divergence(eps, xg, "exact", chunk=1)
    torch.testing.assert_close(ref, closed, rtol=1e-9, atol=1e-9)
    for chunk in (3, 7, 32, None):
        torch.testing.assert_close(divergence(eps, xg, "exact", chunk=chunk), ref, rtol=1e-12, atol=1e-12)


def test_batched_hutchinson_equals_the_loop_in_one_backward_call(monkeypatch) -> None:
    """K = 5 probes: one batched backward call (chunk=None), ceil(5/2) = 3 with chunk=2, and the
    same estimate as K separate backward passes written out here. The exact trace with chunk=7 on
    D = 18 makes ceil(18/7) = 3 calls. Counting the calls is what fails if the batching is lost."""
    net = TinyConvNet()
    x = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(2), dtype=F64).requires_grad_(True)
    eps = net(x)
    probes = torch.sign(torch.randn((5, *x.shape), generator=torch.Generator().manual_seed(3), dtype=F64))
    loop = torch.zeros(3, dtype=F64)
    for v in probes:
        (g,) = torch.autograd.grad(eps, x, grad_outputs=v, retain_graph=True)
        loop = loop + (g * v).flatten(1).sum(1)
    loop = loop / len(probes)

    calls = []
    grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls.append(kwargs.get("is_grads_batched", False))
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    for chunk, n_calls in ((None, 1), (2, 3), (5, 1), (1, 5)):
        calls.clear()
        got = divergence(eps, x, "rademacher", probes, chunk=chunk)
        torch.testing.assert_close(got, loop, rtol=1e-12, atol=1e-12)
        assert len(calls) == n_calls, (chunk, calls)
    calls.clear()
    divergence(eps, x, "exact", chunk=7)
    assert calls == [True, True, True]


@pytest.mark.parametrize("trace", ["rademacher", "gaussian"])
def test_batched_hutchinson_is_unbiased(trace: str) -> None:
    """The mean of K = 4000 probes (batched in chunks of 1000) lies within 4 SE of the exact trace.

    The SE is exact, not estimated: for a symmetric J (the mixture's eps-Jacobian is −sigma times
    the Hessian of log p_t) the single-probe variance is 2(‖J‖_F² − Σ J_ii²) for Rademacher and
    2‖J‖_F² for Gaussian probes, from the full Jacobian. A 4σ miss has probability ~6e-5.
    Negative check: summing instead of averaging the probes (a K-fold bias) is far outside.
    """
    sde = sd.VPSDE()
    gmm = mixture_nd(8, k=3, seed=2)
    model = gmm.score_model(sde, prediction="eps")
    x = data(gmm, 4, seed=7)
    xg = x.clone().requires_grad_(True)
    eps = model.predict(xg, 0.3).eps
    jac = torch.stack([torch.autograd.functional.jacobian(lambda xb: model.predict(xb[None], 0.3).eps[0], xb)
                       for xb in x])
    torch.testing.assert_close(jac, jac.transpose(1, 2), rtol=1e-10, atol=1e-10)
    exact = jac.diagonal(dim1=1, dim2=2).sum(1)
    frob, diag = jac.pow(2).sum((1, 2)), jac.diagonal(dim1=1, dim2=2).pow(2).sum(1)
    var = 2 * (frob - diag) if trace == "rademacher" else 2 * frob
    k = 4000
    probes = torch.randn((k, *x.shape), generator=torch.Generator().manual_seed(8), dtype=F64)
    if trace == "rademacher":
        probes = torch.sign(probes)
    est = divergence(eps, xg, trace, probes, chunk=1000)
    se = (var / k).sqrt()
    assert ((est - exact).abs() < 4 * se).all(), (est, exact, se)
    assert ((k * est - exact).abs() > 100 * se).all()


def test_trace_chunk_through_a_solve_and_bad_values() -> None:
    """``trace_chunk`` reaches the solve: the exact-trace likelihood with chunks of 2 (D = 5) equals
    the one-pass result to 1e-10 nats (the fields agree to rounding; the adaptive steps then agree).
    Invalid values are refused with the expected type named."""
    sde = sd.VESDE()
    gmm = mixture_nd(5, k=2, seed=4)
    model = gmm.score_model(sde, prediction="eps")
    x = data(gmm, 3, seed=9)
    one = sd.log_likelihood(model, x, rtol=1e-5, atol=1e-5)
    two = sd.log_likelihood(model, x, rtol=1e-5, atol=1e-5, trace_chunk=2)
    torch.testing.assert_close(two.logp, one.logp, rtol=0, atol=1e-10)
    for bad in (0, 1.5, -2):
        with pytest.raises(ValueError, match="trace_chunk must be None or an integer >= 1"):
            sd.log_likelihood(model, x, trace_chunk=bad)
