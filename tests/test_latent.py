"""Latent diffusion against an exact oracle: a linear autoencoder over a Gaussian-mixture latent.

Raw latents ``u ~ RAW`` (a 2-D mixture) decode to data ``x = W u + b`` in D = 6 (``W`` of full
column rank and not orthonormal, so the encoder's pseudo-inverse ``W⁺ = (WᵀW)⁻¹Wᵀ`` differs from
``Wᵀ``). The scaled latents ``z = to_latent(x) = s·(W⁺(x − b) − h) = s·(u − h)`` are again a
mixture, ``LATENT`` (means ``s·(μ − h)``, stds ``s·σ``), whose diffused score is exact; a
:class:`LatentDiffusion` of that exact score model and the autoencoder is a perfect latent
diffusion model. So its decoded samples are exact draws of the data distribution (checked by MMD²
against the sampling-noise floor of two exact sets, as tests/test_conditional.py does, with a
wrong scale factor as the negative check), lie on the affine subspace ``{W u + b}``, and its
likelihood is the exact latent density.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from oracles import LABELLED_MIX

import scoresde as sd
from scoresde.latent import LatentDiffusion, LinearAutoencoder, find_latent_model, load_autoencoder_kl
from scoresde.metrics import mmd2
from scoresde.model import CountingModel

F64 = torch.float64
SCALE, SHIFT = 0.4, 0.5  # z = SCALE·(u − SHIFT): both away from the identity's 1 and 0
MEANS = torch.tensor([[-3.0, -1.0], [2.5, 2.0], [0.5, -3.0]], dtype=F64)
STDS = torch.tensor([[0.8, 0.7], [0.9, 1.0], [0.75, 0.8]], dtype=F64)
WEIGHTS = torch.tensor([0.45, 0.3, 0.25], dtype=F64)
RAW = sd.GaussianMixture(MEANS, STDS, WEIGHTS)
# The scaled latent: std 0.28–0.4 and mode distances >= 1.5, where DDIM reaches the MMD floor by 100 steps.
LATENT = sd.GaussianMixture(SCALE * (MEANS - SHIFT), SCALE * STDS, WEIGHTS)
W = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)  # WᵀW = [[9.3, .35], [.35, 3.3]]
B = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=F64)
N = 500  # samples per MMD set
T_END = 1e-3  # encode's default data end


def autoencoder(**kw) -> LinearAutoencoder:
    return LinearAutoencoder(W, B, scale_factor=kw.pop("scale_factor", SCALE), shift_factor=SHIFT, **kw)


def ldm(sde: sd.SDE | None = None, **kw) -> LatentDiffusion:
    return LatentDiffusion(LATENT.score_model(sde or sd.VPSDE(), prediction="eps"), autoencoder(), **kw)


def data(n: int, g: torch.Generator, raw: sd.GaussianMixture = RAW, w: torch.Tensor = W,
         b: torch.Tensor = B) -> torch.Tensor:
    """Exact draws of the data distribution: ``W u + b``, ``u ~ raw``."""
    return raw.sample(n, g, F64) @ w.T + b


def off_subspace(x: torch.Tensor) -> torch.Tensor:
    """Per sample, the norm of the part of ``x − b`` outside the column space of W."""
    q, _ = torch.linalg.qr(W)
    r = x - B
    return (r - (r @ q) @ q.T).norm(dim=1)


@pytest.fixture(scope="module")
def floor() -> float:
    """mean + 4 sd of MMD² between 32 pairs of exact data sets of N draws: the null distribution of a
    sampler that draws exactly. Its right tail is long (the sets' component counts fluctuate, and the
    widest kernels see mostly those): of these 32 one lies 5 sd above the others, so the floor is
    0.015 where most null values stay below 0.004."""
    g = torch.Generator().manual_seed(7)
    vals = torch.tensor([mmd2(data(N, g), data(N, g)) for _ in range(32)])
    return float(vals.mean() + 4 * vals.std())


# --- the exact linear autoencoder ----------------------------------------------------------------


def test_scaled_latents_of_the_data_are_the_scaled_mixture():
    """``to_latent(W u + b) = s·(u − h)`` to float64 round-off (so LATENT is the exact law of z),
    ``to_data(to_latent(x)) = x`` on the subspace, and off it the projection. With ``Wᵀ`` in place
    of the pseudo-inverse the latents would be wrong by O(1) (W is not orthonormal)."""
    model = ldm()
    u = RAW.sample(64, torch.Generator().manual_seed(2), F64)
    x = u @ W.T + B
    torch.testing.assert_close(model.to_latent(x), SCALE * (u - SHIFT), rtol=0, atol=1e-12)
    torch.testing.assert_close(model.to_data(model.to_latent(x)), x, rtol=0, atol=1e-12)
    assert ((x - B) @ W - u).abs().max() > 1.0  # Wᵀ(x − b) is not u: the pseudo-inverse matters
    assert model.latent_shape((6,)) == (2,) and model.to_latent(x).shape == (64, 2)
    # Off the subspace, decode(encode(x)) is the orthogonal projection onto it.
    y = x + torch.randn(64, 6, generator=torch.Generator().manual_seed(3), dtype=F64)
    proj = model.to_data(model.to_latent(y))
    assert off_subspace(proj).max() < 1e-12 and (proj - y).norm(dim=1).min() > 0.1
    torch.testing.assert_close(((y - proj) @ W), torch.zeros(64, 2, dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 100), ("dpm_solver", 20)])
def test_sample_decodes_to_the_exact_data_distribution(sampler, steps, floor):
    """Decoded samples of the perfect latent model are exact data draws: MMD² to fresh exact draws
    under the floor; they lie on the subspace (residual at float64 round-off, where a point off it
    has residual O(1)); ``.latents`` are the latent samples that ``.x`` decodes. A wrong scale factor
    (0.6 for 0.4) shrinks the decoded distribution and lands far above the floor (measured 12 floors;
    0.5 gives 4, 0.45 still 0.6)."""
    g = torch.Generator().manual_seed(4)
    out = sd.sample(ldm(), (N, 2), sampler, steps, dtype=F64, generator=g)
    assert out.x.shape == (N, 6) and out.latents.shape == (N, 2) and out.nfe == steps
    assert torch.equal(out.x, ldm().to_data(out.latents))
    exact = data(N, torch.Generator().manual_seed(11))
    assert mmd2(out.x, exact) < floor
    assert off_subspace(out.x).max() < 1e-12
    assert off_subspace(exact + 0.3 * torch.randn(N, 6, generator=g, dtype=F64)).median() > 0.1
    wrong = sd.sample(ldm(scale_factor=0.6), (N, 2), sampler, steps, dtype=F64,
                      generator=torch.Generator().manual_seed(4))
    assert torch.equal(wrong.latents, out.latents)  # same latent model and noise: only decoding differs
    assert mmd2(wrong.x, exact) > 5 * floor


def test_encode_then_sample_round_trips_through_ddim():
    """``encode`` maps data through ``to_latent`` and runs DDIM forwards; ``sample(x_T=...)`` runs it
    back and decodes. The latent round trip is bit for bit the inner model's round trip of
    ``to_latent(x)`` (the wrapper adds only the maps), the affine decoder maps its error to data with
    gain at most ``‖W‖₂/s``, and the error is DDIM's first-order one (twice the one-way error, see
    tests/test_encoding.py): doubling the steps halves it, log2 of the ratio within DESIGN's ±0.15 of
    1 (measured 0.98 for 100 → 200 steps, errors 0.036 → 0.018 in the latents)."""
    model, g = ldm(), torch.Generator().manual_seed(5)
    x = data(16, g)
    z0 = model.to_latent(x)
    gain = float(torch.linalg.matrix_norm(W, ord=2)) / SCALE
    errors = {}
    for steps in (100, 200):
        enc = sd.encode(model, x, "ddim", steps)
        assert torch.equal(enc.latents, z0) and enc.x.shape == (16, 2) and enc.nfe == steps
        back = sd.sample(model, (16, 2), "ddim", steps, x_T=enc.x, t_end=T_END, denoise=False, dtype=F64)
        latent_err, data_err = (back.latents - z0).norm(dim=1), (back.x - x).norm(dim=1)
        assert (data_err <= gain * latent_err + 1e-12).all()
        errors[steps] = (float(latent_err.max()), float(data_err.max()))
    for i in (0, 1):
        assert abs(math.log2(errors[100][i] / errors[200][i]) - 1.0) < 0.15, errors
    inner = model.model
    ref_enc = sd.encode(inner, z0, "ddim", 200)
    ref = sd.sample(inner, (16, 2), "ddim", 200, x_T=ref_enc.x, t_end=T_END, denoise=False, dtype=F64)
    assert torch.equal(enc.x, ref_enc.x) and torch.equal(back.latents, ref.x)


def test_log_likelihood_is_the_exact_latent_density():
    """``log_likelihood(ldm, x)`` is ``log p_eps(z)`` of the latent mixture at ``z = to_latent(x)``,
    labelled ``space="latent"``: with the exact p_T as the prior the solver's error is the only one
    (rtol = atol = 1e-7: within 1e-3 nats per dimension, as the conditional test). It is the inner
    model's likelihood of z bit for bit, which reports ``space="data"``. The density at the unscaled
    latent ``z/s + h`` differs from it by far more than the tolerance (a missing scale is caught)."""
    sde, model = sd.VPSDE(), ldm()
    x = data(8, torch.Generator().manual_seed(6))
    z = model.to_latent(x)
    prior = lambda zt: LATENT.log_prob_at(sde, zt, sde.T)  # noqa: E731
    ll = sd.log_likelihood(model, x, rtol=1e-7, atol=1e-7, prior_logp=prior)
    exact = LATENT.log_prob_at(sde, z, 1e-5)
    assert ll.space == "latent"
    assert torch.allclose(ll.logp, exact, atol=2e-3), ll.logp - exact
    pixel = sd.log_likelihood(model.model, z, rtol=1e-7, atol=1e-7, prior_logp=prior)
    assert pixel.space == "data" and torch.equal(pixel.logp, ll.logp)
    assert (LATENT.log_prob_at(sde, z / SCALE + SHIFT, 1e-5) - exact).abs().min() > 0.5


def test_latent_density_and_data_density_differ_by_the_log_determinant():
    """An invertible square ``W`` (d = D = 2): the data density is that of a mixture of full-covariance
    Gaussians ``N(W μ_k + b, W Σ_k Wᵀ)`` (computed here independently of the library), and by the
    change of variables ``log p_x(x) = log p_z(z) + log|det ∂z/∂x| = log p_z(z) + d·log s − log|det W|``.
    The PF-ODE latent density plus that log-determinant equals the data density within the
    solver tolerance (2e-3 at rtol = atol = 1e-7; p_eps and p_0 differ by ~1e-5 here), while the
    log-determinant itself is −2.55 nats, so the latent density alone is not the data density."""
    sde = sd.VPSDE()
    w2 = torch.tensor([[1.5, 0.6], [-0.4, 1.2]], dtype=F64)
    b2 = torch.tensor([0.3, -0.7], dtype=F64)
    model = LatentDiffusion(LATENT.score_model(sde, prediction="eps"),
                            LinearAutoencoder(w2, b2, scale_factor=SCALE, shift_factor=SHIFT))
    x = data(8, torch.Generator().manual_seed(8), w=w2, b=b2)
    ll = sd.log_likelihood(model, x, rtol=1e-7, atol=1e-7,
                           prior_logp=lambda zt: LATENT.log_prob_at(sde, zt, sde.T))
    comps = torch.distributions.MultivariateNormal(MEANS @ w2.T + b2,
                                                   w2 @ torch.diag_embed(STDS**2) @ w2.T)
    data_logp = torch.logsumexp(comps.log_prob(x[:, None, :]) + WEIGHTS.log(), dim=1)
    log_det = 2 * math.log(SCALE) - torch.linalg.slogdet(w2).logabsdet
    assert abs(float(log_det)) > 1.0
    assert torch.allclose(ll.logp + log_det, data_logp, atol=2e-3), ll.logp + log_det - data_logp
    assert (ll.logp - data_logp).abs().min() > 1.0


def test_variational_bound_of_a_latent_model_is_the_latent_bound():
    """The DDPM bound of a latent model is the inner model's bound on ``z = to_latent(x)`` (same draws:
    bit for bit), labelled ``space="latent"``; its bits/dim and the discretized decoder are refused."""
    sde = sd.VPSDE.from_betas(torch.linspace(1e-3, 0.2, 20, dtype=F64))
    model = ldm(sde)
    x = data(6, torch.Generator().manual_seed(9))
    bound = sd.variational_bound(model, x, generator=torch.Generator().manual_seed(1))
    ref = sd.variational_bound(model.model, model.to_latent(x), generator=torch.Generator().manual_seed(1))
    assert bound.space == "latent" and ref.space == "data" and bound.dim == 2
    assert torch.equal(bound.total, ref.total) and bound.nfe == ref.nfe == 20
    with pytest.raises(ValueError, match=r"latent model's bound.*use \.total"):
        _ = bound.bits_per_dim
    with pytest.raises(ValueError, match=r"latent model's bound.*use \.total"):
        bound.terms_bits_per_dim()
    assert torch.isfinite(ref.bits_per_dim).all()
    with pytest.raises(ValueError, match=r"continuous latents z = to_latent.*decoder='gaussian'"):
        sd.variational_bound(model, torch.zeros(2, 6, dtype=torch.long), decoder="discretized")


def test_bits_per_dim_refuses_a_latent_model():
    model = ldm()
    x = data(4, torch.Generator().manual_seed(10))
    for m in (model, sd.ClassifierFreeGuidance(model, 1.0)):
        with pytest.raises(ValueError, match=r"latent model.*use sd.log_likelihood\(model, x\)"):
            sd.bits_per_dim(m, x)
    with pytest.raises(ValueError, match="latent model"):
        sd.bits_per_dim(model, torch.zeros(4, 6, dtype=torch.long), generator=torch.Generator())


# --- NFE and wrappers ----------------------------------------------------------------------------


class CountingAutoencoder:
    """The oracle's autoencoder, counting its encoder and decoder calls."""

    def __init__(self, inner: LinearAutoencoder):
        self.inner, self.encodes, self.decodes = inner, 0, 0
        self.scale_factor, self.shift_factor = inner.scale_factor, inner.shift_factor
        self.latent_shape = inner.latent_shape

    def encode(self, x):
        self.encodes += 1
        return self.inner.encode(x)

    def decode(self, z):
        self.decodes += 1
        return self.inner.decode(z)


