"""Predictor–corrector sampling (Song et al. 2021, Algorithms 2–3) for every SDE.

At each grid time ``t`` the corrector runs ``n_corrector`` Langevin MCMC steps targeting
``p_t``, then the predictor moves ``x`` from ``t`` to the next time ``s`` (``dt = t − s``):

Predictors
    ``reverse_diffusion``  ``x_s = x_t − f + G²·score + G·z`` with ``(f, G) = sde.discretize``
                           (DDPM form for VP, SMLD for VE, Euler–Maruyama for sub-VP);
    ``euler_maruyama``     ``x_s = x_t − (f(t)·x_t − g²·score)·dt + g·sqrt(dt)·z``;
    ``ancestral``          the DDPM posterior step (``variance`` "beta", "posterior",
                           "learned" or "analytic"; "auto": learned if the model has it, else beta);
    ``none``               corrector only.
Correctors (step size ε, then ``x ← x + ε·score + sqrt(2ε)·z``)
    ``langevin``           ``ε = 2·a·(snr·‖z‖/‖score‖)²`` with ``a = (alpha_t/alpha_s)²``
                           (score_sde's ``α_i``: 1 − β_i for VP, 1 for VE);
    ``annealed_langevin``  ``ε = 2·a·(snr·sigma_t)²`` (SMLD's schedule);
    ``none``               predictor only.

``langevin`` averages the norms over the batch, as score_sde does: a per-sample ratio blows up
where a sample's score is near zero (a mode's centre in low dimension) and makes the step size
depend on ``x``, which biases the chain. The price is that a sample depends on its batch;
``annealed_langevin`` uses no norms and is batch-size invariant. A score that is zero for the
whole batch leaves ``langevin``'s step size undefined; the run then fails, after its loop, with an
error saying so (a check per step would read the device at every step). The step that ends the grid
adds no noise (score_sde's noise removal).
One network call per corrector step and one per predictor step.

Predictors and correctors are step functions in two registries (:data:`PREDICTORS`,
:data:`CORRECTORS`); adding one is a function and a ``register`` line, and the ``pc`` options
accept every registered name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.errors import InputError
from scoresde.grids import GridTable
from scoresde.model import CountingModel, Prediction
from scoresde.noise import NoiseSource
from scoresde.registry import Registry
from scoresde.samplers.base import Callback, SamplerOptions, SamplerSpec, report
from scoresde.samplers.steps import Variance, resolve_variance, reverse_step
from scoresde.sde import SDE, batch_coeff

# (sde, grid, i, pred at grid.t[i], z or None, options) -> x at grid.t[i + 1]
PredictorStep = Callable[[SDE, GridTable, int, Prediction, "Tensor | None", "PCOptions"], Tensor]
# (sde, grid, i, pred at grid.t[i], z, options) -> x at grid.t[i], one Langevin step on
CorrectorStep = Callable[[SDE, GridTable, int, Prediction, Tensor, "PCOptions"], Tensor]

PREDICTORS: Registry[PredictorStep] = Registry("predictor")
CORRECTORS: Registry[CorrectorStep] = Registry("corrector")
NONE = "none"


def _per_sample_norm(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1)


def reverse_diffusion(sde: SDE, grid: GridTable, i: int, pred: Prediction, z: Tensor | None,
                      options: PCOptions) -> Tensor:
    """``x_s = x_t − f + G²·score + G·z`` with ``(f, G) = sde.discretize`` (the SDE's own form)."""
    t = grid.t[i]
    rev_f, rev_g = sde.reverse(lambda _x, _t: pred.score).discretize(pred.x, t, t - grid.t[i + 1])
    x_mean = pred.x - rev_f
    return x_mean if z is None else x_mean + batch_coeff(rev_g, z) * z


def euler_maruyama(sde: SDE, grid: GridTable, i: int, pred: Prediction, z: Tensor | None,
                   options: PCOptions) -> Tensor:
    """``x_s = x_t − (f(t)·x_t − g²·score)·dt + g·sqrt(dt)·z``."""
    t, dt = grid.t[i], grid.t[i] - grid.t[i + 1]
    drift, diffusion = sde.reverse(lambda _x, _t: pred.score).sde(pred.x, t)
    x_mean = pred.x - drift * batch_coeff(dt, pred.x)
    return x_mean if z is None else x_mean + batch_coeff(diffusion * torch.sqrt(dt), z) * z


def ancestral_predictor(sde: SDE, grid: GridTable, i: int, pred: Prediction, z: Tensor | None,
                        options: PCOptions) -> Tensor:
    """The DDPM posterior step with ``options.variance`` (``"auto"``: learned if the model has it, else β)."""
    return reverse_step(pred, grid, i, z, variance=resolve_variance(options.variance, pred, "beta"))


def _langevin_update(pred: Prediction, step: Tensor, z: Tensor) -> Tensor:
    step = batch_coeff(step.to(z.dtype).expand(z.shape[0]), z)
    return pred.x + step * pred.score + torch.sqrt(2.0 * step) * z


def langevin(sde: SDE, grid: GridTable, i: int, pred: Prediction, z: Tensor,
             options: PCOptions) -> Tensor:
    """``ε = 2·a·(snr·‖z‖/‖score‖)²``, norms averaged over the batch (score_sde's corrector)."""
    a = (grid.alpha[i] / grid.alpha[i + 1]) ** 2
    grad_norm = _per_sample_norm(pred.score).mean()
    # A zero score for the whole batch leaves the step size undefined: NaN, which :func:`pc` reports
    # after its loop (testing it here would read the device at every step).
    grad_norm = torch.where(grad_norm > 0, grad_norm, torch.nan)
    ratio = options.snr * _per_sample_norm(z).mean() / grad_norm
    return _langevin_update(pred, 2.0 * a.to(z.dtype) * ratio * ratio, z)


def annealed_langevin(sde: SDE, grid: GridTable, i: int, pred: Prediction, z: Tensor,
                      options: PCOptions) -> Tensor:
    """``ε = 2·a·(snr·sigma_t)²`` (SMLD's schedule); no norms, so batch-size invariant."""
    a = (grid.alpha[i] / grid.alpha[i + 1]) ** 2
    return _langevin_update(pred, 2.0 * a * (options.snr * grid.sigma[i]) ** 2, z)


PREDICTORS.register("reverse_diffusion", reverse_diffusion)
PREDICTORS.register("euler_maruyama", euler_maruyama)
PREDICTORS.register("ancestral", ancestral_predictor)
CORRECTORS.register("langevin", langevin)
CORRECTORS.register("annealed_langevin", annealed_langevin)


@dataclass(frozen=True)
class PCOptions(SamplerOptions):
    """``predictor``/``corrector``: a registered name or ``"none"``; ``snr``: Langevin's
    signal-to-noise ratio; ``n_corrector``: Langevin steps per time; ``variance``: the ancestral
    predictor's noise: ``"beta"`` (score_sde's), ``"posterior"``, ``"learned"``, ``"analytic"``
    (see :mod:`~scoresde.samplers.steps`), ``"auto"`` (default): learned if the model has it, else beta."""

    predictor: str = "reverse_diffusion"
    corrector: str = "langevin"
    snr: float = 0.16
    n_corrector: int = 1
    variance: Variance = "auto"

    def validate(self) -> None:
        for name, registry in (("predictor", PREDICTORS), ("corrector", CORRECTORS)):
            value = getattr(self, name)
            if value != NONE:
                try:
                    registry.get(value)
                except ValueError as e:
                    raise InputError(f"{e}, or {NONE!r}") from None
        if self.n_corrector < 0:
            raise InputError(f"n_corrector must be an integer >= 0, got {self.n_corrector!r}")
        if not self.snr > 0:
            raise InputError(f"snr must be > 0, got {self.snr}")
        if self.predictor == NONE and (self.corrector == NONE or self.n_corrector == 0):
            raise InputError("predictor='none' needs a corrector with n_corrector >= 1")

    def unused(self) -> dict[str, str]:
        out = {}
        if self.predictor != "ancestral":
            out["variance"] = f"with predictor={self.predictor!r} (only the 'ancestral' predictor draws it)"
        if self.corrector == NONE:
            why = "with corrector='none' (no Langevin steps run)"
            out.update(snr=why, n_corrector=why)
        elif self.n_corrector == 0:
            why = "with n_corrector=0 (no Langevin steps run)"
            out.update(snr=why, corrector=why)
        return out


def pc(model: CountingModel, x: Tensor, grid: GridTable, noise: NoiseSource, options: PCOptions,
       callback: Callback | None = None) -> Tensor:
    """Predictor–corrector sampling along ``grid``."""
    sde = model.sde
    predictor = PREDICTORS.get(options.predictor) if options.predictor != NONE else None
    corrector = CORRECTORS.get(options.corrector) if options.corrector != NONE else None
    n = grid.steps
    for i in range(n):
        pred = None
        if corrector is not None:
            for _ in range(options.n_corrector):
                pred = model.predict(x, grid.t[i])
                x = corrector(sde, grid, i, pred, noise.randn(x.shape, x.dtype, x.device), options)
        if predictor is not None:
            pred = model.predict(x, grid.t[i])
            z = noise.randn(x.shape, x.dtype, x.device) if i < n - 1 else None
            x = predictor(sde, grid, i, pred, z, options)
        report(callback, i, grid.t[i + 1], x, pred)
    # Once, after the loop (a check per step would read the device at every step):
    if options.corrector == "langevin" and options.n_corrector > 0 and not torch.isfinite(x).all():
        raise InputError(
            "pc produced non-finite values: the Langevin step size (snr·‖z‖/‖score‖)² is undefined where the "
            "model's score is zero for the whole batch (an untrained network's may be); use "
            "corrector='annealed_langevin' — or the model's outputs are not finite"
        )
    return x


SPEC = SamplerSpec(
    "pc", pc, PCOptions, grid="quadratic", grid_geometric="uniform", t_end=1e-3, denoise=True,
    variants=(("pc rd+langevin", {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16}),
              ("pc rd", {"predictor": "reverse_diffusion", "corrector": "none"})),
    paper="predictor–corrector, Song et al. 2021 (score SDE), Alg. 2–3", order="— (stochastic)",
    nfe="steps·(1 + n_corrector)",
)
