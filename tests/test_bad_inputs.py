"""Bad input to the Python API: a table of calls, each raising a clear error (issue 14).

Every row is ``(call, error type, words)``: the call must raise exactly that family member
(:class:`~scoresde.errors.InputTypeError` for a value of the wrong type, ``InputError`` for a value
out of range or an unused option), and its message must hold every one of ``words`` — the argument's
name, what was expected and what was given. Each row fails before any sampling work (< 0.2 s).
The CLI's table is tests/cli/test_cli_bad_inputs.py.

Below the table: options that a configuration does not use have no effect (so refusing them is
right), and a state that becomes non-finite is reported with the step and time where it first did,
without a host read in the step loop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.errors import InputError, InputTypeError, NonFiniteError
from scoresde.grids import GridTable
from scoresde.model import CountingModel
from scoresde.noise import GeneratorNoise
from scoresde.sampling import FiniteRecord, time_grid

F64 = torch.float64
SDE = sd.VPSDE()
GMM = sd.GaussianMixture(
    torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=F64),
    torch.tensor([0.3, 0.4], dtype=F64),
    torch.tensor([0.4, 0.6], dtype=F64),
)
M = GMM.score_model(SDE, prediction="eps")
X = torch.tensor([[0.1, 0.2], [-0.9, 0.1], [1.1, 0.4]], dtype=F64)
PIXELS = torch.tensor([[0, 255], [17, 128]])
MASK = torch.tensor([[1.0, 0.0]], dtype=F64)


def g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def sample(*args: Any, **kw: Any) -> Any:
    kw.setdefault("generator", g())
    return sd.sample(M, *args, **kw)


T, E = InputTypeError, InputError
# (id, call, error type, words the message must contain)
ROWS: list[tuple[str, Callable[[], Any], type[Exception], list[str]]] = [
    # sample: dtype, shape, steps
    (
        "sample-dtype-int",
        lambda: sample((2, 2), "ddim", 5, dtype=torch.int64),
        E,
        ["dtype", "floating-point", "torch.int64"],
    ),
    (
        "sample-dtype-str",
        lambda: sample((2, 2), "ddim", 5, dtype="float32"),
        T,
        ["dtype", "torch.dtype", "'float32'"],
    ),
    (
        "sample-shape-int",
        lambda: sample(100, "ddim", 5),
        T,
        ["shape", "tuple of positive ints", "100", "(100, 1)"],
    ),
    ("sample-shape-negative", lambda: sample((2, -2), "ddim", 5), E, ["shape", "positive ints", "(2, -2)"]),
    ("sample-shape-empty", lambda: sample((), "ddim", 5), E, ["shape", "(batch, ...)", "()"]),
    ("sample-shape-float", lambda: sample((2.0, 2), "ddim", 5), E, ["shape", "positive ints", "2.0"]),
    ("sample-steps-nan", lambda: sample((2, 2), "ddim", math.nan), E, ["steps", "integer >= 1", "nan"]),
    ("sample-steps-inf", lambda: sample((2, 2), "ddim", math.inf), E, ["steps", "integer", "inf"]),
    ("sample-steps-fraction", lambda: sample((2, 2), "ddim", 2.5), E, ["steps", "integer", "2.5"]),
    ("sample-steps-zero", lambda: sample((2, 2), "ddim", 0), E, ["steps", "integer >= 1", "0"]),
    ("sample-steps-str", lambda: sample((2, 2), "ddim", "10"), T, ["steps", "integer", "'10'", "str"]),
    ("sample-steps-bool", lambda: sample((2, 2), "ddim", True), T, ["steps", "integer", "True", "bool"]),
    (
        "sample-steps-huge",
        lambda: sample((2, 2), "ddim", 10**12),
        E,
        ["steps", "at most 1,000,000", "1,000,000,000,000"],
    ),
    ("sample-steps-missing", lambda: sample((2, 2), "ddim"), E, ["steps is required"]),
    (
        "sample-steps-adaptive",
        lambda: sample((2, 2), "ode", 5, method="dopri5"),
        E,
        ["adaptive", "steps=5", "rtol/atol"],
    ),
    # sample: option names, types and values
    (
        "option-misspelt",
        lambda: sample((2, 2), "ddim", 5, etaa=0.5),
        E,
        ["no option 'etaa'", "did you mean 'eta'", "eta: float"],
    ),
    (
        "option-str-for-number",
        lambda: sample((2, 2), "ddim", 5, eta="abc"),
        T,
        ["'eta'", "a number", "'abc'"],
    ),
    ("option-none-for-number", lambda: sample((2, 2), "ddim", 5, eta=None), T, ["'eta'", "a number", "None"]),
    (
        "option-list-for-number",
        lambda: sample((2, 2), "ddim", 5, eta=[0.5]),
        T,
        ["'eta'", "a number", "[0.5]"],
    ),
    ("option-bool-for-number", lambda: sample((2, 2), "ddim", 5, eta=True), T, ["'eta'", "a number", "True"]),
    ("option-out-of-range", lambda: sample((2, 2), "ddim", 5, eta=1.5), E, ["eta", "[0, 1]", "1.5"]),
    (
        "option-str-rtol",
        lambda: sample((2, 2), "ode", method="dopri5", rtol="1e-5"),
        T,
        ["'rtol'", "a number", "'1e-5'"],
    ),
    (
        "option-bad-literal",
        lambda: sample((2, 2), "pc", 5, variance="bogus"),
        T,
        ["'variance'", "one of", "'posterior'", "'bogus'"],
    ),
    (
        "option-str-for-int",
        lambda: sample((2, 2), "pc", 5, n_corrector="2"),
        T,
        ["'n_corrector'", "an integer", "'2'"],
    ),
    ("option-int-for-bool", lambda: sample((2, 2), "edm", 5, heun=1), T, ["'heun'", "True or False", "1"]),
    # sample: options the configuration does not use
    (
        "unused-rtol-fixed-step",
        lambda: sample((2, 2), "ode", 5, method="heun", rtol=1e-3),
        E,
        ["'rtol'", "not used", "method='heun'", "fixed-step", "uses: method"],
    ),
    (
        "unused-negative-atol-fixed-step",
        lambda: sample((2, 2), "ode", 5, method="rk4", atol=-1.0),
        E,
        ["atol", "> 0", "-1.0"],
    ),
    (
        "unused-atol-at-default",
        lambda: sample((2, 2), "ode", 5, method="euler", atol=1e-5),
        E,
        ["'atol'", "not used", "method='euler'"],
    ),
    (
        "unused-variance-predictor",
        lambda: sample((2, 2), "pc", 5, variance="beta"),
        E,
        ["'variance'", "not used", "predictor='reverse_diffusion'", "'ancestral'", "uses: predictor"],
    ),
    (
        "unused-snr-no-corrector",
        lambda: sample((2, 2), "pc", 5, corrector="none", snr=0.2),
        E,
        ["'snr'", "not used", "corrector='none'"],
    ),
    (
        "unused-corrector-zero-steps",
        lambda: sample((2, 2), "pc", 5, n_corrector=0, corrector="annealed_langevin"),
        E,
        ["'corrector'", "not used", "n_corrector=0"],
    ),
    (
        "unused-ddim-variance-eta0",
        lambda: sample((2, 2), "ddim", 5, variance="posterior"),
        E,
        ["'variance'", "not used", "eta=0", "'analytic'"],
    ),
    (
        "unused-edm-churn-options",
        lambda: sample((2, 2), "edm", 5, s_tmin=0.1),
        E,
        ["'s_tmin'", "not used", "s_churn=0", "uses: s_churn, heun"],
    ),
    (
        "unused-threshold",
        lambda: sample((2, 2), "dpm_solver", 5, threshold_ratio=0.9),
        E,
        ["'threshold_ratio'", "not used", "thresholding=False"],
    ),
    (
        "unused-s-noise-eta0",
        lambda: sample((2, 2), "euler_ancestral", 5, eta=0.0, s_noise=0.5),
        E,
        ["'s_noise'", "not used", "eta=0"],
    ),
    (
        "unused-solver-type-order1",
        lambda: sample((2, 2), "dpm_solver_sde", 5, order=1, solver_type="heun"),
        E,
        ["'solver_type'", "not used", "order=1"],
    ),
    # sample: the other arguments
    (
        "sampler-unknown",
        lambda: sample((2, 2), "ddimm", 5),
        E,
        ["unknown sampler 'ddimm'", "did you mean 'ddim'"],
    ),
    ("sampler-int", lambda: sample((2, 2), 3, 5), T, ["sampler", "name", "int"]),
    (
        "generator-int",
        lambda: sample((2, 2), "ddim", 5, generator=3),
        T,
        ["torch.Generator", "PerSampleNoise", "int"],
    ),
    (
        "generator-missing",
        lambda: sample((2, 2), "ancestral", 5, generator=None),
        T,
        ["generator must be passed", "NoneType"],
    ),
    ("denoise-str", lambda: sample((2, 2), "ddim", 5, denoise="no"), T, ["denoise", "True or False", "'no'"]),
    (
        "progress-str",
        lambda: sample((2, 2), "ddim", 5, progress="yes"),
        T,
        ["progress", "True or False", "'yes'"],
    ),
    ("t_end-str", lambda: sample((2, 2), "ddim", 5, t_end="0.1"), T, ["t_end", "a number", "'0.1'"]),
    ("t_end-above-t_start", lambda: sample((2, 2), "ddim", 5, t_end=1.5), E, ["t_end < t_start", "1.5"]),
    (
        "timesteps-increasing",
        lambda: sample((2, 2), "ddim", timesteps=torch.tensor([0.0, 1.0])),
        E,
        ["timesteps", "strictly decreasing"],
    ),
    (
        "x_T-list",
        lambda: sd.sample(M, (2, 2), "ddim", 5, x_T=[[0.0, 0.0]]),
        T,
        ["x_T", "torch.Tensor", "list"],
    ),
    (
        "x_T-int",
        lambda: sd.sample(M, (2, 2), "ddim", 5, x_T=torch.ones(2, 2, dtype=torch.long)),
        E,
        ["x_T", "floating point", "torch.int64"],
    ),
    (
        "x_T-shape",
        lambda: sd.sample(M, (2, 2), "ddim", 5, x_T=torch.zeros(3, 2)),
        E,
        ["x_T", "shape", "(3, 2)"],
    ),
    (
        "x_T-nan",
        lambda: sd.sample(M, (1, 2), "ddim", 5, x_T=torch.tensor([[0.0, math.nan]])),
        E,
        ["x_T", "finite"],
    ),
    ("device-unknown", lambda: sample((2, 2), "ddim", 5, device="gpu0"), E, ["device", "'gpu0'"]),
    ("cond-batch", lambda: sample((2, 2), "ddim", 5, cond=torch.zeros(3)), E, ["cond", "3"]),
    (
        "callback-not-callable",
        lambda: sample((2, 2), "ddim", 5, callback=5),
        T,
        ["callback", "function", "int"],
    ),
    # encode
    ("encode-stochastic", lambda: sd.encode(M, X, "ddim", 5, eta=0.5), E, ["stochastic", "cannot encode"]),
    (
        "encode-int-x",
        lambda: sd.encode(M, torch.ones(2, 2, dtype=torch.long), "ddim", 5),
        E,
        ["x", "floating point", "torch.int64"],
    ),
    ("encode-list-x", lambda: sd.encode(M, [[0.0, 1.0]], "ddim", 5), T, ["x", "torch.Tensor", "list"]),
    ("encode-nan-x", lambda: sd.encode(M, torch.full((2, 2), math.nan), "ddim", 5), E, ["x", "finite"]),
    (
        "encode-unused-rtol",
        lambda: sd.encode(M, X, "ode", 5, method="heun", rtol=1e-3),
        E,
        ["'rtol'", "not used", "method='heun'"],
    ),
    ("encode-steps-nan", lambda: sd.encode(M, X, "ddim", math.nan), E, ["steps", "integer", "nan"]),
    # log_likelihood
    (
        "ll-unused-rtol",
        lambda: sd.log_likelihood(M, X, method="heun", steps=5, rtol=1e-3),
        E,
        ["rtol", "not used", "fixed-step", "'heun'", "uses: steps, grid"],
    ),
    (
        "ll-unused-atol-at-default",
        lambda: sd.log_likelihood(M, X, method="rk4", steps=5, atol=1e-5),
        E,
        ["atol", "not used", "'rk4'"],
    ),
    (
        "ll-unused-steps",
        lambda: sd.log_likelihood(M, X, method="dopri5", steps=5),
        E,
        ["adaptive", "'dopri5'", "steps=5"],
    ),
    ("ll-unused-grid", lambda: sd.log_likelihood(M, X, grid="karras"), E, ["adaptive", "grid='karras'"]),
    ("ll-rtol-str", lambda: sd.log_likelihood(M, X, rtol="1e-5"), T, ["rtol", "a number", "'1e-5'"]),
    ("ll-rtol-negative", lambda: sd.log_likelihood(M, X, rtol=-1.0), E, ["rtol", "> 0", "-1.0"]),
    ("ll-eps-str", lambda: sd.log_likelihood(M, X, eps="1e-5"), T, ["eps", "a number", "'1e-5'"]),
    ("ll-eps-zero", lambda: sd.log_likelihood(M, X, eps=0.0), E, ["eps", "(0, T"]),
    ("ll-steps-nan", lambda: sd.log_likelihood(M, X, method="heun", steps=math.nan), E, ["steps", "nan"]),
    ("ll-steps-missing", lambda: sd.log_likelihood(M, X, method="heun"), E, ["'heun'", "needs steps"]),
    ("ll-method", lambda: sd.log_likelihood(M, X, method="rk45"), E, ["unknown ODE method 'rk45'"]),
    ("ll-trace", lambda: sd.log_likelihood(M, X, trace="hutch"), E, ["trace", "'hutch'", "rademacher"]),
    (
        "ll-probes-str",
        lambda: sd.log_likelihood(M, X, trace="gaussian", probes="2", generator=g()),
        T,
        ["probes", "integer", "'2'"],
    ),
    ("ll-batch-size-zero", lambda: sd.log_likelihood(M, X, batch_size=0), E, ["batch_size", ">= 1", "0"]),
    ("ll-trace-chunk-float", lambda: sd.log_likelihood(M, X, trace_chunk=1.5), E, ["trace_chunk", "1.5"]),
    (
        "ll-hutchinson-no-generator",
        lambda: sd.log_likelihood(M, X, trace="rademacher"),
        E,
        ["trace='rademacher'", "generator="],
    ),
    ("ll-int-x", lambda: sd.log_likelihood(M, PIXELS), E, ["x", "floating point", "bits_per_dim"]),
    ("ll-1d-x", lambda: sd.log_likelihood(M, X[0]), E, ["x", "2 dimension", "(2,)"]),
    # bits_per_dim
    ("bpd-list-x", lambda: sd.bits_per_dim(M, [[1, 2]]), T, ["x", "torch.Tensor", "list"]),
    (
        "bpd-int-dtype",
        lambda: sd.bits_per_dim(M, PIXELS, generator=g(), dtype=torch.int32),
        E,
        ["dtype", "floating-point", "torch.int32"],
    ),
    ("bpd-levels", lambda: sd.bits_per_dim(M, PIXELS, generator=g(), levels=0), E, ["levels", ">= 2", "0"]),
    (
        "bpd-data-range",
        lambda: sd.bits_per_dim(M, PIXELS, generator=g(), data_range=5),
        T,
        ["data_range", "pair (lo, hi)", "5"],
    ),
    (
        "bpd-pixels-range",
        lambda: sd.bits_per_dim(M, PIXELS + 1, generator=g()),
        E,
        ["pixels must lie in [0, 255]"],
    ),
    ("bpd-no-generator", lambda: sd.bits_per_dim(M, PIXELS), E, ["dequantizing", "generator"]),
    (
        "bpd-unused-rtol",
        lambda: sd.bits_per_dim(M, X, method="heun", steps=5, rtol=1e-3),
        E,
        ["rtol", "not used", "'heun'"],
    ),
    # the models, SDEs, oracle and noise
    (
        "scoremodel-prediction",
        lambda: sd.ScoreModel(nn.Identity(), SDE, prediction="noise"),
        E,
        ["prediction", "'eps'", "'noise'"],
    ),
    ("scoremodel-sde-str", lambda: sd.ScoreModel(nn.Identity(), "vp"), T, ["sde", "VPSDE", "'vp'"]),
    ("scoremodel-net", lambda: sd.ScoreModel(5, SDE), T, ["net", "callable", "int"]),
    (
        "scoremodel-time-input",
        lambda: sd.ScoreModel(nn.Identity(), SDE, time_input="idx"),
        E,
        ["time_input", "'index'", "'idx'"],
    ),
    (
        "scoremodel-index-continuous",
        lambda: sd.ScoreModel(nn.Identity(), sd.VPSDE(N=None), time_input="index"),
        E,
        ["time_input='index'", "discrete-time", "N=None"],
    ),
    (
        "scoremodel-learned-variance",
        lambda: sd.ScoreModel(nn.Identity(), SDE, learned_variance="yes"),
        T,
        ["learned_variance", "True or False", "'yes'"],
    ),
    ("vpsde-negative-beta", lambda: sd.VPSDE(beta_min=-1.0), E, ["beta_min", "-1.0"]),
    ("vpsde-N-zero", lambda: sd.VPSDE(N=0), E, ["N", "positive integer", "0"]),
    ("vesde-inverted", lambda: sd.VESDE(sigma_min=10.0, sigma_max=1.0), E, ["sigma_min < sigma_max", "10.0"]),
    (
        "gmm-stds-shape",
        lambda: sd.GaussianMixture(torch.zeros(2, 2), torch.ones(3), torch.ones(2) / 2),
        E,
        ["stds", "shape", "(3,)"],
    ),
    (
        "gmm-negative-std",
        lambda: sd.GaussianMixture(torch.zeros(2, 2), -torch.ones(2), torch.ones(2) / 2),
        E,
        ["stds", "positive"],
    ),
    ("noise-negative-seed", lambda: sd.PerSampleNoise(-1), E, ["seed", ">= 0", "-1"]),
    ("noise-str-seed", lambda: sd.PerSampleNoise("a"), T, ["seed", "integer", "'a'"]),
    ("noise-fraction-offset", lambda: sd.PerSampleNoise(0, offset=1.5), E, ["offset", "integer", "1.5"]),
    # inpaint
    (
        "inpaint-method",
        lambda: sd.inpaint(M, X, MASK, method="fill", steps=3, generator=g()),
        E,
        ["method", "'replace'", "'fill'"],
    ),
    ("inpaint-steps-nan", lambda: sd.inpaint(M, X, MASK, steps=math.nan, generator=g()), E, ["steps", "nan"]),
    ("inpaint-mask-values", lambda: sd.inpaint(M, X, MASK * 0.5, steps=3, generator=g()), E, ["mask", "0/1"]),
    (
        "inpaint-int-y",
        lambda: sd.inpaint(M, PIXELS, MASK, steps=3, generator=g()),
        E,
        ["y", "floating-point"],
    ),
]


def test_the_table_is_large_and_its_ids_unique():
    ids = [row[0] for row in ROWS]
    assert len(ids) == len(set(ids))
    assert len(ROWS) >= 40


@pytest.mark.parametrize(("call", "error", "words"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_bad_input_raises_a_clear_error(call, error, words):
    with pytest.raises(InputError) as info:
        call()
    # The family member asked for, and not a type error where a value error is due (or vice versa).
    assert isinstance(info.value, error)
    assert isinstance(info.value, TypeError) == (error is InputTypeError), type(info.value)
    message = str(info.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"{missing} not in: {message}"


# --- unused options have no effect ----------------------------------------------------------------
# A value for each option that differs from its default and is valid; configurations whose
# ``unused()`` is not empty. Running the loop with the unused option changed (options built
# directly, past ``parse``) must give the same result bit for bit: the option really is ignored.
OTHER = {
    "rtol": 1e-2,
    "atol": 1e-2,
    "variance": "beta",
    "snr": 0.4,
    "n_corrector": 2,
    "corrector": "annealed_langevin",
    "s_tmin": 0.3,
    "s_tmax": 2.0,
    "s_noise": 0.7,
    "solver_type": "heun",
    "threshold_ratio": 0.5,
    "threshold_max": 1.5,
}
IGNORING = [
    ("ode", {"method": "heun"}),
    ("ode", {"method": "rk4"}),
    ("pc", {}),
    ("pc", {"corrector": "none"}),
    ("pc", {"n_corrector": 0}),
    ("ddim", {}),
    ("edm", {}),
    ("dpm_solver", {}),
    ("dpm_solver_singlestep", {}),
    ("euler_ancestral", {"eta": 0.0}),
    ("dpm_solver_sde", {"order": 1, "eta": 0.0}),
]


def _run_loop(spec, opts, seed=3):
    ts = time_grid(spec, M, opts, 6, None, None, None, None)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    noise = GeneratorNoise(torch.Generator().manual_seed(seed))
    return spec.fn(CountingModel(M, None), x, GridTable.build(SDE, ts), noise, opts, None)


@pytest.mark.parametrize(("sampler", "options"), IGNORING, ids=[f"{s} {o}" for s, o in IGNORING])
def test_an_unused_option_has_no_effect_and_is_refused(sampler, options):
    spec = sd.samplers.get(sampler)
    opts = spec.parse(options)
    unused = opts.unused()
    assert unused, "this configuration should ignore an option"
    base = _run_loop(spec, opts)
    for name in unused:
        if name == "variance" and sampler == "ddim":
            changed = dataclasses.replace(opts, variance="posterior")  # DDIM has no "beta"
        else:
            changed = dataclasses.replace(opts, **{name: OTHER[name]})
        if name in changed.unused():  # the change did not make it used (e.g. corrector='none' ↔ n_corrector)
            assert torch.equal(_run_loop(spec, changed), base), name
        with pytest.raises(InputError, match=rf"option '{name}' is not used"):
            spec.parse({**options, name: getattr(changed, name)})


def test_every_option_is_used_somewhere():
    """``unused()`` never names an option unconditionally: each is used by the sampler's default or
    by the configuration that switches it on (checked for the ones named above)."""
    switch_on = {
        "rtol": {"method": "dopri5"},
        "atol": {"method": "dopri5"},
        "variance": {"predictor": "ancestral"},
        "snr": {},
        "n_corrector": {},
        "corrector": {},
        "s_tmin": {"s_churn": 1.0},
        "s_tmax": {"s_churn": 1.0},
        "s_noise": {"s_churn": 1.0, "eta": 0.5},
        "solver_type": {},
        "threshold_ratio": {"thresholding": True},
        "threshold_max": {"thresholding": True},
    }
    for sampler, options in IGNORING:
        spec = sd.samplers.get(sampler)
        declared = {f.name for f in dataclasses.fields(spec.options)}
        for name in spec.parse(options).unused():
            on = {k: v for k, v in switch_on[name].items() if k in declared}
            if sampler == "ddim":
                on = {"eta": 0.5}
            assert name not in spec.parse(on).unused(), (sampler, name)


# --- a non-finite state names its first step -------------------------------------------------------
class NaNBelow(nn.Module):
    """eps = 0.1·x, except NaN wherever the network's time is below ``t0`` (a network that breaks
    from a given step on)."""

    def __init__(self, t0: float):
        super().__init__()
        self.t0 = t0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return torch.where(t < self.t0, torch.nan, 0.1 * x)


T0 = 0.45  # between grid points 0.5 and 0.4 of the uniform grid below
GRID = torch.linspace(1.0, 0.0, 11, dtype=F64)  # step i goes from 1 − i/10 to 1 − (i+1)/10
FIXED = [
    v for v in sd.samplers.variants(main_only=True) if sd.samplers.get(v.sampler).parse(v.options).uses_grid
]


@pytest.mark.parametrize("variant", FIXED, ids=lambda v: v.label)
def test_a_non_finite_state_is_reported_at_its_first_step(variant):
    model = sd.ScoreModel(NaNBelow(T0), SDE, prediction="eps")
    seen: list[tuple[int, float, bool]] = []  # the truth, from the caller's own callback

    def callback(info):
        seen.append((info["i"], info["t"], bool(torch.isfinite(info["x"]).all())))

    with pytest.raises(NonFiniteError) as err:
        sd.sample(
            model,
            (4, 2),
            variant.sampler,
            timesteps=GRID,
            generator=g(),
            callback=callback,
            dtype=F64,
            denoise=False,
            **variant.options,
        )
    i, t, _ = next(s for s in seen if not s[2])
    # A sampler first evaluates the network below T0 in step 5 (at t = 0.4, the stage at the step's
    # end) or step 6 (at t = 0.4, its start): the first non-finite state is after one of them.
    assert i in (5, 6)
    message = str(err.value)
    assert f"step i={i} (0-based, of 10), at t={t:.6g}" in message, message
    assert variant.sampler in message


def test_a_non_finite_final_denoising_step_is_named():
    model = sd.ScoreModel(NaNBelow(2e-3), SDE, prediction="eps")  # the last grid time is 0.011
    with pytest.raises(
        NonFiniteError,
        match=r"every step's state was finite; it became non-finite in the final "
        r"denoising step x0\(x, t_end=0\.001\)",
    ):
        sd.sample(model, (4, 2), "pc", 10, generator=g(), dtype=F64)


def test_a_samplers_own_non_finite_error_gains_the_step():
    """pc's Langevin check (after its loop) is re-raised naming the first non-finite step."""
    model = sd.ScoreModel(NaNBelow(T0), SDE, prediction="eps")
    with pytest.raises(NonFiniteError, match=r"Langevin step size.*at step i=\d \(0-based, of 10\)"):
        sd.sample(model, (4, 2), "pc", timesteps=GRID, denoise=False, generator=g(), dtype=F64)


