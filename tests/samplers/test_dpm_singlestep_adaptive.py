"""Singlestep DPM-Solver(++) and adaptive DPM-Solver-12/23 against their reference implementations.

* Singlestep vs diffusers' ``DPMSolverSinglestepScheduler`` on DDPM's table (β 1e-4 → 0.02,
  N = 1000), its integer timesteps and the same start noise, orders 1–3, data (``dpmsolver++``)
  and noise (``dpmsolver``) form. diffusers' only float32 element is its σ table (ᾱ from float32
  betas, σ cast to float32); with that table replaced by the float64 one the two runs agree to
  float64 round-off: measured ≤ 1.3e-11 relative to the state's size, which reaches ~60 at one or
  two steps where ``alpha_s/alpha_t ~ 150`` amplifies rounding; the bar is 1e-9. As published
  (float32 σ) they agree to the schedule's rounding amplified by the steps: measured ≤ 1.6e-4 at
  10–50 steps on states of size ~2.6; the bar is 5e-4. A wrong stage ratio or coefficient is off
  by ≥ 1e-2. The order list equals diffusers' ``order_list`` after ``set_timesteps``.
* Singlestep order against the float64 DOP853 reference (tests/oracles.py) on a log-SNR grid with
  ``lower_order_final=False``: log2(e_N/e_2N) within ±0.2 of 2 at N = 64 and of 3 at N = 192
  (a k-th order update spans k grid steps, so the asymptotic regime needs k times the steps;
  measured 1.81–2.07 and 2.82–2.95).
* Adaptive vs k-diffusion's ``sample_dpm_adaptive`` (float64, same ends σ̄(T) → σ̄(t_end)): the same
  number of accepted steps and the same NFE, outputs equal to 1e-10 (measured ≤ 3.5e-12; VP's
  ``x̄_T`` is ~150 in size) when rtol/atol are float32-representable. k-diffusion stores rtol and
  atol as float32 tensors, so with the defaults 0.05/0.0078 the error scale differs by ~1e-8
  relative and the outputs by ≤ 1.4e-9 (measured); the bar there is 1e-8.
* Thresholding in the singlestep data form equals diffusers' singlestep ``thresholding=True``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from oracles import ORDER_T_END, order_problem

import scoresde as sd
from scoresde.samplers.dpm_solver_singlestep import order_list

F64 = torch.float64
DDPM_BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
GMM = sd.GaussianMixture(torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]]),
                         torch.tensor([0.1, 0.15, 0.08]), torch.tensor([0.5, 0.3, 0.2]))


def _diffusers_singlestep(model, x_T, order, steps, data, float64_sigmas, lower_order_final=True, **config):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverSinglestepScheduler(
        num_train_timesteps=1000, trained_betas=DDPM_BETAS.numpy(), solver_order=order,
        algorithm_type="dpmsolver++" if data else "dpmsolver", lower_order_final=lower_order_final,
        final_sigmas_type="zero" if data else "sigma_min", **config)
    scheduler.set_timesteps(steps)
    if float64_sigmas:  # the table diffusers would hold in float64: σ̄ at its timesteps, then the end
        alpha_bar = torch.cumprod(1.0 - DDPM_BETAS, 0)
        table = ((1.0 - alpha_bar) / alpha_bar).sqrt()
        last = torch.tensor([0.0 if data else float(table[0])], dtype=F64)
        scheduler.sigmas = torch.cat([table[scheduler.timesteps], last])
    x = x_T.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(model.net(x, torch.full((len(x),), float(t), dtype=F64)), t, x).prev_sample
    ts = sd.grids.from_indices(scheduler.timesteps, 1000, final_zero=data)
    if not data:  # diffusers ends the noise form at the smallest training sigma (index 0)
        ts = torch.cat([ts, torch.tensor([1 / 1000], dtype=F64)])
    return x, ts


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 7, 12, 20])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_singlestep_equals_diffusers_with_a_float64_schedule(prediction, order, steps):
    model = GMM.score_model(sd.VPSDE.from_betas(DDPM_BETAS), "eps", "index")
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for lower_order_final in (True, False):
        ref, ts = _diffusers_singlestep(model, x_T, order, steps, prediction == "data", True,
                                        lower_order_final)
        ours = sd.sample(model, tuple(x_T.shape), "dpm_solver_singlestep", timesteps=ts, x_T=x_T, dtype=F64,
                         order=order, prediction=prediction, lower_order_final=lower_order_final)
        assert ours.nfe == steps  # one call per grid time but the last
        scale = float(ref.abs().max())
        torch.testing.assert_close(ours.x, ref, rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("steps", [10, 21, 50])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_singlestep_equals_diffusers_as_published(prediction, order, steps):
    model = GMM.score_model(sd.VPSDE.from_betas(DDPM_BETAS), "eps", "index")
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref, ts = _diffusers_singlestep(model, x_T, order, steps, prediction == "data", False)
    ours = sd.sample(model, tuple(x_T.shape), "dpm_solver_singlestep", timesteps=ts, x_T=x_T, dtype=F64,
                     order=order, prediction=prediction)
    torch.testing.assert_close(ours.x, ref, rtol=0, atol=5e-4)


def test_order_list_equals_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for order in (1, 2, 3):
        for lower in (True, False):
            for zero_end in (True, False):
                for steps in range(1, 25):
                    scheduler = diffusers.DPMSolverSinglestepScheduler(
                        solver_order=order, lower_order_final=lower,
                        algorithm_type="dpmsolver++", final_sigmas_type="zero" if zero_end else "sigma_min")
                    scheduler.set_timesteps(steps)
                    assert order_list(order, steps, lower, zero_end) == scheduler.order_list, \
                        (order, lower, zero_end, steps)


def test_singlestep_thresholding_equals_diffusers():
    pytest.importorskip("diffusers")
    gmm = sd.GaussianMixture(
        0.8 * torch.sign(torch.randn(3, 16, generator=torch.Generator().manual_seed(5), dtype=F64)),
        torch.tensor([0.3, 0.3, 0.3], dtype=F64), torch.tensor([0.5, 0.3, 0.2], dtype=F64))
    model = gmm.score_model(sd.VPSDE.from_betas(DDPM_BETAS), "eps", "index")
    x_T = torch.randn(64, 1, 16, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref, ts = _diffusers_singlestep(model, x_T, 3, 12, True, True, thresholding=True,
                                    dynamic_thresholding_ratio=0.995, sample_max_value=1.5)
    kw = dict(timesteps=ts, x_T=x_T, dtype=F64, order=3)
    ours = sd.sample(model, tuple(x_T.shape), "dpm_solver_singlestep", thresholding=True, threshold_max=1.5,
                     **kw)
    torch.testing.assert_close(ours.x, ref, rtol=0, atol=1e-9)
    plain = sd.sample(model, tuple(x_T.shape), "dpm_solver_singlestep", **kw)
    assert (plain.x - ref).abs().max() > 0.1
    with pytest.raises(ValueError, match="needs prediction='data'"):
        sd.samplers.get("dpm_solver_singlestep").parse({"thresholding": True, "prediction": "noise"})


# --- order of convergence ----------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["vp", "ve"])
def problem(request):
    return order_problem(request.param)


def _rate(problem, order, prediction, steps):
    sde, model, x_T, ref = problem
    errs = []
    for n in (steps, 2 * steps):
        ts = sd.grids.make_grid("logsnr", sde, n, sde.T, ORDER_T_END)
        out = sd.sample(model, x_T.shape, "dpm_solver_singlestep", timesteps=ts, x_T=x_T, order=order,
                        prediction=prediction, lower_order_final=False)
        errs.append((out.x - ref).abs().max().item())
    assert errs[1] > 1e-8, errs  # far above the reference's error
    return math.log2(errs[0] / errs[1]), errs


@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_singlestep_second_order(problem, prediction):
    rate, errs = _rate(problem, 2, prediction, 64)
    assert abs(rate - 2) < 0.2, errs


@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_singlestep_third_order(problem, prediction):
    if problem[0].__class__.__name__ == "VESDE" and prediction == "data":
        pytest.skip("VE data form shares every coefficient with VP's; one VE case keeps the file fast")
    rate, errs = _rate(problem, 3, prediction, 192)
    assert abs(rate - 3) < 0.2, errs


# --- adaptive ----------------------------------------------------------------------------------------
def _k_diffusion_adaptive(model, x_T, t_end, **kwargs):
    kd = pytest.importorskip("suite.kdiffusion")
    sde = model.sde
    sigma = sde.sigma_bar(torch.tensor([sde.T, t_end], dtype=F64))
    denoiser = kd.Denoiser(model)
    # 0-d float64 tensors: k-diffusion wraps sigma_min/max in torch.tensor (float32 for a Python float).
    x_bar, info = kd.sampling().sample_dpm_adaptive(denoiser, x_T / sde.alpha(sde.T), sigma[1].clone(),
                                                    sigma[0].clone(), return_info=True, disable=True,
                                                    **kwargs)
    assert denoiser.nfe == info["nfe"]
    return x_bar * sde.alpha(torch.tensor(t_end, dtype=F64)), info


@pytest.mark.parametrize("rtol,atol,bar",
                         [(2**-4, 2**-7, 1e-10), (2**-7, 2**-10, 1e-10), (0.05, 0.0078, 1e-8)],
                         ids=["f32-exact", "f32-exact-tight", "defaults"])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("sde_factory", [sd.VPSDE, sd.VESDE], ids=["vp", "ve"])
def test_adaptive_equals_k_diffusion(sde_factory, order, rtol, atol, bar):
    if bar == 1e-8 and sde_factory is sd.VESDE:
        pytest.skip("the float32-rounded defaults once, on VP, suffice")
    sde = sde_factory()
    model = GMM.score_model(sde, "eps")
    x_T = sde.prior_std * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref, info = _k_diffusion_adaptive(model, x_T, 1e-3, order=order, rtol=rtol, atol=atol)
    seen = []
    ours = sd.sample(model, tuple(x_T.shape), "dpm_adaptive", x_T=x_T, t_end=1e-3, denoise=False, dtype=F64,
                     order=order, rtol=rtol, atol=atol, callback=seen.append)
    assert info["n_reject"] > 0  # the controller's reject branch is exercised
    assert ours.nfe == info["nfe"] == order * (info["n_accept"] + info["n_reject"])
    assert len(seen) == info["n_accept"] and seen[-1]["t"] == 1e-3
    assert all(a["t"] > b["t"] for a, b in itertools.pairwise(seen))
    torch.testing.assert_close(ours.x, ref, rtol=0, atol=bar)


def test_adaptive_error_follows_the_tolerance_and_it_encodes():
    """Against the DOP853 reference the error falls with rtol = atol (≥ 10× for 100× tighter), and the
    solver runs upwards too: encoding then decoding at a tight tolerance returns the data."""
    _, model, x_T, ref = order_problem("vp")
    errs, nfes = [], []
    for tol in (1e-2, 1e-4):
        out = sd.sample(model, x_T.shape, "dpm_adaptive", x_T=x_T, t_end=ORDER_T_END, denoise=False,
                        rtol=tol, atol=tol)
        errs.append((out.x - ref).abs().max().item())
        nfes.append(out.nfe)
    assert errs[1] < errs[0] / 10 and errs[1] < 1e-3 and nfes[1] > nfes[0], (errs, nfes)
    x = ref
    enc = sd.encode(model, x, "dpm_adaptive", t_end=ORDER_T_END, rtol=1e-5, atol=1e-5)
    dec = sd.sample(model, x.shape, "dpm_adaptive", x_T=enc.x, t_end=ORDER_T_END, denoise=False,
                    dtype=F64, rtol=1e-5, atol=1e-5)
    assert (dec.x - x).abs().max() < 1e-3


def test_adaptive_options_and_ends_are_validated():
    spec = sd.samplers.get("dpm_adaptive")
    assert not spec.parse({}).uses_grid and not spec.parse({}).stochastic
    for bad, match in [({"order": 1}, "'order' must be one of 2, 3"),
                       ({"rtol": 0.0}, "rtol must be a finite number > 0"),
                       ({"atol": -1.0}, "atol must be a finite number > 0"),
                       ({"h_init": math.inf}, "h_init must be a finite number > 0"),
                       ({"icoeff": 0.0}, r"pcoeff \+ icoeff \+ dcoeff > 0"),
                       ({"dcoeff": math.nan}, "must be finite"),
                       ({"accept_safety": 1.5}, r"accept_safety must lie in \(0, 1\]")]:
        with pytest.raises(ValueError, match=match):
            spec.parse(bad)
    model = GMM.score_model(sd.VPSDE(), "eps")
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="needs sigma > 0 at both ends"):
        sd.sample(model, (4, 2), "dpm_adaptive", t_end=0.0, denoise=False, generator=g)
    with pytest.raises(ValueError, match="adaptive solver chooses its own steps"):
        sd.sample(model, (4, 2), "dpm_adaptive", 10, generator=g)
    # Default: ends at t_end = 1e-3 with a Tweedie step, NFE = order × attempts + 1.
    out = sd.sample(model, (4, 2), "dpm_adaptive", generator=g)
    assert float(out.timesteps[-1]) == 1e-3 and (out.nfe - 1) % 3 == 0
