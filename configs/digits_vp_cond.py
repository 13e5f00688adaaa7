"""Class-conditional digits_vp (configs/digits_vp.py's recipe) for classifier-free guidance: the
U-Net takes the digit 0..9 (``model.num_classes = 10``), trained with label dropout 0.1 (the null
label, −1, stands for "no class"), and trained twice as long (6000 steps) so samples are clean."""

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
    config.model.num_classes = 10
    config.training.loss = "ddpm"
    config.training.label_dropout = 0.1
    config.training.steps = 6000
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
