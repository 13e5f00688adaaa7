"""Optional precision and performance options of the network (issue 13): ``ScoreModel(...,
autocast=, channels_last=, compile=)`` and their config keys ``model.autocast``,
``model.channels_last``, ``model.compile`` (runtime options: never part of a checkpoint's identity).

* autocast: only the network runs in bf16/fp16; on an exact mixture network written with matmuls
  (so that autocast has something to round) the samples stay within the rounding of the autocast
  dtype of the float32 ones, and the state, the conversions and the schedule stay in their dtypes;
* channels_last: the shipped digits U-Net gives the contiguous numbers to float32 rounding;
* compile: the network compiled with the eager backend (dynamo's graph capture, run eagerly) gives
  the uncompiled numbers exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import scoresde as sd
from scoresde import experiment
from scoresde.assets import shipped_model
from scoresde.config import RUNTIME_KEYS, default_config

F64 = torch.float64
# Wide modes (std 0.32–0.48), as the order-of-convergence problem of tests/oracles.py.
GMM = sd.GaussianMixture(torch.tensor([[-1.0, -0.5], [1.0, 1.0], [0.5, -1.5]], dtype=F64),
                         torch.tensor([0.4, 0.48, 0.32], dtype=F64), torch.tensor([0.5, 0.3, 0.2], dtype=F64))
# Unit roundoff of the autocast dtypes (8 and 11 significant bits).
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


class MatmulMixture(nn.Module):
    """The exact eps of an isotropic Gaussian mixture written as a network: the squared distances
    ``‖x‖² − 2a·x·μ_k + a²‖μ_k‖²`` and the score ``a·(r/v)·μ − x·Σ_k r_k/v_k`` go through two
    matmuls in the input's dtype (which autocast runs in bf16/fp16), the rest in float32.
    ``matmul_dtypes`` records the dtype the first matmul ran in."""

    def __init__(self, gmm: sd.GaussianMixture, sde: sd.SDE):
        super().__init__()
        self.sde = sde
        self.register_buffer("means", gmm.means.float())
        self.register_buffer("var0", gmm.stds[:, 0].float() ** 2)
        self.register_buffer("log_w", gmm.weights.log().float())
        self.matmul_dtypes: list[torch.dtype] = []

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        t = c.to(F64)
        a, s = self.sde.alpha(t).float()[:, None], self.sde.sigma(t).float()[:, None]
        var = a * a * self.var0 + s * s  # (batch, K)
        xm = x @ self.means.T
        self.matmul_dtypes.append(xm.dtype)
        sq = (x * x).sum(1, keepdim=True) - 2 * a * xm + a * a * (self.means * self.means).sum(1)
        logits = self.log_w - 0.5 * x.shape[1] * torch.log(2 * math.pi * var) - 0.5 * sq / var
        r = torch.softmax(logits.float(), dim=1) / var
        return -s * (a * (r @ self.means) - x * r.sum(1, keepdim=True))


def test_the_matmul_network_is_the_exact_oracle():
    """In float32 the network is the oracle's eps to float32 rounding (so the autocast tests below
    measure rounding, not a different model); the bound would fail for a wrong formula."""
    sde = sd.VPSDE()
    model, oracle = sd.ScoreModel(MatmulMixture(GMM, sde), sde), GMM.score_model(sde, "eps")
    x = 0.5 * torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    for t in (1.0, 0.3, 1e-3):
        assert (model.eps(x, t) - oracle.eps(x, t)).abs().max() < 2e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(("sampler", "options"), [("ddim", {}), ("dpm_solver", {"order": 2})],
                         ids=["ddim", "dpm++2M"])
def test_autocast_samples_within_the_rounding_of_float32(dtype, sampler, options):
    """1000 samples, 20 steps, the same prior draws, autocast vs float32.

    Tolerance: the network's matmul inputs are rounded to the autocast dtype (relative error ≤ u,
    its unit roundoff), which moves each eps by O(u) and each sample by O(u·|x|) with |x| ≲ 3; the
    PF-ODE's contraction keeps early errors from growing. Measured rms/u 0.30–0.44 and max/u 5–14
    (the max at a few samples near a boundary between modes, where the exact score's Lipschitz
    constant ~ 1/variance amplifies rounding); the bounds are rms ≤ u and max ≤ 32u. The lower
    bound rms ≥ 0.05u shows autocast did round (float32 alone differs by ~1e-7 = 3e-5u for bf16).
    The state stays float32.
    """
    sde = sd.VPSDE()
    net = MatmulMixture(GMM, sde)
    runs = {}
    for ac in (None, dtype):
        model = sd.ScoreModel(net, sde, "eps", autocast=ac)
        net.matmul_dtypes.clear()
        runs[ac] = sd.sample(model, (1000, 2), sampler, 20, generator=torch.Generator().manual_seed(3),
                             **options)
        assert set(net.matmul_dtypes) == {dtype if ac else torch.float32}
    x32, xac = runs[None].x, runs[dtype].x
    assert xac.dtype == torch.float32 and runs[dtype].nfe == runs[None].nfe
    u = UNIT_ROUNDOFF[dtype]
    diff = xac - x32
    rms, worst = diff.pow(2).mean().sqrt().item(), diff.abs().max().item()
    assert 0.05 * u <= rms <= u, rms / u
    assert worst <= 32 * u, worst / u


def test_autocast_leaves_the_conversions_and_the_state_in_float32():
    """Under bf16 autocast the prediction is float32 and ``alpha·x0 + sigma·eps = x`` holds to
    float32 rounding (1e-6), not to bf16's 4e-3: the conversions ran outside autocast; and an outer
    ``torch.autocast`` of the caller is left alone by a model without the option."""
    sde = sd.VPSDE()
    net = MatmulMixture(GMM, sde)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    pred = sd.ScoreModel(net, sde, autocast=torch.bfloat16).predict(x, 0.5)
    assert pred.x0.dtype == pred.eps.dtype == torch.float32 and net.matmul_dtypes[-1] == torch.bfloat16
    assert (pred.alpha * pred.x0 + pred.sigma * pred.eps - x).abs().max() < 1e-6
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sd.ScoreModel(net, sde).predict(x, 0.5).eps.dtype == torch.float32
    assert net.matmul_dtypes[-1] == torch.bfloat16


def _digits(**runtime) -> sd.ScoreModel:
    """The shipped digits U-Net, loaded through its config with the given runtime options."""
    path = shipped_model("digits_vp")
    config = experiment.config_from_checkpoint(path)
    for key, value in runtime.items():
        config.model[key] = value
    return experiment.load_trained(config, path)


def test_channels_last_equals_contiguous_on_the_digits_unet():
    """``model.channels_last``: the U-Net's conv weights and activations are channels-last, its output
    comes back contiguous, and eps agrees with the contiguous run to 1e-6 of its scale (float32 rounding of
    another summation order in the convolutions; measured ≤ 5e-7). Six DDIM steps from the same
    draws agree to 1e-4 of the samples' scale (the same rounding carried through 1/alpha and six
    steps; measured 1.3e-5 at ten)."""
    plain, fast = _digits(), _digits(channels_last=True)
    assert fast.channels_last and not plain.channels_last
    layout = [[p.is_contiguous(memory_format=torch.channels_last) for p in m.net.parameters() if p.ndim == 4]
              for m in (plain, fast)]
    assert all(layout[1]) and not all(layout[0])
    seen = []  # the first conv's activations (32 channels; a 1-channel input looks alike in both layouts)
    for m in (plain, fast):
        m.net.conv_in.register_forward_hook(lambda module, args, out: seen.append(
            out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()))
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in (0.9, 0.3, 0.02):
        a, b = plain.eps(x, t), fast.eps(x, t)
        assert b.is_contiguous() and b.dtype == torch.float32
        assert (a - b).abs().max() <= 1e-6 * a.abs().max()
    assert seen == [False, True] * 3
    runs = [sd.sample(m, (8, 1, 8, 8), "ddim", 6, generator=torch.Generator().manual_seed(1)).x
            for m in (plain, fast)]
    assert (runs[0] - runs[1]).abs().max() <= 1e-4 * runs[0].abs().max()


def test_channels_last_refuses_inputs_that_are_not_images():
    model = sd.ScoreModel(lambda x, c: x, sd.VPSDE(), channels_last=True)
    with pytest.raises(ValueError, match=r"channels_last needs image inputs \(batch, C, H, W\), got shape "
                                         r"\(3, 2\)"):
        model.predict(torch.zeros(3, 2), 0.5)


dynamo = pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(),
                            reason="torch.compile is unavailable here")


class SmallNet(nn.Module):
    """``(x, c) -> tanh(W·[x, sin c, cos c] + b)``, random, cheap to compile."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 2)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return torch.tanh(self.lin(torch.cat([x, torch.sin(c)[:, None], torch.cos(c)[:, None]], dim=1)))


