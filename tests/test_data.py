"""Data sets: generated sets, digits, CIFAR-10 (fake batches, restricted unpickling), npz, folder."""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from scoresde.data import (
    DATASETS,
    LABELLED,
    DataSpec,
    from_pixels,
    load_dataset,
    load_labelled_dataset,
    ring_mixture,
    to_pixels,
)

TOY = ("moons", "swiss_roll", "checkerboard")


# --- generated sets ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ("gmm2d", *TOY))
def test_generated_sets_size_seed_and_spec(name):
    x, spec = load_dataset(name, n=500, seed=3)
    assert x.shape == (500, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert spec == DataSpec(name, (2,), None, (-float("inf"), float("inf")))
    assert not spec.is_image and spec.num_dims == 2
    assert torch.equal(x, load_dataset(name, n=500, seed=3)[0])
    assert not torch.equal(x, load_dataset(name, n=500, seed=4)[0])
    assert not torch.equal(x, load_dataset(name, "test", n=500, seed=3)[0])
    assert len(load_dataset(name, seed=3)[0]) == 10_000


@pytest.mark.parametrize("name", TOY)
def test_toy_sets_have_roughly_unit_scale(name):
    x, _ = load_dataset(name, n=4000, seed=0)
    assert x.mean(0).abs().max() < 0.25
    assert 0.5 < x.std() < 1.5
    assert x.abs().max() < 5


def test_gmm2d_is_the_ring_mixture():
    x, _ = load_dataset("gmm2d", n=300, seed=7)
    assert torch.equal(x, ring_mixture().sample(300, generator=torch.Generator().manual_seed(7)))
    gmm = ring_mixture()
    assert gmm.num_components == 9 and gmm.dim == 2
    assert torch.allclose(gmm.means.norm(dim=1)[:8], torch.full((8,), 4.0, dtype=torch.float64))


def test_unknown_name_split_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown data set 'mnist'") as e:
        load_dataset("mnist")
    for name in DATASETS:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="split"):
        load_dataset("moons", "valid")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        load_dataset("moons", n=0)
    with pytest.raises(ValueError, match="data_range"):
        load_dataset("digits", data_range=(1.0, -1.0))


def test_gmm2d_labels_are_the_components():
    """Each point is labelled with the ring component it was drawn from. Components are ≥ 3.06
    apart (≥ 10 std): a point lies within 5 std of its own mean (2-D: P(r > 5σ) = e^(-12.5)
    ≈ 4e-6 per point) and the exact posterior p(c | x) of the ring picks its label; a shifted
    labelling fails both checks."""
    x, labels, spec = load_labelled_dataset("gmm2d", n=5000, seed=3)
    gmm = ring_mixture()
    assert torch.equal(x, load_dataset("gmm2d", n=5000, seed=3)[0]) and spec.name == "gmm2d"
    assert labels.dtype == torch.int64 and labels.shape == (5000,)
    assert torch.equal(gmm.labels, torch.arange(9)) and set(labels.tolist()) == set(range(9))
    log_post = torch.stack([gmm.log_prob(x, torch.full((5000,), k)) for k in range(9)], 1)

    def consistent(lab: torch.Tensor) -> tuple[bool, float]:
        near = ((x.double() - gmm.means[lab]).norm(dim=1) < 5 * 0.3).all().item()
        return near, (log_post.argmax(1) == lab).double().mean().item()

    assert consistent(labels) == (True, 1.0)
    near, agree = consistent((labels + 1) % 9)
    assert not near and agree < 0.01
    # The test split has labels too, from its own stream.
    _, test_labels, _ = load_labelled_dataset("gmm2d", "test", n=5000, seed=3)
    assert not torch.equal(test_labels, labels)