def test_nfe_counts_the_latent_model_calls_not_the_autoencoder():
    """NFE is the latent model's ``predict`` calls: the same as the inner model's run; ``sample``
    decodes once, ``encode`` and ``log_likelihood`` encode once, none of which is an NFE."""
    inner = LATENT.score_model(sd.VPSDE(), prediction="eps")
    ae = CountingAutoencoder(autoencoder())
    model = LatentDiffusion(inner, ae)
    out = sd.sample(model, (8, 2), "dpm_solver", 10, dtype=F64, generator=torch.Generator().manual_seed(0))
    ref = sd.sample(inner, (8, 2), "dpm_solver", 10, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert out.nfe == ref.nfe == 10 and torch.equal(out.latents, ref.x) and ref.latents is None
    assert (ae.encodes, ae.decodes) == (0, 1)
    enc = sd.encode(model, out.x, "ddim", 7)
    assert enc.nfe == 7 and (ae.encodes, ae.decodes) == (1, 1)
    ll = sd.log_likelihood(model, out.x, method="rk4", steps=5)
    assert (ll.nfe == 20).all() and (ae.encodes, ae.decodes) == (2, 1)
    counting = CountingModel(model)
    counting.predict(out.latents, 0.5)
    assert counting.nfe == 1 and find_latent_model(counting) is model


def test_guidance_composes_with_the_latent_model_in_either_order():
    """``ClassifierFreeGuidance(LatentDiffusion(m))`` and ``LatentDiffusion(ClassifierFreeGuidance(m))``
    sample the same latents as guiding ``m`` in latent space, and both decode them (neither order
    skips decoding); encode and the likelihood map data to latents through either."""
    m = LABELLED_MIX.score_model(sd.VPSDE(), prediction="eps", conditional=True)
    ae = autoencoder()
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    outer = sd.ClassifierFreeGuidance(LatentDiffusion(m, ae), 1.5)
    inner = LatentDiffusion(sd.ClassifierFreeGuidance(m, 1.5), ae)
    plain = sd.ClassifierFreeGuidance(m, 1.5)
    runs = [sd.sample(mod, (6, 2), "ddim", 10, cond=labels, dtype=F64,
                      generator=torch.Generator().manual_seed(1)) for mod in (outer, inner, plain)]
    assert torch.equal(runs[0].latents, runs[2].x) and torch.equal(runs[1].latents, runs[2].x)
    assert torch.equal(runs[0].x, runs[1].x) and runs[0].x.shape == (6, 6)
    torch.testing.assert_close(runs[0].x, ae.decode(runs[2].x / SCALE + SHIFT), rtol=0, atol=0)
    for mod in (outer, inner):
        z = sd.encode(mod, runs[0].x, "ddim", 10, cond=labels)
        assert torch.equal(z.latents, SCALE * (ae.encode(runs[0].x) - SHIFT))
        ll = sd.log_likelihood(mod, runs[0].x, cond=labels, method="euler", steps=4)
        assert ll.space == "latent"


# --- diffusers' AutoencoderKL --------------------------------------------------------------------

VAE_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                  latent_channels=4, norm_num_groups=4, sample_size=16)