def test_encoding_reports_the_first_non_finite_step():
    class NaNAbove(NaNBelow):
        def forward(self, x, t):
            t = t.reshape(-1, 1).to(x.dtype)
            return torch.where(t > 0.55, torch.nan, 0.1 * x)

    model = sd.ScoreModel(NaNAbove(0.0), SDE, prediction="eps")
    with pytest.raises(
        NonFiniteError,
        match=r"encoding produced non-finite latents.*at step i=6 \(0-based, of 10\), "
        r"at t=0\.7",
    ):
        sd.encode(model, X, "ddim", timesteps=GRID.clamp(min=1e-3).unique().flip(0))


def test_the_record_reads_nothing_inside_the_step_loop():
    """:class:`FiniteRecord` in a loop on the meta device under tests/test_host_sync.py's harness: no
    host read until the run has ended (then one, to name the step)."""
    from test_host_sync import DeviceReads, Loop, MetaNoise, loop_inputs, make_model

    model, _ = make_model("vp", device="meta")
    spec, opts, grid = loop_inputs(model, "ddim", {"eta": 1.0})
    record = FiniteRecord()
    with Loop(grid.steps) as loop, DeviceReads(strict=True) as reads:

        def callback(info):
            record(info)
            loop.callback(info)

        spec.fn(
            CountingModel(model, None), torch.randn(4, 2, device="meta"), grid, MetaNoise(), opts, callback
        )
        assert reads.reads == 0
        assert len(record.flags) == grid.steps and all(f.is_meta for f in record.flags)
