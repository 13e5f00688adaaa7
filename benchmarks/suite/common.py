"""What every benchmark part shares: the DDPM problem setting, sampler variants, NFE targeting,
timing, the run environment and result files.

Every part measures samplers on a DDPM-style setting: the discrete linear VP schedule
(β 1e-4 → 0.02, N = 1000, :func:`ddpm_sde`) with an eps-predicting network that takes the
DDPM step index as its time input, so that diffusers' schedulers can run on the very same
network with their integer timesteps.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import scoresde as sd
from scoresde.model import ScoreModel
from scoresde.sde import SDE

# DDPM's schedule (Ho et al. 2020), the one the shipped digits model was trained with.
DDPM_BETAS = (1e-4, 0.02)
DDPM_N = 1000
# A target NFE is skipped for a variant when the nearest NFE it can reach is further off than this.
NFE_TOLERANCE = 0.2


def ddpm_sde() -> SDE:
    """The discrete linear VP-SDE of DDPM: ``β_i`` from 1e-4 to 0.02 over 1000 steps, exact ᾱ."""
    return sd.VPSDE.from_betas(torch.linspace(*DDPM_BETAS, DDPM_N, dtype=torch.float64))


# --- sampler variants ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One sampler configuration: a registered scoresde sampler with options (and optionally a
    grid other than its default), a diffusers scheduler (``library="diffusers"``, ``sampler`` =
    the scheduler's class name) or a k-diffusion sampler (``library="k-diffusion"``, ``sampler``
    = the name after ``sample_``, run on k-diffusion's recommended Karras grid, our ``edm``).

    ``nfe_per_step``/``nfe_offset`` give a peer's NFE as ``a·steps + b`` (ours are measured)."""

    label: str
    sampler: str
    options: dict[str, Any] = field(default_factory=dict)
    library: str = "scoresde"
    grid: str | None = None
    t_end: float | None = None
    denoise: bool | None = None
    nfe_per_step: int = 1
    nfe_offset: int = 0

    def sample_kwargs(self) -> dict[str, Any]:
        """``grid``/``t_end``/``denoise`` for :func:`scoresde.sample` where they differ from the
        sampler's defaults (ours only)."""
        chosen = {"grid": self.grid, "t_end": self.t_end, "denoise": self.denoise}
        return {k: v for k, v in chosen.items() if v is not None}

    @property
    def family(self) -> str:
        return self.sampler if self.library == "scoresde" else f"{self.library} {self.sampler}"

    @property
    def adaptive(self) -> bool:
        if self.library == "k-diffusion":
            return self.sampler == "dpm_adaptive"
        return self.library == "scoresde" and not sd.samplers.get(self.sampler).parse(self.options).uses_grid

    def options_json(self) -> str:
        return json.dumps(self.options, sort_keys=True)


def dopri5(tol: float) -> Variant:
    """The adaptive PF-ODE solver at ``rtol = atol = tol``."""
    return Variant("ode dopri5", "ode", {"method": "dopri5", "rtol": tol, "atol": tol})


def our_variants(tolerances: Sequence[float] = ()) -> list[Variant]:
    """The library's variant table (:func:`scoresde.samplers.variants`, every registered sampler)
    and dopri5 at each of ``tolerances``."""
    variants = [Variant(v.label, v.sampler, dict(v.options)) for v in sd.samplers.variants()]
    return variants + [dopri5(tol) for tol in tolerances]


# --- a near-zero-cost exact model ---------------------------------------------------------------


class StandardNormalEps(nn.Module):
    """The exact eps-network of N(0, I) data under a VP-SDE: every marginal is N(0, I), so
    ``score = −x`` and ``eps = sigma(t)·x``; time input = DDPM step index. Two tensor ops per
    call: the stand-in for a network of negligible cost (overhead timing, NFE calibration)."""

    def __init__(self, sde: SDE):
        super().__init__()
        self.sde = sde

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        sigma = self.sde.sigma((c.to(torch.float64) + 1.0) / self.sde.N).to(x.dtype)
        return x * sigma.reshape(-1, *([1] * (x.ndim - 1)))


def cheap_model(sde: SDE) -> ScoreModel:
    """:class:`StandardNormalEps` wrapped as an eps/index :class:`ScoreModel`."""
    return ScoreModel(StandardNormalEps(sde), sde, prediction="eps", time_input="index")


# --- reaching a target NFE ----------------------------------------------------------------------


@cache
def _nfe_line(sampler: str, options_json: str, kwargs_json: str = "{}") -> tuple[int, int]:
    """``(a, b)`` with ``NFE = a·steps + b`` for a fixed-step sampler, from two dry runs."""
    model = cheap_model(ddpm_sde())
    options, kwargs = json.loads(options_json), json.loads(kwargs_json)

    def nfe(steps: int) -> int:
        out = sd.sample(model, (2, 2), sampler, steps, generator=torch.Generator().manual_seed(0),
                        **kwargs, **options)
        return out.nfe

    n1, n2 = nfe(1), nfe(2)
    return n2 - n1, n1 - (n2 - n1)


def steps_for_nfe(variant: Variant, target: int, tolerance: float = NFE_TOLERANCE) -> int | None:
    """The step count whose NFE is nearest ``target`` (ties: fewer steps), or ``None`` when even
    that one misses by more than ``tolerance·target`` (e.g. Heun cannot spend a single NFE)."""
    if variant.library == "scoresde":
        a, b = _nfe_line(variant.sampler, variant.options_json(),
                         json.dumps(variant.sample_kwargs(), sort_keys=True))
    else:
        a, b = variant.nfe_per_step, variant.nfe_offset
    guess = max(1, round((target - b) / a))
    candidates = [s for s in (guess - 1, guess, guess + 1) if s >= 1]
    steps = min(candidates, key=lambda s: (abs(a * s + b - target), s))
    return steps if abs(a * steps + b - target) <= tolerance * target else None


# --- timing and environment ---------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """``(fn(), wall seconds)``, synchronizing the GPU around the call."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def pick_device(name: str | None) -> torch.device:
    """``name``, or CUDA when available, else CPU."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch.cuda.is_available() is False")
    return device


def diffusers_version() -> str | None:
    """diffusers' version, or ``None`` when it is not installed (the peers are then skipped)."""
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers.__version__


def kdiffusion_version() -> str | None:
    """k-diffusion's version, or ``None`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("k-diffusion")
    except PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Columns that say where and when a result was measured."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    return {
        "device": device.type,
        "device_name": name,
        "gpu_available": torch.cuda.is_available(),
        "torch_version": torch.__version__,
        "diffusers_version": diffusers_version() or "not installed",
        "kdiffusion_version": kdiffusion_version() or "not installed",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


# --- result files -------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else value


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` (missing keys left empty, floats to 6 significant digits) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c)) for c in columns})
    return path


def fmt(value: float | None, digits: int = 2) -> str:
    """A compact number for Markdown cells: ``1.2e-03``; ``—`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits - 1}e}"
