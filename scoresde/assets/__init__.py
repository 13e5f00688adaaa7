"""Trained models shipped inside the package (package data, so an installed scoresde has them).

``shipped_model(name)`` is the path of a shipped model's checkpoint (EMA weights, ~3 MB each;
how each was trained: ``models/README.md`` in the repository):

* ``"digits_vp"`` — the 8×8-digits DDPM (``configs/digits_vp.py``);
* ``"digits_vp_cond"`` — the same U-Net class-conditional on the digit, trained with label
  dropout 0.1 for classifier-free guidance (``configs/digits_vp_cond.py``; ``cond=labels``,
  ``NULL_LABEL`` for the unconditional branch);
* ``"digits_vp_lv"`` — digits_vp with a learned variance, trained on the hybrid loss
  (``configs/digits_vp_lv.py``);
* ``"digits_latent"`` — latent diffusion on digits (1.7 MB): a DDPM U-Net on the 4×4×2 latents of
  the convolutional autoencoder stored in the same file (``configs/digits_ae.py``,
  ``configs/digits_latent.py``); loads as a :class:`~scoresde.latent.LatentDiffusion`.

A shipped checkpoint stores its own config groups, so
:func:`scoresde.experiment.load_trained` needs no config file for it.
``digits_grid(sampler, nfe)`` is a time grid optimised for that model
(``benchmarks/optimize_digits_grids.py`` wrote ``digits_vp_grids.json``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from scoresde.errors import InputError

SHIPPED = ("digits_vp", "digits_vp_cond", "digits_vp_lv", "digits_latent")


def shipped_model(name: str) -> Path:
    """The checkpoint file of the shipped model ``name`` (one of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise InputError(f"no shipped model named {name!r}; shipped: {', '.join(SHIPPED)}")
    path = Path(str(resources.files(__name__) / f"{name}.pt"))
    if not path.is_file():
        raise FileNotFoundError(f"the shipped model file {path} is missing from this installation")
    return path


def digits_grid(sampler: str, nfe: int) -> torch.Tensor:
    """The float64 time grid optimised for the shipped ``digits_vp`` model, ``sampler`` and ``nfe``
    (``sd.sample(model, shape, sampler, timesteps=digits_grid(sampler, nfe))``; its settings are
    in ``digits_vp_grids.json``)."""
    path = Path(str(resources.files(__name__) / "digits_vp_grids.json"))
    if not path.is_file():
        raise FileNotFoundError(f"the shipped grid file {path} is missing from this installation")
    grids = json.loads(path.read_text())["grids"]
    if sampler not in grids:
        raise InputError(f"no optimised digits grid for sampler {sampler!r}; available: {', '.join(grids)}")
    if str(nfe) not in grids[sampler]:
        raise InputError(f"no optimised {sampler!r} digits grid at nfe={nfe!r}; available: "
                         f"{', '.join(grids[sampler])}")
    return torch.tensor(grids[sampler][str(nfe)], dtype=torch.float64)
