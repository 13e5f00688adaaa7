"""Two moons, sub-VP SDE, MLP with likelihood weighting."""

from scoresde.config import default_config


def get_config():
    config = default_config()
    config.data.name = "moons"
    config.sde.name = "subvp"
    config.training.likelihood_weighting = True
    config.training.steps = 3000
    return config
