"""Multistep SDE-DPM-Solver++ (Lu et al. 2022b, §5; k-diffusion's ``sample_dpmpp_2m_sde`` /
``sample_dpmpp_3m_sde``, diffusers' ``algorithm_type="sde-dpmsolver++"``), orders 1–3.

The reverse SDE with a share η of fresh noise, written for the data prediction ``D = x0`` in the
half log-SNR ``λ = log(alpha/sigma)``, has an exactly integrable linear part. A step from ``t`` to
``s`` with ``h = λ_s − λ_t > 0`` is

    x_s = (sigma_s/sigma_t)·e^{−ηh}·x_t + (1 + η)·alpha_s·∫_{λ_t}^{λ_s} e^{−(1+η)(λ_s−λ)} D(λ) dλ
          + sigma_s·sqrt(1 − e^{−2ηh})·z,

and with ``ĥ = (1 + η)·h`` and D expanded in λ through the current and previous outputs
(backward differences ``D0, D1, D2`` as in the deterministic DPM-Solver++, see ``dpm_solver``)::

    x_s = (sigma_s/sigma_t)·e^{−ηh}·x_t + alpha_s·φ1·D0                       order 1
          + ½·alpha_s·φ1·D1            ("midpoint")  or  + alpha_s·φ2·D1 ("heun")   order 2
          + alpha_s·φ2·D1 − alpha_s·φ3·D2                                      order 3
          + sigma_s·sqrt(1 − e^{−2ηh})·s_noise·z

    φ1 = 1 − e^{−ĥ},   φ2 = 1 − φ1/ĥ,   φ3 = φ2/ĥ − ½.

η = 0 is the deterministic DPM-Solver++ (2M midpoint, 3M); η = 1 integrates the reverse SDE
itself (diffusers' "sde-dpmsolver++", whose second-order coefficients are these at ĥ = 2h).
In k-diffusion's variables ``x̄ = x/alpha``, ``σ̄ = sigma/alpha`` the same step reads
``x̄_s = (σ̄_s/σ̄_t)·e^{−ηh}·x̄_t + φ1·D0 + … + σ̄_s·sqrt(1 − e^{−2ηh})·s_noise·z``: the same
standard normal ``z`` gives the same state.

The order warms up (step ``k`` uses at most order ``k + 1``; the second-order steps of an
order-3 run use ``solver_type`` too, so k-diffusion's 3M SDE is ``order=3, solver_type="heun"``);
with ``lower_order_final`` and fewer than 15 steps the last two steps use orders ≤ 1 and ≤ 2, as
diffusers does. A step that ends at ``sigma = 0`` (λ = ∞) is ``x_s = alpha_s·x0``, with no noise.
One network call and (for η > 0, s_noise > 0) one standard normal draw of the state's shape per
step, from the ``NoiseSource``. Coefficients are formed in float64 from the grid's table.

(diffusers' third-order SDE step uses ``−(φ3 + 1)`` instead of ``−φ3`` as the coefficient of D2,
which does not vanish as h → 0; this module follows k-diffusion, whose coefficient is the
Taylor integral above.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerOptions, SamplerSpec, multistep_order, report
from scoresde.samplers.exponential import ExpStep, multistep_update
from scoresde.sde import batch_coeff


@dataclass(frozen=True)
class DPMSolverSDEOptions(SamplerOptions):
    """``order`` 1–3; ``solver_type`` of the second-order steps (``"midpoint"`` | ``"heun"``);
    ``eta`` ≥ 0: the share of fresh noise (0 = the deterministic DPM-Solver++); ``s_noise``: its
    scale; ``lower_order_final``: lower the order of the last steps below 15 steps."""

    order: Literal[1, 2, 3] = 2
    solver_type: Literal["midpoint", "heun"] = "midpoint"
    eta: float = 1.0
    s_noise: float = 1.0
    lower_order_final: bool = True

    def validate(self) -> None:
        if not 0.0 <= self.eta < math.inf:
            raise InputError(f"eta must be a finite number >= 0, got {self.eta}")
        if not 0.0 <= self.s_noise < math.inf:
            raise InputError(f"s_noise must be a finite number >= 0, got {self.s_noise}")

    def unused(self) -> dict[str, str]:
        out = {}
        if self.eta == 0:
            out["s_noise"] = "with eta=0 (no fresh noise to scale)"
        if self.order == 1:
            out["solver_type"] = "with order=1 (it chooses the form of the second-order steps)"
        return out

    @property
    def stochastic(self) -> bool:
        return self.eta > 0 and self.s_noise > 0


def sde_update(grid: GridTable, i: int, x: Tensor, outputs: list[Tensor], order: int,
               options: DPMSolverSDEOptions, z: Tensor | None) -> Tensor:
    """The step ``grid.t[i] → grid.t[i+1]`` of the given order from the data predictions
    ``outputs`` (newest first), plus ``noise_std·z`` (``None``: no noise). It is the deterministic
    data-form update of :mod:`~scoresde.samplers.exponential` with ``ratio = (sigma_s/sigma_t)·e^{−ηh}``
    and the signed step ``ĥ = −(1 + η)·h`` (then ``−ψ1 = φ1``, ``−ψ2 = φ2``, ``ψ3 = φ3``)."""
    lam = 0.5 * grid.log_snr
    h = lam[i + 1] - lam[i]
    step = ExpStep(grid.sigma[i + 1] / grid.sigma[i] * torch.exp(-options.eta * h), grid.alpha[i + 1],
                   -(1.0 + options.eta) * h)
    x_s = multistep_update(step, x, grid, i, outputs, order, options.solver_type)
    if z is not None:
        noise_std = grid.sigma[i + 1] * torch.sqrt(-torch.expm1(-2.0 * options.eta * h)) * options.s_noise
        x_s = x_s + batch_coeff(noise_std, x) * z
    return x_s


def dpm_solver_sde(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None,
                   options: DPMSolverSDEOptions, callback: Callback | None = None) -> Tensor:
    """Multistep SDE-DPM-Solver++ along ``grid``; one network call per step."""
    outputs: list[Tensor] = []  # data predictions at grid.t[i], grid.t[i-1], ... (newest first)
    n = grid.steps
    for i in range(n):
        pred = model.predict(x, grid.t[i])
        outputs = [pred.x0, *outputs[:2]]
        if grid.sigma[i + 1] == 0:  # λ = ∞: the exact step is the denoised estimate, no noise
            x = batch_coeff(grid.alpha[i + 1], x) * pred.x0
        else:
            z = noise.randn(x.shape, x.dtype, x.device) if options.stochastic else None
            order = multistep_order(options.order, i, n, options.lower_order_final)
            x = sde_update(grid, i, x, outputs, order, options, z)
        report(callback, i, grid.t[i + 1], x, pred)
    return x


SPEC = SamplerSpec(
    "dpm_solver_sde", dpm_solver_sde, DPMSolverSDEOptions, grid="quadratic", grid_geometric="uniform",
    variants=(("dpm++ 2M SDE", {"order": 2, "solver_type": "midpoint"}),
              ("dpm++ 2M SDE heun", {"order": 2, "solver_type": "heun"}),
              ("dpm++ 3M SDE", {"order": 3, "solver_type": "heun"})),
    paper="SDE-DPM-Solver++(2M/3M), Lu et al. 2022b (as k-diffusion's sample_dpmpp_2m/3m_sde)",
    order="— (stochastic; η = 0: dpm_solver's)", nfe="steps",
)