@dynamo
def test_compile_with_the_eager_backend_equals_the_uncompiled_network():
    """The captured graph, run eagerly, gives the same numbers bit for bit; the backend really
    received the graph (it counts), and the module keeps its state_dict keys (checkpoints)."""
    torch._dynamo.reset()
    graphs = []

    def eager_counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    sde = sd.VPSDE()
    plain = sd.ScoreModel(SmallNet(), sde)
    compiled = sd.ScoreModel(SmallNet(), sde, compile={"backend": eager_counting})
    assert list(compiled.net.state_dict()) == list(plain.net.state_dict())
    runs = [sd.sample(m, (64, 2), "dpm_solver", 6, generator=torch.Generator().manual_seed(2)).x
            for m in (plain, compiled)]
    assert graphs and torch.equal(runs[0], runs[1])
    torch._dynamo.reset()


@dynamo
def test_config_keys_build_the_options():
    """``model.compile = "eager"`` and ``model.autocast = "bfloat16"`` through ``build_model``; the
    default config runs the network as it is."""
    torch._dynamo.reset()
    config = default_config()
    config.model.network = {"name": "mlp", "dim": 2, "hidden": 8, "layers": 1, "emb_dim": 4}
    plain = experiment.build_model(config)
    assert plain.autocast is None and not plain.channels_last and plain.net._compiled_call_impl is None
    nn.init.normal_(plain.net.out.weight, std=0.3)  # the output layer starts at zero
    config.model.compile = "eager"
    eager = experiment.build_model(config)
    config.model.autocast = "bfloat16"
    fast = experiment.build_model(config)
    assert eager.net._compiled_call_impl is not None and eager.autocast is None
    assert fast.net._compiled_call_impl is not None and fast.autocast == torch.bfloat16
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    for m in (eager, fast):
        m.net.load_state_dict(plain.net.state_dict())
    want = plain.eps(x, 0.4)
    assert torch.equal(eager.eps(x, 0.4), want)
    got = fast.eps(x, 0.4)
    assert got.dtype == torch.float32 and 0 < (got - want).abs().max() < 0.05  # bf16 rounded, a little
    torch._dynamo.reset()


