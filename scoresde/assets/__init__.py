"""Trained models shipped inside the package (package data, so an installed scoresde has them).

``shipped_model("digits_vp")`` is the path of the 8×8-digits DDPM (2.8 MB, EMA weights; how it
was trained: ``models/README.md`` in the repository). A shipped checkpoint stores its own
config groups, so :func:`scoresde.experiment.load_trained` needs no config file for it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED = ("digits_vp",)


def shipped_model(name: str) -> Path:
    """The checkpoint file of the shipped model ``name`` (one of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped model named {name!r}; shipped: {', '.join(SHIPPED)}")
    path = Path(str(resources.files(__name__) / f"{name}.pt"))
    if not path.is_file():
        raise FileNotFoundError(f"the shipped model file {path} is missing from this installation")
    return path
