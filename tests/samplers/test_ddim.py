"""DDIM against the textbook: the update of Song, Meng & Ermon (2021), eq. 12, written here from
ᾱ alone, on the exact DDPM table, with the exact ("oracle") ε-network of a Gaussian mixture.

The library writes DDIM as the Euler step of the PF-ODE in (x̄, σ̄) with its coefficients in terms
of the noise share δ; none of that is reused here: the reference loop below only knows
``alphas_cumprod`` and calls the network with integer step indices, as DDIM's own code does.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as sd

F64 = torch.float64
N_TRAIN = 1000
BETAS = torch.linspace(1e-4, 0.02, N_TRAIN, dtype=F64)  # DDPM's linear schedule
# The textbook table: ᾱ_i = ∏_{j≤i} (1 − β_j), a cumulative product (the library keeps a cumsum of
# log1p(−β); the two agree to a few ulp, far below the 1e-10 tolerances used here).
ALPHAS_CUMPROD = torch.cumprod(1.0 - BETAS, 0)

GMM = sd.GaussianMixture(
    torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]]),
    torch.tensor([0.1, 0.15, 0.08]),
    torch.tensor([0.5, 0.3, 0.2]),
)
BATCH = 64

# Every comparison below is float64 on O(1) states. Both sides do the same ~O(steps) arithmetic in
# different orders; the largest amplification is the first x0 = (x − √(1−ᾱ)ε)/√ᾱ with
# √ᾱ_999 ≈ 6e-3, i.e. ~2e2 × 1e-16 per step. 1e-10 leaves four orders of magnitude of room while
# any real difference in the update (a wrong ᾱ index, an off-by-one in time) is ≥ 1e-4.
TOL = 1e-10


@pytest.fixture(scope="module")
def ddpm():
    sde = sd.VPSDE.from_betas(BETAS)
    return sde, GMM.score_model(sde, prediction="eps", time_input="index")


def x_T(seed: int = 0, batch: int = BATCH) -> torch.Tensor:
    return torch.randn(batch, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def textbook_ddim(net, x: torch.Tensor, indices: list[int], eta: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) over the descending DDPM indices, ending at ᾱ_prev = 1."""
    ab = ALPHAS_CUMPROD
    for k, i in enumerate(indices):
        a_t = ab[i]
        a_prev = ab[indices[k + 1]] if k + 1 < len(indices) else torch.tensor(1.0, dtype=F64)
        eps = net(x, torch.full((x.shape[0],), float(i), dtype=F64))
        x0 = (x - torch.sqrt(1.0 - a_t) * eps) / torch.sqrt(a_t)
        sigma = eta * torch.sqrt((1.0 - a_prev) / (1.0 - a_t)) * torch.sqrt(1.0 - a_t / a_prev)
        x = torch.sqrt(a_prev) * x0 + torch.sqrt(1.0 - a_prev - sigma**2) * eps
        if sigma > 0:  # zero at the last step (ᾱ_prev = 1), where DDIM adds no noise
            x = x + sigma * torch.randn(x.shape, generator=generator, dtype=F64)
    return x


INDEX_SETS = {
    # DDIM's "uniform" skip: range(0, 1000, 20) reversed -> 980, 960, ..., 0 (50 steps).
    "uniform50": list(range(0, N_TRAIN, 20))[::-1],
    # DDIM's "quadratic" skip (their code: (linspace(0, √(0.8 T), S)²).astype(int)).
    "quadratic": sorted({int(v) for v in torch.linspace(0, math.sqrt(0.8 * N_TRAIN), 30).pow(2)},
                        reverse=True),
    # Irregular, starting at the very last index (t = T) and with a gap at every scale.
    "irregular": [999, 990, 901, 650, 333, 120, 37, 8, 1, 0],
    "one_step_from_T": [999],
    "one_step_mid": [500],
}