def test_runtime_options_are_not_part_of_a_checkpoints_identity():
    """Set or not, the options leave ``identity`` (what a checkpoint is checked against) unchanged, so
    a shipped checkpoint loads with them (``_digits(channels_last=True)`` above) and a checkpoint's own
    config comes back with their defaults."""
    config = default_config()
    reference = experiment.identity(config)
    config.model.autocast, config.model.compile, config.model.channels_last = "float16", "inductor", True
    assert experiment.identity(config) == reference
    assert all(key not in experiment.identity(config)[group] for group, key in RUNTIME_KEYS)
    stored = experiment.config_from_checkpoint(shipped_model("digits_vp"))
    assert (stored.model.autocast, stored.model.compile, stored.model.channels_last) == ("", "", False)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("autocast", "fp8", "model.autocast must be one of"),
])
def test_bad_config_values_are_refused(key, value, message):
    config = default_config()
    config.model[key] = value
    with pytest.raises(ValueError, match=message):
        experiment.build_model(config)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"autocast": torch.float64}, ValueError, "autocast must be None or one of"),
    ({"autocast": "bfloat16"}, ValueError, "autocast must be None or one of"),
    ({"channels_last": "yes"}, TypeError, "channels_last must be True or False"),
    ({"compile": "eager"}, TypeError, "compile must be True, False or a dict"),
])
def test_bad_keywords_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        sd.ScoreModel(lambda x, c: x, sd.VPSDE(), **kwargs)
