"""Time embeddings: how the scalar time input ``c`` of a network becomes a feature vector.

* :func:`sinusoidal_embedding` (Transformer / DDPM): ``[sin(c·ω_k), cos(c·ω_k)]`` with
  frequencies ``ω_k = max_period^(−k/h)``, ``k = 0..h−1``, ``h = dim/2`` — suited to inputs on
  the scale of a step index (``time_input="index"`` or ``"scaled"``).
* :class:`GaussianFourierProjection` (NCSN++, Tancik et al. 2020): ``[sin(2π c W), cos(2π c W)]``
  with fixed ``W ~ N(0, scale²)`` of size ``dim/2`` — suited to O(1) inputs such as continuous
  ``t`` or ``log sigma``.

Both are computed in at least float32 and returned in ``c``'s dtype.

:class:`ClassEmbedding` is the class-label counterpart (guided-diffusion's ``label_emb``, EDM's
``map_label``): a learned table of ``num_classes + 1`` rows whose last row is the null label of
classifier-free guidance, which :data:`scoresde.analytic.NULL_LABEL` (−1) selects.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scoresde.analytic import NULL_LABEL
from scoresde.errors import InputError

EMBEDDINGS = ("sinusoidal", "fourier")


def _half(dim: int) -> int:
    """Half of an embedding size, which must be even (sines and cosines in equal number)."""
    if dim < 2 or dim % 2:
        raise InputError(f"embedding dim must be a positive even number, got {dim}")
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
    raise InputError(f"embedding must be one of {EMBEDDINGS}, got {kind!r}")


class ClassEmbedding(nn.Module):
    """``labels (batch,) -> (batch, dim)``: row ``label`` of a learned table, the null label's
    (:data:`~scoresde.analytic.NULL_LABEL` = −1) being the extra last row ``num_classes``.

    Initialised ``N(0, 1)`` (``nn.Embedding``'s default, as guided-diffusion's ``label_emb``).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor) -> Tensor:
        if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point() \
                or labels.is_complex() or labels.dtype == torch.bool:
            got = f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, Tensor) \
                else type(labels).__name__
            raise InputError(f"class labels must be a (batch,) integer tensor, got {got}")
        check_range(labels, NULL_LABEL, self.num_classes,
                    f"class labels must lie in 0..{self.num_classes - 1} "
                    f"(or {NULL_LABEL} for the null label)")
        return self.table(torch.where(labels == NULL_LABEL, self.num_classes, labels))


def check_range(labels: Tensor, low: int, high: int, expected: str) -> None:
    """Refuse labels outside ``low ≤ label < high`` (``expected`` says the rule).

    Host labels are checked on the host with an error that lists the bad values. Labels on an
    accelerator are checked by an asynchronous device assertion instead: reading the verdict back
    would make the host wait for the device at every network call of a sampling loop, and an
    out-of-range index would fail on the device in the embedding lookup anyway.
    """
    bad = (labels < low) | (labels >= high)
    if labels.device.type != "cpu":
        torch._assert_async(~bad.any(), expected)
    elif bad.any():
        raise InputError(f"{expected}, got {sorted(set(labels[bad].tolist()))}")


def class_embedding(num_classes: int, dim: int) -> ClassEmbedding | None:
    """The :class:`ClassEmbedding` of a network with ``num_classes`` classes; ``None`` for 0
    (an unconditional network)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise InputError(f"num_classes must be an integer >= 0 (0: unconditional), got {num_classes!r}")
    return ClassEmbedding(num_classes, dim) if num_classes else None


def add_class_embedding(emb: Tensor, classes: ClassEmbedding | None, labels: Tensor | None) -> Tensor:
    """``emb + classes(labels)`` (``emb`` of shape ``(batch, dim)``) for a class-conditional
    network, ``emb`` for an unconditional one (``classes is None``).

    Raises:
        ValueError: labels given to an unconditional network, none given to a conditional one, or
            not one label per sample.
    """
    if classes is None:
        if labels is not None:
            raise InputError("this network is unconditional (num_classes=0) but was given class labels; "
                             "build it with num_classes > 0 to condition on them")
        return emb
    if labels is None:
        raise InputError(f"this class-conditional network (num_classes={classes.num_classes}) needs one "
                         f"label per sample, net(x, c, labels) (cond=labels; {NULL_LABEL} for the null "
                         "label)")
    if isinstance(labels, Tensor) and labels.shape != (emb.shape[0],):
        raise InputError(f"expected one class label per sample, shape ({emb.shape[0]},), "
                         f"got {tuple(labels.shape)}")
    return emb + classes(labels).to(emb.dtype)
