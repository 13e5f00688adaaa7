"""Singlestep DPM-Solver (Lu et al. 2022, Algorithms 1/2) and DPM-Solver++ (Lu et al. 2022b, 2S/3S).

A singlestep update of order k spends k network calls inside one interval ``[λ_t, λ_s]``: at its
start and at ``k − 1`` stage points. As in diffusers' ``DPMSolverSinglestepScheduler``, the stage
points are the grid's own intermediate times, so *every grid time is one network call* (NFE =
steps): the grid's intervals are grouped into updates of orders ``1, 2, …, k`` (the order list
below), and a group of k intervals is one k-th order update from its first time to its last.
The state reported at the inner times is the lower-order stage value. With ``h = λ_s − λ_t``,
``r_j = (λ_{stage j} − λ_t)/h`` and the output ``m`` (``x0`` in the data form, ``eps`` in the
noise form; the ψ's and the form of :mod:`~scoresde.samplers.exponential`):

    order 1 (= DDIM):   x_s = ratio·x_t − scale·ψ1(h)·m_t
    order 2:            x_s = order 1 − scale·ψ1(h)/(2r1)·(m_{s1} − m_t)           (Algorithm 4)
    order 3:            x_s = order 1 − scale·ψ2(h)/r2·(m_{s2} − m_t)              (Algorithm 5)

where the order-3 update's stage ``u_{s2}`` is the order-2 update from ``t`` (diffusers' choice;
the paper's ψ2 form of the second stage is also second order). On a log-SNR grid the stages sit
at ``r1 = ½`` (DPM-Solver-2, Algorithm 1) and ``r1 = ⅓, r2 = ⅔`` (DPM-Solver-3, Algorithm 2).

Order list (diffusers' ``get_order_list``): ``[1, 2, …, k]`` repeated; with ``lower_order_final``
(or when ``k`` does not divide the steps) the tail is lowered: order 3 ends ``[…, 1, 2, 1]``
(steps ≡ 0 mod 3), ``[…, 1]`` (≡ 1) or ``[…, 1, 2]`` (≡ 2); order 2 ends ``[…, 1, 1]`` (even) or
``[…, 1]`` (odd). A grid ending at ``sigma = 0`` ends with a first-order step, which there is
``x_s = alpha_s·x0``. ``thresholding`` (data form) is the dynamic thresholding of
:mod:`~scoresde.samplers.dpm_solver`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, SamplerSpec, report
from scoresde.samplers.exponential import DPMOptions, ExpStep, model_output, singlestep_update
from scoresde.sde import batch_coeff


@dataclass(frozen=True)
class DPMSolverSinglestepOptions(DPMOptions):
    """``order`` 1–3; ``prediction``: ``"data"`` (DPM-Solver++) or ``"noise"`` (DPM-Solver);
    ``lower_order_final``: lower the last group's order (see module); ``thresholding``: dynamic
    thresholding of ``x0`` (data form only) with ``threshold_ratio`` and ``threshold_max``."""

    @property
    def default_grid(self) -> str | None:
        # The noise form multiplies the change of eps across an update by σ_s·ψ(h) ~ e^h: a long
        # step in λ (a quadratic grid's first steps, or a cosine schedule's steep end) blew it up
        # (mean |x| off by 80 where the truth is 2, at 10 steps on the cosine schedule; by 28 at 5
        # steps on the linear one);
        # the log-SNR grid, which makes the longest step the shortest possible, is what Lu et al.
        # use for it. The data form keeps the quadratic grid it was measured best on.
        return "logsnr" if self.prediction == "noise" else None


def order_list(order: int, steps: int, lower_order_final: bool, zero_end: bool) -> list[int]:
    """The order of each grid step: groups ``1, 2, …, order`` (see the module docstring)."""
    full, rest = divmod(steps, order)
    if order == 1:
        orders = [1] * steps
    elif not lower_order_final and rest == 0:
        orders = list(range(1, order + 1)) * full
    elif rest == 0:  # the last group drops one order
        orders = list(range(1, order + 1)) * (full - 1) + list(range(1, order)) + [1]
    else:
        orders = list(range(1, order + 1)) * full + list(range(1, rest + 1))
    if zero_end:
        orders[-1] = 1
    return orders


def dpm_solver_singlestep(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None,
                          options: DPMSolverSinglestepOptions, callback: Callback | None = None) -> Tensor:
    """Singlestep DPM-Solver(++) along ``grid``; one network call per grid time but the last."""
    lam = 0.5 * grid.log_snr
    orders = order_list(options.order, grid.steps, options.lower_order_final, bool(grid.sigma[-1] == 0))
    x_start, outputs = x, []  # the group's start state and its outputs so far
    for i, order in enumerate(orders):
        if order == 1:
            x_start, outputs = x, []
        pred = model.predict(x, grid.t[i])
        outputs.append(model_output(pred, options))
        a = i + 1 - order  # the group's first grid index
        if grid.sigma[i + 1] == 0:  # λ = ∞ (a first-order step): the denoised estimate
            x = batch_coeff(grid.alpha[i + 1], x) * (outputs[-1] if options.thresholding else pred.x0)
        elif order == 1:
            x = ExpStep.on_grid(grid, i, i + 1, options.prediction).first_order(x, outputs[0])
        else:
            r = (lam[i] - lam[a]) / (lam[i + 1] - lam[a])
            step = ExpStep.on_grid(grid, a, i + 1, options.prediction)
            x = singlestep_update(step, x_start, outputs[0], outputs[-1], r, order)
        report(callback, i, grid.t[i + 1], x, pred)
    return x


SPEC = SamplerSpec(
    "dpm_solver_singlestep", dpm_solver_singlestep, DPMSolverSinglestepOptions, grid="quadratic",
    grid_geometric="uniform",
    variants=(("dpm++ 2S", {"order": 2, "prediction": "data"}),
              ("dpm++ 3S", {"order": 3, "prediction": "data"}),
              ("dpm-solver 2S", {"order": 2, "prediction": "noise"}),
              ("dpm-solver 3S", {"order": 3, "prediction": "noise"})),
    paper="DPM-Solver, Lu et al. 2022, Alg. 1–2; DPM-Solver++(2S/3S), Lu et al. 2022b",
    order="order (1–3)", nfe="steps",
)
