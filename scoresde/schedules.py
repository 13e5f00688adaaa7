"""VP noise schedules: ``log ᾱ(t)``, ``β(t) = −d log ᾱ/dt`` and the inverse ``t(log ᾱ)``.

All in float64. A schedule is shared by :class:`~scoresde.sde.VPSDE` and
:class:`~scoresde.sde.SubVPSDE`, which differ only in how ``sigma`` follows from ``ᾱ``.
"""

from __future__ import annotations

import abc
import math
import numbers

import torch
from torch import Tensor

from scoresde.errors import InputError, InputTypeError


def real_parameter(owner: str, name: str, value: object) -> float:
    """``value`` as a float, checked to be a finite real number (a bool or a string is refused).

    A schedule or SDE constructor calls this for each of its numbers, so that ``beta_max=inf`` or
    ``sigma_max=nan`` is an error naming the parameter instead of a schedule of NaNs.
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{owner}: {name} must be a real number, got {value!r} "
                             f"({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{owner}: {name} must be finite, got {value}")
    return value


class Schedule(abc.ABC):
    @abc.abstractmethod
    def log_alpha_bar(self, t: Tensor) -> Tensor:
        """``log ᾱ(t)``, with ``ᾱ(0) = 1``, strictly decreasing."""

    @abc.abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        """``β(t) = −d log ᾱ(t) / dt``."""

    @abc.abstractmethod
    def t_from_log_alpha_bar(self, log_alpha_bar: Tensor) -> Tensor:
        """Inverse of ``log_alpha_bar``."""

    def discrete_betas(self, N: int) -> Tensor:
        """β table of length N with ``∏_{j≤i}(1 − β_j) = ᾱ((i+1)/N)``."""
        t = torch.arange(N + 1, dtype=torch.float64) / N
        return -torch.expm1(torch.diff(self.log_alpha_bar(t)))


class LinearSchedule(Schedule):
    """``β(t) = β_min + t (β_max − β_min)``, ``log ᾱ(t) = −β_min t − ½ (β_max − β_min) t²``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        beta_min = real_parameter("LinearSchedule", "beta_min", beta_min)
        beta_max = real_parameter("LinearSchedule", "beta_max", beta_max)
        if not 0 < beta_min <= beta_max:
            raise InputError(
                f"need 0 < beta_min <= beta_max, got beta_min={beta_min}, beta_max={beta_max}"
            )
        self.beta_min, self.beta_max = beta_min, beta_max

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        return -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t * t

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def t_from_log_alpha_bar(self, log_alpha_bar: Tensor) -> Tensor:
        # Root of ½Δ t² + β_min t + l = 0, in the form that is stable for Δ → 0.
        b0, db = self.beta_min, self.beta_max - self.beta_min
        l = torch.as_tensor(log_alpha_bar, dtype=torch.float64)
        return -2.0 * l / (b0 + torch.sqrt(b0 * b0 - 2.0 * db * l))

    def discrete_betas(self, N: int) -> Tensor:
        """score_sde's DDPM table ``linspace(β_min/N, β_max/N, N)``: ``β_i = β(i/(N−1))/N``.

        With the defaults and N = 1000 this is DDPM's linear schedule 1e-4 → 0.02. It is the
        Euler discretization of the SDE, so its ``∏(1 − β_j)`` matches ``ᾱ`` only to O(1/N).
        """
        return torch.linspace(self.beta_min / N, self.beta_max / N, N, dtype=torch.float64)

    def __repr__(self) -> str:
        return f"LinearSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"


