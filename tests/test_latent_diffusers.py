"""Latent diffusion on diffusers parts, end to end: a Stable-Diffusion-like pipeline folder (a tiny random
``UNet2DConditionModel``, ``AutoencoderKL`` and DDIM scheduler) loaded as
``LatentDiffusion(load_diffusers(folder), load_autoencoder_kl(folder))`` and sampled with classifier-free
guidance equals StableDiffusionPipeline's loop written out — denoise the latents with
``uncond + γ·(text − uncond)``, then ``vae.decode(latents / scaling_factor)`` — and ``encode`` goes
through the autoencoder's posterior mode.

(StableDiffusionPipeline itself needs transformers' CLIP for its text encoder, which is not installed;
the loop below is the pipeline's ``__call__`` with the prompt embeddings given, the same steps in the
same order.) Precision as in tests/test_interop.py: diffusers holds the schedule in float32, we in
float64, so the latents agree to ``γ·REL·(1 + max|x|)``; the decoder is the same float32 network on
latents that differ by that much, so the images agree to a bar of the same order times the decoder's
gain (measured 1.4e-6 absolute on images of size ~1; bar 1e-4). Without guidance the images
differ by > 100× the bar.
"""

from __future__ import annotations

import pytest
import torch
from test_interop import guided_sd_loop, save_sd_folder

import scoresde as sd
from scoresde.interop import scheduler_times

diffusers = pytest.importorskip("diffusers")

REL = 1.5e-5
IMAGE_BAR = 1e-4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """tests/test_interop.py's tiny SD folder at 4×4 latents, plus a tiny AutoencoderKL (3×8×8 ↔ 4×4×4,
    SD's scaling factor 0.18215) in ``vae/``."""
    path = save_sd_folder(tmp_path_factory.mktemp("sd_pipeline"), sample_size=4)
    torch.manual_seed(0)
    diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                            layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=8,
                            scaling_factor=0.18215).save_pretrained(path / "vae", safe_serialization=True)
    return path


def test_guided_latent_model_equals_the_stable_diffusion_loop(folder):
    ldm = sd.LatentDiffusion(sd.load_diffusers(folder), sd.load_autoencoder_kl(folder))
    unet, vae = ldm.model.net.unet, ldm.autoencoder.vae
    assert ldm.scale_factor == 0.18215 and ldm.shift_factor == 0.0
    assert ldm.latent_shape((3, 8, 8)) == (4, 4, 4)
    batch, steps, gamma = 2, 6, 7.5
    g = torch.Generator().manual_seed(5)
    text = torch.randn(batch, 5, 16, generator=g)
    uncond = torch.randn(1, 5, 16, generator=g).expand(batch, 5, 16)
    latents = torch.randn(batch, 4, 4, 4, generator=g)

    scheduler = diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    x = guided_sd_loop(unet, scheduler, steps, latents, text, uncond, gamma)
    with torch.no_grad():
        image = vae.decode(x / vae.config.scaling_factor).sample

    guided = sd.ClassifierFreeGuidance(ldm, gamma - 1, null_cond=uncond)
    ts = scheduler_times(scheduler, steps)
    out = sd.sample(guided, (batch, 4, 4, 4), "ddim", timesteps=ts, x_T=latents, cond=text)
    assert out.nfe == steps and out.x.shape == (batch, 3, 8, 8)
    assert (out.latents - x).abs().max() < gamma * REL * (1 + x.abs().max())
    assert (out.x - image).abs().max() < IMAGE_BAR
    unguided = sd.sample(ldm, (batch, 4, 4, 4), "ddim", timesteps=ts, x_T=latents, cond=text)
    assert (unguided.x - image).abs().max() > 100 * IMAGE_BAR


def test_encode_starts_from_the_posterior_mode(folder):
    """``encode`` of an image starts its forward run at ``scale·mode(q(z|x))`` (diffusers' img2img
    encodes with a sample of the posterior instead; the mode is the deterministic choice) and the
    DDIM round trip through the latent model returns an image of the input's shape."""
    ldm = sd.LatentDiffusion(sd.load_diffusers(folder), sd.load_autoencoder_kl(folder))
    vae = ldm.autoencoder.vae
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cond = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))
    enc = sd.encode(ldm, image, "ddim", 4, cond=cond)
    with torch.no_grad():
        mode = vae.encode(image).latent_dist.mode() * vae.config.scaling_factor
    assert torch.allclose(enc.latents, mode, atol=1e-6)
    back = sd.sample(ldm, tuple(enc.x.shape), "ddim", timesteps=enc.timesteps.flip(0), x_T=enc.x, cond=cond,
                     denoise=False)
    assert back.x.shape == image.shape and torch.isfinite(back.x).all()
