"""Checks of the plain arguments the entry points share: step counts, numbers, dtypes, shapes.

Each returns the value in its canonical form or raises :class:`~scoresde.errors.InputTypeError`
(a value of the wrong type: a string, ``None``, a list or a bool where a number is needed) or
:class:`~scoresde.errors.InputError` (the right type, a value out of range), with a message that
names the argument, what was expected and what was given.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from scoresde.errors import InputError, InputTypeError

# The most grid steps any entry point accepts. Samplers are tested at 1…1000 steps; beyond 10⁶
# a run is hours per sample even on the oracle, and 10¹² steps would allocate an 8 TB grid.
MAX_STEPS = 10**6


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_real(value: Any, name: str, *, finite: bool = True) -> float:
    """``value`` as a float: a real number (not a bool, not a string), finite unless ``finite=False``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
            value = value.item()
        else:
            raise InputTypeError(f"{name} must be a number, got {_got(value)}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    return value


def check_int(
    value: Any, name: str, minimum: int = 1, maximum: int | None = None, expected: str | None = None
) -> int:
    """``value`` as an int in ``minimum..maximum``: an integer or an integral float (``5.0``), not a
    bool, not NaN or infinite. ``expected`` words the requirement (default: the range)."""
    if expected is None:
        expected = f"an integer >= {minimum}" if maximum is None else f"an integer in {minimum}..{maximum:,}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be {expected}, got {_got(value)}")
    if (
        not math.isfinite(value)
        or int(value) != value
        or not (minimum <= value and (maximum is None or value <= maximum))
    ):
        raise InputError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_steps(steps: Any) -> int:
    """A step count: an integer in ``1..MAX_STEPS``."""
    n = check_int(steps, "steps", 1)
    if n > MAX_STEPS:
        raise InputError(
            f"steps must be at most {MAX_STEPS:,}, got {n:,} (its time grid alone would take "
            f"{8 * (n + 1) / 1e9:.3g} GB; the samplers converge by ~1000 steps)"
        )
    return n


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is a bool (``"no"`` or ``0`` would be read as a truth value)."""
    if not isinstance(value, bool):
        raise InputTypeError(f"{name} must be True or False, got {_got(value)}")
    return value


def check_float_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    """A floating-point ``torch.dtype`` (float16, bfloat16, float32, float64)."""
    if not isinstance(dtype, torch.dtype):
        raise InputTypeError(f"{name} must be a torch.dtype such as torch.float32, got {_got(dtype)}")
    if not dtype.is_floating_point:
        raise InputError(
            f"{name} must be a floating-point dtype (torch.float32, torch.float64, …), got "
            f"{dtype}: samples and densities are real-valued"
        )
    return dtype


def check_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """``(batch, ...)``: a tuple (or list, or ``torch.Size``) of at least one positive int."""
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        hint = f" (for {shape} samples of one dimension pass ({shape}, 1))" if isinstance(shape, int) else ""
        raise InputTypeError(f"{name} must be a tuple of positive ints (batch, ...), got {_got(shape)}{hint}")
    out = tuple(shape)
    if not out or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in out
    ):
        raise InputError(f"{name} must be a tuple of positive ints (batch, ...), got {out}")
    return tuple(int(n) for n in out)


def check_tensor(x: Any, name: str, min_ndim: int = 1, floating: bool = True) -> torch.Tensor:
    """A tensor of at least ``min_ndim`` dimensions, floating point if ``floating``, finite."""
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of shape (batch, ...), got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise InputError(
            f"{name} must have at least {min_ndim} dimension(s) (batch, ...), got shape {tuple(x.shape)}"
        )
    if floating and not x.is_floating_point():
        raise InputError(f"{name} must be floating point, got {x.dtype} (convert with .float())")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise InputError(f"{name} must be finite; got NaN or inf")
    return x