def tiny_vae(**config):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)  # diffusers initialises from the global generator
    return diffusers.AutoencoderKL(**{**VAE_CONFIG, **config}).eval()


def test_diffusers_autoencoder_matches_autoencoder_kl(tmp_path):
    """A tiny random ``AutoencoderKL`` saved to a folder and loaded by :func:`load_autoencoder_kl`:
    encode is ``latent_dist.mode()``, decode is ``vae.decode(z).sample``, the scale and shift are the
    config's; ``to_latent`` is diffusers' ``(mode − shift)·scale``; a LatentDiffusion over it samples
    decoded images of the data shape. Same weights, same operations: equal to float32 round-off."""
    vae = tiny_vae(scaling_factor=0.5, shift_factor=0.1)
    vae.save_pretrained(tmp_path / "vae")
    ae = load_autoencoder_kl(tmp_path / "vae")
    assert (ae.scale_factor, ae.shift_factor) == (0.5, 0.1)
    assert ae.latent_shape((3, 16, 16)) == (4, 8, 8)
    x = 2 * torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) - 1
    with torch.no_grad():
        mode = vae.encode(x).latent_dist.mode()
        torch.testing.assert_close(ae.encode(x), mode, rtol=0, atol=1e-6)
        torch.testing.assert_close(ae.decode(mode), vae.decode(mode).sample, rtol=0, atol=1e-6)
        latent_mix = sd.GaussianMixture(torch.zeros(1, 256, dtype=F64), torch.ones(1, dtype=F64))
        model = LatentDiffusion(latent_mix.score_model(sd.VPSDE(), prediction="eps"), ae)
        torch.testing.assert_close(model.to_latent(x), (mode - 0.1) * 0.5, rtol=0, atol=1e-6)
        out = sd.sample(model, (2, *model.latent_shape((3, 16, 16))), "ddim", 5,
                        generator=torch.Generator().manual_seed(1))
        assert out.x.shape == (2, 3, 16, 16) and out.latents.shape == (2, 4, 8, 8)
        torch.testing.assert_close(out.x, vae.decode(out.latents / 0.5 + 0.1).sample, rtol=0, atol=1e-6)
        assert (out.x - vae.decode(out.latents).sample).abs().max() > 1e-4  # the scale/shift matter
    # A pipeline folder: the vae/ subfolder is found.
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DiffusionPipeline"}))
    assert load_autoencoder_kl(tmp_path).latent_shape((3, 8, 8)) == (4, 4, 4)


