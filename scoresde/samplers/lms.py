"""Linear multistep methods for the PF-ODE in DDIM coordinates: LMS, iPNDM and DEIS-tAB.

In ``x̄ = x/alpha``, ``σ̄ = sigma/alpha`` the probability-flow ODE is ``dx̄/dσ̄ = eps(x, t)``, so a
step from ``σ̄_i`` to ``σ̄_{i+1}`` is exactly

    x̄_{i+1} = x̄_i + ∫_{σ̄_i}^{σ̄_{i+1}} eps dσ̄.

An Adams–Bashforth method replaces ``eps`` under the integral by the polynomial through the
current and the ``order − 1`` previous evaluations ``eps_i, eps_{i−1}, …`` and integrates it:

    x̄_{i+1} = x̄_i + Σ_j c_j·eps_{i−j},    c_j = ∫_{σ̄_i}^{σ̄_{i+1}} ℓ_j dσ̄,

``ℓ_j`` the Lagrange basis polynomial of node ``j``. The three methods differ in the variable the
polynomial lives in:

* ``"lms"``: a polynomial in ``σ̄`` through the grid's σ̄ nodes (k-diffusion's ``sample_lms``,
  Crowson; variable-step Adams–Bashforth). k-diffusion integrates ``ℓ_j`` with
  ``scipy.integrate.quad``; here the integral is exact polynomial integration in float64:
  with ``u = (σ̄ − σ̄_i)/h``, ``h = σ̄_{i+1} − σ̄_i``, ``c_j = h·∫_0^1 ℓ_j(u) du``, term by term
  from ``ℓ_j``'s monomial coefficients.
* ``"ipndm"``: improved PNDM (Zhang & Chen 2023, the DEIS paper, §4 and App. B; the iPNDM of
  EDM-style codebases): the fixed Adams–Bashforth weights of equal steps,
  ``c = h·(1)``, ``h·(3, −1)/2``, ``h·(23, −16, 5)/12``, ``h·(55, −59, 37, −9)/24``, whatever the
  grid's spacing. On a grid with equal σ̄ steps this is ``"lms"``; on a smoothly graded grid the
  fixed weights miss the step ratios by ``O(h)``, which caps the global order at 2 for orders ≥ 2.
* ``"deis"``: DEIS-tAB in its log-ρ form (Zhang & Chen 2023, eq. 13 with ``ρ = σ̄``; diffusers'
  ``DEISMultistepScheduler``): a polynomial in ``v = log σ̄ = −log_snr/2`` through the nodes
  ``v_i, v_{i−1}, …``, integrated against ``dσ̄ = e^v dv``:
  ``c_j = σ̄_i·∫_0^H ℓ_j(w) e^w dw`` with ``w = v − v_i``, ``H = v_{i+1} − v_i``, from the moments
  ``I_m(H) = ∫_0^H w^m e^w dw`` (series for ``|H| ≤ 1``, recursion ``I_m = H^m e^H − m·I_{m−1}``
  beyond). A step to ``σ̄ = 0`` is ``H = −∞`` with ``I_m = (−1)^{m+1} m!``: finite, no special step.
  Order 1 of every method is DDIM.

The order warms up (step ``k`` uses at most order ``k + 1``); with ``lower_order_final`` and
fewer than 15 steps the last two steps use orders ≤ 1 and ≤ 2, as diffusers' DEIS does by default
(k-diffusion's LMS and diffusers' iPNDM have no such rule). Defaults: the quadratic grid to
``t = 0`` won the sweep of ``benchmarks/default_grids.py`` (narrow ring, 64-D mixture, digits),
ahead of the same grid to ``t_end = 1e-3`` with a denoising step; ``lower_order_final`` off was as
good or better on the samplers' 3-mode test mixture.
The network is evaluated at every grid time but the last, once per step, so a grid ending at
``sigma = 0`` never evaluates it there. Coefficients are float64 (from the grid's ``sigma_bar``),
the state stays in the caller's dtype; the history of ``eps`` lives in local variables of one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import NoiseSource
from scoresde.samplers.base import Callback, DeterministicOptions, SamplerSpec, multistep_order, report
from scoresde.sde import batch_coeff

MAX_ORDER = {"lms": 4, "ipndm": 4, "deis": 3}
# Adams–Bashforth weights for equal steps, newest evaluation first (iPNDM).
ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


@dataclass(frozen=True)
class LMSOptions(DeterministicOptions):
    """``method``: ``"lms"`` (k-diffusion), ``"ipndm"`` (fixed AB weights) or ``"deis"`` (DEIS
    log-ρ); ``order``: 1–4 (``deis``: 1–3); ``lower_order_final``: lower the order of the last
    two steps below 15 steps."""

    method: Literal["lms", "ipndm", "deis"] = "lms"
    order: int = 4
    lower_order_final: bool = False

    def validate(self) -> None:
        top = MAX_ORDER[self.method]
        if not 1 <= self.order <= top:
            raise InputError(f"order must be an integer in 1..{top} for method={self.method!r}, "
                             f"got {self.order}")


def lagrange_monomials(nodes: list[float], j: int) -> list[float]:
    """Monomial coefficients ``[a_0, a_1, …]`` of ``ℓ_j(u) = Π_{k≠j} (u − u_k)/(u_j − u_k)``."""
    coeffs = [1.0]
    for k, u_k in enumerate(nodes):
        if k == j:
            continue
        scale = nodes[j] - u_k
        shifted = [0.0, *coeffs]  # u·p(u)
        coeffs = [(shifted[m] - u_k * (coeffs[m] if m < len(coeffs) else 0.0)) / scale
                  for m in range(len(shifted))]
    return coeffs


def lagrange_weights(nodes: list[float], moments: list[float]) -> list[float]:
    """``c_j = ∫ ℓ_j w = Σ_m a_{j,m}·M_m`` from the moments ``M_m = ∫ u^m w`` of the weight."""
    return [sum(a * moments[m] for m, a in enumerate(lagrange_monomials(nodes, j)))
            for j in range(len(nodes))]


def exp_moments(H: float, n: int) -> list[float]:
    """``I_m(H) = ∫_0^H w^m e^w dw`` for ``m < n``; ``H = −∞`` gives ``(−1)^{m+1} m!``."""
    if H == -math.inf:
        return [(-1.0) ** (m + 1) * math.factorial(m) for m in range(n)]
    if abs(H) <= 1.0:  # H^{m+1}·Σ_k H^k/(k!·(m+k+1)): no cancellation for small steps
        out = []
        for m in range(n):
            term, total, k = 1.0, 0.0, 0
            while True:
                add = term / (m + k + 1)
                total += add
                if abs(add) <= 1e-17 * abs(total):
                    break
                k += 1
                term *= H / k
            out.append(H ** (m + 1) * total)
        return out
    out = [math.expm1(H)]
    for m in range(1, n):
        out.append(H**m * math.exp(H) - m * out[-1])
    return out


def step_weights(sigma_bar: list[float], i: int, order: int, method: str) -> list[float]:
    """Weights ``c_j`` (newest first) of ``eps`` at ``σ̄_i, σ̄_{i−1}, …`` for the step
    ``σ̄_i → σ̄_{i+1}`` of the grid's float64 ``sigma_bar``, as Python floats (see the module
    docstring for each method)."""
    s = sigma_bar
    h = s[i + 1] - s[i]
    if method == "ipndm":
        return [h * c for c in ADAMS_BASHFORTH[order]]
    if method == "lms":
        nodes = [(s[i - k] - s[i]) / h for k in range(order)]
        return [h * c for c in lagrange_weights(nodes, [1.0 / (m + 1) for m in range(order)])]
    nodes = [math.log(s[i - k] / s[i]) for k in range(order)]
    H = math.log(s[i + 1] / s[i]) if s[i + 1] > 0 else -math.inf
    return [s[i] * c for c in lagrange_weights(nodes, exp_moments(H, order))]


def lms(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource | None, options: LMSOptions,
        callback: Callback | None = None) -> Tensor:
    """Linear multistep along ``grid`` in ``(x̄, σ̄)``; one network call per step."""
    x_bar = x / batch_coeff(grid.alpha[0], x)
    history: list[Tensor] = []  # eps at grid.t[i], grid.t[i-1], ... (newest first)
    sigma_bar, n = grid.sigma_bar.tolist(), grid.steps
    for i in range(n):
        pred = model.predict(x_bar * batch_coeff(grid.alpha[i], x_bar), grid.t[i])
        history = [pred.eps, *history[:MAX_ORDER[options.method] - 1]]
        order = multistep_order(options.order, i, n, options.lower_order_final)
        weights = step_weights(sigma_bar, i, order, options.method)
        x_bar = x_bar + sum(c * e for c, e in zip(weights, history, strict=False))
        report(callback, i, grid.t[i + 1], x_bar * batch_coeff(grid.alpha[i + 1], x_bar), pred)
    return x_bar * batch_coeff(grid.alpha[-1], x_bar)


SPEC = SamplerSpec(
    "lms", lms, LMSOptions, grid="quadratic", grid_geometric="uniform",
    variants=(("lms 4", {"method": "lms", "order": 4}),
              ("ipndm 4", {"method": "ipndm", "order": 4}),
              ("deis 3", {"method": "deis", "order": 3})),
    paper="LMS (k-diffusion, Crowson); iPNDM and DEIS-tAB, Zhang & Chen 2023",
    order="order (lms; deis); ipndm: ≤ 2 on a graded grid", nfe="steps",
)
