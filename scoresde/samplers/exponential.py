"""Step maths of the exponential integrators (DPM-Solver, DPM-Solver++), shared by their samplers.

The PF-ODE's linear part is integrated exactly in the half log-SNR ``λ = log(alpha/sigma)``.
For a step from ``t`` to ``s`` with ``h = λ_s − λ_t`` the first-order (DDIM) update is

    data form  (D = x0,  Lu et al. 2022b):  x_s = (sigma_s/sigma_t)·x_t − alpha_s·(e^{−h} − 1)·D
    noise form (D = eps, Lu et al. 2022):   x_s = (alpha_s/alpha_t)·x_t − sigma_s·(e^{h} − 1)·D

Both read ``x_s = ratio·x_t − scale·ψ1·D`` with the signed step ``ĥ = −h`` (data) or ``ĥ = h``
(noise), and the higher-order corrections of every DPM-Solver variant use the same three
functions of ``ĥ`` times ``scale``:

    ψ1 = e^ĥ − 1,    ψ2 = (e^ĥ − 1)/ĥ − 1,    ψ3 = (e^ĥ − 1 − ĥ)/ĥ² − ½

(``ψ_k = ĥ·φ_k(ĥ)`` with the usual ``φ_k`` of exponential integrators). In the ``(x̄, σ̄)``
picture (``x̄ = x/alpha``) the noise form is ``ratio = 1``, ``scale = σ̄_s``. Coefficients are
formed in float64 (from a :class:`~scoresde.grids.GridTable` or float64 scalars) and cast to the
state's dtype only when applied.

Also here: dynamic thresholding of a data prediction (Saharia et al. 2022), which the data-form
samplers apply to ``x0`` before using it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import Prediction
from scoresde.samplers.base import DeterministicOptions
from scoresde.sde import batch_coeff


@dataclass(frozen=True)
class ExpStep:
    """The exact linear part of one step ``t → s``: ``x_s = ratio·x_t − scale·ψ1·D`` (see module).

    ``h_hat`` is the signed step ``ĥ`` (``−h`` in the data form, ``h`` in the noise form).
    """

    ratio: Tensor
    scale: Tensor
    h_hat: Tensor

    @classmethod
    def on_grid(cls, grid: GridTable, a: int, b: int, prediction: str) -> ExpStep:
        """The step ``grid.t[a] → grid.t[b]`` in the ``"data"`` or ``"noise"`` form."""
        h = 0.5 * (grid.log_snr[b] - grid.log_snr[a])
        if prediction == "data":
            return cls(grid.sigma[b] / grid.sigma[a], grid.alpha[b], -h)
        return cls(grid.alpha[b] / grid.alpha[a], grid.sigma[b], h)

    @classmethod
    def in_sigma_bar(cls, lam_t: Tensor, lam_s: Tensor) -> ExpStep:
        """The noise-form step in ``x̄`` from ``λ_t`` to ``λ_s``: ``x̄_s = x̄_t − σ̄_s·(e^h − 1)·eps``."""
        return cls(torch.ones_like(lam_s), torch.exp(-lam_s), lam_s - lam_t)

    @property
    def psi1(self) -> Tensor:
        return torch.expm1(self.h_hat)

    @property
    def psi2(self) -> Tensor:
        return torch.expm1(self.h_hat) / self.h_hat - 1.0

    @property
    def psi3(self) -> Tensor:
        return (torch.expm1(self.h_hat) - self.h_hat) / self.h_hat**2 - 0.5

    def coeff(self, c: Tensor, x: Tensor) -> Tensor:
        """``scale·c`` (float64) broadcast against ``x`` in its dtype."""
        return batch_coeff(self.scale * c, x)

    def first_order(self, x: Tensor, d0: Tensor) -> Tensor:
        """DPM-Solver-1 (= DDIM): ``ratio·x − scale·ψ1·D0``."""
        return batch_coeff(self.ratio, x) * x - self.coeff(self.psi1, x) * d0


def backward_differences(grid: GridTable, i: int, outputs: list[Tensor],
                         order: int) -> tuple[Tensor, Tensor | None]:
    """``(D1, D2)`` of a multistep step ``grid.t[i] → grid.t[i+1]`` from the model outputs
    ``outputs = [m0, m1, m2]`` (newest first) at ``grid.t[i], grid.t[i−1], grid.t[i−2]``, with
    ``r_k = h_k/h`` (``h = λ_{i+1} − λ_i``, ``h_0 = λ_i − λ_{i−1}``, ``h_1 = λ_{i−1} − λ_{i−2}``):

    * ``order = 2``: ``D1 = (m0 − m1)/r0``, ``D2 = None``;
    * ``order = 3``: ``D1_0 = (m0 − m1)/r0``, ``D1_1 = (m1 − m2)/r1``,
      ``D1 = D1_0 + r0/(r0 + r1)·(D1_0 − D1_1)``, ``D2 = (D1_0 − D1_1)/(r0 + r1)``

    (Lu et al. 2022b, Algorithm 2; diffusers' "midpoint" form for order 2).
    """
    lam = 0.5 * grid.log_snr
    h = lam[i + 1] - lam[i]
    m0, m1 = outputs[0], outputs[1]
    r0 = (lam[i] - lam[i - 1]) / h
    D1_0 = (m0 - m1) / batch_coeff(r0, m0)
    if order == 2:
        return D1_0, None
    r1 = (lam[i - 1] - lam[i - 2]) / h
    D1_1 = (m1 - outputs[2]) / batch_coeff(r1, m0)
    D1 = D1_0 + batch_coeff(r0 / (r0 + r1), m0) * (D1_0 - D1_1)
    return D1, (D1_0 - D1_1) / batch_coeff(r0 + r1, m0)


def multistep_update(step: ExpStep, x: Tensor, grid: GridTable, i: int, outputs: list[Tensor], order: int,
                     second_order: str = "midpoint") -> Tensor:
    """A multistep DPM-Solver(++) update of ``order`` 1–3 along ``step`` (the step ``grid.t[i] →
    grid.t[i+1]``) from ``outputs`` (newest first, see :func:`backward_differences`):

        x_s = first_order − scale·c·D1                       order 2, c = ½ψ1 ("midpoint") or ψ2 ("heun")
        x_s = first_order − scale·ψ2·D1 − scale·ψ3·D2        order 3
    """
    x_s = step.first_order(x, outputs[0])
    if order == 1:
        return x_s
    D1, D2 = backward_differences(grid, i, outputs, order)
    if order == 2:
        c = 0.5 * step.psi1 if second_order == "midpoint" else step.psi2
        return x_s - step.coeff(c, x) * D1
    return x_s - step.coeff(step.psi2, x) * D1 - step.coeff(step.psi3, x) * D2


def singlestep_update(step: ExpStep, x: Tensor, m0: Tensor, m_r: Tensor, r: Tensor, order: int) -> Tensor:
    """A singlestep update from the output ``m0`` at the step's start and ``m_r`` at the stage
    whose λ lies the fraction ``r`` into the step (``D1 = (m_r − m0)/r``):

    * ``order = 2``: ``x_s = first_order − scale·ψ1/(2r)·(m_r − m0)``: DPM-Solver-2 for a general
      ``r1`` (Lu et al. 2022, Algorithm 4; ``r1 = ½`` is Algorithm 1's midpoint step), DPM-Solver++(2S);
    * ``order = 3``: ``x_s = first_order − scale·ψ2/r·(m_r − m0)``: the last stage of DPM-Solver-3
      (Algorithm 5, ``r = r2``) and of DPM-Solver++(3S), and DPM-Solver-3's second stage.
    """
    c = 0.5 * step.psi1 if order == 2 else step.psi2
    return step.first_order(x, m0) - step.coeff(c / r, x) * (m_r - m0)


def dynamic_threshold(x0: Tensor, ratio: float, max_value: float) -> Tensor:
    """Dynamic thresholding (Saharia et al. 2022, Imagen): per sample,
    ``s = clamp(quantile(|x0|, ratio), 1, max_value)`` over all its entries, and
    ``x0 ← clip(x0, −s, s)/s``. ``max_value = 1`` is plain clipping to ``[−1, 1]``; diffusers'
    ``thresholding=True`` with ``dynamic_thresholding_ratio``, ``sample_max_value``."""
    flat = x0.reshape(len(x0), -1)
    if flat.dtype not in (torch.float32, torch.float64):  # quantile needs a full float type
        flat = flat.float()
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0, max=max_value).unsqueeze(1)
    return (torch.maximum(torch.minimum(flat, s), -s) / s).reshape(x0.shape).to(x0.dtype)


@dataclass(frozen=True)
class DPMOptions(DeterministicOptions):
    """The options every DPM-Solver sampler declares: ``order`` 1–3; ``prediction``: ``"data"``
    (DPM-Solver++) or ``"noise"`` (DPM-Solver); ``lower_order_final``: lower the order of the last
    steps at small step counts; ``thresholding``: dynamic thresholding of ``x0`` (data form only)
    with ``threshold_ratio`` and ``threshold_max``."""

    order: Literal[1, 2, 3] = 2
    prediction: Literal["data", "noise"] = "data"
    lower_order_final: bool = True
    thresholding: bool = False
    threshold_ratio: float = 0.995
    threshold_max: float = 1.0

    def validate(self) -> None:
        """``threshold_ratio`` ∈ (0, 1], ``threshold_max`` ≥ 1, ``thresholding`` with the data form."""
        if not 0.0 < self.threshold_ratio <= 1.0:
            raise InputError(f"threshold_ratio must lie in (0, 1], got {self.threshold_ratio}")
        if not 1.0 <= self.threshold_max < float("inf"):
            raise InputError(f"threshold_max must be a finite number >= 1, got {self.threshold_max}")
        if self.thresholding and self.prediction != "data":
            raise InputError("thresholding clips the data prediction x0 and needs prediction='data', "
                             f"got prediction={self.prediction!r}")

    def unused(self) -> dict[str, str]:
        if self.thresholding:
            return {}
        why = "with thresholding=False (pass thresholding=True to clip x0)"
        return {"threshold_ratio": why, "threshold_max": why}


def model_output(pred: Prediction, options: Any) -> Tensor:
    """What a DPM sampler integrates: ``x0`` (thresholded if asked) or ``eps``."""
    if options.prediction == "noise":
        return pred.eps
    if options.thresholding:
        return dynamic_threshold(pred.x0, options.threshold_ratio, options.threshold_max)
    return pred.x0
