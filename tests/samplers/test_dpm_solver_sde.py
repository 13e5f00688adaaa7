"""SDE-DPM-Solver++ (``dpm_solver_sde``) against both of its reference implementations.

* k-diffusion: ``sample_dpmpp_2m_sde`` (midpoint and heun) and ``sample_dpmpp_3m_sde`` (= our
  ``order=3, solver_type="heun"``) on karras and logsnr grids, VP and VE, float64, with η = 0.7
  and s_noise = 0.9 (so that neither factor can hide), ``lower_order_final=False`` (k-diffusion
  has none) and the very standard normal draws our sampler took, replayed through
  ``noise_sampler``. Both evaluate the same float64 formulas (k-diffusion in x̄ = x/alpha), so they
  agree to float64 rounding amplified by ≤ 30 steps: measured ≤ 6e-14 on states of size ≤ 5; the
  bar is 1e-10. (1 step is left out: k-diffusion's 2M SDE fails on a grid whose only step is
  the final denoising step, ``UnboundLocalError`` on ``h``.)
* diffusers' ``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")`` on DDPM's table
  with diffusers' integer timesteps, replaying our draws through ``step(variance_noise=…)``.
  diffusers computes its step in float32; end to end (orders 1–2) the bar is that of
  ``test_dpm_solver`` scaled for the noise: measured ≤ 3e-4 (the SDE trajectories amplify the
  float32 rounding more than the ODE's); bar 1e-3, while midpoint vs heun differ by ≥ 1e-2.
  Step by step (diffusers fed our state, so its history holds our x0's) the difference is
  one step's float32 rounding: measured ≤ 3.5e-6; bar 1e-5. diffusers' *third-order* SDE step
  uses ``−(φ3 + 1)`` for the coefficient of D2 where the Taylor integral gives ``−φ3``
  (k-diffusion); the step test pins that its step is ours minus exactly ``alpha_s·D2`` and
  nothing else.
* η = 0 is the deterministic DPM-Solver++ (``dpm_solver``) to float64 rounding.
* Batch invariance with ``PerSampleNoise``; 200 steps reach the mixture (MMD² at the noise floor).
"""

from __future__ import annotations

import math

import pytest
import torch
from oracles import RecordingNoise

import scoresde as sd
from scoresde.metrics import mmd2

try:  # imported before k-diffusion's loader can put its torchvision placeholder in sys.modules,
    import diffusers  # which diffusers' import-time probe (find_spec("torchvision")) trips over
except ImportError:  # pragma: no cover
    diffusers = None

F64 = torch.float64
DDPM_BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
MEANS = torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]], dtype=F64)
STDS = torch.tensor([0.1, 0.15, 0.08], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
GMM = sd.GaussianMixture(MEANS, STDS, WEIGHTS)


KD_CASES = [("dpmpp_2m_sde", {"order": 2, "solver_type": "midpoint"}, {"solver_type": "midpoint"}),
            ("dpmpp_2m_sde", {"order": 2, "solver_type": "heun"}, {"solver_type": "heun"}),
            ("dpmpp_3m_sde", {"order": 3, "solver_type": "heun"}, {})]


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("grid", ["karras", "logsnr"])
@pytest.mark.parametrize("case", KD_CASES, ids=["2m-midpoint", "2m-heun", "3m"])
def test_equals_k_diffusion(case, grid, sde_name):
    kd = pytest.importorskip("suite.kdiffusion")
    name, ours_opts, kd_opts = case
    sde = {"vp": sd.VPSDE, "ve": sd.VESDE}[sde_name]()
    model = GMM.score_model(sde, "eps")
    for steps in (2, 5, 12, 30):
        ts = sd.grids.make_grid(grid, sde, steps)
        x_T = sde.prior_std * torch.randn(64, 2, generator=torch.Generator().manual_seed(steps), dtype=F64)
        noise = RecordingNoise(100 + steps)
        ours = sd.sample(model, (64, 2), "dpm_solver_sde", timesteps=ts, x_T=x_T, generator=noise,
                         dtype=F64, eta=0.7, s_noise=0.9, lower_order_final=False, **ours_opts)
        # One draw per step except the final step into sigma = 0 (VP); VE ends at sigma_min > 0.
        assert len(noise.draws) == steps - int(sde.sigma(ts[-1]) == 0)
        replay = iter(noise.draws)
        theirs, nfe = kd.run(name, model, x_T, ts, noise_sampler=lambda s, s_next, it=replay: next(it),
                             eta=0.7, s_noise=0.9, **kd_opts)
        assert ours.nfe == nfe == steps
        assert next(replay, None) is None  # k-diffusion used exactly our draws
        torch.testing.assert_close(ours.x, theirs, rtol=0, atol=1e-10)


def _diffusers(order: int, solver_type: str, steps: int):
    if diffusers is None:
        pytest.skip("diffusers is not installed")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=DDPM_BETAS.numpy(), solver_order=order,
        solver_type=solver_type, algorithm_type="sde-dpmsolver++", lower_order_final=True,
        final_sigmas_type="zero")
    scheduler.set_timesteps(steps)
    return scheduler


