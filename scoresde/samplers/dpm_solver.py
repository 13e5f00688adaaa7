"""Multistep DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b), orders 1–3.

Both integrate the PF-ODE exactly in its linear part, in the half log-SNR ``λ = log(alpha/sigma)``
(``λ = log_snr/2``), and approximate the model's output by a polynomial in λ through the
current and previous evaluations. With ``h = λ_s − λ_t`` for a step from ``t`` to ``s``:

data prediction (DPM-Solver++, ``prediction="data"``, D from ``x0``)::

    x_s = (sigma_s/sigma_t)·x_t − alpha_s·(e^{−h} − 1)·D0                      order 1 (= DDIM)
          − ½·alpha_s·(e^{−h} − 1)·D1                                          + order 2 (2M)
          + alpha_s·((e^{−h} − 1)/h + 1)·D1 − alpha_s·((e^{−h} − 1 + h)/h² − ½)·D2   order 3 (3M)

noise prediction (DPM-Solver, ``prediction="noise"``, D from ``eps``)::

    x_s = (alpha_s/alpha_t)·x_t − sigma_s·(e^{h} − 1)·D0
          − ½·sigma_s·(e^{h} − 1)·D1                                           (2M)
          − sigma_s·((e^{h} − 1)/h − 1)·D1 − sigma_s·((e^{h} − 1 − h)/h² − ½)·D2      (3M)

with the backward differences of the model outputs ``m0, m1, m2`` at the current and two
previous times (``r_k = h_k/h``, ``h_0 = λ_t − λ_{t₋₁}``, ``h_1 = λ_{t₋₁} − λ_{t₋₂}``):
``D0 = m0``; order 2: ``D1 = (m0 − m1)/r0``; order 3: ``D1_0 = (m0 − m1)/r0``,
``D1_1 = (m1 − m2)/r1``, ``D1 = D1_0 + r0/(r0 + r1)·(D1_0 − D1_1)``,
``D2 = (D1_0 − D1_1)/(r0 + r1)`` (diffusers' ``DPMSolverMultistepScheduler``, "midpoint" form for
order 2, the form of Algorithm 2 of the DPM-Solver++ paper).

The order warms up (step ``k`` uses at most order ``k + 1``); with ``lower_order_final`` and
fewer than 15 steps the last two steps use orders ≤ 1 and ≤ 2, as DPM-Solver and diffusers do
for stability at small step counts. A step that ends at ``sigma = 0`` (λ = ∞) is the first-order
data-prediction step ``x_s = alpha_s·x0``, whatever the order. One network call per step.
Step sizes come from the grid's float64 table; the coefficients are formed in float64 with
``expm1`` and cast to the state's dtype (the step maths lives in
:mod:`scoresde.samplers.exponential`, shared with the singlestep and adaptive samplers).

``thresholding`` (data form only) applies dynamic thresholding (Saharia et al. 2022) to every
``x0`` before it enters the update, as diffusers' ``thresholding=True``: per sample
``s = clamp(quantile(|x0|, threshold_ratio), 1, threshold_max)``, ``x0 ← clip(x0, −s, s)/s``;
it assumes data scaled to ``[−1, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerSpec, multistep_order, report
from scoresde.samplers.exponential import DPMOptions, ExpStep, model_output, multistep_update
from scoresde.sde import batch_coeff


@dataclass(frozen=True)
class DPMSolverOptions(DPMOptions):
    """``order`` 1–3; ``prediction``: ``"data"`` (DPM-Solver++) or ``"noise"`` (DPM-Solver);
    ``lower_order_final``: lower the order of the last steps below 15 steps; ``thresholding``:
    dynamic thresholding of ``x0`` (data form only) with ``threshold_ratio`` and ``threshold_max``."""


def dpm_solver(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None,
               options: DPMSolverOptions, callback: Callback | None = None) -> Tensor:
    """Multistep DPM-Solver(++) along ``grid``; one network call per step."""
    outputs: list[Tensor] = []  # model outputs at grid.t[i], grid.t[i-1], ... (newest first)
    n = grid.steps
    for i in range(n):
        pred = model.predict(x, grid.t[i])
        outputs = [model_output(pred, options), *outputs[:2]]
        if grid.sigma[i + 1] == 0:  # λ = ∞: the exact step is the denoised estimate
            x = batch_coeff(grid.alpha[i + 1], x) * (outputs[0] if options.thresholding else pred.x0)
        else:
            order = multistep_order(options.order, i, n, options.lower_order_final)
            step = ExpStep.on_grid(grid, i, i + 1, options.prediction)
            x = multistep_update(step, x, grid, i, outputs, order)
        report(callback, i, grid.t[i + 1], x, pred)
    return x


SPEC = SamplerSpec(
    "dpm_solver", dpm_solver, DPMSolverOptions, grid="quadratic", grid_geometric="uniform",
    variants=(("dpm++ 2M", {"order": 2, "prediction": "data"}),
              ("dpm++ 3M", {"order": 3, "prediction": "data"}),
              ("dpm-solver 2M", {"order": 2, "prediction": "noise"}),
              ("dpm-solver 3M", {"order": 3, "prediction": "noise"})),
    paper="DPM-Solver, Lu et al. 2022; DPM-Solver++ (multistep), Lu et al. 2022b",
    order="order (1–3; 3 starts with lower orders)", nfe="steps",
)
