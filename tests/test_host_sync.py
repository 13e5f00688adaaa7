"""No host–device synchronisation inside the samplers' step loops and the PF-ODE field (issue 13).

On an accelerator the host reads a device value (``.item()``, ``bool(t)``, ``if t:``, ``float(t)``,
``int(t)``, ``t.tolist()``, ``.cpu()``, ``.numpy()``, a boolean mask, formatting) only after the
device has finished everything queued before it, so one read per step makes host and device take
turns. Two harnesses run the step loop (``spec.fn``, what ``sample`` and ``encode`` call) of every
fixed-step sampler variant, and fail at the first such read inside the loop:

* :class:`StateTensor`: the state is a ``torch.Tensor`` subclass whose ``__torch_function__``
  refuses host reads. Everything derived from the state — the network's output included — is a
  ``StateTensor``; the grid's float64 table and the times stay plain host tensors, as they are on
  a device run. This checks what the samplers do with their state.
* the ``meta`` device standing in for an accelerator: the state, the network's weights and the
  noise live there and hold no values, and a dispatch mode refuses any host read of device data,
  whatever it derives from, and any blocking copy of a host tensor to the device (an upload with
  ``non_blocking=False`` waits for the device's queue too). This also catches a time moved to the
  device and checked there — what ``check_times`` did before (``(t < 0).any()`` on ``x``'s device,
  once per network call) — and per-step coefficients uploaded with a plain ``.to(device)``.

A read after the loop — after the last step's report — is the final non-finite check and allowed.
Adaptive solvers are excluded by name with the reason (:data:`ADAPTIVE`): choosing the next step
size from the device's error estimate is a host decision per attempted step. Negative checks: a
sampler patched to call ``x.max().item()`` (and each other kind of read) fails both harnesses; the
old device-side ``check_times`` and a blocking per-step upload fail the device harness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

import scoresde as sd
import scoresde.model
from scoresde.encoding import ENCODE_T_END
from scoresde.grids import GridTable
from scoresde.guidance import ClassifierFreeGuidance
from scoresde.model import CountingModel
from scoresde.sampling import time_grid
from scoresde.variance import AnalyticVariance, EpsMomentTable

STEPS = 5
BATCH = 4

# Sampler -> why its loop reads the device (excluded from the sync-free loops, checked to run on
# a device below). A new adaptive sampler must be listed here, with its reason.
ADAPTIVE = {
    "dpm_adaptive": "accepts or rejects each attempted step from the error norm of the whole batch (a "
                    "float the host needs to pick the next step size)",
    "adaptive_sde": "keeps stepping while any sample is short of t_end; the per-sample step sizes and "
                    "acceptances stay on the device, but the loop's exit is a host decision",
}
# The ode sampler's adaptive methods (torchdiffeq's dopri5…, scipy's on the host) likewise decide
# every step on the host; its fixed-step methods are covered below.

# Configurations beyond the registered variants, so that every PC predictor and corrector, both
# ODE tableaus not in the variants, thresholding and the stochastic members are run too.
EXTRA = [
    ("pc", {"predictor": "euler_maruyama", "corrector": "annealed_langevin"}),
    ("pc", {"predictor": "ancestral", "corrector": "langevin", "n_corrector": 2}),
    ("pc", {"predictor": "none", "corrector": "langevin"}),
    ("ode", {"method": "midpoint"}),
    ("ode", {"method": "ralston3"}),
    ("dpm_solver", {"thresholding": True}),
    ("dpm_solver_singlestep", {"thresholding": True, "order": 3}),
    ("ddim", {"eta": 0.5}),
    ("unipc", {"order": 3, "prediction": "noise", "corrector": False}),
    ("euler_ancestral", {"eta": 0.5, "s_noise": 0.9}),
    ("dpm_solver_sde", {"order": 3, "eta": 0.5}),
]
CONFIGS = [(v.label, v.sampler, v.options) for v in sd.samplers.variants() if v.sampler not in ADAPTIVE]
CONFIGS += [(f"{name} {options}", name, options) for name, options in EXTRA]
# Wrapped models: a learned variance, Analytic-DPM's variance and classifier-free guidance.
WRAPPED = [
    ("learned", "ancestral", {"variance": "learned"}),
    ("learned", "ddim", {"eta": 1.0, "variance": "learned"}),
    ("learned", "pc", {"predictor": "ancestral", "corrector": "none", "variance": "learned"}),
    ("analytic", "ancestral", {"variance": "analytic"}),
    ("analytic", "ddim", {"variance": "analytic"}),
    ("cfg", "ddim", {}),
    ("cfg", "dpm_solver", {"order": 3}),
    ("cfg", "edm", {"s_churn": 10.0}),
    ("cfg-rescaled", "unipc", {}),
]
SDES = {
    "vp": (sd.VPSDE, "continuous"),
    "ve": (sd.VESDE, "continuous"),
    "subvp": (sd.SubVPSDE, "continuous"),
    "ddpm": (lambda: sd.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)), "index"),
}


class HostSync(AssertionError):
    """The host read device data inside a sampler's step loop."""