def _ours_on_diffusers_grid(scheduler, model, x_T, order, solver_type, **kw):
    noise = RecordingNoise(1)
    ts = sd.grids.from_indices(scheduler.timesteps, 1000)
    if order > 1:  # solver_type shapes the second-order steps; with order 1 giving it is an error
        kw["solver_type"] = solver_type
    out = sd.sample(model, tuple(x_T.shape), "dpm_solver_sde", timesteps=ts, x_T=x_T, dtype=F64,
                    generator=noise, order=order, **kw)
    return out, [*noise.draws, torch.zeros_like(x_T)]  # the final step into sigma = 0 draws none


@pytest.mark.parametrize("steps", [5, 10, 20, 50])
@pytest.mark.parametrize("order,solver_type", [(1, "midpoint"), (2, "midpoint"), (2, "heun")])
def test_equals_diffusers_sde_dpmsolver_pp(order, solver_type, steps):
    scheduler = _diffusers(order, solver_type, steps)
    model = GMM.score_model(sd.VPSDE.from_betas(DDPM_BETAS), "eps", "index")
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ours, draws = _ours_on_diffusers_grid(scheduler, model, x_T, order, solver_type)
    x = x_T.clone()
    for t, z in zip(scheduler.timesteps, draws, strict=True):
        eps = model.net(x, torch.full((len(x),), float(t), dtype=F64))
        x = scheduler.step(eps, t, x, variance_noise=z).prev_sample
    assert ours.nfe == steps
    torch.testing.assert_close(ours.x, x, rtol=0, atol=1e-3)
    if order == 2 and steps >= 10:  # the bar separates the two second-order forms
        other = "heun" if solver_type == "midpoint" else "midpoint"
        wrong, _ = _ours_on_diffusers_grid(scheduler, model, x_T, order, other)
        assert (wrong.x - x).abs().max() > 1e-2


@pytest.mark.parametrize("order,solver_type", [(2, "midpoint"), (2, "heun"), (3, "midpoint"), (3, "heun")])
def test_each_step_equals_diffusers_up_to_its_third_order_d2_coefficient(order, solver_type):
    """diffusers stepped from our state (its history then holds our x0's): each step equals ours
    to float32 rounding, except that diffusers' third-order step adds ``−alpha_s·D2``."""
    steps = 20
    scheduler = _diffusers(order, solver_type, steps)
    model = GMM.score_model(sd.VPSDE.from_betas(DDPM_BETAS), "eps", "index")
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    seen = []
    ours, draws = _ours_on_diffusers_grid(scheduler, model, x_T, order, solver_type, callback=seen.append)
    sde = model.sde
    ts = ours.timesteps
    lam = 0.5 * sde.log_snr(ts)
    states = [x_T] + [info["x"] for info in seen]
    third_order_steps = 0
    for i, (t, z) in enumerate(zip(scheduler.timesteps, draws, strict=True)):
        eps = model.net(states[i], torch.full((len(x_T),), float(t), dtype=F64))
        theirs = scheduler.step(eps, t, states[i], variance_noise=z).prev_sample
        want = states[i + 1]
        if order == 3 and 2 <= i < steps - 1:  # third order after the warm-up (20 ≥ 15: no lowering)
            h = lam[i + 1] - lam[i]
            r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
            m0, m1, m2 = seen[i]["x0"], seen[i - 1]["x0"], seen[i - 2]["x0"]
            D2 = ((m0 - m1) / r0 - (m1 - m2) / r1) / (r0 + r1)
            want = want - sde.alpha(ts[i + 1]) * D2
            third_order_steps += 1
            assert (sde.alpha(ts[i + 1]) * D2).abs().max() > 1e-4  # the test can tell
        torch.testing.assert_close(theirs, want, rtol=0, atol=1e-5)
    assert third_order_steps == (17 if order == 3 else 0)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_eta_zero_is_the_deterministic_dpm_solver_pp(order, sde_name):
    sde = {"vp": sd.VPSDE, "ve": sd.VESDE}[sde_name]()
    model = GMM.score_model(sde, "eps")
    x_T = sde.prior_std * torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    for steps in (1, 4, 20):
        ts = sd.grids.make_grid("logsnr", sde, steps)
        ours = sd.sample(model, (64, 2), "dpm_solver_sde", timesteps=ts, x_T=x_T, eta=0.0, order=order)
        ode = sd.sample(model, (64, 2), "dpm_solver", timesteps=ts, x_T=x_T, order=order)
        torch.testing.assert_close(ours.x, ode.x, rtol=0, atol=1e-12)
    assert not sd.samplers.get("dpm_solver_sde").parse({"eta": 0.0}).stochastic
    assert not sd.samplers.get("dpm_solver_sde").parse({"s_noise": 0.0}).stochastic


