"""Peer: k-diffusion's samplers (Crowson, ``k_diffusion.sampling``) on any scoresde model.

k-diffusion works in EDM's variables: the state ``x̄ = x/alpha`` at noise level
``σ̄ = sigma/alpha``, and a denoiser ``D(x̄, σ̄) = E[x_0 | x̄]``. :class:`Denoiser` presents a
:class:`~scoresde.model.DiffusionModel` that way (``t = t(σ̄)`` from the SDE's inverse,
``D = predict(alpha·x̄, t).x0``) and counts its calls, so that a k-diffusion sampler started
from ``x̄_T = x_T/alpha(T)`` on the σ̄ grid of our time grid returns ``x_0`` and the NFE.

Loading. ``import k_diffusion`` runs a package ``__init__`` that imports k-diffusion's training
stack (torchvision, kornia, clip, wandb, …). Its samplers need only ``sampling.py`` and
``utils.py``, and ``utils.py`` imports torchvision at the top for image helpers the samplers never
call; PyPI's torchvision does not load beside the CPU torch build we pin. :func:`sampling` therefore
imports those two files *as published* (``pip install --no-deps k-diffusion torchsde``, as
``make setup`` does) under a bare package, with an empty placeholder for torchvision while they
load if the real one is absent (removed again, so that diffusers does not take it for the real
one). No k-diffusion code is copied or changed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoresde.model import Cond, DiffusionModel
from suite.common import Variant

_PACKAGE = "k_diffusion"


def sampling() -> types.ModuleType:
    """k-diffusion's ``sampling`` module; ``ImportError`` (for ``pytest.importorskip``-style
    skips) when k-diffusion or torchsde is not installed."""
    if f"{_PACKAGE}.sampling" in sys.modules:
        return sys.modules[f"{_PACKAGE}.sampling"]
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed (pip install --no-deps k-diffusion torchsde)")
    import torchsde  # noqa: F401  (k-diffusion's sampling imports it; fail here with its own message)

    root = Path(next(iter(spec.submodule_search_locations)))
    placeholders = []
    if importlib.util.find_spec("torchvision") is None:
        placeholders = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional"]
        for name in placeholders:
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    package = types.ModuleType(_PACKAGE)
    package.__path__ = [str(root)]
    sys.modules[_PACKAGE] = package
    try:
        for name in ("utils", "sampling"):
            module_spec = importlib.util.spec_from_file_location(f"{_PACKAGE}.{name}", root / f"{name}.py")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
            setattr(package, name, module)
    finally:  # the placeholder must not make others (diffusers) believe torchvision is installed
        for name in placeholders:
            del sys.modules[name]
    return sys.modules[f"{_PACKAGE}.sampling"]


class Denoiser:
    """``D(x̄, σ̄) = E[x_0 | x̄]`` of a scoresde model, as k-diffusion's samplers call it.

    ``sigma`` is k-diffusion's per-sample noise level (σ̄, in the state's dtype). A σ̄ that is one
    of the run's grid levels maps to that grid time exactly (float64); any other (an adaptive
    solver's stage) through the SDE's inverse, clamped to ``[0, T]`` against float32 round-off.
    Each call evaluates ``model.predict`` once (one NFE, counted in ``nfe``).
    """

    def __init__(self, model: DiffusionModel, cond: Cond = None, timesteps: Tensor | None = None,
                 dtype: torch.dtype = torch.float32):
        self.model, self.cond, self.nfe = model, cond, 0
        self.times = None if timesteps is None else torch.as_tensor(timesteps, dtype=torch.float64)
        self.levels = None if timesteps is None else sigma_bars(model, self.times, dtype)

    def time(self, sigma_bar: Tensor) -> Tensor:
        if self.levels is not None:
            hit = (self.levels == sigma_bar.to(self.levels.dtype)).nonzero()
            if len(hit):
                return self.times[hit[0, 0]]
        sde = self.model.sde
        return sde.t_from_sigma_bar(sigma_bar.to(torch.float64)).clamp(0.0, sde.T)

    def __call__(self, x_bar: Tensor, sigma_bar: Tensor, **_: Any) -> Tensor:
        t = self.time(sigma_bar.reshape(-1)[0])
        alpha = self.model.sde.alpha(t).to(x_bar.dtype)
        self.nfe += 1
        return self.model.predict(alpha * x_bar, t, self.cond).x0


def sigma_bars(model: DiffusionModel, timesteps: Tensor, dtype: torch.dtype) -> Tensor:
    """The σ̄ grid k-diffusion steps through for our decreasing time grid (0 where sigma = 0)."""
    return model.sde.sigma_bar(torch.as_tensor(timesteps, dtype=torch.float64)).to(dtype)


# label -> (sampler name after ``sample_``, options, NFE per step). On a grid that ends at σ = 0
# the two-stage samplers skip their second stage in the last step: n steps cost 2n − 1.
SAMPLERS: dict[str, tuple[str, dict[str, Any], int]] = {
    "k-diffusion Euler": ("euler", {}, 1),
    "k-diffusion Heun": ("heun", {}, 2),
    "k-diffusion LMS": ("lms", {"order": 4}, 1),
    "k-diffusion DPM++(2M)": ("dpmpp_2m", {}, 1),
    "k-diffusion Euler-ancestral": ("euler_ancestral", {}, 1),
    "k-diffusion DPM++(2M) SDE": ("dpmpp_2m_sde", {}, 1),
    "k-diffusion DPM++(3M) SDE": ("dpmpp_3m_sde", {}, 1),
}
STOCHASTIC = ("euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde")
GRID = "edm"  # k-diffusion's recommendation: get_sigmas_karras from the table's sigma_min to sigma_max


def peer_variants() -> list[Variant]:
    """The samplers above as benchmark variants (``library="k-diffusion"``, Karras grid)."""
    return [Variant(label, name, dict(options), library="k-diffusion", grid=GRID,
                    nfe_per_step=per_step, nfe_offset=1 - per_step)
            for label, (name, options, per_step) in SAMPLERS.items()]


def noise_sampler(generator: torch.Generator, like: Tensor):
    """A k-diffusion ``noise_sampler(sigma, sigma_next)`` drawing standard normals from
    ``generator`` (instead of the global RNG or a Brownian tree)."""
    def draw(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    return draw


def run(name: str, model: DiffusionModel, x_T: Tensor, timesteps: Tensor, cond: Cond = None,
        **kwargs: Any) -> tuple[Tensor, int]:
    """``k_diffusion.sampling.sample_<name>`` from our ``x_T`` at ``timesteps[0]`` along the σ̄ of
    ``timesteps``; returns ``(x at timesteps[-1] in our variables, NFE)``.

    ``kwargs`` go to the sampler (e.g. ``noise_sampler=``, ``eta=``, ``order=``).
    """
    fn = getattr(sampling(), f"sample_{name}")
    ts = torch.as_tensor(timesteps, dtype=torch.float64)
    sde = model.sde
    sigmas = sigma_bars(model, ts, x_T.dtype)
    denoiser = Denoiser(model, cond, ts, x_T.dtype)
    x_bar = fn(denoiser, x_T / sde.alpha(ts[0]).to(x_T.dtype), sigmas, disable=True, **kwargs)
    return x_bar * sde.alpha(ts[-1]).to(x_T.dtype), denoiser.nfe
