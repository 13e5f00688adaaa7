"""Forward SDEs with affine drift: ``dx = f(t) x dt + g(t) dw`` on ``t ∈ [0, T]``, ``T = 1``.

Every SDE here has Gaussian marginals ``x_t = alpha(t) x_0 + sigma(t) z`` and exposes

* ``alpha(t)``, ``sigma(t)``, ``log_snr(t) = 2 (log alpha − log sigma)`` and the inverse
  ``t_from_log_snr``;
* the drift coefficient ``f(t) = d log alpha / dt`` and ``g2(t) = g(t)²``, tied to the
  marginals by ``(sigma²)' = 2 f sigma² + g²``;
* ``marginal_prob``, ``prior_sample``, ``prior_logp``, ``discretize`` and ``reverse``
  in the conventions of score_sde.

Times and schedule coefficients are computed in float64 and returned as float64 tensors;
callers cast them to the state's dtype. Samplers never branch on the SDE type: everything
they need is ``alpha``, ``sigma``, ``f`` and ``g2``.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.errors import InputError, InputTypeError, InputWarning
from scoresde.schedules import CosineSchedule, DiscreteSchedule, LinearSchedule, Schedule, real_parameter

ScoreFn = Callable[[Tensor, Tensor], Tensor]

# SDE.prior_kl (nats per dimension, unit-scale data) above which a VP-family SDE warns that it does
# not reach its prior. Likelihoods are reported to 0.01 bits/dim = 0.0069 nats/dim, and the prior
# term log p_T(z) is off by about prior_kl per dimension, so 0.005 keeps that error below what a
# bits/dim table shows. For VP it means alpha(T) < 0.0998 (KL = −½ log(1 − alpha(T)²)); the
# library's schedules have 2e-5 (linear, cosine, DDPM's table) or less (the clipped cosine table),
# Stable Diffusion's scaled-linear table 2.4e-3, VPSDE(1e-4, 1e-3) (alpha(T) = 0.9997) 3.8.
PRIOR_KL_LIMIT = 0.005


def as_time(t: float | Tensor, like: Tensor | None = None) -> Tensor:
    """``t`` as a float64 tensor, checked to be finite.

    Numbers and host tensors — what every sampler passes, from its grid's host table — are checked
    on the host. A 0-d host time stays on the host (it broadcasts against ``like`` on any device);
    a per-sample host time is moved to ``like``'s device without a blocking copy. A time already on
    an accelerator is not read back: the check would make the host wait for the device, once per
    network call inside the step loops (such times come from the library's own adaptive loops and
    the training losses, which draw them in range).
    """
    if isinstance(t, Tensor) and t.device.type != "cpu":
        return t.to(torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise InputError(f"times must be finite, got {t}")
    if like is not None and t.ndim > 0 and like.device != t.device:
        t = t.to(like.device, non_blocking=True)
    return t


def batch_coeff(c: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-sample (or scalar) float64 coefficient against ``x`` in ``x``'s dtype.

    A 0-d host coefficient stays on the host (a scalar operand on any device); anything else is
    moved to ``x``'s device without a blocking copy.
    """
    c = c.to(dtype=x.dtype)
    if c.ndim == 0 and c.device.type == "cpu":
        return c
    c = c.to(x.device, non_blocking=True)
    if c.ndim == 0:
        return c
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