def test_final_step_to_sigma_zero_is_the_denoised_estimate_without_noise():
    sde = sd.VPSDE()
    model = GMM.score_model(sde, "eps")
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    noise = RecordingNoise(0)
    out = sd.sample(model, (8, 2), "dpm_solver_sde", timesteps=torch.tensor([0.05, 0.0], dtype=F64),
                    x_T=x, generator=noise, order=3)
    torch.testing.assert_close(out.x, model.x0(x, 0.05), rtol=0, atol=1e-12)
    assert noise.draws == []


@pytest.mark.parametrize("options", [{"order": 2}, {"order": 3, "solver_type": "heun"}], ids=["2m", "3m"])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_batch_invariance_with_per_sample_noise(options, sde_name):
    sde = {"vp": sd.VPSDE, "ve": sd.VESDE}[sde_name]()
    model = GMM.score_model(sde, "eps")
    kw = dict(dtype=F64, **options)
    whole = sd.sample(model, (64, 2), "dpm_solver_sde", 12, generator=sd.PerSampleNoise(5), **kw).x
    parts = [sd.sample(model, (32, 2), "dpm_solver_sde", 12, generator=sd.PerSampleNoise(5, offset=k), **kw).x
             for k in (0, 32)]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=1e-12)
    assert not torch.allclose(whole[:32], whole[32:])


@pytest.mark.parametrize("eta,s_noise", [(-0.5, 1.0), (math.inf, 1.0), (math.nan, 1.0), (1.0, -1.0),
                                         (1.0, math.inf)])
def test_bad_noise_options(eta, s_noise):
    with pytest.raises(ValueError, match=r"(eta|s_noise) must be a finite number >= 0"):
        sd.samplers.get("dpm_solver_sde").parse({"eta": eta, "s_noise": s_noise})


# --- convergence to the mixture ----------------------------------------------------------------
N = 1000  # n = 2000 as in test_sampler_convergence costs 4× the time; 1000 keeps the floor ~2e-3


@pytest.fixture(scope="module")
def noise_floor() -> float:
    """mean + 4 sd of MMD² between 12 independent pairs of exact n-sample sets (as in
    test_sampler_convergence: a sampler drawing exactly from the target exceeds it only in the
    far tail; 12 replicates pin the sd to about ±25 %, which the 4-sd margin absorbs)."""
    g = torch.Generator().manual_seed(20240601)
    vals = torch.tensor([mmd2(GMM.sample(N, g, F64), GMM.sample(N, g, F64)) for _ in range(12)])
    return float(vals.mean() + 4 * vals.std())


def _target(sde, t_end: float) -> sd.GaussianMixture:
    """p_{t_end}: VE keeps sigma_min of noise at t = 0; on VP it is the data itself."""
    t = torch.tensor(t_end, dtype=F64)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    return sd.GaussianMixture(alpha * MEANS, torch.sqrt(alpha**2 * STDS**2 + sigma**2), WEIGHTS)


@pytest.mark.parametrize("options", [{"order": 2}, {"order": 3, "solver_type": "heun"}], ids=["2m", "3m"])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_converges_to_the_mixture(options, sde_name, noise_floor):
    sde = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}[sde_name]()
    model = GMM.score_model(sde, "eps")
    dist = {}
    for steps in (2, 200):
        out = sd.sample(model, (N, 2), "dpm_solver_sde", steps, dtype=F64,
                        generator=torch.Generator().manual_seed(steps), **options)
        exact = _target(sde, float(out.timesteps[-1])).sample(N, torch.Generator().manual_seed(9), F64)
        dist[steps] = mmd2(out.x, exact)
    assert dist[200] < noise_floor, (dist, noise_floor)
    assert dist[2] > 10 * noise_floor, (dist, noise_floor)  # the test can tell
