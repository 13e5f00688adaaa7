"""Training: the loss falls and samples approach the data; resuming reproduces a straight run;
class-conditional and learned-variance training; old checkpoints still load."""

import importlib.util
from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde import checkpoint
from scoresde.analytic import NULL_LABEL
from scoresde.data import ring_mixture
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


def test_a_generator_state_of_another_device_type_is_a_clear_error(tmp_path):
    """A run trained on a GPU keeps a CUDA generator's state (16 bytes); a CPU generator's is 5056
    bytes. Resuming it on the other device type is refused with the reason, not torch's size error."""
    config = _config("tiny_gmm2d")
    config.training.steps = 2
    train(config, tmp_path, progress=False, log=lambda msg: None)
    path = checkpoint.latest_checkpoint(tmp_path)
    state = checkpoint.load_checkpoint(path)
    state["generator"] = torch.zeros(16, dtype=torch.uint8)  # the size of a CUDA generator's state
    checkpoint.save_checkpoint(path, state, checkpoint.checkpoint_config(path))
    config.training.steps = 4
    with pytest.raises(sd.CheckpointError, match=r"generator state does not fit a cpu generator.*device"):
        train(config, tmp_path, progress=False, log=lambda msg: None)


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

    assert SHIPPED == ("digits_vp", "digits_vp_cond", "digits_vp_lv", "digits_latent")
    model = load_trained(None, shipped_model("digits_vp"))
    assert model.prediction == "eps" and model.sde.N == 1000
    cond = load_trained(None, shipped_model("digits_vp_cond"))
    assert cond.net.classes.num_classes == 10 and not cond.learned_variance
    lv = load_trained(None, shipped_model("digits_vp_lv"))
    assert lv.learned_variance and lv.net.classes is None
    # Each loads against its config file too (the identity comparison passes).
    load_trained(_config("digits_vp_cond"), shipped_model("digits_vp_cond"))
    load_trained(_config("digits_vp_lv"), shipped_model("digits_vp_lv"))
    with pytest.raises(ValueError, match="no shipped model named 'cifar'"):
        shipped_model("cifar")


# --- class-conditional training, learned variances, config compatibility ----------------------


def _conditional_gmm2d(steps: int, label_dropout: float = 0.2):
    """tiny_gmm2d made class-conditional on the ring's 9 components."""
    config = _config("tiny_gmm2d")
    config.model.num_classes = 9
    config.training.label_dropout = label_dropout
    config.training.steps = steps
    return config


def _posterior_class(gmm, x: torch.Tensor) -> torch.Tensor:
    """argmax_c p(c | x) under the exact labelled mixture (equal class weights here)."""
    return torch.stack([gmm.log_prob(x, torch.full((len(x),), c)) for c in gmm.classes], 1).argmax(1)


def test_conditional_training_puts_samples_on_their_class(tmp_path):
    """400 steps on gmm2d labelled by component (9 classes) with label dropout 0.2: DDIM samples
    conditioned on class c land on component c, judged by the exact posterior argmax of the ring
    mixture (its components are ≥ 10 std apart, so exact conditional draws score ~1 and a model
    that ignored the label 1/9 ± 0.01 at n = 900). The same samples judged against the next
    class score ~0 (the check can fail), and the null label, trained by the dropout, spreads
    its samples over every component as the unconditional mixture does (100 ± 9 each)."""
    config = _conditional_gmm2d(400)
    config.data.n = 4000
    config.model.network.hidden = 64
    config.training.warmup = 50
    config.training.ckpt_every = 400
    train(config, tmp_path, progress=False, log=lambda msg: None)
    model = load_trained(config, tmp_path)
    gmm = ring_mixture()
    labels = torch.arange(9).repeat_interleave(100)
    with torch.no_grad():
        x = sd.sample(model, (900, 2), "ddim", 50, generator=torch.Generator().manual_seed(0), cond=labels).x
        null = sd.sample(model, (900, 2), "ddim", 50, generator=torch.Generator().manual_seed(1),
                         cond=torch.full((900,), NULL_LABEL)).x
    hit = (_posterior_class(gmm, x) == labels).double()
    assert hit.mean() > 0.9 and hit.view(9, 100).mean(1).min() > 0.75
    assert (_posterior_class(gmm, x) == (labels + 1) % 9).double().mean() < 0.1
    counts = _posterior_class(gmm, null).bincount(minlength=9)
    assert counts.min() > 40 and counts.max() < 200


