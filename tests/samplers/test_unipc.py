"""UniPC against diffusers' UniPCMultistepScheduler and its order of convergence.

* Equivalence: DDPM's table, diffusers' integer timesteps, the same start noise; orders 1–3,
  B(h) = bh1 and bh2, data and noise prediction. diffusers holds the schedule in float32:
  measured ≤ 3.3e-4 on states of size ~1.6 (the largest at 5 steps of the noise form, where
  e^h of a large step amplifies the rounding); the bar is 5e-4. One case differs on purpose:
  diffusers' bh1 data form with a final step to sigma = 0 computes B(h)·0 with B(h) = −∞ and
  returns NaN; ours takes the step's limit x0 — there the comparison ends at sigma_min.
* Order: UniP-p with the corrector UniC-p is of order p + 1 (Zhao et al. 2023, Thm 3.3):
  p = 1 gives 2, p = 2 gives 3 (log2(e_N/e_2N) within ±0.2 at N = 128 against the float64
  DOP853 reference). ``lower_order_final=False`` here: diffusers' default lowers the last step
  to order 1 without a corrector, whose O(h²) local error caps the global rate at 2 on fine
  grids (measured on VP: 3.1 → 2.3 between 64 and 512 steps). p = 3 starts with a first-order
  step (warm-up), which bounds its asymptotic rate; its error stays below p = 2's.
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


def _diffusers_run(model, x_T, steps, order, variant, data, final_zero):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000, trained_betas=DDPM_BETAS.numpy(), solver_order=order,
        solver_type=variant, predict_x0=data, lower_order_final=True,
        final_sigmas_type="zero" if final_zero else "sigma_min")
    scheduler.set_timesteps(steps)
    x = x_T.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(model.net(x, torch.full((len(x),), float(t), dtype=F64)), t, x).prev_sample
    ts = sd.grids.from_indices(scheduler.timesteps, 1000, final_zero=final_zero)
    if not final_zero:
        ts = torch.cat([ts, torch.tensor([1 / 1000], dtype=F64)])  # t of index 0
    return x, ts


@pytest.mark.parametrize("steps", [5, 10, 20, 50])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_equals_diffusers_unipc(prediction, variant, order, steps):
    model = GMM.score_model(sd.VPSDE.from_betas(DDPM_BETAS), "eps", "index")
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    data = prediction == "data"
    final_zero = data and variant == "bh2"
    theirs, ts = _diffusers_run(model, x_T, steps, order, variant, data, final_zero)
    ours = sd.sample(model, tuple(x_T.shape), "unipc", timesteps=ts, x_T=x_T, dtype=F64, order=order,
                     prediction=prediction, variant=variant)
    assert ours.nfe == steps
    torch.testing.assert_close(ours.x, theirs, rtol=0, atol=5e-4)


def test_bh1_final_step_to_zero_is_finite_where_diffusers_is_nan():
    model = GMM.score_model(sd.VPSDE.from_betas(DDPM_BETAS), "eps", "index")
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    theirs, ts = _diffusers_run(model, x_T, 10, 2, "bh1", True, True)
    assert torch.isnan(theirs).all()
    ours = sd.sample(model, (64, 2), "unipc", timesteps=ts, x_T=x_T, dtype=F64, variant="bh1")
    bh2 = sd.sample(model, (64, 2), "unipc", timesteps=ts, x_T=x_T, dtype=F64, variant="bh2")
    assert torch.isfinite(ours.x).all()
    assert (ours.x - bh2.x).abs().median() < 0.02  # two second-order variants of one solve


@pytest.fixture(scope="module", params=list(ORDER_SDES))
def problem(request):
    return order_problem(request.param)


def _errors(problem, order: int, options: dict) -> list[float]:
    sde, model, x_T, ref = problem
    errs = []
    for steps in (128, 256):
        ts = sd.grids.make_grid("logsnr", sde, steps, sde.T, ORDER_T_END)
        out = sd.sample(model, x_T.shape, "unipc", timesteps=ts, x_T=x_T, order=order,
                        lower_order_final=False, **options)
        errs.append((out.x - ref).abs().max().item())
    return errs


OPTIONS = [{"prediction": "data", "variant": "bh1"}, {"prediction": "data", "variant": "bh2"},
           {"prediction": "noise", "variant": "bh2"}]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o.values()))
@pytest.mark.parametrize("order", [1, 2])
def test_predictor_corrector_order(problem, order, options):
    errs = _errors(problem, order, options)
    assert errs[1] > 1e-9, errs
    assert abs(math.log2(errs[0] / errs[1]) - (order + 1)) < 0.2, errs


def test_corrector_raises_the_order(problem):
    sde, model, x_T, ref = problem
    ts = sd.grids.make_grid("logsnr", sde, 128, sde.T, ORDER_T_END)
    with_c, without = (sd.sample(model, x_T.shape, "unipc", timesteps=ts, x_T=x_T, order=1,
                                 corrector=c, lower_order_final=False).x for c in (True, False))
    # Second against first order at 128 steps: ~10× smaller (measured 10–40×).
    assert (with_c - ref).abs().max() < 0.25 * (without - ref).abs().max()


def test_third_order_beats_second(problem):
    assert _errors(problem, 3, OPTIONS[1])[1] < _errors(problem, 2, OPTIONS[1])[1]
