"""Linear multistep samplers (``lms``: LMS, iPNDM, DEIS) against their reference implementations,
exact integrals, and the analytic PF-ODE.

* LMS = k-diffusion's ``sample_lms`` through ``suite.kdiffusion`` on the same σ̄ grid, float64,
  orders 1–4, VP and VE, karras (to t = 0) and logsnr grids. k-diffusion integrates the Lagrange
  basis with ``scipy.integrate.quad(epsrel=1e-4)``; the integrand is a polynomial of degree ≤ 3,
  which quad's 21-point Gauss–Kronrod rule integrates exactly on its first panel, so the
  tolerance does not bite and both sides agree to rounding: k-diffusion forms eps as
  ``(x̄ − D)/σ̄`` from a state ``x̄`` up to ~50 (VE), ~1e-14 per evaluation. Measured ≤ 5e-14 on
  states of size ≤ 2.5; the bar is 1e-12. A wrong weight is off by ≥ 1e-4.
* iPNDM = diffusers' ``IPNDMScheduler``. It can be driven on our grid: its ``trained_betas`` are
  read as the per-step ``sigma`` (with ``alpha = sqrt(1 − sigma²)``, so a VP SDE), its model
  output is v-prediction (``eps = sigma·x + alpha·v``), and its update is DDIM's on the
  Adams–Bashforth combination of eps — our method in ``(x̄, σ̄)``. It stores ``sigma`` and
  ``alpha`` in float32, and ``alpha(T) ≈ 7e-3`` is formed as ``sqrt(1 − sigma²)`` with
  cancellation, so as given it agrees only to ~6e-5 (bar 3e-4); with its two tables replaced by
  our float64 ones it agrees to 5e-13 (bar 1e-11; diffusers divides by ``alpha(T)``).
* DEIS = diffusers' ``DEISMultistepScheduler`` (``algorithm_type="deis"``, orders 1–3,
  ``lower_order_final``) on DDPM's discrete table with its integer timesteps, driven as in
  test_dpm_solver.py. diffusers holds σ̄ in float32 and its third-order weights are differences
  of antiderivatives that cancel badly in float32 (off by 5e-3 at 20 steps), so the comparison
  swaps in our float64 σ̄ of the same timesteps: then ≤ 3e-12 (bar 1e-10; its float64
  antiderivative differences still lose ~3 digits). Orders 1–2 also agree with diffusers' own
  float32 table to 3e-5 (bar 1e-4).
* The weights themselves against scipy quadrature; iPNDM = LMS on equal σ̄ steps; order 1 = DDIM.
* Orders on tests/oracles.py's problem (DOP853 reference), logsnr grid to ORDER_T_END: see
  :func:`test_order_lms_deis_low` and the two tests after it for what each order reaches and why.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracles import ORDER_T_END, order_problem
from scipy.integrate import quad

import scoresde as sd
from scoresde.samplers.lms import exp_moments, step_weights

try:  # before suite.kdiffusion's torchvision placeholder (without __spec__) can break diffusers' import
    import diffusers
except ImportError:  # the diffusers comparisons skip
    diffusers = None

F64 = torch.float64
DDPM_BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
GMM = sd.GaussianMixture(torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]], dtype=F64),
                         torch.tensor([0.1, 0.15, 0.08], dtype=F64), torch.tensor([0.5, 0.3, 0.2], dtype=F64))


def _x_T(sde, n=64, seed=0):
    return sde.prior_std * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- references -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("grid,t_end", [("karras", 0.0), ("logsnr", 1e-3)])
def test_lms_equals_kdiffusion_sample_lms(sde_name, grid, t_end):
    kd = pytest.importorskip("suite.kdiffusion")
    sde = sd.VPSDE() if sde_name == "vp" else sd.VESDE()
    model = GMM.score_model(sde, "eps")
    x_T = _x_T(sde)
    for steps in (3, 12):
        ts = sd.grids.make_grid(grid, sde, steps, t_end=t_end)
        for order in (1, 2, 3, 4):
            ref, nfe = kd.run("lms", model, x_T, ts, order=order)
            ours = sd.sample(model, x_T.shape, "lms", timesteps=ts, x_T=x_T, dtype=F64, denoise=False,
                             method="lms", order=order)
            assert ours.nfe == nfe == steps
            torch.testing.assert_close(ours.x, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp", "cosine"])
@pytest.mark.parametrize("grid", ["karras", "logsnr"])
def test_ipndm_equals_diffusers_ipndm(sde_name, grid):
    if diffusers is None:
        pytest.skip("diffusers is not installed")
    sde = sd.VPSDE() if sde_name == "vp" else sd.VPSDE.cosine()
    model = GMM.score_model(sde, "eps")
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for steps, float64_tables in ((3, True), (10, True), (40, True), (10, False)):
        ts = sd.grids.make_grid(grid, sde, steps, t_end=0.0)
        table = sd.grids.GridTable.build(sde, ts)
        scheduler = diffusers.IPNDMScheduler(num_train_timesteps=steps, trained_betas=table.sigma.numpy())
        scheduler.set_timesteps(steps)
        if float64_tables:
            scheduler.betas, scheduler.alphas = table.sigma, table.alpha
        x = x_T.clone()
        for i, t in enumerate(scheduler.timesteps):
            pred = model.predict(x, ts[i])
            x = scheduler.step(table.alpha[i] * pred.eps - table.sigma[i] * pred.x0, t, x).prev_sample
        ours = sd.sample(model, x_T.shape, "lms", timesteps=ts, x_T=x_T, dtype=F64, denoise=False,
                         method="ipndm", order=4)
        assert ours.nfe == steps
        torch.testing.assert_close(ours.x, x, rtol=0, atol=1e-11 if float64_tables else 3e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' np.log on torch tensors
@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_equals_diffusers_deis_multistep(order):
    if diffusers is None:
        pytest.skip("diffusers is not installed")
    sde = sd.VPSDE.from_betas(DDPM_BETAS)
    model = GMM.score_model(sde, "eps", "index")
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for steps in (5, 10, 20, 50):
        for float64_sigmas in (True, False) if order < 3 else (True,):
            scheduler = diffusers.DEISMultistepScheduler(
                num_train_timesteps=1000, trained_betas=DDPM_BETAS.numpy(), solver_order=order,
                algorithm_type="deis", lower_order_final=True)
            scheduler.set_timesteps(steps)
            # diffusers' DEIS ends at the smallest training σ̄ (index 0), not at 0.
            ts = torch.cat([sd.grids.from_indices(scheduler.timesteps, 1000, final_zero=False),
                            torch.tensor([1 / 1000], dtype=F64)])
            if float64_sigmas:
                scheduler.sigmas = sde.sigma_bar(ts)
            x = x_T.clone()
            for t in scheduler.timesteps:
                eps = model.net(x, torch.full((len(x),), float(t), dtype=F64))
                x = scheduler.step(eps, t, x).prev_sample
            ours = sd.sample(model, x_T.shape, "lms", timesteps=ts, x_T=x_T, dtype=F64, denoise=False,
                             method="deis", order=order, lower_order_final=True)
            assert ours.nfe == steps
            torch.testing.assert_close(ours.x, x, rtol=0, atol=1e-10 if float64_sigmas else 1e-4)


# --- the weights and identities --------------------------------------------------------------------
def _lagrange(nodes, j, u):
    return math.prod((u - nodes[k]) / (nodes[j] - nodes[k]) for k in range(len(nodes)) if k != j)


@pytest.mark.parametrize("sigma_bar", [[80.0, 50.0, 31.0, 20.0, 12.5], [1.3, 1.0, 0.8, 0.35, 0.0],
                                       [0.1, 0.2, 0.4, 0.9, 2.5]], ids=["down", "to-zero", "up"])
def test_weights_are_the_integrals_of_the_lagrange_basis(sigma_bar):
    """c_j = ∫ ℓ_j dσ̄ over the step, ℓ_j in σ̄ (lms) or in log σ̄ (deis), by scipy quadrature."""
    i = 3
    for order in (1, 2, 3, 4):
        nodes = [sigma_bar[i - k] for k in range(order)]
        want = [quad(lambda s, j=j, nodes=nodes: _lagrange(nodes, j, s), sigma_bar[i], sigma_bar[i + 1],
                     epsabs=0, epsrel=1e-13)[0] for j in range(order)]
        got = step_weights(sigma_bar, i, order, "lms")
        assert got == pytest.approx(want, rel=1e-12, abs=1e-14)
        assert sum(got) == pytest.approx(sigma_bar[i + 1] - sigma_bar[i], rel=1e-14)
    for order in (1, 2, 3):
        logs = [math.log(sigma_bar[i - k]) for k in range(order)]
        end = math.log(sigma_bar[i + 1]) if sigma_bar[i + 1] > 0 else -math.inf
        want = [quad(lambda v, j=j, logs=logs: _lagrange(logs, j, v) * math.exp(v), logs[0], end,
                     epsabs=0, epsrel=1e-13)[0] for j in range(order)]
        assert step_weights(sigma_bar, i, order, "deis") == pytest.approx(want, rel=1e-11, abs=1e-14)


@pytest.mark.parametrize("H", [-math.inf, -6.0, -1.0, -0.3, -1e-4, 1e-3, 0.9, 1.0 + 1e-9, 3.0])
def test_exp_moments(H):
    """I_m(H) = ∫_0^H w^m e^w dw across the series/recursion switch at |H| = 1 and at H = −∞."""
    want = [quad(lambda w, m=m: w**m * math.exp(w), 0.0, H, epsabs=0, epsrel=1e-13)[0] for m in range(4)]
    assert exp_moments(H, 4) == pytest.approx(want, rel=1e-12, abs=1e-300)


def test_ipndm_is_lms_on_equal_sigma_bar_steps():
    """On a grid of equal σ̄ steps the variable-step weights reduce to the fixed AB ones; on a
    graded grid they do not (so the comparison can fail)."""
    sde = sd.VESDE()
    model = GMM.score_model(sde, "eps")
    ts = sde.t_from_sigma_bar(torch.linspace(float(sde.sigma_bar(torch.tensor(0.5, dtype=F64))), 0.05, 13,
                                             dtype=F64))
    graded = sd.grids.make_grid("karras", sde, 12, t_start=float(ts[0]), t_end=float(ts[-1]))
    x_T = _x_T(sde) * float(sde.sigma(ts[0])) / sde.prior_std
    for order in (1, 2, 3, 4):
        run = {(grid_name, m): sd.sample(model, x_T.shape, "lms", timesteps=grid, x_T=x_T, dtype=F64,
                                         denoise=False, method=m, order=order).x
               for grid_name, grid in (("equal", ts), ("graded", graded)) for m in ("lms", "ipndm")}
        torch.testing.assert_close(run["equal", "ipndm"], run["equal", "lms"], rtol=0, atol=1e-12)
        if order > 1:
            assert (run["graded", "ipndm"] - run["graded", "lms"]).abs().max() > 1e-4


def test_order_one_is_ddim():
    for sde in (sd.VPSDE(), sd.VESDE()):
        model = GMM.score_model(sde, "eps")
        x_T = _x_T(sde)
        ddim = sd.sample(model, x_T.shape, "ddim", 7, grid="karras", t_end=0.0, x_T=x_T, dtype=F64).x
        for method in ("lms", "ipndm", "deis"):
            ours = sd.sample(model, x_T.shape, "lms", 7, grid="karras", t_end=0.0, denoise=False, x_T=x_T,
                             dtype=F64, method=method, order=1)
            torch.testing.assert_close(ours.x, ddim, rtol=0, atol=1e-12)


# --- order of convergence -------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["vp", "ve"])
def problem(request):
    return order_problem(request.param)


def _errors(problem, method: str, order: int, steps_list) -> list[float]:
    sde, model, x_T, ref = problem
    errs = []
    for steps in steps_list:
        ts = sd.grids.make_grid("logsnr", sde, steps, sde.T, ORDER_T_END)
        out = sd.sample(model, x_T.shape, "lms", timesteps=ts, x_T=x_T, denoise=False, method=method,
                        order=order)
        errs.append((out.x - ref).abs().max().item())
    return errs


def _rate(errs, k=0):
    return math.log2(errs[k] / errs[k + 1])


@pytest.mark.parametrize("method,order", [("lms", 1), ("lms", 2), ("deis", 2), ("deis", 3)])
def test_order_lms_deis_low(problem, method, order):
    """LMS orders 1–2 and DEIS orders 2–3 fall at their rate, log2(e_64/e_128) within ±0.2
    (measured: 1.00, 1.88, 1.90, 2.90). The warm-up's first Euler step has local error O(h²),
    which would cap the global rate at 2; its constant is tiny here, since eps barely changes
    near the prior, and DEIS 3 shows its full rate (2.96–3.01 at 128/256)."""
    errs = _errors(problem, method, order, (64, 128))
    assert errs[1] > 1e-8, errs  # far above the reference's error
    assert abs(_rate(errs) - order) < 0.2, errs


@pytest.mark.parametrize("order", [3, 4])
def test_order_lms_high(problem, order):
    """LMS 3 and 4 approach their order from below: log2(e_N/e_2N) is 2.75/3.58 at N = 64 and
    2.87/3.78 at N = 128 (VP; VE alike), rising with N — the higher derivatives of this mixture's
    eps are still large at 64 steps, and the warm-up's O(h²) first step (see above) is not yet
    visible. Bar: the rate rises, lies in (p − 0.3, p + 0.2) at N = 128 (order 3 done as order 2
    would give ≈ 2, order 4 done as 3 ≈ 2.9), and the error is below order p − 1's."""
    errs = _errors(problem, "lms", order, (64, 128, 256))
    lower = _errors(problem, "lms", order - 1, (256,))
    assert _rate(errs, 1) > _rate(errs, 0), errs
    assert order - 0.3 < _rate(errs, 1) < order + 0.2, errs
    assert errs[2] < lower[0], (errs, lower)


