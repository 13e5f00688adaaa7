"""Data sets: generated sets, digits, CIFAR-10 (fake batches, restricted unpickling), npz, folder."""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from scoresde.data import DATASETS, DataSpec, from_pixels, load_dataset, ring_mixture, to_pixels

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
