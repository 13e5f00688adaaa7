"""The convolutional KL-autoencoder of the latent digits model: 8×8×1 digits ↔ 4×4×2 latents (f = 2).

Train with ``scoresde.autoencoding.train_autoencoder(get_config(), workdir)``; the latent model
``configs/digits_latent.py`` names the workdir (see models/README.md)."""

from ml_collections import ConfigDict

from scoresde.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.data_range = (-1.0, 1.0)
    config.autoencoder.network = ConfigDict({"in_channels": 1, "latent_channels": 2, "channels": 16,
                                             "channel_mult": (1, 2), "num_res_blocks": 1})
    config.autoencoder.kl_weight = 1e-2
    config.training.steps = 3000
    config.training.batch_size = 128
    config.training.lr = 2e-3
    config.training.warmup = 100
    config.training.grad_clip = 1.0
    config.training.log_every = 250
    config.training.ckpt_every = 1000
    return config
