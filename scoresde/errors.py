"""The library's errors for bad input and its warnings for suspicious input.

Every check of a caller's value raises :class:`InputError` (a ``ValueError``) or, for a value of
the wrong type, :class:`InputTypeError` (also a ``TypeError``), with a message that says what was
expected and what was given, and how to fix it where that is not obvious. Code that catches
``ValueError``/``TypeError`` keeps working; the command line catches :class:`InputError` and prints
its message as one line (a traceback only with ``--debug``), so anything else that escapes is a bug
and keeps its traceback.

:class:`CheckpointError` is the input error of a checkpoint file that cannot be used (damaged,
forged, or valid but wrong inside: missing entries, shapes that do not fit the network, non-finite
weights). :class:`NonFiniteError` (also a ``FloatingPointError``) is a computation on the given
input that became non-finite, :class:`DependencyError` (also an ``ImportError``) an option that needs
an optional dependency which is not installed. :class:`InputWarning` is for input that works but
probably not as meant (a schedule that does not reach its prior, an absurd step count).
"""

from __future__ import annotations


class InputError(ValueError):
    """A value given to the library is not one it accepts."""


class InputTypeError(InputError, TypeError):
    """A value given to the library has the wrong type."""


class CheckpointError(InputError):
    """A checkpoint file that cannot be used: damaged, forged, or wrong inside."""


class NonFiniteError(InputError, FloatingPointError):
    """A computation on the given model, data or settings became non-finite (a training run that
    diverged, a network that returns NaN); the message says where and what to change."""


class DependencyError(InputError, ImportError):
    """An option or data set that needs an optional dependency which is not installed; the message
    says what to install."""


class InputWarning(UserWarning):
    """Input that is accepted but probably not what was meant."""
