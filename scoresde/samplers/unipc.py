"""UniPC (Zhao et al. 2023): the unified predictor UniP-p and corrector UniC-p, orders 1–3.

Like DPM-Solver it integrates the PF-ODE's linear part exactly in ``λ = log(alpha/sigma)``
(``log_snr/2``) and fits the model output ``m`` (``x0`` for ``prediction="data"``, ``eps`` for
``"noise"``) through earlier evaluations. For a step ``t → s`` with ``h = λ_s − λ_t``,
``ĥ = −h`` (data) or ``h`` (noise), and backward differences ``D_k = (m_{t_k} − m_t)/r_k``,
``r_k = (λ_{t_k} − λ_t)/h``:

    data:   x_s = (sigma_s/sigma_t)·x_t − alpha_s·(e^{ĥ} − 1)·m_t − alpha_s·B(h)·Σ_k ρ_k·D_k
    noise:  x_s = (alpha_s/alpha_t)·x_t − sigma_s·(e^{ĥ} − 1)·m_t − sigma_s·B(h)·Σ_k ρ_k·D_k

with ``B(h) = ĥ`` ("bh1") or ``e^{ĥ} − 1`` ("bh2"), and ``ρ`` solving the order conditions
``Σ_k ρ_k r_k^{j−1} = φ_{j+1}(ĥ)·j!/B(h)`` (``φ`` the exponential-integrator functions,
``ĥφ_1 = e^{ĥ} − 1``, ``φ_{j+1} = (φ_j − 1/j!)/ĥ``); for the second-order predictor ``ρ = ½``.

Each step: evaluate the model at the current state; unless it is the first step, the corrector
UniC re-solves the previous step with the new evaluation included (``D_t = m_new − m_t`` with
``r = 1``, ``ρ`` from the full system; ``ρ = ½`` at order 1), which raises the order by one at no
extra network call; then the predictor UniP takes the next step. As in diffusers'
``UniPCMultistepScheduler`` the order warms up from 1, ``lower_order_final`` lowers it to the
number of steps left, and the corrector uses the previous predictor's order. A step ending at
``sigma = 0`` is the first-order step's limit ``x_s = alpha_s·x0`` (``x0`` from the model output
and the corrected state). One network call per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, DeterministicOptions, SamplerSpec, report
from scoresde.sde import batch_coeff


@dataclass(frozen=True)
class UniPCOptions(DeterministicOptions):
    """``order`` 1–3 of the predictor; ``prediction``: ``"data"`` or ``"noise"``; ``variant``:
    ``B(h) = h`` ("bh1") or ``e^h − 1`` ("bh2"); ``corrector``: apply UniC; ``lower_order_final``:
    lower the order to the number of steps left."""

    order: Literal[1, 2, 3] = 2
    prediction: Literal["data", "noise"] = "data"
    variant: Literal["bh1", "bh2"] = "bh2"
    corrector: bool = True
    lower_order_final: bool = True


def _update(grid: GridTable, start: int, x: Tensor, outputs: list[Tensor], order: int,
            options: UniPCOptions, new_output: Tensor | None = None) -> Tensor:
    """UniP (``new_output=None``) or UniC over the step ``grid.t[start] → grid.t[start+1]``.

    ``outputs[k]`` is the model output at ``grid.t[start − k]``; the predictor uses ``order``
    of them, the corrector ``order`` of them plus ``new_output`` at ``grid.t[start + 1]``.
    """
    lam = 0.5 * grid.log_snr
    t, s = start, start + 1
    h = lam[s] - lam[t]
    m0 = outputs[0]
    rks = [(lam[t - k] - lam[t]) / h for k in range(1, order)]
    diffs = [(outputs[k] - m0) / batch_coeff(r, m0) for k, r in zip(range(1, order), rks)]
    data = options.prediction == "data"
    hh = -h if data else h
    h_phi_1 = torch.expm1(hh)
    B_h = hh if options.variant == "bh1" else h_phi_1
    # b_j = φ_{j+1}(ĥ)·j!/B(h), j = 1..K, with ĥφ_1 = e^ĥ − 1 and φ_{j+1} = (φ_j − 1/j!)/ĥ.
    n_conditions = order if new_output is not None else order - 1
    b, h_phi_k, factorial = [], h_phi_1 / hh - 1.0, 1.0
    for j in range(1, n_conditions + 1):
        b.append(h_phi_k * factorial / B_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    if new_output is None:  # UniP: the order - 1 earlier outputs
        if order == 2:
            rhos = [torch.tensor(0.5, dtype=torch.float64)]
        elif order == 3:
            R = torch.stack([torch.ones(2, dtype=torch.float64), torch.stack(rks)])
            rhos = list(torch.linalg.solve(R, torch.stack(b)))
        else:
            rhos = []
    else:  # UniC: the earlier outputs and the new one (r = 1)
        diffs.append(new_output - m0)
        if order == 1:
            rhos = [torch.tensor(0.5, dtype=torch.float64)]
        else:
            r = torch.stack([*rks, torch.ones((), dtype=torch.float64)])
            R = torch.stack([r ** (j - 1) for j in range(1, order + 1)])
            rhos = list(torch.linalg.solve(R, torch.stack(b)))
    if data:
        x_s = batch_coeff(grid.sigma[s] / grid.sigma[t], x) * x - batch_coeff(grid.alpha[s] * h_phi_1, x) * m0
        scale = grid.alpha[s] * B_h
    else:
        x_s = batch_coeff(grid.alpha[s] / grid.alpha[t], x) * x - batch_coeff(grid.sigma[s] * h_phi_1, x) * m0
        scale = grid.sigma[s] * B_h
    for rho, d in zip(rhos, diffs):
        x_s = x_s - batch_coeff(scale * rho, x) * d
    return x_s


def unipc(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None,
          options: UniPCOptions, callback: Callback | None = None) -> Tensor:
    """UniPC along ``grid``; one network call per step."""
    outputs: list[Tensor] = []  # model outputs at grid.t[i], grid.t[i-1], ... (newest first)
    n = grid.steps
    last_x, last_order = x, 0
    for i in range(n):
        pred = model.predict(x, grid.t[i])
        m = pred.x0 if options.prediction == "data" else pred.eps
        if options.corrector and i > 0:
            x = _update(grid, i - 1, last_x, outputs, last_order, options, new_output=m)
        outputs = [m, *outputs[:2]]
        order = min(options.order, i + 1)
        if options.lower_order_final:
            order = min(order, n - i)
        last_x, last_order = x, order
        if grid.sigma[i + 1] == 0:  # λ = ∞: the first-order step's limit, a denoised estimate
            x0 = m if options.prediction == "data" else (x - batch_coeff(grid.sigma[i], x) * m) / batch_coeff(
                grid.alpha[i], x)
            x = batch_coeff(grid.alpha[i + 1], x) * x0
        else:
            x = _update(grid, i, x, outputs, order, options)
        report(callback, i, grid.t[i + 1], x, pred)
    return x


SPEC = SamplerSpec(
    "unipc", unipc, UniPCOptions, grid="quadratic", grid_geometric="uniform",
    variants=(("unipc bh2 2", {"order": 2, "variant": "bh2"}),
              ("unipc bh1 3", {"order": 3, "variant": "bh1"}),
              ("unipc bh2 3", {"order": 3, "variant": "bh2"})),
    paper="UniPC, Zhao et al. 2023", order="order + 1 (with corrector)", nfe="steps",
)
