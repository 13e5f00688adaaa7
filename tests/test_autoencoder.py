"""The convolutional autoencoder of latent diffusion and latent training: the network's shapes and
Autoencoder protocol, its training (loss falls, checkpoints round-trip and resume bit for bit,
the measured scale makes the training latents unit-variance), a latent model's self-contained
checkpoint loading as a LatentDiffusion, and the shipped ``digits_latent`` model."""

import importlib.util
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from ml_collections import ConfigDict

import scoresde as sd
from scoresde import checkpoint
from scoresde.autoencoding import (
    build_autoencoder,
    learning_rate,
    load_autoencoder,
    measure_latent_statistics,
    reconstruction_mse,
    train_autoencoder,
)
from scoresde.autoencoding import identity as ae_identity
from scoresde.experiment import config_from_checkpoint, export_model, identity, load_data, load_trained
from scoresde.latent import Autoencoder, LatentDiffusion, check_autoencoder
from scoresde.model import ScoreModel
from scoresde.nn.autoencoder import ConvAutoencoder, autoencoder_from_state, autoencoder_state, kl_divergence
from scoresde.train import train

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"progress": False, "log": lambda msg: None}


def _config(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _ae_config(steps: int = 20, seed: int = 0):
    """configs/digits_ae.py shrunk to seconds: 256 training digits, 8 base channels, batch 32."""
    config = _config("digits_ae")
    config.data.n = 256
    config.autoencoder.network.channels = 8
    config.training.steps = steps
    config.training.batch_size = 32
    config.training.warmup = 5
    config.training.log_every = 10
    config.training.ckpt_every = 10
    config.training.seed = seed
    return config


def _latent_config(autoencoder: Path, steps: int = 10):
    """configs/digits_latent.py shrunk: a 32-wide MLP instead of its U-Net, on the 256 digits' latents."""
    config = _config("digits_latent")
    config.data.n = 256
    config.latent.autoencoder = str(autoencoder)
    config.model.network = ConfigDict({"name": "mlp", "dim": 32, "hidden": 32, "layers": 1, "emb_dim": 16})
    config.training.steps = steps
    config.training.batch_size = 32
    config.training.warmup = 2
    config.training.log_every = 5
    config.training.ckpt_every = 5
    return config


@pytest.fixture(scope="module")
def trained_ae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with a 20-step autoencoder (checkpoints at steps 10 and 20)."""
    workdir = tmp_path_factory.mktemp("ae")
    train_autoencoder(_ae_config(), workdir, **QUIET)
    return workdir


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the network ------------------------------------------------------------------------------


def test_an_autoencoder_state_that_does_not_fit_its_config_is_named():
    ae = ConvAutoencoder(in_channels=1, latent_channels=2, channels=8, channel_mult=(1, 2))
    state = autoencoder_state(ae)
    name = next(iter(state["net"]))
    state["net"][name] = torch.zeros(3, 1)
    where = r"ckpt\.pt, the autoencoder's entry 'net'"
    with pytest.raises(sd.CheckpointError, match=rf"{where}.*{re.escape(name)}: expected shape"):
        autoencoder_from_state(state, where="ckpt.pt")


def test_shapes_protocol_and_data_range():
    torch.manual_seed(0)
    ae = ConvAutoencoder(in_channels=1, latent_channels=2, channels=8, channel_mult=(1, 2))
    assert isinstance(ae, Autoencoder)
    check_autoencoder(ae)
    assert ae.latent_shape((1, 8, 8)) == (2, 4, 4)
    assert ConvAutoencoder(channels=8, channel_mult=(1, 2, 2)).latent_shape((1, 16, 8)) == (2, 4, 2)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    mean, logvar = ae.posterior(x)
    assert mean.shape == logvar.shape == (5, 2, 4, 4)
    assert torch.equal(ae.encode(x), mean)  # deterministic: the posterior mean
    assert (ae.scale_factor, ae.shift_factor) == (1.0, 0.0)
    # The decoder's squashing keeps every output inside data_range, even for far-off latents.
    far = ae.decode(100 * torch.randn(5, 2, 4, 4))
    assert far.shape == (5, 1, 8, 8) and far.min() >= -1 and far.max() <= 1
    shifted = ConvAutoencoder(channels=8, data_range=(0.0, 1.0)).decode(100 * torch.randn(5, 2, 4, 4))
    assert shifted.min() >= 0 and shifted.max() <= 1 and shifted.min() < 0.5  # not the (-1, 1) range
    # KL(N(mu, s^2) || N(0, 1)) per sample, summed over the latent: 0 at the prior, closed form else.
    assert torch.equal(kl_divergence(torch.zeros(3, 2, 4, 4), torch.zeros(3, 2, 4, 4)), torch.zeros(3))
    # Two elements with mu = 1, log s^2 = 2: 2·½(1 + e² − 1 − 2) = e² − 2.
    torch.testing.assert_close(kl_divergence(torch.ones(1, 2), torch.full((1, 2), 2.0)),
                               torch.tensor([math.e ** 2 - 2]))
    with pytest.raises(ValueError, match=r"shape \(1, H, W\) with H and W divisible by 2, got \(3, 8, 8\)"):
        ae.encode(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"divisible by 2, got \(1, 7, 8\)"):
        ae.latent_shape((1, 7, 8))
    with pytest.raises(ValueError, match=r"latents \(batch, 2, h, w\), got shape \(2, 3, 4, 4\)"):
        ae.decode(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="data_range must be finite with lo < hi"):
        ConvAutoencoder(data_range=(1.0, -1.0))


# --- training ---------------------------------------------------------------------------------


def test_training_reduces_the_reconstruction_error(trained_ae):
    """20 steps at lr 2e-3 cut the reconstruction MSE of the initial weights (whose decoder
    outputs ≈ 0 everywhere: MSE ≈ the data's mean square, ~0.5) by more than half; the logged
    objective falls too."""
    config = _ae_config()
    data, _ = load_data(config, "train")
    torch.manual_seed(config.training.seed)
    untrained = build_autoencoder(config)  # the run's initial weights
    trained = load_autoencoder(trained_ae)
    before, after = reconstruction_mse(untrained, data), reconstruction_mse(trained, data)
    assert before > 0.3
    assert after < 0.5 * before, (before, after)
    losses = train_autoencoder(_ae_config(steps=20), trained_ae.parent / "again", **QUIET).losses
    assert losses[-1][1] < 0.7 * losses[0][1]
    assert [s for s, *_ in losses] == [10, 20]


def test_learning_rate_warms_up_and_decays_to_zero():
    config = _ae_config(steps=100)
    assert learning_rate(config, 0) == pytest.approx(2e-3 / 5 * 0.5 * (1 + 1))  # first warm-up step
    assert learning_rate(config, 50) == pytest.approx(2e-3 * 0.5)
    assert learning_rate(config, 99) < 1e-5


def test_checkpoint_round_trip_is_bit_exact(trained_ae, tmp_path):
    """The latest checkpoint rebuilds the trained autoencoder exactly: weights, latent statistics
    and so encode/decode outputs; weights only (no pickled code)."""
    result = train_autoencoder(_ae_config(), trained_ae, **QUIET)  # already done: loads, trains nothing
    assert result.step == 20 and result.losses == []
    loaded = load_autoencoder(trained_ae)
    assert _states_equal(loaded.state_dict(), result.autoencoder.state_dict())
    assert (loaded.scale_factor, loaded.shift_factor) == (result.autoencoder.scale_factor,
                                                          result.autoencoder.shift_factor)
    x, _ = load_data(_ae_config(), "train")
    assert torch.equal(loaded(x[:16]), result.autoencoder(x[:16]))
    latest = checkpoint.latest_checkpoint(trained_ae)
    assert latest.name == "ckpt_00000020.pt"
    assert torch.equal(load_autoencoder(latest).encode(x[:4]), loaded.encode(x[:4]))
    checkpoint.load_checkpoint(latest, config=ae_identity(_ae_config()))  # the data and autoencoder groups
    with pytest.raises(FileNotFoundError, match="no autoencoder checkpoint"):
        load_autoencoder(tmp_path)


def test_resume_gives_the_same_autoencoder_as_a_straight_run(trained_ae, tmp_path):
    """A 20-step run interrupted after its step-10 checkpoint and resumed equals the straight run
    bit for bit (same batches, posterior noise, Adam moments and learning-rate schedule: CPU is
    deterministic), latent statistics included."""
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(trained_ae / "checkpoints" / "ckpt_00000010.pt", tmp_path / "checkpoints")
    messages = []
    resumed = train_autoencoder(_ae_config(steps=20), tmp_path, progress=False, log=messages.append)
    assert any("resumed" in m and "step 10" in m for m in messages)
    straight = load_autoencoder(trained_ae)
    assert _states_equal(resumed.autoencoder.state_dict(), straight.state_dict())
    assert resumed.autoencoder.scale_factor == straight.scale_factor
    other = _ae_config()
    other.autoencoder.kl_weight = 0.5
    with pytest.raises(ValueError, match=r"autoencoder\.kl_weight: checkpoint 0.01, given 0.5"):
        train_autoencoder(other, tmp_path, **QUIET)


def test_scale_factor_makes_the_training_latents_unit_variance(trained_ae):
    """``to_latent = scale·(E(x) − shift)`` with the stored statistics has mean 0 and variance 1
    over the training latents (all elements pooled) to float32 rounding; the raw latents do not."""
    ae = load_autoencoder(trained_ae)
    data, _ = load_data(_ae_config(), "train")
    ldm = LatentDiffusion(ScoreModel(lambda x, c: x, sd.VPSDE()), ae)
    z = ldm.to_latent(data).double()
    assert z.shape == (256, 2, 4, 4)
    assert abs(z.mean().item()) < 1e-5 and abs(z.std(correction=0).item() - 1) < 1e-5
    raw = ae.encode(data).double()
    assert abs(raw.std(correction=0).item() - 1) > 1e-2 or abs(raw.mean().item()) > 1e-2
    assert measure_latent_statistics(ae, data) == pytest.approx((ae.scale_factor, ae.shift_factor), rel=1e-12)


# --- latent training --------------------------------------------------------------------------


def test_latent_model_checkpoint_is_a_self_contained_latent_diffusion(trained_ae, tmp_path):
    """Training with latent.autoencoder stores the autoencoder in the checkpoint: load_trained
    gives a LatentDiffusion even after the autoencoder's workdir is gone, its samples decode to
    digits-shaped data, and the export carries the autoencoder along."""
    ae_dir = tmp_path / "ae"
    shutil.copytree(trained_ae, ae_dir)
    config = _latent_config(ae_dir)
    result = train(config, tmp_path / "latent", **QUIET)
    assert result.step == 10
    shutil.rmtree(ae_dir)

    ldm = load_trained(None, tmp_path / "latent")
    assert isinstance(ldm, LatentDiffusion) and isinstance(ldm.model, ScoreModel)
    original = load_autoencoder(trained_ae)
    assert _states_equal(ldm.autoencoder.state_dict(), original.state_dict())
    assert (ldm.scale_factor, ldm.shift_factor) == (original.scale_factor, original.shift_factor)
    assert not any(p.requires_grad for p in ldm.parameters())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = sd.sample(ldm, (4, *ldm.latent_shape((1, 8, 8))), "ddim", 3, generator=g)
    assert out.x.shape == (4, 1, 8, 8) and out.latents.shape == (4, 2, 4, 4) and out.nfe == 3
    assert torch.isfinite(out.x).all() and out.x.abs().max() <= 1

    latest = checkpoint.latest_checkpoint(tmp_path / "latent")
    rebuilt = config_from_checkpoint(latest)
    assert rebuilt.latent.autoencoder == str(latest) and rebuilt.latent.scale_factor == 0.0
    assert _states_equal(load_autoencoder(latest).state_dict(), original.state_dict())
    assert identity(rebuilt) == identity(config) and identity(config)["latent"] == {"scale_factor": 0.0}
    load_trained(config, tmp_path / "latent")  # the given config's autoencoder path is not compared

    shipped = export_model(config, tmp_path / "latent", tmp_path / "ship.pt")
    state = checkpoint.load_checkpoint(shipped)
    assert set(state) == {"net", "step", "autoencoder"}
    exported = load_trained(None, shipped)
    assert isinstance(exported, LatentDiffusion)
    assert _states_equal(exported.model.net.state_dict(), ldm.model.net.state_dict())
    assert _states_equal(exported.autoencoder.state_dict(), original.state_dict())

    pixel = _config("digits_vp")
    assert "latent" not in identity(pixel)
    with pytest.raises(ValueError, match=r"latent\.scale_factor"):
        load_trained(pixel, shipped)


def test_latent_training_resumes_bit_exactly_and_refuses_another_autoencoder(trained_ae, tmp_path):
    straight = train(_latent_config(trained_ae, steps=10), tmp_path / "straight", **QUIET)
    train(_latent_config(trained_ae, steps=5), tmp_path / "split", **QUIET)
    resumed = train(_latent_config(trained_ae, steps=10), tmp_path / "split", **QUIET)
    assert _states_equal(straight.model.net.state_dict(), resumed.model.net.state_dict())
    assert _states_equal(straight.ema.state_dict()["shadow"], resumed.ema.state_dict()["shadow"])

    other = tmp_path / "other_ae"
    train_autoencoder(_ae_config(steps=10, seed=1), other, **QUIET)
    with pytest.raises(ValueError, match="another autoencoder"):
        train(_latent_config(other, steps=15), tmp_path / "split", **QUIET)
    with pytest.raises(FileNotFoundError, match="no autoencoder checkpoint"):
        train(_latent_config(tmp_path / "missing"), tmp_path / "x", **QUIET)


# --- the shipped model ------------------------------------------------------------------------


def test_shipped_latent_model():
    """The shipped digits_latent: under 2 MB, loads as a LatentDiffusion with its autoencoder,
    whose test-split reconstruction error is below one grey level RMS — (2/16)² = 0.0156 in the
    [-1, 1] range (measured 0.0100 at shipping; an untrained autoencoder scores ~0.7) — and whose
    samples decode to finite digits-shaped images."""
    from scoresde.assets import SHIPPED, shipped_model

    assert "digits_latent" in SHIPPED
    path = shipped_model("digits_latent")
    assert path.stat().st_size < 2 * 2**20
    ldm = load_trained(None, path)
    assert isinstance(ldm, LatentDiffusion) and isinstance(ldm.autoencoder, ConvAutoencoder)
    load_trained(_config("digits_latent"), path)  # its config file's identity matches
    config = config_from_checkpoint(path)
    test, spec = load_data(config, "test")
    bar = (2 / 16) ** 2
    assert reconstruction_mse(ldm.autoencoder, test) < bar
    torch.manual_seed(0)
    assert reconstruction_mse(ConvAutoencoder(**ldm.autoencoder.config).eval(), test) > bar
    with torch.no_grad():
        out = sd.sample(ldm, (8, *ldm.latent_shape(spec.shape)), "ddim", 10,
                        generator=torch.Generator().manual_seed(0))
    assert out.x.shape == (8, *spec.shape) and torch.isfinite(out.x).all()
