"""Samplers behind a registry. Adding one = one file + one ``register`` line + tests.

``available()`` lists the names; :func:`scoresde.sample` accepts a name or a
:class:`~scoresde.samplers.base.SamplerSpec`.
"""

from __future__ import annotations

from scoresde import ode
from scoresde.samplers.ancestral import ancestral
from scoresde.samplers.base import CountingModel, SamplerSpec
from scoresde.samplers.ddim import ddim
from scoresde.samplers.pc import pc
from scoresde.samplers.probability_flow import probability_flow

_REGISTRY: dict[str, SamplerSpec] = {}

# Defaults (grid, t_end, denoise) are the best of a sweep over the four grids and two ends on
# the 2-D ring mixture with the exact score (benchmarks/default_grids.py, results in
# benchmarks/results/default_grids.md): the uniform grid won for every sampler at 5–20 steps.


def register(name: str, spec: SamplerSpec) -> None:
    """Register ``spec`` under ``name``; a duplicate name is an error."""
    if name in _REGISTRY:
        raise ValueError(f"a sampler named {name!r} is already registered")
    _REGISTRY[name] = spec


def available() -> list[str]:
    """Names of the registered samplers."""
    return sorted(_REGISTRY)


def get(name: str) -> SamplerSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown sampler {name!r}; available: {available()}")
    return _REGISTRY[name]


register("ancestral", SamplerSpec(ancestral, is_stochastic=lambda options: True))
register("ddim", SamplerSpec(ddim, is_stochastic=lambda options: options.get("eta", 0.0) > 0))
register("pc", SamplerSpec(pc, is_stochastic=lambda options: True, t_end=1e-3, denoise=True))
register(
    "ode",
    SamplerSpec(
        probability_flow,
        is_stochastic=lambda options: False,
        uses_grid=lambda options: not ode.is_adaptive(options.get("method", "heun")),
        grid="uniform", t_end=1e-3, denoise=True,
    ),
)

__all__ = ["CountingModel", "SamplerSpec", "available", "get", "register"]