def test_order_ipndm(problem):
    """iPNDM's fixed weights assume equal steps; on a graded grid (here logsnr) the step ratios
    ``h_{i−1}/h_i = 1 + O(h)`` make the weights' first moment wrong by O(h²)·h, a local error
    O(h³): for orders ≥ 2 the global order is 2. Order 4 at N = 128/256 has rate 1.97 (1.88 at
    64/128, still settling), within ±0.2 of 2, and an error 4× below order 2's."""
    four = _errors(problem, "ipndm", 4, (128, 256))
    two = _errors(problem, "ipndm", 2, (128,))
    assert abs(_rate(four) - 2) < 0.2, four
    assert four[0] < two[0] / 2, (four, two)


# --- robustness and options ------------------------------------------------------------------------
@pytest.mark.parametrize("method,order", [("lms", 4), ("ipndm", 4), ("deis", 3)])
def test_step_to_sigma_zero_never_evaluates_there(method, order):
    """Grids ending at t = 0 (σ̄ = 0): the network sees only t > 0, and the result is finite at
    1, 2, 3 and 1000 steps in float32 on the karras grid (whose last step is 50× its previous one
    at 1000 steps: a large extrapolation for order 4)."""
    sde = sd.VPSDE()
    times = []
    oracle = GMM.score_model(sde, "eps").net

    def net(x, t):
        times.append(float(t.min()))
        return oracle(x, t)

    model = sd.ScoreModel(net, sde, "eps")
    for steps in (1, 2, 3, 1000):
        times.clear()
        out = sd.sample(model, (8, 2), "lms", steps, grid="karras", t_end=0.0, denoise=False,
                        generator=torch.Generator().manual_seed(steps), method=method, order=order)
        assert len(times) == out.nfe == steps
        assert min(times) > 0
        assert torch.isfinite(out.x).all() and out.x.abs().max() < 3.0


def test_options():
    spec = sd.samplers.get("lms")
    assert spec.parse({}).method == "lms" and spec.parse({}).order == 4
    assert not spec.parse({}).stochastic
    for method, top in (("lms", 4), ("ipndm", 4), ("deis", 3)):
        assert spec.parse({"method": method, "order": top}).order == top
        for bad in (0, top + 1):
            with pytest.raises(ValueError, match=rf"order must be an integer in 1\.\.{top} for "
                                                 rf"method='{method}', got {bad}"):
                spec.parse({"method": method, "order": bad})
    with pytest.raises(ValueError, match="method"):
        spec.parse({"method": "pndm"})