class CosineSchedule(Schedule):
    """Nichol & Dhariwal (2021): ``ᾱ = cos²(φ(u)) / cos²(φ(0))``, ``φ(u) = (u + s)/(1 + s)·π/2``.

    ``ᾱ`` reaches 0 at ``u = 1``, where ``β`` diverges, so physical time ``t ∈ [0, 1]`` maps to
    ``u = t·t_max`` with ``t_max = 0.9946`` (as in DPM-Solver), which keeps ``ᾱ(1) ≈ 4e-5``.
    """

    def __init__(self, s: float = 0.008, t_max: float = 0.9946):
        s = real_parameter("CosineSchedule", "s", s)
        t_max = real_parameter("CosineSchedule", "t_max", t_max)
        if not (s > 0 and 0 < t_max < 1):
            raise InputError(f"need s > 0 and 0 < t_max < 1, got s={s}, t_max={t_max}")
        self.s, self.t_max = s, t_max
        self._log_cos0 = math.log(math.cos(self._phi(0.0)))
        self._tan0 = math.tan(self._phi(0.0))

    def _phi(self, u):
        return (u + self.s) / (1.0 + self.s) * (math.pi / 2)

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        # 2 log(cos(φ0 + δ)/cos φ0) = 2 log1p(−2 sin²(δ/2) − tan φ0 · sin δ), δ = φ(u) − φ(0):
        # exactly 0 at t = 0 and negative after. The direct log cos(φ) − log cos(φ0) rounds to
        # +3e-20 at t = 0, which made sigma(0) = sqrt(−expm1(+3e-20)) NaN.
        d = t * self.t_max / (1.0 + self.s) * (math.pi / 2)
        return 2.0 * torch.log1p(-2.0 * torch.sin(0.5 * d) ** 2 - self._tan0 * torch.sin(d))

    def beta(self, t: Tensor) -> Tensor:
        return self.t_max * math.pi / (1.0 + self.s) * torch.tan(self._phi(t * self.t_max))

    def t_from_log_alpha_bar(self, log_alpha_bar: Tensor) -> Tensor:
        l = torch.as_tensor(log_alpha_bar, dtype=torch.float64)
        phi = torch.arccos(torch.exp(0.5 * l + self._log_cos0))
        u = phi * (2.0 / math.pi) * (1.0 + self.s) - self.s
        return u / self.t_max

    def __repr__(self) -> str:
        return f"CosineSchedule(s={self.s}, t_max={self.t_max})"


class DiscreteSchedule(Schedule):
    """An exact DDPM table: step ``i`` sits at ``t_i = (i+1)/N`` with ``ᾱ(t_i) = ∏_{j≤i}(1 − β_j)``.

    ``ᾱ(0) = 1`` and ``log ᾱ`` is linear in t between the knots ``0, 1/N, …, 1``, so ``β(t)`` is
    piecewise constant, ``−N log(1 − β_i)`` on ``(i/N, (i+1)/N]``.
    """

    def __init__(self, betas: Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 1:
            raise InputError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        bad = ~(torch.isfinite(betas) & (betas > 0) & (betas < 1))
        if bad.any():
            i = int(bad.nonzero()[0])
            raise InputError(f"every beta must lie in (0, 1) (ᾱ_i = ∏(1 − β_j) strictly decreasing and "
                             f"> 0), got betas[{i}] = {float(betas[i])!r} ({int(bad.sum())} of {len(betas)} "
                             "outside)")
        zero = torch.zeros(1, dtype=torch.float64)
        knots = torch.cat([zero, torch.cumsum(torch.log1p(-betas), 0)])  # log ᾱ at k/N
        # A β far below the rounding of its running sum leaves log ᾱ flat: t(ᾱ) would divide by 0.
        flat = torch.diff(knots) >= 0
        if flat.any():
            i = int(flat.nonzero()[0])
            raise InputError(f"betas[{i}] = {float(betas[i])!r} does not decrease log ᾱ = "
                             f"{float(knots[i]):.6g} in float64: the noise level must strictly increase at "
                             "every step (raise the smallest betas)")
        self.betas = betas
        self.N = len(betas)
        self._knots = knots

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        p = t * self.N
        # A grid time k/N can round to p = k·(1 + ulp) (e.g. N = 999, 137); snap it back so that a
        # knot always ends the segment to its left, as documented, instead of opening the next one.
        k = torch.round(p)
        p = torch.where((p - k).abs() <= 4 * torch.finfo(p.dtype).eps * k.abs().clamp(min=1.0), k, p)
        i = (torch.ceil(p) - 1).clamp(0, self.N - 1).long()
        return i, p - i

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        knots = self._knots.to(t.device)
        i, frac = self._segment(t)
        return torch.lerp(knots[i], knots[i + 1], frac)

    def beta(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        i, _ = self._segment(t)
        return -self.N * torch.log1p(-self.betas.to(t.device)[i])

    def t_from_log_alpha_bar(self, log_alpha_bar: Tensor) -> Tensor:
        l = torch.as_tensor(log_alpha_bar, dtype=torch.float64)
        neg = -self._knots.to(l.device)  # increasing
        i = (torch.searchsorted(neg, -l.contiguous()) - 1).clamp(0, self.N - 1)
        frac = (-l - neg[i]) / (neg[i + 1] - neg[i])
        return (i + frac) / self.N

    def discrete_betas(self, N: int) -> Tensor:
        if N != self.N:
            raise InputError(f"this table has N={self.N} steps, asked for {N}")
        return self.betas

    def __repr__(self) -> str:
        return f"DiscreteSchedule(N={self.N})"