class SDE(abc.ABC):
    """Base class of the forward SDEs.

    ``N`` is the number of discretization steps of a discrete-time model (DDPM's step index,
    the variational bound, the discrete losses); ``None`` for a purely continuous SDE, which
    every sampler, the likelihood and the continuous loss accept.
    """

    T: float = 1.0
    # Whether time is log-noise-like (VE: sigma grows geometrically in t), so that a grid uniform in
    # t is already uniform in log σ and a grid quadratic in t crowds the steps at tiny σ. Samplers'
    # default grids read it (SamplerSpec.grid_for).
    geometric_time: bool = False

    def __init__(self, N: int | None = None):
        if N is not None and (isinstance(N, bool) or int(N) != N or N < 1):
            raise InputError(f"N must be a positive integer or None (continuous time), got {N!r}")
        self.N = None if N is None else int(N)

    def require_N(self, what: str) -> int:
        """``N``, or an error saying that ``what`` needs a discrete-time SDE."""
        if self.N is None:
            raise InputError(f"{what} needs a discrete-time SDE (N steps); this {type(self).__name__} "
                             "has N=None — construct it with N=...")
        return self.N

    # --- the schedule: every subclass defines these -------------------------------------
    @abc.abstractmethod
    def alpha(self, t: float | Tensor) -> Tensor:
        """Mean coefficient: ``E[x_t | x_0] = alpha(t) x_0``."""

    @abc.abstractmethod
    def sigma(self, t: float | Tensor) -> Tensor:
        """Marginal standard deviation of ``x_t | x_0``."""

    @abc.abstractmethod
    def log_snr(self, t: float | Tensor) -> Tensor:
        """``λ(t) = log(alpha² / sigma²)``, strictly decreasing in t."""

    @abc.abstractmethod
    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of ``log_snr`` (float64)."""

    @abc.abstractmethod
    def f(self, t: float | Tensor) -> Tensor:
        """Drift coefficient ``f(t)`` of ``dx = f(t) x dt + g(t) dw``."""

    @abc.abstractmethod
    def g2(self, t: float | Tensor) -> Tensor:
        """Squared diffusion coefficient ``g(t)²``."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior ``p_T``."""

    # --- derived quantities ---------------------------------------------------------------
    def sigma_bar(self, t: float | Tensor) -> Tensor:
        """``sigma/alpha = exp(−λ/2)``: the noise level of ``x/alpha`` (EDM's σ for VP)."""
        return torch.exp(-0.5 * self.log_snr(t))

    def t_from_sigma_bar(self, sigma_bar: Tensor) -> Tensor:
        """Inverse of ``sigma_bar``."""
        sigma_bar = torch.as_tensor(sigma_bar, dtype=torch.float64)
        t = self.t_from_log_snr(-2.0 * torch.log(sigma_bar))
        # The round trip t -> σ̄ -> t and a solver's stage time s + c·h are exact only to rounding:
        # σ̄(T) comes back as T + 2e-16 for many schedules, and the end of a VE grid at t = 0 as
        # −1e-14. Snap such round-off onto [0, T]; anything further out is left to be rejected.
        tol = 1e-9 * self.T
        t = torch.where((t < 0) & (t > -tol), torch.zeros_like(t), t)
        return torch.where((t > self.T) & (t < self.T + tol), torch.full_like(t, self.T), t)

    def drift(self, x: Tensor, t: float | Tensor) -> Tensor:
        return batch_coeff(self.f(t), x) * x

    def diffusion(self, t: float | Tensor) -> Tensor:
        return torch.sqrt(self.g2(t))

    def sde(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """``(drift, diffusion)`` at ``(x, t)`` as in score_sde; diffusion is per time."""
        return self.drift(x, t), self.diffusion(as_time(t, x))

    def marginal_prob(self, x0: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of ``p_t(x_t | x_0)``; the std is float64, of the shape of ``t``."""
        t = as_time(t, x0)
        return batch_coeff(self.alpha(t), x0) * x0, self.sigma(t)

    def perturb(self, x0: Tensor, t: float | Tensor, z: Tensor) -> Tensor:
        """``x_t = alpha(t)·x0 + sigma(t)·z``: the draw of ``p_t(x_t | x_0)`` made from the noise ``z``."""
        mean, std = self.marginal_prob(x0, t)
        return mean + batch_coeff(std, x0) * z

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw from ``N(0, prior_std² I)``."""
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return self.prior_std * z

    def prior_logp(self, z: Tensor) -> Tensor:
        """Log-density of the prior per sample (sums over all but the first axis), in nats."""
        d = z[0].numel()
        s2 = self.prior_std**2
        sq = z.flatten(1).pow(2).sum(1)
        return -0.5 * d * math.log(2 * math.pi * s2) - sq / (2 * s2)

    def prior_kl(self, data_rms: float = 1.0) -> float:
        """How far the marginal at T is from the prior: ``KL(p_T ‖ N(0, p² I))`` per dimension, in
        nats, bounded for any data whose coordinates have RMS ``data_rms``.

        A point ``x0`` reaches ``N(alpha_T x0, sigma_T² I)`` at T; KL is convex, so for data with
        ``E[x0²] = data_rms²`` per coordinate the marginal's KL is at most
        ``½(sigma_T²/p² + alpha_T² data_rms²/p² − 1 − log(sigma_T²/p²))`` per dimension, with
        ``p = prior_std``. Sampling starts from the prior instead of ``p_T``, which moves the samples
        by up to this much (the reverse SDE cannot increase a KL, data-processing inequality), and a
        likelihood's ``log p_T(z)`` is off by about as much per dimension.
        """
        a, s = float(self.alpha(self.T)), float(self.sigma(self.T))
        r2, p2 = (s / self.prior_std) ** 2, (a * data_rms / self.prior_std) ** 2
        return 0.5 * (r2 + p2 - 1.0 - math.log(r2))

    def warn_if_prior_unreached(self) -> None:
        """An :class:`~scoresde.errors.InputWarning` when :meth:`prior_kl` for unit-scale data
        exceeds :data:`PRIOR_KL_LIMIT`, stating ``alpha(T)``, ``sigma(T)`` and the prior."""
        kl = self.prior_kl()
        if kl > PRIOR_KL_LIMIT:
            a, s = float(self.alpha(self.T)), float(self.sigma(self.T))
            warnings.warn(
                f"{self!r} does not reach its prior: at T = {self.T:g} the marginal is "
                f"alpha(T)·x0 + sigma(T)·z with alpha(T) = {a:.4g}, sigma(T) = {s:.4g}, but sampling "
                f"starts from (and log_likelihood assumes) the prior N(0, {self.prior_std:g}²·I), i.e. "
                "alpha(T) ≈ 0; "
                f"for data of unit scale the marginal at T is {kl:.3g} nats per dimension from the prior "
                f"(warned above {PRIOR_KL_LIMIT:g}). Use a schedule with more noise at T (alpha(T) below "
                "≈ 0.1: a larger beta_max, or more steps in the β table).",
                InputWarning, stacklevel=3)

    def discretize(self, x: Tensor, t: float | Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        """Forward step from ``t − dt`` to ``t``: ``x_t ≈ x_{t−dt} + f + G z``, returns ``(f, G)``.

        The base class is Euler–Maruyama: ``f = f(t) x dt``, ``G = g(t) sqrt(dt)``.
        VP overrides it with the DDPM form and VE with the SMLD form.
        """
        t, dt = as_time(t, x), as_time(dt, x)
        return self.drift(x, t) * batch_coeff(dt, x), torch.sqrt(self.g2(t) * dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or, with ``probability_flow``, the PF-ODE) for ``score_fn``."""
        return ReverseSDE(self, score_fn, probability_flow)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(N={self.N})"


@dataclass(frozen=True)
class ReverseSDE:
    """``dx = [f x − c g² ∇log p_t(x)] dt + g' dw̄`` run from T to 0.

    ``c = 1``, ``g' = g`` for the reverse SDE; ``c = ½``, ``g' = 0`` for the probability-flow ODE.
    Both methods return quantities for a step *backwards* in time, as score_sde does.
    """

    forward: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    @property
    def _c(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def sde(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """Reverse drift and diffusion at ``(x, t)``."""
        t = as_time(t, x)
        g2 = self.forward.g2(t)
        drift = self.forward.drift(x, t) - batch_coeff(self._c * g2, x) * self.score_fn(x, t)
        diffusion = torch.zeros_like(g2) if self.probability_flow else torch.sqrt(g2)
        return drift, diffusion

    def discretize(self, x: Tensor, t: float | Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        """``(rev_f, rev_G)`` with ``x_{t−dt} = x_t − rev_f + rev_G z`` (reverse-diffusion form)."""
        t = as_time(t, x)
        f, G = self.forward.discretize(x, t, dt)
        rev_f = f - batch_coeff(self._c * G**2, x) * self.score_fn(x, t)
        rev_G = torch.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


class _VPFamily(SDE):
    """SDEs whose mean coefficient is ``alpha = sqrt(ᾱ(t))`` for a VP noise schedule.

    ``VPSDE(beta_min, beta_max, N)`` is the linear schedule; ``VPSDE(schedule=..., N=...)`` takes
    any :class:`~scoresde.schedules.Schedule` (``cosine`` and ``from_betas`` build them).
    """

    def __init__(self, beta_min: float | None = None, beta_max: float | None = None,
                 N: int | None = 1000, *, schedule: Schedule | None = None):
        super().__init__(N)
        if schedule is None:
            schedule = LinearSchedule(0.1 if beta_min is None else beta_min,
                                      20.0 if beta_max is None else beta_max)
        elif beta_min is not None or beta_max is not None:
            raise InputError("pass either beta_min/beta_max (the linear schedule) or schedule=, not both")
        elif not isinstance(schedule, Schedule):
            raise InputTypeError("schedule must be a scoresde.schedules.Schedule, "
                                 f"got {type(schedule).__name__}")
        self.schedule: Schedule = schedule
        self.warn_if_prior_unreached()

    @classmethod
    def cosine(cls, s: float = 0.008, t_max: float = 0.9946, N: int | None = 1000):
        """Nichol & Dhariwal's cosine schedule; see :class:`CosineSchedule`."""
        return cls(schedule=CosineSchedule(s=s, t_max=t_max), N=N)

    @classmethod
    def from_betas(cls, betas: Tensor):
        """A discrete DDPM schedule: ``ᾱ(t_i) = ∏_{j≤i}(1 − β_j)`` exactly at ``t_i = (i+1)/N``."""
        schedule = DiscreteSchedule(torch.as_tensor(betas, dtype=torch.float64))
        return cls(schedule=schedule, N=len(schedule.betas))

    def log_alpha_bar(self, t: float | Tensor) -> Tensor:
        return self.schedule.log_alpha_bar(as_time(t))

    def beta(self, t: float | Tensor) -> Tensor:
        """``β(t) = −d log ᾱ / dt``."""
        return self.schedule.beta(as_time(t))

    def alpha(self, t: float | Tensor) -> Tensor:
        return torch.exp(0.5 * self.log_alpha_bar(t))

    def f(self, t: float | Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    @property
    def discrete_betas(self) -> Tensor:
        """The DDPM β table of length N this SDE stands for (see the schedule's docstring)."""
        return self.schedule.discrete_betas(self.require_N("discrete_betas"))

    @property
    def prior_std(self) -> float:
        return 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r}, N={self.N})"


class VPSDE(_VPFamily):
    """Variance-preserving SDE: ``dx = −½β(t) x dt + sqrt(β(t)) dw``.

    ``alpha = sqrt(ᾱ)``, ``sigma = sqrt(1 − ᾱ)``. ``VPSDE(beta_min, beta_max, N)`` is the
    continuous linear schedule; ``VPSDE.cosine()`` and ``VPSDE.from_betas(betas)`` the others.
    ``discretize`` is the DDPM form ``x_t = sqrt(1 − β̂) x_{t−dt} + sqrt(β̂) z`` with the
    exact transition ``β̂ = 1 − ᾱ(t)/ᾱ(t − dt)`` (exactly β_i on a ``from_betas`` grid).
    """

    def sigma(self, t: float | Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(t)))

    def log_snr(self, t: float | Tensor) -> Tensor:
        la = self.log_alpha_bar(t)
        return la - torch.log(-torch.expm1(la))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        lam = torch.as_tensor(lam, dtype=torch.float64)
        return self.schedule.t_from_log_alpha_bar(torch.nn.functional.logsigmoid(lam))

    def g2(self, t: float | Tensor) -> Tensor:
        return self.beta(t)

    def discretize(self, x: Tensor, t: float | Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        t, dt = as_time(t, x), as_time(dt, x)
        beta_hat = -torch.expm1(self.log_alpha_bar(t) - self.log_alpha_bar(t - dt))
        f = batch_coeff(torch.sqrt(1.0 - beta_hat) - 1.0, x) * x
        return f, torch.sqrt(beta_hat)


class SubVPSDE(_VPFamily):
    """Sub-VP SDE (Song et al. 2021): ``dx = −½β x dt + sqrt(β (1 − ᾱ²)) dw``.

    ``alpha = sqrt(ᾱ)``, ``sigma = 1 − ᾱ`` (≤ the VP sigma). ``discretize`` is Euler–Maruyama.
    """

    def sigma(self, t: float | Tensor) -> Tensor:
        return -torch.expm1(self.log_alpha_bar(t))

    def log_snr(self, t: float | Tensor) -> Tensor:
        la = self.log_alpha_bar(t)
        return la - 2.0 * torch.log(-torch.expm1(la))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # sigma_bar = (1 − u²)/u with u = sqrt(ᾱ)  =>  u = 2 / (sigma_bar + sqrt(sigma_bar² + 4)).
        sb = torch.exp(-0.5 * torch.as_tensor(lam, dtype=torch.float64))
        u = 2.0 / (sb + torch.sqrt(sb * sb + 4.0))
        return self.schedule.t_from_log_alpha_bar(2.0 * torch.log(u))

    def g2(self, t: float | Tensor) -> Tensor:
        return self.beta(t) * -torch.expm1(2.0 * self.log_alpha_bar(t))


class VESDE(SDE):
    """Variance-exploding SDE: ``dx = sqrt(d sigma²/dt) dw``, ``sigma(t) = σ_min (σ_max/σ_min)^t``.

    ``alpha = 1``; the prior is ``N(0, σ_max² I)``. As in score_sde, the marginal at ``t`` has
    std ``sigma(t)`` (so ``t = 0`` carries ``σ_min`` of noise). ``discretize`` is the SMLD form
    ``x_t = x_{t−dt} + sqrt(sigma(t)² − sigma(t−dt)²) z``.

    Whether the prior is reached depends on the data: ``N(0, σ_max² I)`` is the marginal at T only
    when σ_max dwarfs the data (Song & Ermon 2020: at least the largest distance between training
    points), and unlike VP's ``N(0, I)`` the SDE fixes no data scale (``configs/digits_ve.py`` pairs
    data in [0, 1]^64 with σ_max = 8). So a VESDE does not warn when it is built;
    ``prior_kl(data_rms)`` gives the mismatch for data of a given scale.
    """

    geometric_time = True

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int | None = 1000):
        super().__init__(N)
        sigma_min = real_parameter("VESDE", "sigma_min", sigma_min)
        sigma_max = real_parameter("VESDE", "sigma_max", sigma_max)
        if not 0 < sigma_min < sigma_max:
            raise InputError(
                f"VESDE needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, "
                f"sigma_max={sigma_max}"
            )
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: float | Tensor) -> Tensor:
        return torch.ones_like(as_time(t))

    def sigma(self, t: float | Tensor) -> Tensor:
        return self.sigma_min * torch.exp(as_time(t) * self._log_ratio)

    def log_snr(self, t: float | Tensor) -> Tensor:
        return -2.0 * torch.log(self.sigma(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        lam = torch.as_tensor(lam, dtype=torch.float64)
        return (-0.5 * lam - math.log(self.sigma_min)) / self._log_ratio

    def f(self, t: float | Tensor) -> Tensor:
        return torch.zeros_like(as_time(t))

    def g2(self, t: float | Tensor) -> Tensor:
        return 2.0 * self._log_ratio * self.sigma(t) ** 2

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    @property
    def discrete_sigmas(self) -> Tensor:
        """score_sde's SMLD table: N geometric noise levels from σ_min to σ_max."""
        return torch.exp(
            torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max),
                           self.require_N("discrete_sigmas"), dtype=torch.float64)
        )

    def discretize(self, x: Tensor, t: float | Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        t, dt = as_time(t, x), as_time(dt, x)
        G = torch.sqrt(self.sigma(t) ** 2 - self.sigma(t - dt) ** 2)
        return torch.zeros_like(x), G

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"
