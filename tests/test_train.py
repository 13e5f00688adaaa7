"""Training: the loss falls and samples approach the data; resuming reproduces a straight run."""

import importlib.util
from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde import checkpoint
from scoresde.experiment import build_model, config_from_checkpoint, export_model, load_data, load_trained
from scoresde.metrics import mmd2
from scoresde.train import train

ROOT = Path(__file__).resolve().parents[1]


def _config(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_training_lowers_the_loss_and_samples_approach_the_data(tmp_path):
    config = _config("tiny_gmm2d")
    config.data.name = "moons"  # a small-scale target the tiny MLP can learn in seconds
    config.data.n = 4000
    config.model.network.hidden = 64
    config.training.steps = 1500
    config.training.log_every = 250
    config.training.ckpt_every = 1500
    result = train(config, tmp_path, progress=False, log=lambda msg: None)
    first, last = result.losses[0][1], result.losses[-1][1]
    # The DSM loss of a random network is ~1 per dimension; a learned score roughly halves it.
    # Logged losses are means over 250 batches (SE ~0.005), so a 30% drop is far above noise.
    assert last < 0.7 * first

    model = load_trained(config, tmp_path)
    g = torch.Generator().manual_seed(0)
    test, _ = load_data(config, "test")
    with torch.no_grad():
        out = sd.sample(model, (1000, 2), "ddim", 50, generator=g)
        untrained = sd.sample(build_model(config), (1000, 2), "ddim", 50,
                              generator=torch.Generator().manual_seed(0))
    d_trained = mmd2(out.x, test[:1000])
    d_untrained = mmd2(untrained.x, test[:1000])
    floor = abs(mmd2(load_data(config, "train")[0][:1000], test[:1000]))
    # "Measurably close": the trained sampler must remove most of the untrained model's
    # distance to the data and sit within a few noise floors (floor ~1e-3 at n = 1000).
    assert d_trained < 0.1 * d_untrained
    assert d_trained < max(10 * floor, 1e-2)


def test_resume_gives_the_same_parameters_as_a_straight_run(tmp_path):
    config = _config("tiny_gmm2d")
    config.training.steps = 40
    config.training.ckpt_every = 20
    straight = train(config, tmp_path / "straight", progress=False, log=lambda msg: None)

    half = _config("tiny_gmm2d")
    half.training.steps = 20
    half.training.ckpt_every = 20
    train(half, tmp_path / "split", progress=False, log=lambda msg: None)
    messages = []
    resumed = train(config, tmp_path / "split", progress=False, log=messages.append)
    assert any("resumed" in m and "step 20" in m for m in messages)
    assert resumed.step == straight.step == 40
    # Same data order, noise, optimizer moments and EMA: equal to float rounding (CPU is
    # deterministic here, so in fact bit for bit).
    for a, b in zip(straight.model.net.state_dict().values(), resumed.model.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    ema_a, ema_b = straight.ema.state_dict()["shadow"], resumed.ema.state_dict()["shadow"]
    for k in ema_a:
        torch.testing.assert_close(ema_a[k], ema_b[k], rtol=1e-6, atol=1e-7)


def test_a_checkpoint_from_another_config_is_refused(tmp_path):
    config = _config("tiny_gmm2d")
    config.training.steps = 5
    train(config, tmp_path, progress=False, log=lambda msg: None)
    other = _config("tiny_gmm2d")
    other.model.network.hidden = 48
    with pytest.raises(ValueError, match=r"model\.network\.hidden"):
        train(other, tmp_path, progress=False, log=lambda msg: None)
    with pytest.raises(ValueError, match=r"model\.network\.hidden"):
        load_trained(other, tmp_path)


def test_exported_model_loads_like_a_checkpoint_and_is_not_resumable(tmp_path):
    config = _config("tiny_gmm2d")
    config.training.steps = 5
    result = train(config, tmp_path / "work", progress=False, log=lambda msg: None)
    path = export_model(config, tmp_path / "work", tmp_path / "ship" / "checkpoints" / "ckpt_00000005.pt")
    shipped = load_trained(config, path)
    expected = result.ema.state_dict()["shadow"]
    for name, value in shipped.net.state_dict().items():
        torch.testing.assert_close(value, expected[name])
    assert "optimizer" not in checkpoint.load_checkpoint(path)
    with pytest.raises(ValueError, match="exported model"):
        train(config, tmp_path / "ship", progress=False, log=lambda msg: None)


def test_a_checkpoint_is_self_describing(tmp_path):
    """The config groups a checkpoint stores rebuild the model and its data without the config
    file: same weights, same outputs, same data (the eval group, not stored, takes defaults)."""
    config = _config("tiny_gmm2d")
    config.training.steps = 5
    train(config, tmp_path, progress=False, log=lambda msg: None)
    from scoresde.checkpoint import latest_checkpoint

    rebuilt = config_from_checkpoint(latest_checkpoint(tmp_path))
    for group in ("data", "sde", "model"):
        assert rebuilt[group].to_dict() == config[group].to_dict()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    a, b = load_trained(None, tmp_path), load_trained(config, tmp_path)
    torch.testing.assert_close(a.eps(x, 0.3), b.eps(x, 0.3), rtol=0, atol=0)
    assert torch.equal(load_data(rebuilt, "train")[0], load_data(config, "train")[0])


def test_shipped_model_is_package_data():
    from scoresde.assets import SHIPPED, shipped_model

    assert SHIPPED == ("digits_vp",)
    model = load_trained(None, shipped_model("digits_vp"))
    assert model.prediction == "eps" and model.sde.N == 1000
    with pytest.raises(ValueError, match="no shipped model named 'cifar'"):
        shipped_model("cifar")
