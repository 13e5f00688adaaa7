"""What every sampler shares: the call contract, typed options, the spec, per-step reports.

A sampler is a pure function

    sampler(model, x, grid, noise, options, callback) -> x_end

``model`` is a :class:`~scoresde.model.CountingModel` (``.predict(x, t)`` with the condition
already bound, and ``.sde``), ``x`` the state at ``grid.t[0]``, ``grid`` a
:class:`~scoresde.grids.GridTable` (times and their float64 schedule coefficients, computed once
per call), ``noise`` a :class:`~scoresde.noise.NoiseSource` (``None`` for a deterministic run),
``options`` the sampler's own frozen options dataclass and ``callback`` the per-step reporter.
Samplers hold no state between calls.

A fixed-step sampler's loop never reads the device: it branches on the grid's host table and its
options only, never on the state (no ``.item()``, ``bool()``, ``if tensor``, ``float()``, ``.cpu()``,
boolean masks), so on an accelerator the host queues every step without waiting; a check of the
state runs once, after the loop (``tests/test_host_sync.py`` runs every loop on a state that refuses
host reads). Adaptive solvers decide each step on the host and are the exception.

Options are declared once per sampler, as a frozen dataclass deriving from
:class:`SamplerOptions`: field names, types and defaults are the documentation, the CLI's
parser, the validation (a misspelt name is an error listing the valid ones; a value of the
wrong type is an :class:`~scoresde.errors.InputTypeError` naming the type; an option that the chosen
configuration does not use — ``rtol`` with a fixed-step ``ode`` method, ``variance`` with a predictor
that draws no ancestral step — is an error naming the options it does use, see
:meth:`SamplerOptions.unused`) and, through the ``stochastic`` and ``uses_grid`` properties, what
:func:`scoresde.sample` needs to know about a run.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from torch import Tensor

from scoresde.errors import InputError, InputTypeError
from scoresde.grids import GridTable
from scoresde.model import CountingModel, Prediction
from scoresde.noise import NoiseSource
from scoresde.registry import did_you_mean
from scoresde.sde import SDE

Callback = Callable[[dict[str, Any]], None]


def _coerce(owner: str, name: str, value: Any, kind: Any) -> Any:
    """``value`` checked against the declared type ``kind`` (ints are accepted as floats; a bool is
    not a number); a mismatch is an :class:`~scoresde.errors.InputTypeError` naming both."""
    def fail(expected: str) -> InputTypeError:
        hint = " (pass a number, not a string)" if isinstance(value, str) and kind in (float, int) else ""
        return InputTypeError(f"{owner} option {name!r} must be {expected}, got {value!r} "
                              f"({type(value).__name__}){hint}")

    if typing.get_origin(kind) is Literal:
        allowed = typing.get_args(kind)
        if isinstance(value, bool) or value not in allowed:  # True == 1 must not pass as 1
            raise fail("one of " + ", ".join(repr(a) for a in allowed))
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise fail("True or False")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise InputTypeError(f"{owner}.{name}: option type {kind!r} is not supported (use float, int, bool, "
                         "str or Literal[...])")


@dataclass(frozen=True)
class SamplerOptions:
    """Base of every sampler's options; subclasses add fields and override the hooks below."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = _coerce(self.label(), f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        self.validate()

    @classmethod
    def label(cls) -> str:
        return cls.__name__

    def validate(self) -> None:
        """Check ranges and combinations; raise ``InputError`` saying what was expected."""

    def unused(self) -> dict[str, str]:
        """The options this configuration ignores, each with why (``{"rtol": "with method='heun' (a
        fixed-step method; rtol/atol are for the adaptive ones)"}``). Giving one is an error
        (:meth:`check_used`): a value that has no effect is a mistake the caller wants to hear about."""
        return {}

    def check_used(self, given: list[str], owner: str) -> None:
        """Raise :class:`~scoresde.errors.InputError` if any name in ``given`` is :meth:`unused`,
        naming it, why, and the options this configuration does use."""
        unused = self.unused()
        for name in given:
            if name in unused:
                used = [f.name for f in fields(self) if f.name not in unused]
                raise InputError(f"{owner} option {name!r} is not used {unused[name]}; this configuration "
                                 f"uses: {', '.join(used) or '(no options)'} — drop {name!r} or change the "
                                 "option it depends on")

    @property
    def stochastic(self) -> bool:
        """Whether the run draws noise (so it needs a generator and cannot encode)."""
        return True

    @property
    def uses_grid(self) -> bool:
        """Whether the run steps through every grid time (False: adaptive, ends only)."""
        return True

    @property
    def default_grid(self) -> str | None:
        """The default grid this configuration needs instead of its spec's; None: the spec's."""
        return None

    @classmethod
    def declared(cls) -> list[tuple[str, str, Any]]:
        """``(name, type, default)`` of every option, in declaration order."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in fields(cls):
            kind = hints[f.name]
            text = (" | ".join(repr(a) for a in typing.get_args(kind))
                    if typing.get_origin(kind) is Literal else kind.__name__)
            out.append((f.name, text, None if f.default is MISSING else f.default))
        return out

    @classmethod
    def describe(cls) -> str:
        """``"eta: float = 0.0"``-style list of the options, or ``"(none)"``."""
        parts = [f"{name}: {kind} = {default!r}" for name, kind, default in cls.declared()]
        return ", ".join(parts) or "(none)"


# (model, x, grid, noise, options, callback) -> x at grid.t[-1]
@dataclass(frozen=True)
class DeterministicOptions(SamplerOptions):
    """Options of a sampler that draws no noise (it can run without a generator and encode)."""

    @property
    def stochastic(self) -> bool:
        return False


SamplerFn = Callable[[CountingModel, Tensor, GridTable, NoiseSource | None, Any, Callback | None], Tensor]


@dataclass(frozen=True)
class Variant:
    """A named sampler configuration: what the demo, ``scoresde bench`` and the benchmarks run."""

    label: str
    sampler: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler, its options class, its measured defaults and its named variants.

    ``variants`` are ``(label, options)`` pairs; the first is the sampler's main variant (the one
    the demo shows). Defaults (``grid``, ``t_end``, ``denoise``) are measured on the oracle
    benchmarks (see the README's sampler table). ``paper`` names the method's source, ``order``
    its order of convergence (global, deterministic part; "—" where none is claimed) and ``nfe``
    its network calls as a formula in ``steps`` (without the final ``denoise`` call); the README's
    table is generated from these.
    """

    name: str
    fn: SamplerFn
    options: type[SamplerOptions]
    grid: str = "uniform"
    t_end: float = 0.0
    denoise: bool = False
    variants: tuple[tuple[str, dict[str, Any]], ...] = ()
    paper: str = ""
    order: str = "—"
    nfe: str = "steps"
    # (t_end, denoise) of an adaptive configuration (options.uses_grid False) of a sampler whose
    # fixed-step default ends at t = 0: an adaptive solve evaluates the model at its end, which
    # must have sigma > 0. None: the same ends as the fixed-step runs.
    adaptive_ends: tuple[float, bool] | None = None
    # The default grid on an SDE whose time is geometric in σ (VE, ``sde.geometric_time``), where
    # a grid quadratic in t spends its steps at tiny σ; None: ``grid`` there too.
    grid_geometric: str | None = None

    def __post_init__(self) -> None:
        if not self.variants:
            object.__setattr__(self, "variants", ((self.name, {}),))
        for _, options in self.variants:  # a typo in the table fails at import, not in a benchmark
            self.parse(options)

    def parse(self, options: Mapping[str, Any] | SamplerOptions | None = None) -> SamplerOptions:
        """The typed options for keyword ``options``: an unknown name is an error listing the valid
        ones, a value of the wrong type an :class:`~scoresde.errors.InputTypeError`, an option the
        configuration does not use (even at its default value) an error naming those it uses."""
        if isinstance(options, self.options):
            return options
        if isinstance(options, SamplerOptions):
            raise InputTypeError(f"sampler {self.name!r} takes {self.options.__name__}, "
                                 f"got {type(options).__name__}")
        options = dict(options or {})
        valid = [f.name for f in fields(self.options)]
        unknown = [k for k in options if k not in valid]
        if unknown:
            k = unknown[0]
            raise InputError(f"sampler {self.name!r} has no option {k!r}{did_you_mean(k, valid)}; "
                             f"its options are: {self.options.describe()}")
        parsed = self.options(**options)
        parsed.check_used(list(options), f"sampler {self.name!r}")
        return parsed

    def grid_for(self, sde: SDE, options: SamplerOptions | None = None) -> str:
        """The default grid's name on ``sde`` for ``options``: the options' ``default_grid`` where
        they name one, else ``grid``, or ``grid_geometric`` on a VE SDE."""
        if options is not None and options.default_grid is not None:
            return options.default_grid
        if self.grid_geometric is not None and sde.geometric_time:
            return self.grid_geometric
        return self.grid

    def default_ends(self, options: SamplerOptions) -> tuple[float, bool]:
        """``(t_end, denoise)`` that :func:`scoresde.sample` uses when the caller gives none."""
        if self.adaptive_ends is not None and not options.uses_grid:
            return self.adaptive_ends
        return self.t_end, self.denoise

    def variant_list(self) -> list[Variant]:
        return [Variant(label, self.name, dict(options)) for label, options in self.variants]


# Below this many steps a multistep method's last steps drop order (DPM-Solver's and diffusers'
# threshold, "lower_order_final"), for stability at small step counts.
LOWER_ORDER_FINAL_BELOW = 15


def multistep_order(order: int, i: int, steps: int, lower_order_final: bool) -> int:
    """The order of step ``i`` of ``steps`` for a multistep method of ``order``: the history
    warms up (step ``i`` has ``i + 1`` evaluations), and with ``lower_order_final`` below
    :data:`LOWER_ORDER_FINAL_BELOW` steps the last two steps use orders ≤ 1 and ≤ 2."""
    order = min(order, i + 1)
    if lower_order_final and steps < LOWER_ORDER_FINAL_BELOW:
        order = min(order, steps - i)
    return order


def report(callback: Callback | None, i: int, t: Tensor, x: Tensor,
           pred: Prediction | None = None) -> None:
    """Send ``{"i", "t", "x", "x0"}`` after step ``i`` (``t`` is the time ``x`` is now at)."""
    if callback is not None:
        info = {"i": i, "t": float(t), "x": x}
        if pred is not None:
            info["x0"] = pred.x0
        callback(info)