@pytest.mark.parametrize("name", list(INDEX_SETS))
def test_ddim_eta0_equals_textbook_loop(ddpm, name):
    _sde, model = ddpm
    indices = INDEX_SETS[name]
    ts = sd.grids.from_indices(torch.tensor(indices), N_TRAIN)
    assert len(ts) == len(indices) + 1 and ts[-1] == 0
    xT = x_T()
    out = sd.sample(model, (BATCH, 2), "ddim", timesteps=ts, x_T=xT)
    want = textbook_ddim(model.net, xT, indices)
    assert out.nfe == len(indices)
    assert out.x.dtype == F64
    torch.testing.assert_close(out.x, want, rtol=0, atol=TOL)
    # Not vacuous: the result moved far from the start (the map is not near the identity).
    assert (out.x - xT).abs().max() > 0.1


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("name", ["uniform50", "irregular"])
def test_ddim_eta_equals_textbook_loop_with_same_noise(ddpm, eta, name):
    """DDIM-η, eq. 12 with σ_t(η) of eq. 16, drawing z from the same generator in the same order."""
    _sde, model = ddpm
    indices = INDEX_SETS[name]
    ts = sd.grids.from_indices(torch.tensor(indices), N_TRAIN)
    xT = x_T(1)
    out = sd.sample(model, (BATCH, 2), "ddim", timesteps=ts, x_T=xT, eta=eta,
                    generator=torch.Generator().manual_seed(7))
    want = textbook_ddim(model.net, xT, indices, eta=eta, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out.x, want, rtol=0, atol=TOL)
    # The noise matters: the η > 0 result differs from η = 0 by O(σ_t) ≫ TOL.
    det = textbook_ddim(model.net, xT, indices)
    assert (out.x - det).abs().max() > 1e-2


