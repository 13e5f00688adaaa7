"""2-D ring mixture (the demo's), VP-SDE, time-conditioned MLP, continuous DSM. ~1 min on CPU."""

from scoresde.config import default_config


def get_config():
    config = default_config()
    config.data.name = "gmm2d"
    config.training.steps = 3000
    return config
