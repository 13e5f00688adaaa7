"""A seconds-long 2-D run for tests and smoke checks."""

from scoresde.config import default_config


def get_config():
    config = default_config()
    config.data.name = "gmm2d"
    config.data.n = 2000
    config.model.network.hidden = 32
    config.training.steps = 40
    config.training.batch_size = 64
    config.training.log_every = 10
    config.training.ckpt_every = 20
    config.sampling.steps = 10
    config.sampling.n = 200
    config.eval.n_test = 32
    return config