class Loop:
    """Watches one step loop: it runs until the sampler has reported its last step."""

    active: Loop | None = None

    def __init__(self, steps: int):
        self.steps, self.reports = steps, 0

    @property
    def running(self) -> bool:
        return self.reports < self.steps

    def callback(self, info: dict[str, Any]) -> None:
        self.reports += 1

    def __enter__(self) -> Loop:
        Loop.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        Loop.active = None


def in_loop() -> bool:
    return Loop.active is not None and Loop.active.running


# --- harness 1: the state as a tensor subclass -------------------------------------------------
_READS = {Tensor.item, Tensor.__bool__, Tensor.__float__, Tensor.__int__, Tensor.__index__,
          Tensor.__complex__, Tensor.__format__, Tensor.__array__, Tensor.tolist, Tensor.cpu, Tensor.numpy,
          Tensor.nonzero, torch.nonzero, Tensor.argwhere, torch.argwhere, Tensor.masked_select,
          torch.masked_select, Tensor.unique, torch.unique}
_INDEXING = {Tensor.__getitem__, Tensor.__setitem__}


def _bool_index(args: tuple) -> bool:
    """Whether ``tensor[index]`` indexes with a boolean tensor (a mask: its count is a host read)."""
    index = args[1] if len(args) > 1 else None
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, Tensor) and p.dtype == torch.bool for p in parts)


class StateTensor(Tensor):
    """A tensor derived from the sampler's state: refuses host reads while a :class:`Loop` runs."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if in_loop() and (func in _READS or (func in _INDEXING and _bool_index(args))):
            raise HostSync(f"{getattr(func, '__name__', func)} of a tensor derived from the state inside the "
                           "step loop (a host-device synchronisation on an accelerator)")
        return super().__torch_function__(func, types, args, kwargs or {})


# --- harness 2: the meta device as the accelerator ---------------------------------------------
class DeviceReads(TorchDispatchMode):
    """Refuses host reads of ``meta`` (device) tensors while a :class:`Loop` runs; outside a loop
    (the final check), and everywhere with ``strict=False``, it counts them and answers with stand-in
    values: an ``all`` is true (validations pass), the first ``any`` is true and later ones false (an
    adaptive loop takes one attempt; range checks pass), a number is 0."""

    def __init__(self, strict: bool = True):
        super().__init__()
        self.strict, self.reads, self.answered_any = strict, 0, False
        self.kinds: dict[int, tuple[str, Tensor]] = {}  # id(bool result) -> ("any" | "all", result)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket not in _WATCHED:
            return func(*args, **kwargs)
        if func.overloadpacket in (torch.ops.aten.any, torch.ops.aten.all):
            out = func(*args, **kwargs)
            self.kinds[id(out)] = (func.overloadpacket.__name__, out)
            return out
        read = None
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_meta:
            read = "a scalar read (.item(), bool(), float(), if …) of device data"
        elif func is torch.ops.aten._to_copy.default and args[0].is_meta and _to_host(kwargs):
            read = "a copy to the host (.cpu(), .to('cpu'), .tolist()) of device data"
        elif func is torch.ops.aten.copy_.default and args[1].is_meta and not args[0].is_meta:
            read = "a copy of device data into a host tensor"
        elif _blocking_upload(func, args, kwargs):
            read = "a blocking copy of a host tensor to the device (.to(device) without non_blocking=True)"
        elif func in _DATA_DEPENDENT and args[0].is_meta:
            read = f"{func} of device data (an output shape that depends on device values)"
        if read is None:
            return func(*args, **kwargs)
        if self.strict and in_loop():
            raise HostSync(f"{read} inside the step loop")
        self.reads += 1
        if func is torch.ops.aten._local_scalar_dense.default:
            if args[0].dtype != torch.bool:
                return 0
            if self.kinds.get(id(args[0]), ("all",))[0] == "all":
                return True
            first, self.answered_any = not self.answered_any, True
            return first
        if func is torch.ops.aten._to_copy.default:
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        raise HostSync(read)


aten = torch.ops.aten
_WATCHED = {aten.any, aten.all, aten._local_scalar_dense, aten._to_copy, aten.copy_, aten.nonzero,
            aten.masked_select}
_DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default}


def _blocking_upload(func, args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether ``func`` copies a host tensor of more than one element to the device and waits.

    A copy from pageable host memory with ``non_blocking=False`` returns only when the device has
    finished its queue (the copy is ordered on the stream); a 0-d host tensor needs no copy at all
    (it is a scalar operand on any device), which is how the samplers pass step coefficients."""
    if func is torch.ops.aten._to_copy.default:
        src, blocking = args[0], not kwargs.get("non_blocking", False)
        device = kwargs.get("device")
        to_device = device is not None and torch.device(device).type == "meta"
    elif func is torch.ops.aten.copy_.default:
        src, blocking = args[1], not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        to_device = args[0].is_meta
    else:
        return False
    return to_device and blocking and not src.is_meta


