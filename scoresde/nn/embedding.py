"""Time embeddings: how the scalar time input ``c`` of a network becomes a feature vector.

* :func:`sinusoidal_embedding` (Transformer / DDPM): ``[sin(c·ω_k), cos(c·ω_k)]`` with
  frequencies ``ω_k = max_period^(−k/h)``, ``k = 0..h−1``, ``h = dim/2`` — suited to inputs on
  the scale of a step index (``time_input="index"`` or ``"scaled"``).
* :class:`GaussianFourierProjection` (NCSN++, Tancik et al. 2020): ``[sin(2π c W), cos(2π c W)]``
  with fixed ``W ~ N(0, scale²)`` of size ``dim/2`` — suited to O(1) inputs such as continuous
  ``t`` or ``log sigma``.

Both are computed in at least float32 and returned in ``c``'s dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

EMBEDDINGS = ("sinusoidal", "fourier")


def _half(dim: int) -> int:
    """Half of an embedding size, which must be even (sines and cosines in equal number)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"embedding dim must be a positive even number, got {dim}")
    return dim // 2


def sinusoidal_embedding(c: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """``(batch,) -> (batch, dim)``: ``[sin(c·ω_k), cos(c·ω_k)]``, ``ω_k = max_period^(−k/(dim/2))``."""
    half = _half(dim)
    dtype = torch.promote_types(c.dtype, torch.float32)
    k = torch.arange(half, device=c.device, dtype=dtype)
    args = c.to(dtype)[:, None] * torch.exp(-math.log(max_period) * k / half)[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1).to(c.dtype)


class SinusoidalEmbedding(nn.Module):
    """:func:`sinusoidal_embedding` as a module."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        _half(dim)
        self.dim, self.max_period = dim, max_period

    def forward(self, c: Tensor) -> Tensor:
        return sinusoidal_embedding(c, self.dim, self.max_period)


class GaussianFourierProjection(nn.Module):
    """``(batch,) -> (batch, dim)``: ``[sin(2π c W), cos(2π c W)]`` with fixed ``W ~ N(0, scale²)``.

    ``W`` is a buffer (saved in the state dict, never trained), drawn from torch's global
    generator like every other initial weight, so ``torch.manual_seed`` fixes it.
    """

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("W", torch.randn(_half(dim)) * scale)

    def forward(self, c: Tensor) -> Tensor:
        dtype = torch.promote_types(c.dtype, torch.float32)
        args = 2 * math.pi * c.to(dtype)[:, None] * self.W.to(dtype)[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1).to(c.dtype)


def time_embedding(kind: str, dim: int, fourier_scale: float = 16.0) -> nn.Module:
    """The embedding module named ``kind`` (one of :data:`EMBEDDINGS`) of output size ``dim``."""
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim)
    if kind == "fourier":
        return GaussianFourierProjection(dim, fourier_scale)
    raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {kind!r}")