def test_moons_labels_name_the_moon():
    """Label 0: the upper half circle (radius 1 about (0, 0)); 1: the lower one (about (1, 0.5)),
    in the set's unscaled coordinates, up to the noise 0.1 (radial deviations < 0.5 = 5σ)."""
    x, labels, _ = load_labelled_dataset("moons", n=4000, seed=1)
    d = x.double() * 0.72 + torch.tensor([0.5, 0.25], dtype=torch.float64)
    off_upper = ((d - torch.tensor([0.0, 0.0], dtype=torch.float64)).norm(dim=1) - 1).abs()
    off_lower = ((d - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs()
    assert (off_upper[labels == 0] < 0.5).all() and (off_lower[labels == 1] < 0.5).all()
    assert d[labels == 0, 1].mean() > 0.4 and d[labels == 1, 1].mean() < 0.1
    assert 1800 < (labels == 0).sum() < 2200  # each moon with probability 1/2 (sd 32)
    assert torch.equal(x, load_dataset("moons", n=4000, seed=1)[0])


@pytest.mark.parametrize("name", ["swiss_roll", "checkerboard"])
def test_sets_without_labels_refuse_to_give_them(name):
    assert name not in LABELLED
    with pytest.raises(ValueError, match=rf"'{name}' has no class labels; sets with labels: gmm2d, moons"):
        load_labelled_dataset(name, n=10)


# --- digits -----------------------------------------------------------------------------------


def test_digits_splits_levels_and_scaling():
    pytest.importorskip("sklearn")
    train, spec = load_dataset("digits", "train", data_range=(0.0, 1.0))
    test, _ = load_dataset("digits", "test", data_range=(0.0, 1.0))
    assert train.shape == (1500, 1, 8, 8) and test.shape == (297, 1, 8, 8)
    assert spec == DataSpec("digits", (1, 8, 8), 17, (0.0, 1.0)) and spec.num_dims == 64
    grid01 = (torch.arange(17, dtype=torch.float64) / 16).float()
    assert set(torch.unique(train).tolist()) == set(grid01.tolist())  # all 17 levels, exactly
    # Deterministic and disjoint: the train and test images are different images.
    assert torch.equal(train, load_dataset("digits", "train", data_range=(0.0, 1.0), seed=5)[0])
    flat_train = {tuple(r) for r in train.flatten(1).tolist()}
    assert not any(tuple(r) in flat_train for r in test.flatten(1).tolist())

    sym, spec_sym = load_dataset("digits", "test", n=10)  # default data_range (-1, 1)
    assert sym.shape == (10, 1, 8, 8) and spec_sym.data_range == (-1.0, 1.0)
    pix = to_pixels(sym, spec_sym)
    assert pix.dtype == torch.uint8 and int(pix.max()) <= 16
    assert torch.equal(from_pixels(pix, spec_sym), sym)
    assert torch.equal(to_pixels(test, spec), to_pixels(load_dataset("digits", "test")[0], spec_sym))
    with pytest.raises(ValueError, match="only 297"):
        load_dataset("digits", "test", n=298)


def test_digits_labels_are_sklearns_targets_on_the_same_split():
    sklearn = pytest.importorskip("sklearn.datasets")
    target = torch.from_numpy(sklearn.load_digits().target).long()
    for split, expected in (("train", target[:1500]), ("test", target[1500:])):
        x, labels, spec = load_labelled_dataset("digits", split)
        assert torch.equal(labels, expected) and torch.equal(x, load_dataset("digits", split)[0])
        assert spec.shape == (1, 8, 8)
    x, labels, _ = load_labelled_dataset("digits", "test", n=10)
    assert len(x) == len(labels) == 10 and torch.equal(labels, target[1500:1510])
    # The labels name the images: a 1 fills the centre columns, which a 0 leaves empty.
    x, labels, _ = load_labelled_dataset("digits")
    centre = x[:, 0, 2:6, 3:5].mean((1, 2))
    assert centre[labels == 1].mean() > centre[labels == 0].mean() + 0.5


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
@pytest.mark.parametrize("levels", [17, 256])
def test_pixel_scaling_is_exact_on_the_grid(levels, data_range):
    spec = DataSpec("img", (1,), levels, data_range)
    p = torch.arange(levels)
    x = from_pixels(p, spec)
    lo, hi = data_range
    expected = (lo + (hi - lo) * torch.arange(levels, dtype=torch.float64) / (levels - 1)).float()
    assert torch.equal(x, expected)
    assert x[0] == lo and x[-1] == hi
    assert torch.equal(to_pixels(x, spec).long(), p)
    # Overshooting samples are clamped by default, refused with clamp=False.
    assert to_pixels(torch.tensor([lo - 0.3, hi + 0.3]), spec).tolist() == [0, levels - 1]
    with pytest.raises(ValueError, match="data_range"):
        to_pixels(torch.tensor([hi + 0.3]), spec, clamp=False)
    with pytest.raises(ValueError, match=r"\[0, "):
        from_pixels(torch.tensor([levels]), spec)
    with pytest.raises(ValueError, match="continuous"):
        to_pixels(x, DataSpec("moons", (2,), None, (-float("inf"), float("inf"))))


# --- CIFAR-10 (fake batches in the real format) -----------------------------------------------


def _fake_batch(rows: int, offset: int) -> dict:
    data = ((np.arange(rows * 3072, dtype=np.int64) + offset) % 251).astype(np.uint8).reshape(rows, 3072)
    return {b"batch_label": b"fake", b"labels": list(range(rows)), b"data": data,
            b"filenames": [b"img%d.png" % i for i in range(rows)]}


def _write_cifar(folder, rows=3, protocol=2):
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        batches[name] = _fake_batch(rows, 1000 * i)
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=protocol)
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_cifar10_reads_fake_batches_in_channel_order(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar(folder, protocol=protocol)
    x, spec = load_dataset("cifar10", "train", path=str(folder), data_range=(0.0, 1.0))
    assert x.shape == (15, 3, 32, 32) and spec == DataSpec("cifar10", (3, 32, 32), 256, (0.0, 1.0))
    pix = to_pixels(x, spec)
    raw = batches["data_batch_1"][b"data"]
    # Row-major 3072 layout: the first 1024 values are the red plane, row by row.
    assert torch.equal(pix[0, 0], torch.from_numpy(raw[0, :1024].reshape(32, 32)))
    assert torch.equal(pix[0, 1], torch.from_numpy(raw[0, 1024:2048].reshape(32, 32)))
    assert pix[0, 0, 0, 1] == raw[0, 1] and pix[0, 0, 1, 0] == raw[0, 32] and pix[0, 2, 0, 0] == raw[0, 2048]
    assert torch.equal(pix[3], torch.from_numpy(batches["data_batch_2"][b"data"][0].reshape(3, 32, 32)))
    # The parent folder works too; test split = test_batch; n takes the first n.
    test, test_spec = load_dataset("cifar10", "test", path=tmp_path)
    expected = torch.from_numpy(batches["test_batch"][b"data"].reshape(3, 3, 32, 32))
    assert test_spec.data_range == (-1.0, 1.0) and torch.equal(to_pixels(test, test_spec), expected)
    assert len(load_dataset("cifar10", path=folder, n=4)[0]) == 4


def test_cifar10_labels_from_the_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar(folder)
    for i, name in enumerate(batches):  # distinct labels per batch: 3·i + (0, 1, 2) mod 10
        batches[name][b"labels"] = [(3 * i + k) % 10 for k in range(3)]
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    x, labels, _ = load_labelled_dataset("cifar10", path=folder)
    assert torch.equal(x, load_dataset("cifar10", path=folder)[0])
    assert labels.tolist() == [(3 * i + k) % 10 for i in range(5) for k in range(3)]
    assert load_labelled_dataset("cifar10", "test", path=folder)[1].tolist() == [5, 6, 7]
    assert load_labelled_dataset("cifar10", path=folder, n=4)[1].tolist() == [0, 1, 2, 3]
    batches["test_batch"][b"labels"] = [0, 10, 1]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batches["test_batch"], f)
    with pytest.raises(ValueError, match=r"b'labels' to be 3 integers in 0\.\.9"):
        load_labelled_dataset("cifar10", "test", path=folder)
    load_dataset("cifar10", "test", path=folder)  # the images load without reading the labels
    del batches["test_batch"][b"labels"]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batches["test_batch"], f)
    load_dataset("cifar10", "test", path=folder)  # images without labels still load
    with pytest.raises(ValueError, match="'cifar10' has no class labels"):
        load_labelled_dataset("cifar10", "test", path=folder)


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote the real CIFAR-10 batches: str as BINSTRING, numpy.core globals."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)


