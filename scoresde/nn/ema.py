"""Exponential moving average of a network's parameters, with score_sde's warm-up.

On the n-th call of :meth:`EMA.update` (n = 1, 2, …) every shadow parameter moves as

    shadow ← decay_n · shadow + (1 − decay_n) · param,
    decay_n = min(decay, (1 + n)/(10 + n))  with warm-up,  decay_n = decay  without,

so early shadows are not dominated by the random initial weights (decay_1 = 2/11).
Shadows are float32 copies of the trainable parameters, kept on the parameters' device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from scoresde.errors import InputError


class EMA:
    """Shadow weights of ``module``'s trainable parameters.

    Args:
        module: the network whose parameters are averaged (its current values start the shadow).
        decay: the asymptotic decay rate.
        warmup: use ``min(decay, (1 + n)/(10 + n))`` on the n-th update.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise InputError(f"decay must lie in [0, 1], got {decay}")
        self.decay, self.warmup, self.num_updates = float(decay), warmup, 0
        self.shadow = {name: p.detach().float().clone() for name, p in _trainable(module).items()}

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        n = self.num_updates + 1
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the shadows towards ``module``'s current parameters."""
        weight = 1.0 - self.current_decay()
        for name, p in self._matching(module).items():
            self.shadow[name].lerp_(p.detach().float(), weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite ``module``'s trainable parameters with the shadows."""
        for name, p in self._matching(module).items():
            p.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {name: s.clone() for name, s in self.shadow.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        shadow = state["shadow"]
        _check_names(self.shadow, shadow, "the EMA state")
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        self.shadow = {name: shadow[name].to(device=s.device, dtype=torch.float32).clone()
                       for name, s in self.shadow.items()}

    def _matching(self, module: nn.Module) -> dict[str, Tensor]:
        params = _trainable(module)
        _check_names(self.shadow, params, "the module")
        return params


def _trainable(module: nn.Module) -> dict[str, Tensor]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def _check_names(shadow: Mapping[str, Tensor], other: Mapping[str, Any], what: str) -> None:
    """Refuse parameters that do not match the shadows name for name, listing the differences."""
    if shadow.keys() != other.keys():
        missing, extra = sorted(shadow.keys() - other.keys()), sorted(other.keys() - shadow.keys())
        raise InputError(f"{what} does not match the EMA's parameters: missing {missing}, "
                         f"unexpected {extra}")
