"""digits_vp (configs/digits_vp.py) with a learned variance (Nichol & Dhariwal 2021): exactly its
recipe — data, DDPM table, U-Net, 3000 steps, seeds, learning rate, batch — but the U-Net also
outputs the variance interpolation v (``model.learned_variance``) and trains on the hybrid loss
L_simple + 1e-3·L_vlb, so the two models compare at equal training."""

from ml_collections import ConfigDict

from scoresde.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.data_range = (-1.0, 1.0)
    config.sde.name = "ddpm"
    config.model.prediction = "eps"
    config.model.time_input = "index"
    config.model.network = ConfigDict({
        "name": "unet", "in_channels": 1, "channels": 32, "channel_mult": (1, 2),
        "num_res_blocks": 1, "attn_resolutions": (4,), "dropout": 0.0, "resolution": 8,
        "embedding": "sinusoidal",
    })
    config.model.learned_variance = True
    config.training.loss = "hybrid"
    config.training.vlb_weight = 1e-3
    config.training.steps = 3000
    config.training.batch_size = 128
    config.training.lr = 1e-3
    config.training.warmup = 200
    config.training.ema_decay = 0.999
    config.training.log_every = 200
    config.training.ckpt_every = 1000
    config.sampling.sampler = "ddim"
    config.sampling.steps = 50
    config.sampling.n = 64
    config.eval.trace = "rademacher"
    return config