def test_cifar10_reads_python2_style_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar(folder)
    raw = batches["test_batch"][b"data"]
    py2 = {"batch_label": "testing batch 1 of 1", "labels": [3, 8, 8], "data": raw,
           "filenames": ["a.png", "b.png", "c.png"]}
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(py2)
    assert b"numpy.core.multiarray\n_reconstruct" in buf.getvalue()
    (folder / "test_batch").write_bytes(buf.getvalue())
    x, spec = load_dataset("cifar10", "test", path=folder)
    assert torch.equal(to_pixels(x, spec), torch.from_numpy(raw.reshape(3, 3, 32, 32)))


class _Exploit:
    """Unpickling this runs ``os.system`` — if the unpickler lets it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_cifar10_refuses_pickled_code_without_running_it(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    side_effect = tmp_path / "pwned"
    evil = _fake_batch(3, 0)
    evil[b"labels"] = _Exploit(side_effect)
    for protocol in (2, pickle.DEFAULT_PROTOCOL):
        with open(folder / "data_batch_1", "wb") as f:
            pickle.dump(evil, f, protocol=protocol)
        with pytest.raises(ValueError, match=r"refused.*data_batch_1.*system"):
            load_dataset("cifar10", path=folder)
        assert not side_effect.exists()


def test_cifar10_malformed_and_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*test_batch"):
        load_dataset("cifar10", path=tmp_path / "nowhere")
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    os.remove(folder / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="lacks data_batch_3"):
        load_dataset("cifar10", path=folder)
    load_dataset("cifar10", "test", path=folder)  # the test split does not need it
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="test_batch is corrupt or truncated"):
        load_dataset("cifar10", "test", path=folder)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8)}, f)
    with pytest.raises(ValueError, match=r"shape \(n, 3072\)"):
        load_dataset("cifar10", "test", path=folder)
    with pytest.raises(ValueError, match="needs path="):
        load_dataset("cifar10")


# --- npz and image folders --------------------------------------------------------------------


def test_npz_images_and_continuous(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", images=nhwc, images_test=nhwc[:2])
    x, spec = load_dataset("npz", path=tmp_path / "imgs.npz", data_range=(0.0, 1.0))
    assert x.shape == (5, 3, 6, 7) and spec.levels == 256 and spec.shape == (3, 6, 7)
    assert torch.equal(to_pixels(x, spec), torch.from_numpy(nhwc.transpose(0, 3, 1, 2)))
    assert load_dataset("npz", "test", path=tmp_path / "imgs.npz")[0].shape == (2, 3, 6, 7)

    nchw = nhwc.transpose(0, 3, 1, 2).copy()
    np.savez(tmp_path / "chw.npz", x=nchw)
    x2, _ = load_dataset("npz", path=tmp_path / "chw.npz", data_range=(0.0, 1.0))
    assert torch.equal(x2, x)

    cont = rng.normal(size=(7, 3))
    np.savez(tmp_path / "cont.npz", x=cont)
    y, spec_c = load_dataset("npz", path=tmp_path / "cont.npz", n=4)
    assert spec_c.levels is None and torch.equal(y, torch.from_numpy(cont[:4]).float())

    with pytest.raises(ValueError, match="no array named 'x_test'"):
        load_dataset("npz", "test", path=tmp_path / "cont.npz")
    np.savez(tmp_path / "other.npz", y=cont)
    with pytest.raises(ValueError, match=r"'x' or 'images'.*\['y'\]"):
        load_dataset("npz", path=tmp_path / "other.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="pickled"):
        load_dataset("npz", path=tmp_path / "obj.npz")
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        load_dataset("npz", path=tmp_path / "missing.npz")


def test_npz_labels(tmp_path):
    rng = np.random.default_rng(2)
    images, labels = rng.integers(0, 256, size=(6, 4, 4), dtype=np.uint8), np.array([3, 1, 4, 1, 5, 9])
    np.savez(tmp_path / "l.npz", images=images, labels=labels, images_test=images[:2], y_test=labels[:2] + 1)
    x, y, _ = load_labelled_dataset("npz", path=tmp_path / "l.npz", n=5)
    assert y.dtype == torch.int64 and y.tolist() == [3, 1, 4, 1, 5] and x.shape == (5, 1, 4, 4)
    assert load_labelled_dataset("npz", "test", path=tmp_path / "l.npz")[1].tolist() == [4, 2]
    cont = rng.normal(size=(3, 2))
    np.savez(tmp_path / "c.npz", x=cont, y=np.array([0, 2, 1], dtype=np.int32))
    assert load_labelled_dataset("npz", path=tmp_path / "c.npz")[1].tolist() == [0, 2, 1]
    np.savez(tmp_path / "bad.npz", x=cont, labels=np.array([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"'labels'\]: expected 3 integer class labels >= 0"):
        load_labelled_dataset("npz", path=tmp_path / "bad.npz")
    assert load_dataset("npz", path=tmp_path / "bad.npz")[0].shape == (3, 2)  # labels not read
    np.savez(tmp_path / "none.npz", x=cont)
    with pytest.raises(ValueError, match=r"none\.npz has no label array \('labels' or 'y'"):
        load_labelled_dataset("npz", path=tmp_path / "none.npz")


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8)
    for i, a in enumerate(rgb):
        Image.fromarray(a).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    x, spec = load_dataset("folder", path=tmp_path, data_range=(0.0, 1.0))
    assert x.shape == (3, 3, 5, 7) and spec.shape == (3, 5, 7) and spec.levels == 256
    assert torch.equal(to_pixels(x, spec), torch.from_numpy(rgb.transpose(0, 3, 1, 2)))

    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(2):
        Image.fromarray(rgb[i, :, :, 0]).save(grey / f"g{i}.png")
    g, gspec = load_dataset("folder", path=grey)
    assert g.shape == (2, 1, 5, 7) and gspec.shape == (1, 5, 7)
    with pytest.raises(ValueError, match="no 'test' subfolder"):
        load_dataset("folder", "test", path=grey)

    Image.fromarray(rgb[0, :4]).save(grey / "g9.png")
    with pytest.raises(ValueError, match=r"one size.*g9.png"):
        load_dataset("folder", path=grey)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset("folder", path=empty)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset("folder", path=tmp_path / "absent")
    with pytest.raises(ValueError, match="'folder' has no class labels"):
        load_labelled_dataset("folder", path=tmp_path)
