"""CIFAR-10 32×32, continuous VP, DDPM++-style U-Net (GPU). Point data.path at the
`cifar-10-batches-py` folder: `--config.data.path=/data/cifar-10-batches-py`."""

from ml_collections import ConfigDict

from scoresde.config import default_config


def get_config():
    config = default_config()
    config.data.name = "cifar10"
    config.data.data_range = (-1.0, 1.0)
    config.sde.name = "vp"
    config.model.prediction = "eps"
    config.model.time_input = "scaled"
    config.model.network = ConfigDict({
        "name": "unet", "in_channels": 3, "channels": 128, "channel_mult": (1, 2, 2, 2),
        "num_res_blocks": 2, "attn_resolutions": (16,), "dropout": 0.1, "resolution": 32,
        "embedding": "sinusoidal",
    })
    config.training.loss = "dsm"
    config.training.steps = 800_000
    config.training.batch_size = 128
    config.training.lr = 2e-4
    config.training.warmup = 5000
    config.training.ema_decay = 0.9999
    config.training.log_every = 100
    config.training.ckpt_every = 10_000
    config.sampling.sampler = "ode"
    config.sampling.steps = 35
    config.sampling.n = 64
    config.eval.batch_size = 500
    return config
