"""Networks, time embeddings, EMA and the network registry; a short training run with dsm_loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.analytic import NULL_LABEL
from scoresde.losses import dsm_loss
from scoresde.nn import EMA, NETWORKS, GaussianFourierProjection, TimeMLP, UNet, build_network
from scoresde.nn.embedding import sinusoidal_embedding

DIGITS_UNET = {"in_channels": 1, "channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1,
               "attn_resolutions": (4,), "dropout": 0.0, "resolution": 8}
TINY_CIFAR_UNET = {"in_channels": 3, "channels": 8, "channel_mult": (1, 2, 2), "num_res_blocks": 1,
                   "attn_resolutions": (16,), "dropout": 0.1, "resolution": 32}



def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomize_output(net: nn.Module) -> nn.Module:
    """Give the zero-initialised last layer random weights so the output depends on the input."""
    last = net.out if isinstance(net, TimeMLP) else net.conv_out
    nn.init.normal_(last.weight, std=0.1)
    return net


@pytest.mark.parametrize("shape", [(5, 2), (5, 1, 8, 8)])
def test_mlp_shapes_and_zero_start(shape):
    torch.manual_seed(0)
    net = TimeMLP(dim=math.prod(shape[1:]), hidden=32, layers=2, emb_dim=16)
    x, c = torch.randn(shape), torch.rand(shape[0])
    assert net(x, c).shape == shape and not net(x, c).any()
    with pytest.raises(ValueError, match="elements per sample"):
        net(torch.randn(5, 3), c)


@pytest.mark.parametrize("kwargs", [DIGITS_UNET, TINY_CIFAR_UNET], ids=["8x8x1", "32x32x3"])
@pytest.mark.parametrize("embedding", ["sinusoidal", "fourier"])
def test_unet_shapes_and_zero_start(kwargs, embedding):
    torch.manual_seed(0)
    net = UNet(**kwargs, embedding=embedding).eval()
    r, ch = kwargs["resolution"], kwargs["in_channels"]
    x = torch.randn(2, ch, r, r)
    out = net(x, torch.tensor([3.0, 700.0]))
    assert out.shape == x.shape and not out.any()
    with pytest.raises(ValueError, match="UNet expects input of shape"):
        net(torch.randn(2, ch, r // 2, r // 2), torch.zeros(2))


def test_unet_places_attention_and_checks_resolution():
    net = UNet(**DIGITS_UNET)
    n_attn = sum(type(m).__name__ == "AttnBlock" for m in net.modules())
    assert n_attn == 1 + 2 + 1  # level at 4×4: one down block, two up blocks; one in the middle
    with pytest.raises(ValueError, match="divisible"):
        UNet(resolution=12, channel_mult=(1, 2, 2, 2))


@pytest.mark.parametrize("embedding", ["sinusoidal", "fourier"])
@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_time_conditioning_changes_the_output(kind, embedding):
    torch.manual_seed(0)
    if kind == "mlp":
        net, x = TimeMLP(dim=2, hidden=32, layers=2, emb_dim=16, embedding=embedding), torch.randn(4, 2)
    else:
        net, x = UNet(**DIGITS_UNET, embedding=embedding), torch.randn(4, 1, 8, 8)
    net = _randomize_output(net).eval()
    x = x[:1].expand_as(x)  # the same input at four different times
    out = net(x, torch.tensor([0.1, 0.5, 10.0, 500.0])).flatten(1)
    assert (out[1:] - out[:1]).abs().amax(1).min() > 1e-2 * out.abs().mean()


def test_sinusoidal_embedding():
    c = torch.tensor([0.0, 1.0, 250.0])
    emb = sinusoidal_embedding(c, 8)
    freqs = 10000.0 ** (-torch.arange(4) / 4)
    assert emb.shape == (3, 8)
    args = c[:, None] * freqs
    torch.testing.assert_close(emb, torch.cat([args.sin(), args.cos()], 1))
    assert sinusoidal_embedding(c.double(), 8).dtype == torch.float64
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(c, 7)


def test_fourier_projection_is_a_fixed_buffer():
    torch.manual_seed(0)
    proj = GaussianFourierProjection(16, scale=16.0)
    assert not list(proj.parameters()) and set(proj.state_dict()) == {"W"}
    c = torch.tensor([0.0, 0.3])
    emb = proj(c)
    args = 2 * math.pi * c[:, None] * proj.W
    torch.testing.assert_close(emb, torch.cat([args.sin(), args.cos()], 1))


def _scalar_module(value: float) -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    nn.init.constant_(m.weight, value)
    return m


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_matches_the_hand_computed_average(warmup):
    decay, values = 0.9, [1.0, 3.0, -2.0, 5.0, 0.5, 4.0, 2.0, 7.0, -1.0, 3.0, 6.0, 0.0]
    module = _scalar_module(0.0)
    ema = EMA(module, decay=decay, warmup=warmup)
    shadow = 0.0
    for n, v in enumerate(values, start=1):
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        assert ema.current_decay() == pytest.approx(d, rel=1e-15)
        nn.init.constant_(module.weight, v)
        ema.update(module)
        shadow = d * shadow + (1 - d) * v
        assert ema.shadow["weight"].item() == pytest.approx(shadow, rel=1e-6)
    assert ema.num_updates == len(values)
    if warmup:  # the warm-up ends at n = 81 for decay 0.9 ((1 + n)/(10 + n) ≥ 0.9)
        assert ema.current_decay() < decay


def test_ema_copy_to_and_state_dict_round_trip():
    torch.manual_seed(0)
    net = TimeMLP(dim=2, hidden=8, layers=1, emb_dim=4).double()
    ema = EMA(net, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=_gen(1), dtype=p.dtype))
        ema.update(net)
    assert all(s.dtype == torch.float32 for s in ema.shadow.values())

    restored = EMA(TimeMLP(dim=2, hidden=8, layers=1, emb_dim=4), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.99 and restored.num_updates == 3
    for name, s in ema.shadow.items():
        assert torch.equal(restored.shadow[name], s)
    ema.update(net)
    restored.update(net)
    assert all(torch.equal(restored.shadow[k], ema.shadow[k]) for k in ema.shadow)

    ema.copy_to(net)
    for name, p in net.named_parameters():
        assert p.dtype == torch.float64 and torch.equal(p, ema.shadow[name].double())

    with pytest.raises(ValueError, match="does not match"):
        ema.update(TimeMLP(dim=2, hidden=8, layers=2, emb_dim=4))
    with pytest.raises(ValueError, match="does not match"):
        EMA(nn.Linear(2, 2)).load_state_dict(ema.state_dict())


def test_build_network():
    mlp = build_network({"name": "mlp", "dim": 2, "hidden": 16})
    assert isinstance(mlp, TimeMLP) and mlp.inp.out_features == 16
    assert isinstance(build_network({"name": "unet", **DIGITS_UNET}), UNet)
    assert set(NETWORKS) == {"mlp", "unet", "diffusers_unet2d"}
    available = r"\['diffusers_unet2d', 'mlp', 'unet'\]"
    with pytest.raises(ValueError, match=r"unknown network 'resnet'; available: " + available):
        build_network({"name": "resnet"})
    with pytest.raises(ValueError, match=r"does not take \['width'\]"):
        build_network({"name": "mlp", "dim": 2, "width": 3})
    with pytest.raises(ValueError, match=r"'mlp' needs \['dim'\]"):
        build_network({"name": "mlp", "hidden": 16})


def test_mlp_trained_with_dsm_lowers_the_loss():
    """~300 Adam steps on a 2-D mixture: the loss on a fixed evaluation batch (same times and
    noise before and after) drops far beyond its Monte-Carlo noise."""
    torch.manual_seed(0)
    angle = 2 * math.pi * torch.arange(4, dtype=torch.float64) / 4
    gmm = sd.GaussianMixture(2.0 * torch.stack([angle.cos(), angle.sin()], 1), torch.full((4,), 0.2))
    sde = sd.VPSDE()
    model = sd.ScoreModel(TimeMLP(dim=2, hidden=64, layers=2, emb_dim=16, embedding="fourier"), sde,
                          prediction="eps", time_input="continuous")
    data, g = gmm.sample(20000, generator=_gen(0)), _gen(1)
    x_eval = gmm.sample(4000, generator=_gen(2))

    def eval_losses() -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([dsm_loss(model, x, _gen(3 + i)) for i, x in enumerate(x_eval.split(500))])

    before = eval_losses()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        idx = torch.randint(len(data), (128,), generator=g)
        loss = dsm_loss(model, data[idx], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    drop = before - eval_losses()
    assert drop.mean() > 10 * drop.std() / math.sqrt(len(drop))
    assert drop.mean() > 0.2 * before.mean()


# --- class embedding and learned variance -----------------------------------------------------


def _net(kind: str, **kwargs) -> tuple[nn.Module, torch.Tensor]:
    """A small network of ``kind`` and an input batch of 4 for it."""
    if kind == "mlp":
        return TimeMLP(dim=2, hidden=32, layers=2, emb_dim=16, **kwargs), torch.randn(4, 2)
    return UNet(**DIGITS_UNET, **kwargs), torch.randn(4, 1, 8, 8)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_class_embedding_conditions_the_output(kind):
    """Labels change the output; the null label −1 is the table's extra last row; the zero-init
    output makes an untrained conditional net output 0 like an unconditional one."""
    torch.manual_seed(0)
    net, x = _net(kind, num_classes=3)
    net.eval()
    x, c = x[:1].expand_as(x), torch.full((4,), 7.0)  # one input at one time, four labels
    labels = torch.tensor([0, 1, 2, NULL_LABEL])
    assert not net(x, c, labels).any()
    net = _randomize_output(net)
    out = net(x, c, labels).flatten(1)
    assert (out[1:] - out[:1]).abs().amax(1).min() > 1e-2 * out.abs().mean()
    with torch.no_grad():
        net.classes.table.weight[3] = net.classes.table.weight[1]  # null row := class 1's row
    torch.testing.assert_close(net(x, c, labels)[3], net(x, c, labels)[1], rtol=0, atol=0)
    assert net.classes.table.num_embeddings == 3 + 1


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_class_labels_are_checked(kind):
    torch.manual_seed(0)
    net, x = _net(kind, num_classes=3)
    c = torch.zeros(4)
    with pytest.raises(ValueError, match=r"lie in 0\.\.2 \(or -1 for the null label\), got \[-2, 3\]"):
        net(x, c, torch.tensor([0, 3, -2, 1]))
    with pytest.raises(ValueError, match=r"integer tensor, got torch\.float32"):
        net(x, c, torch.tensor([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"needs one label per sample.*cond=labels"):
        net(x, c)
    with pytest.raises(ValueError, match=r"one class label per sample, shape \(4,\), got \(3,\)"):
        net(x, c, torch.tensor([0, 1, 2]))
    unconditional, _ = _net(kind)
    with pytest.raises(ValueError, match=r"unconditional \(num_classes=0\)"):
        unconditional(x, c, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 0"):
        _net(kind, num_classes=-1)


@pytest.mark.parametrize("shape", [(5, 2), (5, 1, 8, 8)])
def test_mlp_learned_variance_halves_as_score_model_splits(shape):
    """2·dim outputs as (B, 2C, ...): ScoreModel(learned_variance=True) reads the first dim as the
    prediction and the last dim as v. With zero weights the output is the bias, so the split is
    visible exactly."""
    torch.manual_seed(0)
    dim = math.prod(shape[1:])
    net = TimeMLP(dim=dim, hidden=16, layers=1, emb_dim=8, learned_variance=True)
    x, c = torch.randn(shape), torch.rand(shape[0])
    assert net(x, c).shape == (shape[0], 2 * shape[1], *shape[2:]) and not net(x, c).any()
    with torch.no_grad():
        net.out.bias.copy_(torch.arange(2 * dim, dtype=torch.float32))
    model = sd.ScoreModel(net, sd.VPSDE(), prediction="eps", learned_variance=True)
    pred = model.predict(x, 0.5)
    assert torch.equal(pred.eps, torch.arange(dim, dtype=torch.float32).reshape(shape[1:]).expand(shape))
    assert torch.equal(pred.var_interp,
                       torch.arange(dim, 2 * dim, dtype=torch.float32).reshape(shape[1:]).expand(shape))


def test_unet_learned_variance_doubles_the_output_channels():
    torch.manual_seed(0)
    net = UNet(**DIGITS_UNET, learned_variance=True, num_classes=2).eval()
    x, c, labels = torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 1, NULL_LABEL])
    assert net(x, c, labels).shape == (3, 2, 8, 8) and not net(x, c, labels).any()
    with torch.no_grad():
        net.conv_out.bias.copy_(torch.tensor([0.25, -0.5]))
    pred = sd.ScoreModel(net, sd.VPSDE(), learned_variance=True).predict(x, 0.5, labels)
    assert (pred.eps == 0.25).all() and (pred.var_interp == -0.5).all()


def test_build_network_passes_classes_and_variance():
    net = build_network({"name": "unet", **DIGITS_UNET, "num_classes": 10, "learned_variance": True})
    assert net.classes.num_classes == 10 and net.conv_out.out_channels == 2
    assert build_network({"name": "mlp", "dim": 2}).classes is None