def test_diffusers_autoencoder_errors(tmp_path):
    from scoresde.latent import DiffusersAutoencoder

    ae = DiffusersAutoencoder(tiny_vae())
    assert (ae.scale_factor, ae.shift_factor) == (0.18215, 0.0)  # diffusers' default, no shift
    with pytest.raises(ValueError, match=r"\(3, H, W\) with H and W multiples of 2, got \(3, 15, 16\)"):
        ae.latent_shape((3, 15, 16))
    with pytest.raises(ValueError, match=r"\(3, H, W\).*got \(1, 16, 16\)"):
        ae.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"decodes latents \(batch, 4, h, w\), got \(1, 3, 8, 8\)"):
        ae.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="per-channel latents_mean"):
        DiffusersAutoencoder(tiny_vae(latents_mean=(0.0,) * 4, latents_std=(1.0,) * 4))
    with pytest.raises(TypeError, match="diffusers AutoencoderKL"):
        DiffusersAutoencoder(torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="no AutoencoderKL folder"):
        load_autoencoder_kl(tmp_path)


# --- bad input -----------------------------------------------------------------------------------


def test_bad_scale_shift_and_non_autoencoders_are_clear_errors():
    inner = LATENT.score_model(sd.VPSDE(), prediction="eps")
    for bad in (0.0, -0.4, math.nan, math.inf, True, "0.4"):
        with pytest.raises(ValueError, match="scale_factor must be"):
            LatentDiffusion(inner, autoencoder(), scale_factor=bad)
        with pytest.raises(ValueError, match="scale_factor must be"):
            autoencoder(scale_factor=bad)
    for bad in (math.nan, -math.inf):
        with pytest.raises(ValueError, match="shift_factor must be a finite real number"):
            LatentDiffusion(inner, autoencoder(), shift_factor=bad)
    with pytest.raises(TypeError, match=r"Autoencoder protocol .* object lacks encode, decode, latent_shape"):
        LatentDiffusion(inner, object())
    with pytest.raises(TypeError, match="DiffusionModel protocol"):
        LatentDiffusion(object(), autoencoder())
    with pytest.raises(ValueError, match="already a latent model"):
        LatentDiffusion(sd.ClassifierFreeGuidance(ldm(), 1.0), autoencoder())
    with pytest.raises(ValueError, match="full column rank 2"):
        LinearAutoencoder(torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(D, d\) matrix with d <= D"):
        LinearAutoencoder(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        LinearAutoencoder(W, torch.zeros(5))


class BadAutoencoder:
    """An autoencoder whose encode or decode disagrees with its own latent_shape."""

    scale_factor, shift_factor = 1.0, 0.0

    def __init__(self, wrong: str):
        self.wrong = wrong

    def latent_shape(self, data_shape):
        return (2,)

    def encode(self, x):
        return x[:, :3] if self.wrong == "encode" else x[:, :2]

    def decode(self, z):
        return torch.cat([z, z, z], 1) if self.wrong == "decode" else z


def test_shape_mismatches_are_clear_errors():
    """Latents of the wrong shape for the autoencoder, data of the wrong shape, a latent model of
    another dimension than the autoencoder's latents, and an autoencoder inconsistent with its own
    ``latent_shape``: each a clear error naming the shapes."""
    g = torch.Generator().manual_seed(0)
    x = data(4, g)
    with pytest.raises(ValueError, match=r"decodes raw latents of shape \(batch, 2\), got \(4, 3\)"):
        ldm().to_data(torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"encodes data of shape \(6,\), got \(5,\)"):
        sd.encode(ldm(), torch.zeros(4, 5, dtype=F64), "ddim", 5)
    with pytest.raises(ValueError, match=r"encodes data of shape \(6,\), got \(5,\)"):
        sd.log_likelihood(ldm(), torch.zeros(4, 5, dtype=F64))
    three = sd.GaussianMixture(torch.zeros(1, 3, dtype=F64), torch.ones(1, dtype=F64))
    wrong_dim = LatentDiffusion(three.score_model(sd.VPSDE(), prediction="eps"), autoencoder())
    with pytest.raises(ValueError, match=r"decodes raw latents of shape \(batch, 2\), got \(4, 3\)"):
        sd.sample(wrong_dim, (4, 3), "ddim", 3, dtype=F64, generator=g)
    with pytest.raises(ValueError, match=r"3 elements per sample, got \(4, 2\)"):
        sd.encode(wrong_dim, x, "ddim", 3)
    inner = LATENT.score_model(sd.VPSDE(), prediction="eps")
    with pytest.raises(ValueError, match=r"encoded data \(4, 6\) to \(4, 3\), but its latent_shape says"):
        LatentDiffusion(inner, BadAutoencoder("encode")).to_latent(x)
    bad_decode = LatentDiffusion(inner, BadAutoencoder("decode"))
    bad_decode.autoencoder.latent_shape = lambda shape: tuple(shape)  # decode (2,) -> (6,) -> latent (6,)
    with pytest.raises(ValueError, match=r"latents of shape \(2,\) decoded to data of shape \(6,\), "
                       r"whose latent shape is \(6,\)"):
        sd.sample(bad_decode, (4, 2), "ddim", 3, dtype=F64, generator=g)
    with pytest.raises(ValueError, match="x must be finite"):
        sd.encode(ldm(), torch.full((2, 6), math.nan, dtype=F64), "ddim", 3)
