"""Property-based tests over the public API's arguments (hypothesis; issue 14).

* Valid calls — a random sampler configuration (every one of tests/samplers/test_sampler_contract.py's
  table, adaptive ones included), step count, batch, dimension, dtype, SDE and seed on the analytic
  mixture oracle — give finite samples of the requested shape and dtype, with the NFE the sampler
  documents (that table's formula; adaptive solvers: at least one call).
* Invalid calls — exactly one argument of an otherwise valid call made bad: step counts that are
  fractional, NaN, infinite, zero, negative, above the bound, strings or bools; non-floating or
  non-dtype dtypes; shapes that are ints, empty, or hold non-positive or non-int entries; unknown
  option names; option values of the wrong type; ends outside [0, T); likelihood settings that the
  chosen ODE method does not use — always raise :class:`~scoresde.errors.InputError` (never another
  exception, never a result).

The default run draws a few examples per property, derandomized (the same ones every run, ~3 s in
all); the ``slow`` marker runs the same properties on many random examples.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scoresde as sd
from scoresde.checks import MAX_STEPS
from scoresde.errors import InputError

# The contract test's table of configurations and their NFE formulas, imported as pytest imports it
# (tests/samplers/ on the path, module name test_sampler_contract), so that it is loaded once.
sys.path.insert(0, str(Path(__file__).resolve().parent / "samplers"))
_contract = importlib.import_module("test_sampler_contract")
VARIANTS, _expected_nfe = _contract.VARIANTS, _contract._expected_nfe

F64 = torch.float64
FAST = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SLOW = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SDES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}


@cache
def oracle(sde_name: str, dim: int) -> sd.ScoreModel:
    """A two-mode mixture in ``dim`` dimensions (modes ±0.5, stds 0.3 and 0.5) under ``sde_name``."""
    means = torch.stack([torch.full((dim,), -0.5, dtype=F64), torch.full((dim,), 0.5, dtype=F64)])
    gmm = sd.GaussianMixture(means, torch.tensor([0.3, 0.5], dtype=F64), torch.tensor([0.4, 0.6], dtype=F64))
    return gmm.score_model(SDES[sde_name](), prediction="eps")


# --- valid calls -----------------------------------------------------------------------------------
valid_calls = st.fixed_dictionaries(
    {
        "variant": st.sampled_from(VARIANTS),
        "steps": st.integers(1, 8),
        "batch": st.integers(1, 4),
        "dim": st.integers(1, 3),
        "dtype": st.sampled_from([torch.float32, F64]),
        "sde": st.sampled_from(sorted(SDES)),
        "seed": st.integers(0, 2**31 - 1),
    }
)


def check_valid(call: dict) -> None:
    _, sampler, options, nfe_fn = call["variant"]
    model = oracle(call["sde"], call["dim"])
    steps = None if nfe_fn is None else call["steps"]
    out = sd.sample(
        model,
        (call["batch"], call["dim"]),
        sampler,
        steps,
        dtype=call["dtype"],
        generator=torch.Generator().manual_seed(call["seed"]),
        **options,
    )
    assert out.x.shape == (call["batch"], call["dim"]) and out.x.dtype == call["dtype"]
    assert torch.isfinite(out.x).all()
    if nfe_fn is None:
        assert out.nfe >= 1
    else:
        assert out.nfe == _expected_nfe(model, sampler, nfe_fn, out)


@FAST
@given(call=valid_calls)
def test_valid_calls_give_finite_samples_of_the_right_shape_dtype_and_nfe(call):
    check_valid(call)


@pytest.mark.slow
@SLOW
@given(call=valid_calls)
def test_valid_calls_many(call):
    check_valid(call)


# --- invalid calls ---------------------------------------------------------------------------------
SAMPLE_PARAMETERS = set(inspect.signature(sd.sample).parameters)
FIXED = [v for v in VARIANTS if v[3] is not None]
BAD_VALUES = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.just({}),
    st.just(b"1"),
    st.just(object()),
)
bad_steps = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != int(v) or v < 1 or v > MAX_STEPS),
    st.sampled_from([math.nan, math.inf, -math.inf, True, False, "10", b"10", [10], 0, -1]),
    st.integers(max_value=0),
    st.integers(min_value=MAX_STEPS + 1, max_value=10**15),
)
bad_dtypes = st.sampled_from(
    [
        torch.int64,
        torch.int32,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        "float32",
        "torch.float64",
        None,
        3,
        float,
    ]
)
bad_shapes = st.one_of(
    st.integers(),
    st.just(()),
    st.text(max_size=3),
    st.lists(st.integers(max_value=0), min_size=1, max_size=3).map(tuple),
    st.tuples(st.integers(1, 3), st.sampled_from([0, -2, 2.0, 1.5, "2", None, True])),
)


@st.composite
def invalid_calls(draw) -> tuple[str, dict]:
    """``(what was made bad, keyword arguments of sd.sample)``."""
    _, sampler, options, _ = draw(st.sampled_from(FIXED))
    kw = {
        "shape": (2, 2),
        "sampler": sampler,
        "steps": 3,
        "generator": torch.Generator().manual_seed(0),
        **options,
    }
    kind = draw(st.sampled_from(["steps", "dtype", "shape", "option name", "option value", "t_end"]))
    if kind == "steps":
        kw["steps"] = draw(bad_steps)
    elif kind == "dtype":
        kw["dtype"] = draw(bad_dtypes)
    elif kind == "shape":
        kw["shape"] = draw(bad_shapes)
    elif kind == "option name":
        declared = {name for name, _, _ in sd.samplers.get(sampler).options.declared()}
        name = draw(st.text(min_size=1, max_size=8).filter(lambda n: n not in declared | SAMPLE_PARAMETERS))
        kw[name] = 1.0
    elif kind == "option value":
        declared = sd.samplers.get(sampler).options.declared()
        name, type_name, _ = draw(st.sampled_from(declared))
        value = draw(BAD_VALUES)
        if type_name == "str" and isinstance(value, str):  # a random name of a method or predictor
            value = value + "?"
        kw[name] = value
    else:
        kw["t_end"] = draw(
            st.one_of(
                st.floats(max_value=-1e-300),
                st.floats(min_value=1.0),
                st.sampled_from([math.nan, "0.1", [0.1]]),
            )
        )
    return kind, kw


def check_invalid(kind: str, kw: dict) -> None:
    kw = dict(kw)
    shape, sampler, steps = kw.pop("shape"), kw.pop("sampler"), kw.pop("steps")
    with pytest.raises(InputError):
        sd.sample(oracle("vp", 2), shape, sampler, steps, **kw)


@FAST
@given(case=invalid_calls())
def test_invalid_calls_raise_input_errors(case):
    check_invalid(*case)


@pytest.mark.slow
@SLOW
@given(case=invalid_calls())
def test_invalid_calls_many(case):
    check_invalid(*case)


# --- likelihood settings that the method does not use --------------------------------------------
likelihood_calls = st.fixed_dictionaries(
    {
        "method": st.sampled_from([m for m in sd.ode.methods() if not m.startswith("torchode")]),
        "steps": st.one_of(st.none(), st.integers(1, 5), bad_steps),
        "rtol": st.one_of(st.none(), st.floats(1e-8, 1e-2), st.floats(max_value=0.0), BAD_VALUES),
        "grid": st.one_of(st.none(), st.sampled_from(["uniform", "logsnr"])),
    }
)


def check_likelihood(call: dict) -> None:
    """A fixed-step method with no steps, bad steps, or rtol; an adaptive one with steps, a grid,
    or a bad rtol: InputError. Otherwise (rarely drawn: a valid combination) a finite result."""
    fixed = not sd.ode.is_adaptive(call["method"])
    steps_ok = (
        isinstance(call["steps"], int) and not isinstance(call["steps"], bool) and 1 <= call["steps"] <= 5
    )
    rtol_ok = isinstance(call["rtol"], float) and call["rtol"] > 0
    if fixed:
        valid = steps_ok and call["rtol"] is None
    else:
        valid = call["steps"] is None and call["grid"] is None and (call["rtol"] is None or rtol_ok)
    x = torch.tensor([[0.2, -0.1], [0.6, 0.4]], dtype=F64)
    kw = {k: v for k, v in call.items() if v is not None}
    if valid:
        assert torch.isfinite(sd.log_likelihood(oracle("vp", 2), x, **kw).logp).all()
    else:
        with pytest.raises(InputError):
            sd.log_likelihood(oracle("vp", 2), x, **kw)


@FAST
@given(call=likelihood_calls)
def test_likelihood_settings_the_method_does_not_use_are_refused(call):
    check_likelihood(call)


@pytest.mark.slow
@SLOW
@given(call=likelihood_calls)
def test_likelihood_settings_many(call):
    check_likelihood(call)