SDES = {
    "ddpm": lambda: sd.VPSDE.from_betas(BETAS),
    "vp": sd.VPSDE,
    "subvp": sd.SubVPSDE,
    "ve": sd.VESDE,
    "cosine": sd.VPSDE.cosine,
}


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ddim_eta1_is_ancestral_with_posterior_variance(sde_name):
    """η = 1 is DDPM ancestral sampling with β̃: same generator seed -> identical samples (bitwise)."""
    sde = SDES[sde_name]()
    model = GMM.score_model(sde, prediction="eps")
    for steps in (1, 2, 17):
        a = sd.sample(model, (32, 2), "ddim", steps, eta=1.0, dtype=F64,
                      generator=torch.Generator().manual_seed(3))
        b = sd.sample(model, (32, 2), "ancestral", steps, variance="posterior", dtype=F64,
                      generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.x, b.x), (sde_name, steps)
        assert a.nfe == b.nfe == steps
    # ... and it is not the β-variance variant (which draws larger noise) for more than one step.
    c = sd.sample(model, (32, 2), "ancestral", 17, variance="beta", dtype=F64,
                  generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(a.x, c.x)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ddim_eta0_is_deterministic_given_x_T(sde_name):
    sde = SDES[sde_name]()
    model = GMM.score_model(sde, prediction="eps")
    xT = sde.prior_std * x_T(2, 16)
    a = sd.sample(model, (16, 2), "ddim", 10, x_T=xT)  # no generator needed
    b = sd.sample(model, (16, 2), "ddim", 10, x_T=xT.clone(), generator=torch.Generator().manual_seed(1))
    c = sd.sample(model, (16, 2), "ddim", 10, x_T=xT.clone(), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.x, b.x) and torch.equal(a.x, c.x)
    assert torch.equal(xT, sde.prior_std * x_T(2, 16)), "x_T must not be modified in place"


def _sde_grid(sde_name: str, sde) -> torch.Tensor:
    if sde_name == "ddpm":
        return sd.grids.from_indices(torch.tensor(INDEX_SETS["irregular"]), N_TRAIN)
    return sd.grids.make_grid("quadratic", sde, 12)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ode_euler_equals_ddim_eta0(sde_name):
    """DDIM (η = 0) is the Euler method on dx̄/dσ̄ = ε: same grid, same x_T -> same samples."""
    sde = SDES[sde_name]()
    model = GMM.score_model(sde, prediction="eps", time_input="index" if sde_name == "ddpm" else "continuous")
    ts = _sde_grid(sde_name, sde)
    xT = sde.prior_std * x_T(4)
    a = sd.sample(model, xT.shape, "ddim", timesteps=ts, x_T=xT, denoise=False)
    b = sd.sample(model, xT.shape, "ode", timesteps=ts, x_T=xT, denoise=False, method="euler")
    # Euler in σ̄ and DDIM's (alpha_s·x0 + sigma_s·eps) are algebraically equal; the ode path
    # also round-trips t -> σ̄ -> t, which costs a few ulp of t (see TOL above).
    torch.testing.assert_close(b.x, a.x, rtol=0, atol=TOL * sde.prior_std)
    assert a.nfe == b.nfe == len(ts) - 1
    torch.testing.assert_close(b.timesteps, a.timesteps, rtol=0, atol=0)


def test_ddim_on_the_uniform_grid_matches_the_textbook_on_its_indices(ddpm):
    """``steps=50`` on the uniform grid of the DDPM table visits t = 1, 0.98, …, 0.02, 0: indices
    999, 979, …, 19."""
    _sde, model = ddpm
    xT = x_T(5)
    out = sd.sample(model, (BATCH, 2), "ddim", 50, grid="uniform", x_T=xT)
    indices = list(range(999, 0, -20))
    assert len(indices) == 50
    torch.testing.assert_close(out.timesteps[:-1] * N_TRAIN - 1, torch.tensor(indices, dtype=F64),
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(out.x, textbook_ddim(model.net, xT, indices), rtol=0, atol=TOL)


# --- diffusers' schedulers on the same table ------------------------------------------------------

def _diffusers_run(scheduler, model, x_T, **step_kwargs):
    x = x_T.clone()
    for t in scheduler.timesteps:
        eps = model.net(x, torch.full((len(x),), float(t), dtype=F64))
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 10, 50])
def test_ddim_equals_diffusers_ddim_scheduler(ddpm, spacing, steps):
    """η = 0 on diffusers' own timesteps (our ``leading``/``trailing`` grids) with ``set_alpha_to_one``
    (the last step goes to ᾱ = 1, our t = 0): diffusers keeps ᾱ in float32 (relative error
    6e-8), which the first x0 = (x − √(1−ᾱ)ε)/√ᾱ with √ᾱ ≈ 6e-3 amplifies to ~1e-5 on O(1)
    states; measured ≤ 2e-5, bar 1e-4 (an index off by one moves the result by > 1e-3)."""
    diffusers = pytest.importorskip("diffusers")
    _sde, model = ddpm
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=N_TRAIN, trained_betas=BETAS.numpy(),
                                        clip_sample=False, set_alpha_to_one=True,
                                        timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    x_T = torch.randn(BATCH, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    theirs = _diffusers_run(scheduler, model, x_T)
    ours = sd.sample(model, (BATCH, 2), "ddim", steps, grid=spacing, x_T=x_T, dtype=F64)
    torch.testing.assert_close(ours.x, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("steps", [10, 50])
def test_ancestral_equals_diffusers_ddpm_scheduler(ddpm, steps):
    """DDPM ancestral sampling (β̃, diffusers' ``fixed_small``) on diffusers' trailing timesteps
    from the same start noise and the same per-step draws (diffusers draws one ``randn`` of the
    state's shape from the generator at every step but the last, as we do). diffusers' float32
    ᾱ, amplified as for DDIM above: bar 1e-4."""
    diffusers = pytest.importorskip("diffusers")
    _sde, model = ddpm
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=N_TRAIN, trained_betas=BETAS.numpy(),
                                        clip_sample=False, variance_type="fixed_small",
                                        timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    x_T = torch.randn(BATCH, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    theirs = _diffusers_run(scheduler, model, x_T, generator=torch.Generator().manual_seed(1))
    ours = sd.sample(model, (BATCH, 2), "ancestral", steps, grid="trailing", x_T=x_T, dtype=F64,
                     variance="posterior", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours.x, theirs, rtol=0, atol=1e-4)
