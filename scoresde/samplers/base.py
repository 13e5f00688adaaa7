"""What every sampler shares: the call contract, NFE counting and per-step reports.

A sampler is a function ``sampler(model, x, timesteps, noise, callback=None, **options)``
returning the final state. ``model`` is a :class:`CountingModel` (``.predict(x, t)`` and
``.sde``), ``x`` the state at ``timesteps[0]``, ``timesteps`` a strictly monotone float64 grid
and ``noise`` a :class:`~scoresde.noise.NoiseSource`. Samplers hold no state between calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from scoresde.model import Prediction, ScoreModel
from scoresde.sde import SDE

Callback = Callable[[dict[str, Any]], None]
SamplerFn = Callable[..., Tensor]


class CountingModel:
    """Wraps a :class:`ScoreModel`, counting network evaluations (NFE) exactly, per batch."""

    def __init__(self, model: ScoreModel):
        if not isinstance(model, ScoreModel):
            raise TypeError(f"model must be a scoresde.ScoreModel, got {type(model).__name__}")
        self.model = model
        self.nfe = 0

    @property
    def sde(self) -> SDE:
        return self.model.sde

    def predict(self, x: Tensor, t: Tensor) -> Prediction:
        self.nfe += 1
        return self.model.predict(x, t)


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler and its measured defaults (see the README's sampler table)."""

    fn: SamplerFn
    is_stochastic: Callable[[dict[str, Any]], bool]
    uses_grid: Callable[[dict[str, Any]], bool] = lambda options: True
    grid: str = "uniform"
    t_end: float = 0.0
    denoise: bool = False


def report(callback: Callback | None, i: int, t: Tensor, x: Tensor,
           pred: Prediction | None = None) -> None:
    """Send ``{"i", "t", "x", "x0"}`` after step ``i`` (``t`` is the time ``x`` is now at)."""
    if callback is not None:
        info = {"i": i, "t": float(t), "x": x}
        if pred is not None:
            info["x0"] = pred.x0
        callback(info)