def test_resume_with_labels_and_label_dropout_is_bit_exact(tmp_path):
    """Labels and their dropout come from the training generator, which the checkpoint saves:
    20 + 20 steps equal 40 bit for bit. A different dropout rate changes the result (the labels
    and the dropout reach the loss)."""
    straight = train(_conditional_gmm2d(40, 0.3), tmp_path / "straight", progress=False, log=lambda m: None)
    train(_conditional_gmm2d(20, 0.3), tmp_path / "split", progress=False, log=lambda m: None)
    resumed = train(_conditional_gmm2d(40, 0.3), tmp_path / "split", progress=False, log=lambda m: None)
    other = train(_conditional_gmm2d(40, 0.6), tmp_path / "other", progress=False, log=lambda m: None)
    a, b, c = (r.model.net.state_dict() for r in (straight, resumed, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(straight.ema.state_dict()["shadow"].values(),
                                                resumed.ema.state_dict()["shadow"].values()))
    assert not torch.equal(a["classes.table.weight"], c["classes.table.weight"])


def test_drop_labels_rate():
    """Each label becomes NULL_LABEL with probability p: the dropped fraction of 20000 labels
    lies within 4 binomial standard deviations (0.01 at p = 0.15); kept labels are unchanged."""
    from scoresde.train import drop_labels

    labels = torch.arange(20000) % 7
    dropped = drop_labels(labels, 0.15, torch.Generator().manual_seed(0))
    null = dropped == NULL_LABEL
    assert abs(null.double().mean().item() - 0.15) < 4 * (0.15 * 0.85 / 20000) ** 0.5
    assert torch.equal(dropped[~null], labels[~null])
    assert torch.equal(dropped, drop_labels(labels, 0.15, torch.Generator().manual_seed(0)))
    assert torch.equal(drop_labels(labels, 0.0, torch.Generator()), labels)
    assert (drop_labels(labels, 1.0, torch.Generator()) == NULL_LABEL).all()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"probability in \[0, 1\]"):
            drop_labels(labels, bad, torch.Generator())


def test_conditional_and_variance_configs_are_checked(tmp_path):
    quiet = {"progress": False, "log": lambda msg: None}
    config = _config("tiny_gmm2d")
    config.training.label_dropout = 0.1
    with pytest.raises(ValueError, match=r"label_dropout=0.1 needs a class-conditional model"):
        train(config, tmp_path / "a", **quiet)
    config = _conditional_gmm2d(5)
    config.model.num_classes = 5
    with pytest.raises(ValueError, match=r"labels 0\.\.8 but model.num_classes=5; set it to at least 9"):
        train(config, tmp_path / "b", **quiet)
    config = _conditional_gmm2d(5)
    config.data.name = "swiss_roll"
    with pytest.raises(ValueError, match="'swiss_roll' has no class labels"):
        train(config, tmp_path / "c", **quiet)
    config = _config("tiny_gmm2d")
    config.model.network.num_classes = 3
    with pytest.raises(ValueError, match=r"set model.num_classes in the model group, not in model.network"):
        build_model(config)
    config = _config("tiny_gmm2d")
    config.model.learned_variance = True
    with pytest.raises(ValueError, match=r"learned_variance=True needs training.loss='hybrid'"):
        train(config, tmp_path / "d", **quiet)
    config = _config("tiny_gmm2d")
    config.training.loss = "hybrid"
    with pytest.raises(ValueError, match=r"got model.learned_variance=False, training.loss='hybrid'"):
        train(config, tmp_path / "e", **quiet)


