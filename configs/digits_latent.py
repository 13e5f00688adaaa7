"""Latent diffusion on 8×8 digits: DDPM (discrete VP, N = 1000) on the 4×4×2 latents of the
autoencoder of ``configs/digits_ae.py`` (scaled to unit variance by its measured statistics), an
eps-prediction U-Net at resolution 4 (two levels of 32 channels, attention at 2×2; 285k parameters)
with DDPM step-index time input, DDPM ε-loss. The shipped ``digits_latent`` model.

``latent.autoencoder`` is the autoencoder's training workdir (or checkpoint); train it first (see
models/README.md) or pass ``--config.latent.autoencoder=PATH``."""

from ml_collections import ConfigDict

from scoresde.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.data_range = (-1.0, 1.0)
    config.latent.autoencoder = "/tmp/digits_ae_work"
    config.latent.scale_factor = 0.0  # the autoencoder's 1/std of the training latents
    config.sde.name = "ddpm"
    config.model.prediction = "eps"
    config.model.time_input = "index"
    config.model.network = ConfigDict({
        "name": "unet", "in_channels": 2, "channels": 32, "channel_mult": (1, 1), "num_res_blocks": 1,
        "attn_resolutions": (2,), "dropout": 0.0, "resolution": 4, "embedding": "sinusoidal",
    })
    config.training.loss = "ddpm"
    config.training.steps = 10000
    config.training.batch_size = 128
    config.training.lr = 1e-3
    config.training.warmup = 200
    config.training.ema_decay = 0.999
    config.training.log_every = 250
    config.training.ckpt_every = 1000
    config.sampling.sampler = "ddim"
    config.sampling.steps = 50
    config.sampling.n = 64
    return config