def _to_host(kwargs: dict[str, Any]) -> bool:
    return kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cpu"


class MetaNoise:
    """Standard normal draws made on the device, as a device generator makes them."""

    def randn(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.randn(shape, dtype=dtype, device=device)


# --- the models ----------------------------------------------------------------------------------
class SmoothNet(nn.Module):
    """A small random network ``(x, c[, labels]) -> (batch, out)`` of elementwise operations and no
    checks of its own, so that it adds no host reads: it stands for any network (elementwise, so
    that the meta device runs it quickly)."""

    def __init__(self, dim: int = 2, out: int = 2, classes: int = 0):
        super().__init__()
        self.repeat = out // dim
        self.a, self.b, self.w = (nn.Parameter(torch.randn(out), requires_grad=False) for _ in range(3))
        self.classes = nn.Parameter(torch.randn(classes + 1, out), requires_grad=False) if classes else None

    def forward(self, x: Tensor, c: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.a * x.repeat(1, self.repeat) + self.b * torch.sin(c)[:, None]
        if labels is not None:
            h = h + self.classes[labels + 1]  # the null label −1 is row 0
        return torch.tanh(self.w * torch.tanh(h))


def make_model(sde_name: str, kind: str = "eps", device: str = "cpu") -> tuple[Any, Tensor | None]:
    """``(model, cond)`` of ``kind`` on ``sde_name``, with its weights on ``device``."""
    factory, time_input = SDES[sde_name]
    sde = factory()
    torch.manual_seed(0)
    if kind == "learned":
        return sd.ScoreModel(SmoothNet(out=4).to(device), sde, "eps", time_input, learned_variance=True), None
    if kind.startswith("cfg"):
        inner = sd.ScoreModel(SmoothNet(classes=2).to(device), sde, "eps", time_input)
        rescale = 0.7 if kind == "cfg-rescaled" else 0.0
        labels = (torch.arange(BATCH) % 2).to(device)
        return ClassifierFreeGuidance(inner, 1.5, rescale=rescale), labels
    model = sd.ScoreModel(SmoothNet().to(device), sde, "eps", time_input)
    if kind == "analytic":
        times = torch.linspace(1e-3, 1.0, 50, dtype=torch.float64)
        table = EpsMomentTable(t=times, gamma=0.9 - 0.5 * times, se=torch.zeros_like(times), n=100)
        return AnalyticVariance(model, table), None
    return model, None


def loop_inputs(model: Any, sampler: str, options: dict[str, Any], encode: bool = False):
    """``(spec, parsed options, grid table)`` as ``sample`` (or ``encode``) builds them."""
    spec = sd.samplers.get(sampler)
    opts = spec.parse(options)
    t_end = ENCODE_T_END if encode else None
    ts = time_grid(spec, model, opts, STEPS, None, None, None, t_end)
    return spec, opts, GridTable.build(model.sde, ts.flip(0) if encode else ts)


def run_trapped(model: Any, cond: Tensor | None, sampler: str, options: dict[str, Any],
                encode: bool = False) -> tuple[Tensor, Tensor]:
    """The loop on a :class:`StateTensor` state, and the same loop on a plain one (same noise)."""
    spec, opts, grid = loop_inputs(model, sampler, options, encode)
    x = torch.randn(BATCH, 2, generator=torch.Generator().manual_seed(1)) * model.sde.prior_std
    outs = []
    for state in (x.as_subclass(StateTensor), x.clone()):
        noise = None if encode else sd.PerSampleNoise(7)
        with Loop(grid.steps) as loop:
            outs.append(spec.fn(CountingModel(model, cond), state, grid, noise, opts, loop.callback))
        assert loop.reports == grid.steps
    return outs[0], outs[1]


def run_on_device(model: Any, cond: Tensor | None, sampler: str, options: dict[str, Any],
                  encode: bool = False, strict: bool = True) -> tuple[Tensor, DeviceReads]:
    """The loop on the meta device (state, weights and noise there), under :class:`DeviceReads`."""
    spec, opts, grid = loop_inputs(model, sampler, options, encode)
    x = torch.randn(BATCH, 2, device="meta")
    with Loop(grid.steps) as loop, DeviceReads(strict) as reads:
        noise = None if encode else MetaNoise()
        out = spec.fn(CountingModel(model, cond), x, grid, noise, opts, loop.callback)
    if strict:
        assert loop.reports == grid.steps
    return out, reads


def _ids(cases: list[tuple]) -> list[str]:
    return [c[0] for c in cases]


# --- the sync-free loops ---------------------------------------------------------------------------
# The default run covers every configuration on VP (pc, whose predictors use each SDE's own
# discretisation, on every SDE) with the subclass harness, and each sampler's main variant, the
# wrapped models and three encoders on the device; the slow run covers the rest of the matrix.
MAIN = {v.label for v in sd.samplers.variants(main_only=True)}


def _matrix(sde_names: list[str], in_default: Callable[[str, str, str], bool], marks=None) -> list:
    """Every configuration on every SDE of ``sde_names``; those not ``in_default`` marked slow."""
    params = []
    for label, sampler, options in CONFIGS:
        for sde_name in sde_names:
            extra = list(marks(sampler, options)) if marks else []
            if not in_default(label, sampler, sde_name):
                extra.append(pytest.mark.slow)
            params.append(pytest.param(label, sampler, options, sde_name, id=f"{label}-{sde_name}",
                                       marks=extra))
    return params


STATE_CASES = _matrix(list(SDES), lambda label, sampler, sde_name: sde_name == "vp" or sampler == "pc")


@pytest.mark.parametrize(("label", "sampler", "options", "sde_name"), STATE_CASES)
def test_step_loop_reads_nothing_derived_from_the_state(label, sampler, options, sde_name):
    """Every fixed-step variant on every SDE: no host read of a state-derived tensor in the loop; the
    trapped run equals the plain one, and the result is still a StateTensor (the trap was carried
    through every step: the test is not vacuous)."""
    model, cond = make_model(sde_name)
    trapped, plain = run_trapped(model, cond, sampler, options)
    assert type(trapped) is StateTensor
    assert torch.equal(trapped.as_subclass(Tensor), plain)


@pytest.mark.parametrize(("kind", "sampler", "options"), WRAPPED, ids=[f"{k}-{s}" for k, s, _ in WRAPPED])
def test_wrapped_models_read_nothing_derived_from_the_state(kind, sampler, options):
    """Learned variance, Analytic-DPM's variance and classifier-free guidance (with and without
    rescaling) add no reads of their own."""
    model, cond = make_model("vp", kind)
    trapped, plain = run_trapped(model, cond, sampler, options)
    assert type(trapped) is StateTensor and torch.equal(trapped.as_subclass(Tensor), plain)


DETERMINISTIC = [c for c in CONFIGS if not sd.samplers.get(c[1]).parse(c[2]).stochastic]


@pytest.mark.parametrize(("label", "sampler", "options"), DETERMINISTIC, ids=_ids(DETERMINISTIC))
def test_encoding_loops_read_nothing_derived_from_the_state(label, sampler, options):
    """``encode``'s loops (the PF-ODE field run upwards, DDIM inversion, …) are sync-free too."""
    model, _ = make_model("vp")
    trapped, plain = run_trapped(model, None, sampler, options, encode=True)
    assert type(trapped) is StateTensor and torch.equal(trapped.as_subclass(Tensor), plain)


DEVICE_CASES = _matrix(["vp", "ve", "ddpm"],
                       lambda label, sampler, sde_name: sde_name == "vp" and label in MAIN)


@pytest.mark.parametrize(("label", "sampler", "options", "sde_name"), DEVICE_CASES)
def test_step_loop_reads_no_device_data(label, sampler, options, sde_name):
    """On the (meta) device: no host read of any device tensor in the loop, and the state stays on
    the device in its dtype."""
    model, cond = make_model(sde_name, device="meta")
    out, _ = run_on_device(model, cond, sampler, options)
    assert out.is_meta and out.shape == (BATCH, 2) and out.dtype == torch.float32


DEVICE_WRAPPED = [pytest.param(*w, id=f"{w[0]}-{w[1]}", marks=[] if i in (0, 3, 8) else [pytest.mark.slow])
                  for i, w in enumerate(WRAPPED)]


@pytest.mark.parametrize(("kind", "sampler", "options"), DEVICE_WRAPPED)
def test_wrapped_models_read_no_device_data(kind, sampler, options):
    model, cond = make_model("vp", kind, device="meta")
    out, _ = run_on_device(model, cond, sampler, options)
    assert out.is_meta


DEVICE_ENCODERS = [pytest.param(*c, id=c[0], marks=[] if c[0] in ("ddim eta=0", "ode heun")
                                else [pytest.mark.slow]) for c in DETERMINISTIC]


@pytest.mark.parametrize(("label", "sampler", "options"), DEVICE_ENCODERS)
def test_encoding_loops_read_no_device_data(label, sampler, options):
    model, _ = make_model("vp", device="meta")
    out, _ = run_on_device(model, None, sampler, options, encode=True)
    assert out.is_meta


# --- what is excluded, and why -------------------------------------------------------------------
def test_the_excluded_samplers_are_exactly_the_adaptive_ones():
    """A sampler leaves the sync-free set only by name, with a reason, and only if it is adaptive
    (``uses_grid`` False: it picks its own steps); every other registered sampler is covered."""
    adaptive = {v.sampler for v in sd.samplers.variants()
                if not sd.samplers.get(v.sampler).parse(v.options).uses_grid}
    assert adaptive == set(ADAPTIVE)
    assert {c[1] for c in CONFIGS} | set(ADAPTIVE) == set(sd.samplers.available())


@pytest.mark.parametrize("sampler", sorted(ADAPTIVE))
def test_adaptive_solvers_run_on_a_device_and_read_it_to_pick_steps(sampler):
    """The adaptive solvers keep their state and their per-sample bookkeeping on the device (this
    failed before for adaptive_sde, whose times stayed on the host beside device error estimates);
    their host reads are the step-size decisions of :data:`ADAPTIVE`."""
    model, _ = make_model("vp", device="meta")
    spec = sd.samplers.get(sampler)
    opts = spec.parse({})
    ts = time_grid(spec, model, opts, None, None, None, None, None)
    x = torch.randn(BATCH, 2, device="meta")
    with DeviceReads(strict=False) as reads:
        out = spec.fn(CountingModel(model), x, GridTable.build(model.sde, ts), MetaNoise(), opts, None)
    assert out.is_meta and reads.reads >= 1


# --- the harnesses can fail ------------------------------------------------------------------------
LEAKS: dict[str, Callable[[Tensor], object]] = {
    "item": lambda x: x.max().item(),
    "bool": lambda x: bool((x > 0).all()),
    "if": lambda x: 1 if x.abs().sum() else 0,
    "float": lambda x: float(x.sum()),
    "int": lambda x: int(x.argmax()),
    "tolist": lambda x: x.tolist(),
    "cpu": lambda x: x.cpu(),
    "isfinite-check": lambda x: torch.isfinite(x).all() or None,
    "mask": lambda x: x[x > 0],
    "format": lambda x: f"{x.sum():.3f}",
}


def _leaky_ddim(monkeypatch, leak: Callable[[Tensor], object]) -> None:
    """DDIM with ``leak(x)`` after every step."""
    ddim_module = __import__("scoresde.samplers.ddim", fromlist=["reverse_step"])
    real = ddim_module.reverse_step

    def leaky(*args, **kwargs):
        x = real(*args, **kwargs)
        leak(x)
        return x

    monkeypatch.setattr(ddim_module, "reverse_step", leaky)


@pytest.mark.parametrize("leak", list(LEAKS), ids=list(LEAKS))
def test_a_read_added_to_a_step_loop_fails_the_subclass_harness(monkeypatch, leak):
    _leaky_ddim(monkeypatch, LEAKS[leak])
    model, _ = make_model("vp")
    with pytest.raises(HostSync):
        run_trapped(model, None, "ddim", {})


@pytest.mark.parametrize("leak", ["item", "if", "cpu", "mask"])
def test_a_read_added_to_a_step_loop_fails_the_device_harness(monkeypatch, leak):
    _leaky_ddim(monkeypatch, LEAKS[leak])
    model, _ = make_model("vp", device="meta")
    with pytest.raises((HostSync, NotImplementedError)):
        run_on_device(model, None, "ddim", {})


def test_a_read_after_the_loop_is_allowed():
    """The final non-finite check (here: pc's, after its Langevin loop) is outside the loop."""
    model, _ = make_model("vp", device="meta")
    _, reads = run_on_device(model, None, "pc", {"predictor": "ancestral", "corrector": "langevin"})
    assert reads.reads == 1


def _device_side_check_times(t: float | Tensor, x: Tensor, sde: sd.SDE) -> Tensor:
    """check_times as it was: ``t`` moved to ``x``'s device and checked there."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    if not torch.isfinite(t).all():
        raise ValueError("times must be finite")
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    if (t < 0).any() or (t > sde.T).any():
        raise ValueError("times must lie in [0, T]")
    return t


def test_the_old_device_side_time_check_fails_the_device_harness(monkeypatch):
    monkeypatch.setattr(scoresde.model, "check_times", _device_side_check_times)
    model, _ = make_model("vp", device="meta")
    with pytest.raises(HostSync, match=r"scalar read|blocking copy"):
        run_on_device(model, None, "ddim", {})


def test_a_blocking_upload_added_to_a_step_loop_fails_the_device_harness(monkeypatch):
    """A per-step ``.to(device)`` of a host table (what ``batch_coeff`` did) waits for the device."""
    table = torch.linspace(0.0, 1.0, BATCH, dtype=torch.float64)
    _leaky_ddim(monkeypatch, lambda x: x * table.to(x.device)[:, None])
    model, _ = make_model("vp", device="meta")
    with pytest.raises(HostSync, match="blocking copy"):
        run_on_device(model, None, "ddim", {})


# --- direct calls keep their clear errors ------------------------------------------------------------
@pytest.mark.parametrize(("t", "message"), [(1.5, "must lie in"), (-0.1, "must lie in"), (math.nan, "finite"),
                                            (torch.tensor([0.5, math.inf]), "finite"),
                                            (torch.tensor([0.5, 2.0]), "must lie in")])
def test_predict_still_refuses_bad_times(t, message):
    """Host times are checked on the host: a user's bad time still gets a clear error."""
    model, _ = make_model("vp")
    with pytest.raises(ValueError, match=message):
        model.predict(torch.zeros(2, 2), t)


def test_predict_keeps_host_times_on_the_host():
    """``check_times`` leaves host times where they are (the device gets only the network's input)."""
    model, _ = make_model("vp")
    t = scoresde.model.check_times(0.5, torch.zeros(3, 2, device="meta"), model.sde)
    assert t.device.type == "cpu" and t.shape == (3,) and t.dtype == torch.float64


def test_langevin_still_refuses_a_zero_score_after_its_loop():
    """The zero-score error of score_sde's Langevin corrector survives, raised after the loop."""
    model = sd.ScoreModel(lambda x, c: torch.zeros_like(x), sd.VPSDE(), prediction="score")
    with pytest.raises(ValueError, match="score is zero"):
        sd.sample(model, (4, 2), "pc", 3, generator=torch.Generator().manual_seed(0))
