"""Networks for score models (``net(x, c) -> tensor shaped like x``), weight averaging and the
convolutional autoencoder of latent diffusion (:class:`ConvAutoencoder`).

``build_network({"name": "mlp" | "unet" | "diffusers_unet2d", **kwargs})`` builds one from a config group.
Initial weights come from torch's global generator, as is usual in PyTorch
(``torch.manual_seed`` before building fixes them); everything after that takes explicit
generators.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from scoresde.errors import InputError
from scoresde.interop import DiffusersUNet2D  # diffusers itself is imported only when one is built
from scoresde.nn.autoencoder import ConvAutoencoder
from scoresde.nn.classifier import TimeClassifierConv, TimeClassifierMLP
from scoresde.nn.ema import EMA
from scoresde.nn.embedding import GaussianFourierProjection, sinusoidal_embedding
from scoresde.nn.mlp import TimeMLP
from scoresde.nn.unet import UNet

NETWORKS: dict[str, type[nn.Module]] = {"mlp": TimeMLP, "unet": UNet, "diffusers_unet2d": DiffusersUNet2D}


def build_network(config_model: Mapping[str, Any]) -> nn.Module:
    """The network ``config_model["name"]`` built with the remaining keys as keyword arguments."""
    kwargs = dict(config_model)
    name = kwargs.pop("name", None)
    if name not in NETWORKS:
        raise InputError(f"unknown network {name!r}; available: {sorted(NETWORKS)}")
    cls = NETWORKS[name]
    params = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise InputError(f"network {name!r} does not take {unknown}; its arguments are {list(params)}")
    missing = [p for p, spec in params.items() if spec.default is spec.empty and p not in kwargs]
    if missing:
        raise InputError(f"network {name!r} needs {missing} in its config")
    return cls(**kwargs)


__all__ = [
    "EMA",
    "NETWORKS",
    "ConvAutoencoder",
    "GaussianFourierProjection",
    "TimeClassifierConv",
    "TimeClassifierMLP",
    "TimeMLP",
    "UNet",
    "build_network",
    "sinusoidal_embedding",
]
