"""An experiment from its config: the SDE, the model, the data splits and trained weights.

One config file per experiment (``configs/*.py``, an ml_collections ``ConfigDict`` from
:func:`scoresde.config.default_config`) fixes the data (``data``), the forward SDE (``sde``) and
the network (``model``); this module builds each of them, loads a trained model's weights from a
checkpoint, and rebuilds the config of a checkpoint from the groups it stores (a checkpoint is
self-describing: a shipped model needs no config file). The training loop
(:mod:`scoresde.train`), the command line and the benchmarks all build through here.

A **latent-diffusion experiment** names an autoencoder in ``latent.autoencoder`` (its checkpoint or
:func:`scoresde.autoencoding.train_autoencoder` workdir): the score model is trained on
``scale·(E(x) − shift)`` (:func:`latent_model`), and its checkpoints store the autoencoder (config,
weights, latent statistics; :func:`scoresde.nn.autoencoder.autoencoder_state`) beside the score
network, so :func:`load_trained` rebuilds the :class:`~scoresde.latent.LatentDiffusion` from the
checkpoint alone. The path is where training found the autoencoder, not part of the experiment's
identity; ``latent.scale_factor`` is.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ml_collections import ConfigDict
from torch import Tensor

from scoresde import checkpoint
from scoresde.config import ADDED_IDENTITY_KEYS, RUNTIME_KEYS, default_config
from scoresde.data import DataSpec, load_dataset, load_labelled_dataset
from scoresde.errors import InputError
from scoresde.latent import Autoencoder, LatentDiffusion
from scoresde.model import ScoreModel
from scoresde.nn import EMA, build_network
from scoresde.nn.autoencoder import autoencoder_from_state
from scoresde.sde import SDE, VESDE, VPSDE, SubVPSDE

SDE_BUILDERS: dict[str, Callable[[ConfigDict], SDE]] = {
    "vp": lambda c: VPSDE(c.beta_min, c.beta_max, c.N),
    "subvp": lambda c: SubVPSDE(c.beta_min, c.beta_max, c.N),
    "ve": lambda c: VESDE(c.sigma_min, c.sigma_max, c.N),
    "vp_cosine": lambda c: VPSDE.cosine(N=c.N),
    # DDPM's discrete linear table 1e-4 → 0.02 (= the linear VP discretized with N = 1000).
    "ddpm": lambda c: VPSDE.from_betas(torch.linspace(c.beta_min / c.N, c.beta_max / c.N, c.N,
                                                      dtype=torch.float64)),
}
# Config groups a checkpoint must agree on to be resumed or loaded.
IDENTITY_GROUPS = ("data", "sde", "model")


def build_sde(config: ConfigDict) -> SDE:
    """The SDE named by ``config.sde.name`` with that group's parameters."""
    name = config.sde.name
    if name not in SDE_BUILDERS:
        raise InputError(f"unknown sde {name!r}; available: {sorted(SDE_BUILDERS)}")
    return SDE_BUILDERS[name](config.sde)


