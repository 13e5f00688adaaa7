"""Multistep DPM-Solver / DPM-Solver++ against its reference implementation and its order.

* Equivalence: on DDPM's discrete table (β 1e-4 → 0.02, N = 1000) with diffusers' integer
  timesteps and the same start noise, our ``dpm_solver`` equals diffusers'
  ``DPMSolverMultistepScheduler`` for orders 1–3 in both the data (``dpmsolver++``) and the
  noise (``dpmsolver``) form. diffusers holds ᾱ, σ and λ in float32, so the two agree to float32
  rounding of the schedule, amplified by the steps: measured ≤ 1.4e-4 on states of size ~1.6;
  the bar is 3e-4. A wrong coefficient anywhere is off by ≥ 1e-2.
* Order: against an independent float64 PF-ODE reference (scipy DOP853, 1e-12) on a log-SNR
  grid, orders 1 and 2 fall at their rate (log2(e_N/e_2N) within ±0.2 at N = 64). Order 3
  starts with a first- and a second-order step, as DPM-Solver++ and diffusers do; the first
  step's local error O(h²) bounds the *global* rate by 2 asymptotically, so at N = 64 the
  measured rate sits between 2 and 3 (2.2–2.4) and the error stays below order 2's.
* Dynamic thresholding: with ``thresholding=True`` (data form) our run equals diffusers'
  ``thresholding=True`` run on 16-D data at the ``[−1, 1]`` scale, to the same float32-schedule
  bar (measured ≤ 3.3e-6 on states ≤ 1; thresholding itself moves the result by ≥ 0.3), for
  ``sample_max_value`` 1 (plain clipping) and 1.5 (the quantile decides); the noise form refuses it.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracles import ORDER_SDES, ORDER_T_END, order_problem

import scoresde as sd

F64 = torch.float64
DDPM_BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
GMM = sd.GaussianMixture(torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]]),
                         torch.tensor([0.1, 0.15, 0.08]), torch.tensor([0.5, 0.3, 0.2]))


@pytest.mark.parametrize("steps", [5, 10, 20, 50])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_equals_diffusers_dpm_solver_multistep(prediction, order, steps):
    diffusers = pytest.importorskip("diffusers")
    sde = sd.VPSDE.from_betas(DDPM_BETAS)
    model = GMM.score_model(sde, "eps", "index")
    data = prediction == "data"
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=DDPM_BETAS.numpy(), solver_order=order,
        algorithm_type="dpmsolver++" if data else "dpmsolver", lower_order_final=True,
        # diffusers ends the noise form at the smallest training sigma (index 0), not at 0.
        final_sigmas_type="zero" if data else "sigma_min")
    scheduler.set_timesteps(steps)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = x_T.clone()
    for t in scheduler.timesteps:
        eps = model.net(x, torch.full((len(x),), float(t), dtype=F64))
        x = scheduler.step(eps, t, x).prev_sample
    ts = sd.grids.from_indices(scheduler.timesteps, 1000, final_zero=data)
    if not data:
        ts = torch.cat([ts, torch.tensor([1 / 1000], dtype=F64)])  # t of index 0
    ours = sd.sample(model, tuple(x_T.shape), "dpm_solver", timesteps=ts, x_T=x_T, dtype=F64,
                     order=order, prediction=prediction)
    assert ours.nfe == steps
    torch.testing.assert_close(ours.x, x, rtol=0, atol=3e-4)


@pytest.fixture(scope="module", params=list(ORDER_SDES))
def problem(request):
    return order_problem(request.param)


def _errors(problem, order: int, prediction: str) -> list[float]:
    sde, model, x_T, ref = problem
    errs = []
    for steps in (64, 128):
        ts = sd.grids.make_grid("logsnr", sde, steps, sde.T, ORDER_T_END)
        out = sd.sample(model, x_T.shape, "dpm_solver", timesteps=ts, x_T=x_T, order=order,
                        prediction=prediction)
        errs.append((out.x - ref).abs().max().item())
    return errs


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("order", [1, 2])
def test_order_of_convergence(problem, order, prediction):
    errs = _errors(problem, order, prediction)
    assert errs[1] > 1e-8, errs  # far above the reference's error
    assert abs(math.log2(errs[0] / errs[1]) - order) < 0.2, errs


@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_third_order_is_limited_by_its_warm_up(problem, prediction):
    third, second = _errors(problem, 3, prediction), _errors(problem, 2, prediction)
    rate = math.log2(third[0] / third[1])
    assert 2.0 < rate < 3.2, third
    assert third[1] < second[1]


def test_final_step_to_sigma_zero_is_the_denoised_estimate():
    sde = sd.VPSDE()
    model = GMM.score_model(sde, "eps")
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.tensor([0.05, 0.0], dtype=F64)
    for prediction in ("data", "noise"):
        out = sd.sample(model, (8, 2), "dpm_solver", timesteps=t, x_T=x, prediction=prediction, order=3)
        torch.testing.assert_close(out.x, model.x0(x, 0.05), rtol=0, atol=1e-12)


# 16-D data at the [−1, 1] scale whose x0 predictions overshoot ±1, for dynamic thresholding.
THRESHOLD_GMM = sd.GaussianMixture(
    0.8 * torch.sign(torch.randn(3, 16, generator=torch.Generator().manual_seed(5), dtype=F64)),
    torch.tensor([0.3, 0.3, 0.3], dtype=F64), torch.tensor([0.5, 0.3, 0.2], dtype=F64))


@pytest.mark.parametrize("order,steps", [(2, 10), (3, 20)])
def test_thresholding_equals_diffusers(order, steps):
    diffusers = pytest.importorskip("diffusers")
    sde = sd.VPSDE.from_betas(DDPM_BETAS)
    model = THRESHOLD_GMM.score_model(sde, "eps", "index")
    x_T = torch.randn(64, 1, 16, generator=torch.Generator().manual_seed(0), dtype=F64)
    results = {}
    for max_value in (1.0, 1.5):
        scheduler = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000, trained_betas=DDPM_BETAS.numpy(), solver_order=order,
            algorithm_type="dpmsolver++", lower_order_final=True, thresholding=True,
            dynamic_thresholding_ratio=0.995, sample_max_value=max_value)
        scheduler.set_timesteps(steps)
        x = x_T.clone()
        for t in scheduler.timesteps:
            x = scheduler.step(model.net(x, torch.full((len(x),), float(t), dtype=F64)), t, x).prev_sample
        ts = sd.grids.from_indices(scheduler.timesteps, 1000)
        ours = sd.sample(model, tuple(x_T.shape), "dpm_solver", timesteps=ts, x_T=x_T, dtype=F64, order=order,
                         thresholding=True, threshold_ratio=0.995, threshold_max=max_value)
        torch.testing.assert_close(ours.x, x, rtol=0, atol=3e-5)
        results[max_value] = ours.x
    plain = sd.sample(model, tuple(x_T.shape), "dpm_solver", timesteps=ts, x_T=x_T, dtype=F64, order=order)
    assert (plain.x - results[1.0]).abs().max() > 0.1  # thresholding acts here
    assert (results[1.5] - results[1.0]).abs().max() > 1e-3  # and the quantile matters


def test_dynamic_threshold_equals_diffusers_threshold_sample():
    """The per-sample rule itself, on entries up to ±3, bit for bit."""
    diffusers = pytest.importorskip("diffusers")
    from scoresde.samplers.exponential import dynamic_threshold

    x0 = 1.5 * torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    for ratio, max_value in ((0.995, 1.0), (0.9, 2.0), (0.5, 1.2)):
        scheduler = diffusers.DPMSolverMultistepScheduler(thresholding=True, dynamic_thresholding_ratio=ratio,
                                                          sample_max_value=max_value)
        torch.testing.assert_close(dynamic_threshold(x0, ratio, max_value), scheduler._threshold_sample(x0),
                                   rtol=0, atol=0)


def test_thresholding_options_are_validated():
    spec = sd.samplers.get("dpm_solver")
    with pytest.raises(ValueError, match="thresholding clips the data prediction x0 and needs pred"):
        spec.parse({"thresholding": True, "prediction": "noise"})
    with pytest.raises(ValueError, match=r"threshold_ratio must lie in \(0, 1\], got 0.0"):
        spec.parse({"threshold_ratio": 0.0})
    with pytest.raises(ValueError, match=r"threshold_max must be a finite number >= 1, got 0\.5"):
        spec.parse({"threshold_max": 0.5})
    assert spec.parse({"thresholding": True}).thresholding


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("steps", [2, 5, 10, 30])
def test_dpmpp_2m_equals_k_diffusion(sde_name, steps):
    """DPM-Solver++(2M) without lower-order final steps (k-diffusion has none) equals k-diffusion's
    ``sample_dpmpp_2m`` on the same σ̄ grid from the same start, in float64: the same update in
    x̄ and in x, so rounding only (measured ≤ 1e-13); bar 1e-10."""
    kd = pytest.importorskip("suite.kdiffusion")
    sde = sd.VPSDE.from_betas(DDPM_BETAS) if sde_name == "vp" else sd.VESDE()
    model = GMM.score_model(sde, "eps")
    ts = sd.grids.make_grid("edm", sde, steps)
    x_T = sde.prior_std * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    theirs, nfe = kd.run("dpmpp_2m", model, x_T, ts)
    ours = sd.sample(model, x_T.shape, "dpm_solver", timesteps=ts, x_T=x_T, dtype=F64, order=2,
                     prediction="data", lower_order_final=False)
    assert ours.nfe == nfe == steps
    torch.testing.assert_close(ours.x, theirs, rtol=0, atol=1e-10)
