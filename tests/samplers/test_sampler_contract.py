"""The sampler contract, over every registered sampler (and its main option variants) × every SDE.

* shape and dtype preserved (float32 and float64); same generator seed -> identical result;
* NFE reported exactly: a counter around the network agrees with ``out.nfe`` and with the
  formula for the sampler;
* finite at 1, 2, 5, 10 and 1000 steps;
* batch-size invariance with ``PerSampleNoise``;
* the callback sees every step; the grids run strictly from T down to t_end;
* bad input raises a clear error naming what was expected.

The network is the exact oracle of a Gaussian mixture, wrapped in a different prediction type and
time input per SDE so that the conversions are exercised too.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as sd

F32, F64 = torch.float32, torch.float64

GMM = sd.GaussianMixture(
    torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]]),
    torch.tensor([0.1, 0.15, 0.08]),
    torch.tensor([0.5, 0.3, 0.2]),
)

# name -> (SDE factory, prediction, time input)
SDES = {
    "vp": (sd.VPSDE, "eps", "continuous"),
    "subvp": (sd.SubVPSDE, "v", "continuous"),
    "ve": (sd.VESDE, "score", "continuous"),
    "cosine": (sd.VPSDE.cosine, "x0", "continuous"),
    "ddpm": (lambda: sd.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 1000)), "eps", "index"),
}


class CountingNet:
    """Counts calls of the wrapped network: the ground truth for NFE."""

    def __init__(self, net):
        self.net, self.calls = net, 0

    def __call__(self, x, c):
        self.calls += 1
        return self.net(x, c)


def make_model(sde_name: str) -> tuple[sd.ScoreModel, CountingNet]:
    factory, prediction, time_input = SDES[sde_name]
    sde = factory()
    counter = CountingNet(GMM.score_model(sde, prediction, time_input).net)
    return sd.ScoreModel(counter, sde, prediction, time_input), counter


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fixed_ode(stages: int):
    # A fixed step ending at sigma = 0 is an Euler step (1 evaluation instead of `stages`).
    return lambda steps, zero_end: stages * steps - (stages - 1 if zero_end else 0)


def _per_step(k: int):
    return lambda steps, zero_end: k * steps


# (id, sampler, options, NFE per run before the optional final denoising step; None = adaptive)
VARIANTS = [
    ("ancestral", "ancestral", {}, _per_step(1)),
    ("ancestral-beta", "ancestral", {"variance": "beta"}, _per_step(1)),
    ("ddim", "ddim", {}, _per_step(1)),
    ("ddim-eta0.5", "ddim", {"eta": 0.5}, _per_step(1)),
    ("ddim-eta1", "ddim", {"eta": 1.0}, _per_step(1)),
    ("pc", "pc", {}, _per_step(2)),  # n_corrector = 1 corrector + 1 predictor call per step
    ("pc-em-none", "pc", {"predictor": "euler_maruyama", "corrector": "none"}, _per_step(1)),
    ("pc-anc-annealed-x2", "pc",
     {"predictor": "ancestral", "corrector": "annealed_langevin", "n_corrector": 2}, _per_step(3)),
    ("pc-none-langevin", "pc", {"predictor": "none", "corrector": "langevin"}, _per_step(1)),
    ("ode-euler", "ode", {"method": "euler"}, _fixed_ode(1)),
    ("ode-midpoint", "ode", {"method": "midpoint"}, _fixed_ode(2)),
    ("ode-heun", "ode", {"method": "heun"}, _fixed_ode(2)),
    ("ode-ralston3", "ode", {"method": "ralston3"}, _fixed_ode(3)),
    ("ode-rk4", "ode", {"method": "rk4"}, _fixed_ode(4)),
    ("ode-dopri5", "ode", {"method": "dopri5"}, None),
    ("dpm++2m", "dpm_solver", {}, _per_step(1)),
    ("unipc", "unipc", {}, _per_step(1)),
    ("edm", "edm", {}, _fixed_ode(2)),
    ("edm-churn-euler", "edm", {"s_churn": 20.0, "heun": False}, _per_step(1)),
    ("euler-ancestral", "euler_ancestral", {}, _per_step(1)),
    ("unipc-bh1-3-noise", "unipc", {"order": 3, "variant": "bh1", "prediction": "noise"}, _per_step(1)),
    ("unipc-1-no-corrector", "unipc", {"order": 1, "corrector": False}, _per_step(1)),
    ("dpm++3m", "dpm_solver", {"order": 3}, _per_step(1)),
    ("dpm-solver1-noise", "dpm_solver", {"order": 1, "prediction": "noise"}, _per_step(1)),
    ("dpm-solver3m-noise", "dpm_solver", {"order": 3, "prediction": "noise", "lower_order_final": False},
     _per_step(1)),
    ("dpm++2s", "dpm_solver_singlestep", {}, _per_step(1)),
    ("dpm-solver3s-noise", "dpm_solver_singlestep", {"order": 3, "prediction": "noise"}, _per_step(1)),
    ("dpm++2m-threshold", "dpm_solver", {"thresholding": True}, _per_step(1)),
    ("lms4", "lms", {}, _per_step(1)),
    ("ipndm4", "lms", {"method": "ipndm"}, _per_step(1)),
    ("deis3", "lms", {"method": "deis", "order": 3, "lower_order_final": True}, _per_step(1)),
    ("dpm++2m-sde", "dpm_solver_sde", {}, _per_step(1)),
    ("dpm++3m-sde", "dpm_solver_sde", {"order": 3, "solver_type": "heun"}, _per_step(1)),
    ("ode-RK45", "ode", {"method": "RK45"}, None),
    ("dpm-adaptive", "dpm_adaptive", {}, None),
    ("adaptive-sde", "adaptive_sde", {}, None),
]
VARIANT_IDS = [v[0] for v in VARIANTS]
FIXED_VARIANTS = [v for v in VARIANTS if v[3] is not None]


def test_registry_lists_every_sampler_and_each_is_covered_here():
    assert sd.samplers.available() == ["adaptive_sde", "ancestral", "ddim", "dpm_adaptive", "dpm_solver",
                                       "dpm_solver_sde", "dpm_solver_singlestep", "edm", "euler_ancestral",
                                       "lms", "ode", "pc", "unipc"]
    assert {v[1] for v in VARIANTS} == set(sd.samplers.available())


def _run(model, sampler, options, nfe_fn, steps=5, **kw):
    if nfe_fn is None:  # adaptive: no steps
        return sd.sample(model, kw.pop("shape", (6, 2)), sampler, **kw, **options)
    return sd.sample(model, kw.pop("shape", (6, 2)), sampler, steps, **kw, **options)


def _expected_nfe(model, sampler, nfe_fn, out, denoise=None):
    steps = len(out.timesteps) - 1
    zero_end = bool(model.sde.sigma_bar(out.timesteps[-1]) == 0)
    spec = sd.samplers.get(sampler)
    denoise = spec.denoise if denoise is None else denoise
    return nfe_fn(steps, zero_end) + int(denoise)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_contract_shape_dtype_determinism_nfe(variant, sde_name):
    _, sampler, options, nfe_fn = variant
    model, counter = make_model(sde_name)
    for dtype in (F32, F64):
        counter.calls = 0
        a = _run(model, sampler, options, nfe_fn, generator=gen(1), dtype=dtype)
        assert a.x.shape == (6, 2) and a.x.dtype == dtype
        assert torch.isfinite(a.x).all()
        # NFE: counted calls == reported == formula (adaptive: counted == reported).
        assert counter.calls == a.nfe > 0
        if nfe_fn is not None:
            assert a.nfe == _expected_nfe(model, sampler, nfe_fn, a)
        b = _run(model, sampler, options, nfe_fn, generator=gen(1), dtype=dtype)
        assert torch.equal(a.x, b.x)
        # A different seed gives a different result (the generator is really used).
        c = _run(model, sampler, options, nfe_fn, generator=gen(2), dtype=dtype)
        assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_contract_with_explicit_x_T_and_trailing_dims(variant):
    """x_T of shape (batch, 1, 2) in float64: shape and dtype come from x_T."""
    _, sampler, options, nfe_fn = variant
    model, _ = make_model("vp")
    x_T = torch.randn(3, 1, 2, generator=gen(3), dtype=F64)
    out = _run(model, sampler, options, nfe_fn, shape=(3, 1, 2), x_T=x_T, generator=gen(4))
    assert out.x.shape == (3, 1, 2) and out.x.dtype == F64
    assert torch.isfinite(out.x).all()


# ODE NFE depends on how the grid ends: a step into sigma = 0 costs one evaluation, not s.
@pytest.mark.parametrize("variant", FIXED_VARIANTS, ids=[v[0] for v in FIXED_VARIANTS])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("t_end,denoise", [(0.0, False), (1e-3, False), (1e-3, True)])
def test_nfe_formula_at_every_grid_end(variant, sde_name, t_end, denoise):
    _, sampler, options, nfe_fn = variant
    model, counter = make_model(sde_name)
    for steps in (1, 3):
        counter.calls = 0
        out = sd.sample(model, (4, 2), sampler, steps, t_end=t_end, denoise=denoise, generator=gen(),
                        grid="uniform", **options)
        # On VP sigma(0) = 0: fixed ODE methods save (stages − 1) there. On VE sigma(0) = σ_min > 0.
        zero_end = sde_name == "vp" and t_end == 0.0
        want = nfe_fn(steps, zero_end) + int(denoise)
        assert out.nfe == counter.calls == want, (steps, out.nfe, counter.calls, want)


def test_nfe_heun_example_by_hand():
    model, _ = make_model("vp")
    # 10 Heun steps to t = 0 on VP: 9 two-evaluation steps + one Euler step into sigma = 0.
    assert sd.sample(model, (2, 2), "ode", 10, t_end=0.0, denoise=False, generator=gen(),
                     method="heun").nfe == 19
    # Default: the same (log-SNR grid to t = 0); to t_end = 1e-3 with a final Tweedie step: 2·10 + 1.
    assert sd.sample(model, (2, 2), "ode", 10, generator=gen(), method="heun").nfe == 19
    assert sd.sample(model, (2, 2), "ode", 10, t_end=1e-3, denoise=True, generator=gen(),
                     method="heun").nfe == 21
    # pc default: (1 corrector + 1 predictor) per step + the final denoising call.
    assert sd.sample(model, (2, 2), "pc", 10, generator=gen(), n_corrector=3).nfe == 41


# --- finite at every step count ------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("variant", FIXED_VARIANTS, ids=[v[0] for v in FIXED_VARIANTS])
def test_finite_at_few_steps(variant, sde_name):
    _, sampler, options, _ = variant
    model, _ = make_model(sde_name)
    for steps in (1, 2, 5, 10):
        out = sd.sample(model, (8, 2), sampler, steps, generator=gen(steps), **options)
        assert torch.isfinite(out.x).all(), steps


# At 1000 steps one representative per sampler family on every SDE (batch 8, ~0.5 s each); the
# other variants share their step maths with these and run at 1000 steps in the slow suite.
MAIN = ["ancestral", "ddim-eta0.5", "pc", "ode-heun"]


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize(
    "variant", [pytest.param(v, id=v[0], marks=() if v[0] in MAIN else pytest.mark.slow)
                for v in FIXED_VARIANTS])
def test_finite_at_1000_steps(variant, sde_name):
    _, sampler, options, nfe_fn = variant
    model, _ = make_model(sde_name)
    out = sd.sample(model, (8, 2), sampler, 1000, generator=gen(), **options)
    assert torch.isfinite(out.x).all()
    assert out.nfe == _expected_nfe(model, sampler, nfe_fn, out)
    # Samples land near the data (|x| ≲ 2 for this mixture), not merely finite.
    assert out.x.abs().max() < 3.0


# --- batch-size invariance -------------------------------------------------------------------------
INVARIANT = [
    ("ancestral", {}),
    ("ddim", {"eta": 0.5}),
    ("pc", {"corrector": "annealed_langevin"}),
    ("ode", {"method": "heun"}),
]


@pytest.mark.parametrize("sde_name", ["vp", "ve", "ddpm"])
@pytest.mark.parametrize("sampler,options", INVARIANT, ids=[s for s, _ in INVARIANT])
def test_batch_size_invariance_with_per_sample_noise(sampler, options, sde_name):
    """One batch of 6 == batches of 3 with stream offsets 0 and 3 (x_T drawn from the noise too).

    (pc's default "langevin" corrector averages norms over the batch, as score_sde does, so it
    is not batch-invariant and is left out here.)
    """
    model, _ = make_model(sde_name)
    kw = dict(dtype=F64, **options)
    whole = sd.sample(model, (6, 2), sampler, 7, generator=sd.PerSampleNoise(11), **kw).x
    first = sd.sample(model, (3, 2), sampler, 7, generator=sd.PerSampleNoise(11, offset=0), **kw).x
    second = sd.sample(model, (3, 2), sampler, 7, generator=sd.PerSampleNoise(11, offset=3), **kw).x
    # Per-sample arithmetic only; allow a few ulp in case a kernel vectorises differently by size.
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=1e-13, atol=1e-13)
    # The streams differ between samples (not one draw broadcast over the batch).
    assert not torch.allclose(whole[:3], whole[3:])


# --- callbacks and grids -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", FIXED_VARIANTS, ids=[v[0] for v in FIXED_VARIANTS])
def test_callback_once_per_step(variant):
    _, sampler, options, _ = variant
    model, _ = make_model("vp")
    seen = []
    out = sd.sample(model, (4, 2), sampler, 6, generator=gen(), denoise=False, callback=seen.append,
                    **options)
    assert [info["i"] for info in seen] == list(range(6))
    # t is the time the state has reached after step i: the grid without its start.
    assert [info["t"] for info in seen] == out.timesteps[1:].tolist()
    for info in seen:
        assert info["x"].shape == (4, 2) and torch.isfinite(info["x"]).all()
    # Without a final denoising step the last reported state is the result.
    torch.testing.assert_close(seen[-1]["x"], out.x, rtol=0, atol=0)


def test_callback_and_progress_do_not_change_results():
    model, _ = make_model("vp")
    a = sd.sample(model, (4, 2), "pc", 5, generator=gen(3)).x
    b = sd.sample(model, (4, 2), "pc", 5, generator=gen(3), callback=lambda info: None).x
    assert torch.equal(a, b)


GRID_NAMES = ["uniform", "quadratic", "logsnr", "karras"]


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("grid", GRID_NAMES)
def test_grids_run_strictly_down_from_T_to_t_end(grid, sde_name):
    sde = SDES[sde_name][0]()
    for t_end in (0.0, 1e-3, 0.2):
        for steps in (1, 2, 10, 1000):
            ts = sd.grids.make_grid(grid, sde, steps, t_end=t_end)
            assert ts.dtype == F64 and ts.shape == (steps + 1,)
            assert ts[0] == sde.T and ts[-1] == t_end, (grid, steps, t_end)
            assert (ts[1:] < ts[:-1]).all(), (grid, steps, t_end)
    # A shorter span from t_start as well.
    ts = sd.grids.make_grid(grid, sde, 10, t_start=0.5, t_end=0.1)
    assert ts[0] == 0.5 and ts[-1] == 0.1 and (ts[1:] < ts[:-1]).all()


@pytest.mark.parametrize("grid", GRID_NAMES)
def test_sample_uses_the_requested_grid(grid):
    model, _ = make_model("vp")
    out = sd.sample(model, (2, 2), "ddim", 8, grid=grid, generator=gen())
    torch.testing.assert_close(out.timesteps, sd.grids.make_grid(grid, model.sde, 8), rtol=0, atol=0)


def test_grid_shapes():
    vp, ve = sd.VPSDE(), sd.VESDE()
    # Uniform: equal steps; quadratic: (1 − i/n)², denser towards the data.
    torch.testing.assert_close(sd.grids.make_grid("uniform", vp, 4), torch.tensor(
        [1.0, 0.75, 0.5, 0.25, 0.0], dtype=F64))
    torch.testing.assert_close(sd.grids.make_grid("quadratic", vp, 4), torch.tensor(
        [1.0, 9 / 16, 4 / 16, 1 / 16, 0.0], dtype=F64))
    # VE: log SNR = −2 log sigma is linear in t, so the logSNR grid is the uniform one.
    torch.testing.assert_close(sd.grids.make_grid("logsnr", ve, 7, t_end=0.1),
                               sd.grids.make_grid("uniform", ve, 7, t_end=0.1), rtol=0, atol=1e-12)
    # logsnr: equal steps in λ; karras: equal steps in σ̄^{1/7}.
    ts = sd.grids.make_grid("logsnr", vp, 6, t_end=1e-3)
    lam = vp.log_snr(ts)
    torch.testing.assert_close(torch.diff(lam), torch.diff(lam)[:1].expand(6), rtol=1e-9, atol=0)
    ts = sd.grids.make_grid("karras", vp, 6, t_end=1e-3)
    lev = vp.sigma_bar(ts) ** (1 / 7)
    torch.testing.assert_close(torch.diff(lev), torch.diff(lev)[:1].expand(6), rtol=1e-9, atol=0)


def test_from_indices():
    ts = sd.grids.from_indices(torch.tensor([980, 500, 0]), 1000)
    torch.testing.assert_close(ts, torch.tensor([0.981, 0.501, 0.001, 0.0], dtype=F64))


# --- bad input -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vp_model():
    return make_model("vp")[0]


def test_unknown_sampler_lists_the_available_ones(vp_model):
    with pytest.raises(ValueError, match="unknown sampler 'dpm'") as err:
        sd.sample(vp_model, (2, 2), "dpm", 10, generator=gen())
    for name in sd.samplers.available():
        assert name in str(err.value)
    with pytest.raises(TypeError, match="sampler must be a name"):
        sd.sample(vp_model, (2, 2), 3, 10, generator=gen())


def test_wrong_x_T(vp_model):
    with pytest.raises(ValueError, match=r"x_T must have shape \(4, 2\), got \(4, 3\)"):
        sd.sample(vp_model, (4, 2), "ddim", 10, x_T=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="x_T must be finite"):
        sd.sample(vp_model, (2, 2), "ddim", 10, x_T=torch.tensor([[0.0, math.nan], [0.0, 0.0]]))


@pytest.mark.parametrize("timesteps", [
    [1.0, 0.5, 0.5, 0.0],  # repeated
    [0.0, 0.5, 1.0],  # increasing
    [1.0, 0.2, 0.4, 0.0],  # not monotone
], ids=["repeated", "increasing", "zigzag"])
def test_non_decreasing_timesteps(vp_model, timesteps):
    with pytest.raises(ValueError, match="strictly decreasing"):
        sd.sample(vp_model, (2, 2), "ddim", timesteps=torch.tensor(timesteps), generator=gen())


def test_timesteps_outside_0_T(vp_model):
    for ts in ([1.0 + 1e-9, 0.5, 0.0], [1.0, 0.5, -1e-9]):
        with pytest.raises(ValueError, match=r"timesteps must lie in \[0, T=1.0\]"):
            sd.sample(vp_model, (2, 2), "ddim", timesteps=torch.tensor(ts, dtype=F64), generator=gen())
    for kw in ({"t_end": -0.1}, {"t_start": 1.5}, {"t_start": 0.3, "t_end": 0.3}):
        with pytest.raises(ValueError, match="need 0 <= t_end < t_start <= T"):
            sd.sample(vp_model, (2, 2), "ddim", 10, generator=gen(), **kw)
    with pytest.raises(ValueError, match="timesteps must be finite"):
        sd.sample(vp_model, (2, 2), "ddim", timesteps=torch.tensor([math.nan, 0.0]), generator=gen())
    with pytest.raises(ValueError, match="at least 2 times"):
        sd.sample(vp_model, (2, 2), "ddim", timesteps=torch.tensor([1.0]), generator=gen())
    with pytest.raises(ValueError, match="either timesteps or steps"):
        sd.sample(vp_model, (2, 2), "ddim", 5, timesteps=torch.tensor([1.0, 0.0]), generator=gen())
    # Starting below T needs an explicit x_T: the prior sits at T.
    with pytest.raises(ValueError, match="needs x_T"):
        sd.sample(vp_model, (2, 2), "ddim", timesteps=torch.tensor([0.5, 0.0]), generator=gen())


@pytest.mark.parametrize("steps", [0, -3, 1.5, True, "10"])
def test_bad_steps(vp_model, steps):
    with pytest.raises((ValueError, TypeError), match=r"steps must be an integer >= 1"):
        sd.sample(vp_model, (2, 2), "ddim", steps, generator=gen())


def test_missing_steps(vp_model):
    with pytest.raises(ValueError, match="steps is required"):
        sd.sample(vp_model, (2, 2), "ddim", generator=gen())


def test_network_output_of_the_wrong_shape():
    sde = sd.VPSDE()
    bad = sd.ScoreModel(lambda x, c: x[:, :1], sde, "eps")
    with pytest.raises(ValueError, match=r"shaped like its input \(2, 2\), got \(2, 1\)"):
        sd.sample(bad, (2, 2), "ddim", 3, generator=gen())
    not_a_tensor = sd.ScoreModel(lambda x, c: x.tolist(), sde, "eps")
    with pytest.raises(ValueError, match="shaped like its input"):
        sd.sample(not_a_tensor, (2, 2), "ancestral", 3, generator=gen())


def test_non_finite_network_output_is_reported():
    nan_net = sd.ScoreModel(lambda x, c: torch.full_like(x, math.nan), sd.VPSDE(), "eps")
    with pytest.raises(FloatingPointError, match="non-finite"):
        sd.sample(nan_net, (2, 2), "ddim", 3, generator=gen())


def test_missing_generator(vp_model):
    # No x_T: the prior draw needs one, even for a deterministic sampler.
    with pytest.raises(TypeError, match="generator must be passed in"):
        sd.sample(vp_model, (2, 2), "ddim", 5)
    # Stochastic samplers need one even with x_T.
    for sampler, options in [("ancestral", {}), ("pc", {}), ("ddim", {"eta": 0.3})]:
        with pytest.raises(TypeError, match="generator must be passed in"):
            sd.sample(vp_model, (2, 2), sampler, 5, x_T=torch.zeros(2, 2), **options)
    with pytest.raises(TypeError, match="generator must be passed in"):
        sd.sample(vp_model, (2, 2), "ancestral", 5, generator=0)
    # Deterministic samplers with x_T do not.
    sd.sample(vp_model, (2, 2), "ddim", 5, x_T=torch.zeros(2, 2))
    sd.sample(vp_model, (2, 2), "ode", 5, x_T=torch.zeros(2, 2))


@pytest.mark.parametrize("method", ["dopri5", "RK45", "DOP853"])
def test_steps_given_to_an_adaptive_ode_method(vp_model, method):
    with pytest.raises(ValueError, match="adaptive solver chooses its own steps"):
        sd.sample(vp_model, (2, 2), "ode", 10, generator=gen(), method=method)
    with pytest.raises(ValueError, match="adaptive solver chooses its own steps"):
        sd.sample(vp_model, (2, 2), "ode", generator=gen(), method=method, grid="karras")
    # Adaptive methods evaluate the model at both ends, so t_end must have sigma > 0.
    with pytest.raises(ValueError, match="sigma > 0"):
        sd.sample(vp_model, (2, 2), "ode", generator=gen(), method=method, t_end=0.0, denoise=False)


@pytest.mark.parametrize("eta", [-0.1, 1.01, math.nan])
def test_eta_outside_0_1(vp_model, eta):
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\]"):
        sd.sample(vp_model, (2, 2), "ddim", 5, generator=gen(), eta=eta)


def test_unknown_options(vp_model):
    with pytest.raises(ValueError, match=r"unknown predictor 'heun'.*reverse_diffusion"):
        sd.sample(vp_model, (2, 2), "pc", 5, generator=gen(), predictor="heun")
    with pytest.raises(ValueError, match=r"unknown corrector 'hmc'.*annealed_langevin"):
        sd.sample(vp_model, (2, 2), "pc", 5, generator=gen(), corrector="hmc")
    with pytest.raises(ValueError, match=r"unknown ODE method 'rk45'.*dopri5"):
        sd.sample(vp_model, (2, 2), "ode", 5, generator=gen(), method="rk45")
    with pytest.raises(ValueError, match=r"'variance' must be one of 'auto', 'posterior', 'beta', 'learned', "
                                         r"'analytic', got 'small'"):
        sd.sample(vp_model, (2, 2), "ancestral", 5, generator=gen(), variance="small")
    with pytest.raises(ValueError, match=r"variance='learned' needs a model with a learned variance"):
        sd.sample(vp_model, (2, 2), "ancestral", 5, generator=gen(), variance="learned")
    with pytest.raises(ValueError, match=r"unknown grid 'cosine'.*karras"):
        sd.sample(vp_model, (2, 2), "ddim", 5, generator=gen(), grid="cosine")
    with pytest.raises(ValueError, match="n_corrector must be an integer >= 0"):
        sd.sample(vp_model, (2, 2), "pc", 5, generator=gen(), n_corrector=-1)
    with pytest.raises(ValueError, match="snr must be > 0"):
        sd.sample(vp_model, (2, 2), "pc", 5, generator=gen(), snr=0.0)
    with pytest.raises(ValueError, match="predictor='none' needs a corrector"):
        sd.sample(vp_model, (2, 2), "pc", 5, generator=gen(), predictor="none", corrector="none")
    # A misspelt option is not silently ignored.
    with pytest.raises(ValueError, match="no option 'etta'"):
        sd.sample(vp_model, (2, 2), "ddim", 5, generator=gen(), etta=0.5)


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "cosine", "ddpm"])
def test_denoise_with_a_grid_ending_at_sigma_0(sde_name):
    model, _ = make_model(sde_name)
    for sampler in ("ddim", "ancestral", "pc", "ode"):
        with pytest.raises(ValueError, match=r"denoise=True needs a grid ending where sigma > 0"):
            sd.sample(model, (2, 2), sampler, 5, generator=gen(), t_end=0.0, denoise=True)


def test_denoise_at_t0_is_fine_on_ve():
    """VE keeps sigma_min of noise at t = 0, so a final Tweedie step there is well defined."""
    model, counter = make_model("ve")
    out = sd.sample(model, (2, 2), "ddim", 5, generator=gen(), denoise=True)
    assert out.nfe == counter.calls == 6


def test_bad_shape(vp_model):
    for shape in [(), (0, 2), (2, -1), (2.0, 2)]:
        with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
            sd.sample(vp_model, shape, "ddim", 5, generator=gen())


@pytest.mark.parametrize("sde", [
    sd.VPSDE(0.5618134991895122, 6.414437038764316),  # σ̄(T) -> t round-trips to T + 2e-16
    sd.SubVPSDE(0.4084150592451525, 6.025861478843712),
    sd.VESDE(0.053641236795034825, 148.2111321884282),
], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("method", ["heun", "rk4", "dopri5"])
def test_ode_sampler_tolerates_round_off_at_the_ends_of_the_grid(sde, method):
    """Regression: the PF-ODE field maps σ̄ back to t; rounding put t a few ulp outside [0, T]
    (at T for these schedules; at 0 after the stage time s + h on VE grids ending at t = 0) and
    the model rejected it. Both ends must work."""
    model = GMM.score_model(sde, prediction="eps")
    steps = None if sd.ode.is_adaptive(method) else 1
    out = sd.sample(model, (4, 2), "ode", steps, generator=gen(), method=method)
    assert torch.isfinite(out.x).all()
    if steps is not None:
        out = sd.sample(model, (4, 2), "ode", steps, generator=gen(), method=method, t_end=0.0,
                        denoise=False, grid="uniform")
        assert torch.isfinite(out.x).all()


def test_adaptive_ode_refuses_a_multi_point_grid_and_reports_once():
    gmm = sd.GaussianMixture(torch.tensor([[0.0, 0.0]]), torch.tensor([0.5]))
    model = gmm.score_model(sd.VPSDE())
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="only the ends"):
        sd.sample(model, (4, 2), "ode", timesteps=torch.tensor([1.0, 0.5, 1e-3]), generator=g,
                  method="dopri5")
    reports = []
    sd.sample(model, (4, 2), "ode", generator=g, method="dopri5", callback=reports.append)
    assert len(reports) == 1 and reports[0]["t"] == pytest.approx(1e-3)


def test_langevin_corrector_refuses_a_zero_score():
    sde = sd.VPSDE()
    model = sd.ScoreModel(lambda x, c: torch.zeros_like(x), sde, prediction="score")
    with pytest.raises(ValueError, match="score is zero"):
        sd.sample(model, (4, 2), "pc", 3, generator=torch.Generator().manual_seed(0))