AUTOCAST = {"": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def runtime_options(config: ConfigDict) -> dict[str, Any]:
    """The :class:`ScoreModel` keywords of the config's runtime options (``model.autocast``,
    ``model.compile``, ``model.channels_last``; see :data:`scoresde.config.RUNTIME_KEYS`); a config
    without them (written before they existed) runs the network as it is."""
    mc = config.model
    autocast, backend = mc.get("autocast", ""), mc.get("compile", "")
    if autocast not in AUTOCAST:
        raise InputError(f"model.autocast must be one of {sorted(AUTOCAST)}, got {autocast!r}")
    if not isinstance(backend, str):
        raise InputError(f"model.compile must be '' (off) or a torch.compile backend name, got {backend!r}")
    return {"autocast": AUTOCAST[autocast], "compile": {"backend": backend} if backend else False,
            "channels_last": bool(mc.get("channels_last", False))}


def build_model(config: ConfigDict) -> ScoreModel:
    """A fresh :class:`ScoreModel`: the network of ``config.model.network`` with
    ``model.num_classes`` classes and ``model.learned_variance``, run with the config's runtime
    options (:func:`runtime_options`)."""
    mc = config.model
    network = mc.network.to_dict()
    misplaced = sorted({"num_classes", "learned_variance"} & set(network))
    if misplaced:
        raise InputError(f"set {', '.join(f'model.{k}' for k in misplaced)} in the model group, not in "
                         "model.network (the training loop and the model read them there)")
    net = build_network({**network, "num_classes": mc.num_classes, "learned_variance": mc.learned_variance})
    return ScoreModel(net, build_sde(config), prediction=mc.prediction, time_input=mc.time_input,
                      learned_variance=mc.learned_variance, **runtime_options(config))


def is_latent(config: ConfigDict) -> bool:
    """Whether ``config`` is a latent-diffusion experiment (``latent.autoencoder`` is set)."""
    return "latent" in config and bool(config.latent.autoencoder)


def latent_model(config: ConfigDict, model: ScoreModel, autoencoder: Autoencoder) -> LatentDiffusion:
    """``model`` on the latents of ``autoencoder`` with ``latent.scale_factor`` (0: the autoencoder's)."""
    scale = config.latent.scale_factor
    return LatentDiffusion(model, autoencoder, scale_factor=scale if scale else None)


def identity(config: ConfigDict) -> dict[str, Any]:
    """The part of a config that fixes what a checkpoint's weights mean.

    A key of :data:`scoresde.config.ADDED_IDENTITY_KEYS` is left out while it holds its default,
    so checkpoints written before it existed (``scoresde/assets/digits_vp.pt``) stay loadable; the
    runtime options of :data:`scoresde.config.RUNTIME_KEYS` are always left out.
    A latent experiment adds ``{"latent": {"scale_factor": ...}}`` (the autoencoder itself is in
    the checkpoint's state, see the module docstring); a pixel-space one has no latent group.
    """
    groups = {group: config[group].to_dict() for group in IDENTITY_GROUPS}
    defaults = default_config()
    for group, key in ADDED_IDENTITY_KEYS:
        if key in groups[group] and groups[group][key] == defaults[group][key]:
            del groups[group][key]
    for group, key in RUNTIME_KEYS:
        groups[group].pop(key, None)
    if is_latent(config):
        groups["latent"] = {"scale_factor": config.latent.scale_factor}
    return groups


def load_trained(config: ConfigDict | None, source: str | Path,
                 use_ema: bool = True) -> ScoreModel | LatentDiffusion:
    """A model with weights from ``source`` (see :func:`find_model`), built from ``config`` —
    which must match the checkpoint's ``data``/``sde``/``model`` (and ``latent``) groups — or, for
    ``None``, from the checkpoint's own config. A latent experiment's model is a
    :class:`~scoresde.latent.LatentDiffusion` with the autoencoder stored in the checkpoint."""
    path = find_model(source)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {source} (a checkpoint file, a workdir with "
                                "checkpoints/, or a folder of .pt files); train first")
    if config is None:
        config = config_from_checkpoint(path)
    state = checkpoint.load_checkpoint(path, config=identity(config))
    model = build_model(config)
    # An exported model holds the EMA weights as "net" already (and no "ema").
    ema = EMA(model.net, decay=config.training.ema_decay) if use_ema and "ema" in state else None
    checkpoint.load_weights(state, path, model.net, ema)
    if ema is not None:
        ema.copy_to(model.net)
    model.net.eval()
    for p in model.net.parameters():
        p.requires_grad_(False)
    if not is_latent(config):
        return model
    if "autoencoder" not in state:
        raise InputError(f"{path} stores no autoencoder, but the config is a latent experiment "
                         f"(latent.autoencoder={config.latent.autoencoder!r}); was it written by "
                         "scoresde.train?")
    autoencoder = autoencoder_from_state(state["autoencoder"], where=str(path))
    for p in autoencoder.parameters():
        p.requires_grad_(False)
    return latent_model(config, model, autoencoder)


def export_model(config: ConfigDict, workdir: str | Path, path: str | Path) -> Path:
    """Write the latest checkpoint's EMA weights alone (no optimizer) to ``path``, for shipping;
    a latent experiment's autoencoder goes with them unchanged.

    The result loads with :func:`load_trained` like any checkpoint.
    """
    model = load_trained(config, workdir, use_ema=True)
    found = checkpoint.latest_checkpoint(Path(workdir))
    stored = checkpoint.load_checkpoint(found, config=identity(config))
    net = model.model.net if is_latent(config) else model.net
    state = {"net": net.state_dict(), "step": int(stored["step"])}
    if "autoencoder" in stored:
        state["autoencoder"] = stored["autoencoder"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save_checkpoint(path, state, identity(config))
    return path


def _data_arguments(config: ConfigDict, split: str) -> dict[str, Any]:
    n = config.data.n if split == "train" else config.eval.n_test
    return {"name": config.data.name, "split": split, "path": config.data.path or None, "n": n or None,
            "seed": config.data.seed + (split == "test"), "data_range": tuple(config.data.data_range)}


def load_data(config: ConfigDict, split: str) -> tuple[Tensor, DataSpec]:
    """The config's data set, ``split`` "train" (``data.n`` samples) or "test" (``eval.n_test``).

    Generated sets draw the test split from a different seed than the training split.
    """
    return load_dataset(**_data_arguments(config, split))


def load_labelled_data(config: ConfigDict, split: str) -> tuple[Tensor, Tensor, DataSpec]:
    """:func:`load_data` with the class labels: ``(x, labels, spec)``, ``labels`` int64 ``(N,)``
    (see :func:`scoresde.data.load_labelled_dataset`; an error for a set without labels)."""
    return load_labelled_dataset(**_data_arguments(config, split))


def config_from_checkpoint(path: str | Path) -> ConfigDict:
    """The default config with the ``data``, ``sde`` and ``model`` groups stored in checkpoint
    ``path``: enough to rebuild and load the model, and to load its data splits. Keys of
    :data:`scoresde.config.ADDED_IDENTITY_KEYS` that the checkpoint lacks take their defaults, and so
    do the runtime options (:data:`scoresde.config.RUNTIME_KEYS`), which no checkpoint stores.
    A latent model's ``latent.autoencoder`` is ``path`` itself (the checkpoint stores its autoencoder,
    which :func:`scoresde.autoencoding.load_autoencoder` reads from there)."""
    stored = checkpoint.checkpoint_config(path)
    config = default_config()
    added = {group: {k: config[group][k] for g, k in (*ADDED_IDENTITY_KEYS, *RUNTIME_KEYS) if g == group}
             for group in IDENTITY_GROUPS}
    for group in IDENTITY_GROUPS:
        if group not in stored:
            raise InputError(f"checkpoint {path} stores no {group!r} config group; pass its config file")
        config[group] = ConfigDict({**added[group], **_tuples(stored[group])})
    if "latent" in stored:
        config.latent = ConfigDict({"autoencoder": str(path),
                                    "scale_factor": stored["latent"]["scale_factor"]})
    return config


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the configs use (``channel_mult``, ``data_range``…)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def load_config_file(path: str | Path, argument: str | None = None) -> ConfigDict:
    """Run a config file's ``get_config()`` (``get_config(argument)`` when given), as
    ``ml_collections.config_flags`` does for ``--config=path[:argument]``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    spec = importlib.util.spec_from_file_location(f"scoresde_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot load {path} as a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise InputError(f"config file {path} defines no get_config()")
    return module.get_config(argument) if argument is not None else module.get_config()


def find_model(source: str | Path) -> Path | None:
    """The checkpoint file a trained model would be loaded from, or ``None`` if there is none.

    ``source`` may be a checkpoint file (e.g. one written by :func:`scoresde.train.export_model`),
    a workdir (its latest intact checkpoint under ``checkpoints/``), or a folder holding
    checkpoint ``.pt`` files directly (the last by name).
    """
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        return None
    latest = checkpoint.latest_checkpoint(source)
    if latest is not None:
        return latest
    files = sorted(p for p in source.glob("*.pt") if p.is_file())
    return files[-1] if files else None