def test_hybrid_training_trains_the_variance(tmp_path):
    """With the hybrid loss the variance head (zero at the start: Σ = β̃) moves; the loss gets
    the config's vlb_weight and, for image data, the discretized decoder on the data's grid."""
    from scoresde.data import DataSpec
    from scoresde.train import _loss_options

    config = _config("tiny_gmm2d")
    config.model.learned_variance = True
    config.training.loss = "hybrid"
    config.training.vlb_weight = 0.01
    result = train(config, tmp_path, progress=False, log=lambda msg: None)
    x = load_data(config, "train")[0][:64]
    with torch.no_grad():
        v = result.model.predict(x, 0.5).var_interp
    assert v.abs().mean() > 1e-3
    assert _loss_options(config, DataSpec("gmm2d", (2,), None, (-float("inf"), float("inf")))) == {
        "reduce_mean": True, "vlb_weight": 0.01}
    assert _loss_options(config, DataSpec("digits", (1, 8, 8), 17, (-1.0, 1.0))) == {
        "reduce_mean": True, "vlb_weight": 0.01, "decoder": "discretized", "data_range": (-1.0, 1.0),
        "levels": 17}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("name, changes", [
    ("digits_vp_cond", {"model.num_classes": 10, "training.label_dropout": 0.1, "training.steps": 6000}),
    ("digits_vp_lv", {"model.learned_variance": True, "training.loss": "hybrid"}),
])
def test_shipped_configs_are_digits_vp_but_for_their_point(name, changes):
    """The class-conditional and learned-variance recipes differ from digits_vp only where they mean
    to (the learned-variance one trains exactly as long, with the same seeds, lr and batch)."""
    base, config = _flat(_config("digits_vp").to_dict()), _flat(_config(name).to_dict())
    assert base.keys() == config.keys()
    assert {k: v for k, v in config.items() if base[k] != v} == changes
    assert config["training.vlb_weight"] == 1e-3


def test_checkpoints_from_before_the_new_keys_still_load(tmp_path):
    """digits_vp.pt stores no model.num_classes / model.learned_variance: a missing key is its
    default, both through config_from_checkpoint and against configs/digits_vp.py; a conditional
    checkpoint is refused for an unconditional config, naming the key."""
    from scoresde.assets import shipped_model
    from scoresde.experiment import identity

    path = shipped_model("digits_vp")
    stored = checkpoint.checkpoint_config(path)
    assert "num_classes" not in stored["model"] and "learned_variance" not in stored["model"]
    rebuilt = config_from_checkpoint(path)
    assert rebuilt.model.num_classes == 0 and rebuilt.model.learned_variance is False
    config = _config("digits_vp")
    assert identity(config) == identity(rebuilt) and "num_classes" not in identity(config)["model"]
    checkpoint.load_checkpoint(path, config=identity(config))  # compares equal to the stored groups
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a, b = load_trained(None, path), load_trained(config, path)
    torch.testing.assert_close(a.eps(x, 0.3), b.eps(x, 0.3), rtol=0, atol=0)

    cond = _conditional_gmm2d(5)
    train(cond, tmp_path, progress=False, log=lambda msg: None)
    assert config_from_checkpoint(checkpoint.latest_checkpoint(tmp_path)).model.num_classes == 9
    with pytest.raises(ValueError, match=r"model\.num_classes: checkpoint 9, given <missing>"):
        load_trained(_config("tiny_gmm2d"), tmp_path)


def test_shipped_conditional_model_draws_the_class_asked_for():
    """50-step DDIM samples of digits_vp_cond, 20 per digit: the shipped digits classifier (96 %
    accurate on real test digits) labels them with the class asked for — measured 98.6 % on 1000
    samples (models/README.md); a model that ignored the label would score 10 %. The bar 0.85
    sits ~5 binomial sd (n = 200) below the measurement; against the next class the samples
    score near 0 (the check can fail)."""
    from suite.classifier import load_classifier

    from scoresde.assets import shipped_model

    model, classifier = load_trained(None, shipped_model("digits_vp_cond")), load_classifier()
    labels = torch.arange(10).repeat_interleave(20)
    with torch.no_grad():
        x = sd.sample(model, (200, 1, 8, 8), "ddim", 50, generator=torch.Generator().manual_seed(0),
                      cond=labels).x
        predicted = classifier(x.clamp(-1, 1)).argmax(1)
    assert (predicted == labels).double().mean() > 0.85
    assert (predicted == (labels + 1) % 10).double().mean() < 0.1
