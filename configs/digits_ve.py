"""8×8 digits, VE-SDE (σ 0.01 → 8, sized to the data's diameter as NCSN v2 advises),
score-prediction U-Net with Fourier features of log σ-scale time, continuous DSM."""

from ml_collections import ConfigDict

from scoresde.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.data_range = (0.0, 1.0)
    config.sde.name = "ve"
    config.sde.sigma_min = 0.01
    config.sde.sigma_max = 8.0
    config.model.prediction = "score"
    config.model.time_input = "continuous"
    config.model.network = ConfigDict({
        "name": "unet", "in_channels": 1, "channels": 32, "channel_mult": (1, 2),
        "num_res_blocks": 1, "attn_resolutions": (4,), "dropout": 0.0, "resolution": 8,
        "embedding": "fourier",
    })
    config.training.loss = "dsm"
    config.training.steps = 4000
    config.training.batch_size = 128
    config.training.lr = 1e-3
    config.sampling.sampler = "pc"
    config.sampling.steps = 500
    return config
