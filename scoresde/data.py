"""Data sets: analytic and toy 2-D sets, 8×8 digits, CIFAR-10, an .npz file or a folder of images.

``load_dataset(name, split, ...)`` returns ``(x, spec)``: a float32 tensor of shape
``(N, *spec.shape)`` and a :class:`DataSpec`. ``load_labelled_dataset`` (same arguments) returns
``(x, labels, spec)`` with int64 class labels ``(N,)`` for the sets that have them (column
"labels" below; a set without labels is an error), for class-conditional training; ``x`` is the
same tensor either way. Nothing is downloaded, ever: generated sets are
drawn from the seed, digits ship inside scikit-learn, and files are read from the path given.

======================  =====================================================================
name                    data; labels
======================  =====================================================================
``gmm2d``               the analytic ring mixture :func:`ring_mixture` (8 modes on a circle of
                        radius 4, std 0.3, plus one at the centre); its exact density and
                        scores are ``ring_mixture().log_prob`` / ``.score_model``. Labels: the
                        component each point was drawn from (0..7 round the ring, 8 the centre),
                        which are ``ring_mixture().labels``, so ``ring_mixture().conditional(c)``
                        is the exact ``p(x | c)``.
``moons``               two interleaved half circles (noise 0.1), centred and scaled. Labels:
                        0 for the upper moon, 1 for the lower.
``swiss_roll``          a 2-D swiss roll (noise 0.5), centred and scaled. No labels.
``checkerboard``        uniform on the 8 dark squares of a 4×4 board over ``[-2, 2]²``. No labels.
``digits``              scikit-learn's ``load_digits``: 1797 8×8 images with 17 grey levels
                        (0..16); the last 297 are the test split, the first 1500 the train
                        split. Needs ``pip install scoresde[digits]``. Labels: the digit 0..9
                        (``load_digits().target``, same split).
``cifar10``             ``path`` = the ``cifar-10-batches-py`` folder (``data_batch_1`` ..
                        ``data_batch_5`` = train, ``test_batch`` = test), 32×32 RGB, 256 levels.
                        Labels: the batches' ``labels``, 0..9.
``npz``                 ``path`` = an ``.npz`` file with an array ``x`` or ``images`` (for
                        split "test": ``x_test`` or ``images_test``). Integer arrays are 8-bit
                        images ``(N, H, W, C)``, ``(N, C, H, W)`` or ``(N, H, W)``; float
                        arrays are continuous data ``(N, ...)`` used as they are. Labels: an
                        integer array ``labels`` or ``y`` (``labels_test`` or ``y_test``) of
                        ``N`` values ``>= 0``, if the file has one.
``folder``              ``path`` = a folder of PNG/JPEG images of one size (or one with
                        ``train``/``test`` subfolders of them); greyscale if every image is.
                        Read as 8-bit pixels (16-bit PNGs rescaled); images over PIL's
                        decompression-bomb limit are refused. No labels.
======================  =====================================================================

Generated sets (``gmm2d``, ``moons``, ``swiss_roll``, ``checkerboard``) are continuous and
unscaled by ``data_range``; ``n`` defaults to 10000 and ``seed`` (in ``[0, 2**31)``) fixes
them, with split "test" drawn from a stream that no training seed uses.

Image sets are returned scaled to the range the model sees: a pixel ``p ∈ {0, ..., L−1}``
becomes ``lo + (hi − lo)·p/(L − 1)`` for ``data_range = (lo, hi)``; :func:`to_pixels` and
:func:`from_pixels` convert back and forth (exact inverses on that grid). For image sets ``n``
takes the first ``n`` images of the split. An ``.npz`` array whose layout reads both ways
(``(N, 3, 4, 3)``, say) is taken as ``(N, H, W, C)``.

CIFAR-10's batches are Python pickles. They are read by an unpickler that only resolves the
few numpy globals that rebuild arrays and refuses every other global, so a tampered batch
file cannot run code.
"""

from __future__ import annotations

import math
import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scoresde.analytic import GaussianMixture
from scoresde.errors import DependencyError, InputError

__all__ = [
    "DATASETS",
    "LABELLED",
    "DataSpec",
    "from_pixels",
    "load_dataset",
    "load_labelled_dataset",
    "ring_mixture",
    "to_pixels",
]

SPLITS = ("train", "test")
DEFAULT_TOY_N = 10_000
DIGITS_TEST = 297  # the last 297 of sklearn's 1797 digits form the test split
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILES = ("test_batch",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# torch's CPU generator keeps only the low 32 bits of a seed, so seeds live in [0, 2**31) and
# split "test" of a generated set uses seed + 2**31: a stream no training seed can hit.
_MAX_SEED = 2**31
_TEST_STREAM = 2**31


@dataclass(frozen=True)
class DataSpec:
    """What a data set's tensors mean.

    Attributes:
        name: the data set's name as passed to :func:`load_dataset`.
        shape: the shape of one sample, e.g. ``(2,)`` or ``(3, 32, 32)``.
        levels: number of discrete values per pixel (17 for digits, 256 for 8-bit images), or
            ``None`` for continuous data.
        data_range: ``(lo, hi)``, the range the model sees: pixel 0 maps to ``lo`` and pixel
            ``levels − 1`` to ``hi``. Continuous data are unbounded: ``(-inf, inf)``.
    """

    name: str
    shape: tuple[int, ...]
    levels: int | None
    data_range: tuple[float, float]

    @property
    def is_image(self) -> bool:
        """True for quantized (pixel) data, which :func:`to_pixels` can convert back."""
        return self.levels is not None

    @property
    def num_dims(self) -> int:
        """Elements per sample (the D of bits/dim)."""
        return math.prod(self.shape)


CONTINUOUS_RANGE = (-math.inf, math.inf)


# --- pixel scaling ----------------------------------------------------------------------------


def _check_range(data_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise InputError(f"data_range must be two numbers (lo, hi), got {data_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"data_range must be finite with lo < hi, got {(lo, hi)}")
    return lo, hi


def _require_image(spec: DataSpec, what: str) -> tuple[int, float, float]:
    if spec.levels is None:
        raise InputError(f"{what} needs quantized image data; data set {spec.name!r} is continuous "
                         "(spec.levels is None)")
    lo, hi = _check_range(spec.data_range)
    return spec.levels, lo, hi


def from_pixels(p: Tensor | np.ndarray, spec: DataSpec) -> Tensor:
    """Pixels ``p ∈ {0, ..., levels−1}`` → float32 ``lo + (hi − lo)·p/(levels − 1)``.

    Computed in float64 and rounded once to float32, so the grid values are the correctly
    rounded ones (pixel 0 is exactly ``lo``, pixel ``levels − 1`` exactly ``hi``).

    Raises:
        ValueError: if ``spec`` is continuous, ``p`` is not integer-valued or lies outside
            ``[0, levels − 1]``.
    """
    levels, lo, hi = _require_image(spec, "from_pixels")
    p = torch.as_tensor(p)
    if p.is_floating_point():
        if not torch.equal(p, p.round()):
            raise InputError(f"from_pixels expects integer pixel values, got non-integer {p.dtype} values")
    p64 = p.to(torch.float64)
    if p64.numel() and (p64.min() < 0 or p64.max() > levels - 1):
        raise InputError(f"pixels must lie in [0, {levels - 1}] for {spec.name!r}, "
                         f"got values in [{p64.min().item():g}, {p64.max().item():g}]")
    return (lo + (hi - lo) * p64 / (levels - 1)).to(torch.float32)


def to_pixels(x: Tensor, spec: DataSpec, *, clamp: bool = True) -> Tensor:
    """Model-range values → integer pixels ``round((x − lo)/(hi − lo)·(levels − 1))``.

    The exact inverse of :func:`from_pixels` on its grid. Values outside ``data_range`` (a
    sampler's output usually overshoots a little) are clamped to it when ``clamp`` is true
    (the default, as when writing samples as images) and raise ``ValueError`` otherwise.

    Returns:
        ``torch.uint8`` pixels when ``levels <= 256``, else ``torch.int64``; ``x``'s shape.
    """
    levels, lo, hi = _require_image(spec, "to_pixels")
    x64 = torch.as_tensor(x).detach().to(torch.float64)
    if not torch.isfinite(x64).all():
        raise InputError("to_pixels expects finite values")
    if not clamp and x64.numel() and (x64.min() < lo or x64.max() > hi):
        raise InputError(f"values must lie in data_range {(lo, hi)} (or pass clamp=True), "
                         f"got [{x64.min().item():g}, {x64.max().item():g}]")
    p = torch.round((x64 - lo) / (hi - lo) * (levels - 1)).clamp(0, levels - 1)
    return p.to(torch.uint8 if levels <= 256 else torch.int64)


# --- generated sets ---------------------------------------------------------------------------


def ring_mixture(modes: int = 8, radius: float = 4.0, std: float = 0.3,
                 center: bool = True) -> GaussianMixture:
    """A 2-D Gaussian mixture: ``modes`` equal components on a circle (plus one at the origin),
    component ``k`` labelled ``k`` (the centre last)."""
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    if center:
        means = torch.cat([means, torch.zeros(1, 2, dtype=torch.float64)])
    return GaussianMixture(means, torch.full((len(means),), std, dtype=torch.float64),
                           labels=torch.arange(len(means)))


def _gmm2d(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draws of :func:`ring_mixture` (exactly ``ring_mixture().sample(n, generator=g)``) and the
    component of each."""
    gmm = ring_mixture()
    x, k = gmm.sample_components(n, generator=g)
    return x, gmm.labels[k]


def _moons(n: int, g: torch.Generator, noise: float = 0.1) -> tuple[Tensor, Tensor]:
    """Two interleaved half circles (scikit-learn's ``make_moons`` with random angles);
    label 0 on the upper moon, 1 on the lower."""
    theta = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    upper = torch.rand(n, generator=g, dtype=torch.float64) < 0.5
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    d = torch.stack([x, y], 1) + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    # Centre (mean (0.5, 0.25)) and scale to unit overall std (0.72 measured on 4e5 draws).
    return ((d - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 0.72).float(), (~upper).long()


def _swiss_roll(n: int, g: torch.Generator, noise: float = 0.5) -> tuple[Tensor, None]:
    """The 2-D swiss roll ``t·(cos t, sin t)``, ``t ∈ [1.5π, 4.5π]`` (scikit-learn's curve)."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    d = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
    d = d + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    # Centre (mean (2.0, 0.22)) and scale to unit overall std (6.87 measured on 4e5 draws).
    return ((d - torch.tensor([2.0, 0.22], dtype=torch.float64)) / 6.87).float(), None


def _checkerboard(n: int, g: torch.Generator) -> tuple[Tensor, None]:
    """Uniform on the squares of a 4×4 checkerboard over ``[-2, 2]²`` (FFJORD's set, half size)."""
    x1 = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    x2 = (torch.rand(n, generator=g, dtype=torch.float64)
          - 2 * torch.randint(0, 2, (n,), generator=g).to(torch.float64))
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1).float(), None


# Every loader returns (x, labels or None, spec); image loaders read labels only when asked
# (``want_labels``), so that a file's label entry never stops its images from loading.
Loaded = tuple[Tensor, Tensor | None, DataSpec]
GENERATED: dict[str, Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]] = {
    "gmm2d": _gmm2d,
    "moons": _moons,
    "swiss_roll": _swiss_roll,
    "checkerboard": _checkerboard,
}


def _generated(name: str, split: str, n: int | None, seed: int) -> Loaded:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < _MAX_SEED:
        raise InputError(f"seed must be an integer in [0, 2**31), got {seed!r}")
    n = DEFAULT_TOY_N if n is None else n
    g = torch.Generator().manual_seed(seed + (_TEST_STREAM if split == "test" else 0))
    x, labels = GENERATED[name](n, g)
    return x, labels, DataSpec(name, (2,), None, CONTINUOUS_RANGE)


# --- image sets -------------------------------------------------------------------------------


def _take(pixels: np.ndarray | Tensor, n: int | None, what: str) -> np.ndarray | Tensor:
    if n is not None and n > len(pixels):
        raise InputError(f"n={n} requested but {what} has only {len(pixels)} samples")
    return pixels if n is None else pixels[:n]


def _scaled(name: str, pixels: np.ndarray, levels: int, data_range: tuple[float, float],
            labels: np.ndarray | None = None) -> Loaded:
    spec = DataSpec(name, tuple(int(s) for s in pixels.shape[1:]), levels, data_range)
    x = from_pixels(torch.from_numpy(np.ascontiguousarray(pixels)), spec)
    return x, None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64)), spec


def _digits(split: str, n: int | None, data_range: tuple[float, float]) -> Loaded:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DependencyError("the 'digits' data set needs scikit-learn: pip install scoresde[digits]") from e
    bunch = load_digits()
    images = bunch.images  # (1797, 8, 8) float64 in {0, ..., 16}, shipped with sklearn
    pixels = images.astype(np.uint8)[:, None]
    if not np.array_equal(pixels, images[:, None]):
        raise InputError("sklearn's load_digits returned non-integer pixels; expected 0..16")
    part = slice(None, -DIGITS_TEST) if split == "train" else slice(-DIGITS_TEST, None)
    what = f"digits split {split!r}"
    return _scaled("digits", _take(pixels[part], n, what), 17, data_range, _take(bunch.target[part], n, what))


class RefusedPickleError(pickle.UnpicklingError):
    """A pickle asked for a global (a function or class) that the restricted unpickler refuses."""


# CIFAR-10 batches pickle numpy arrays: allow exactly the globals that rebuild them.
_NUMPY_REBUILD = np.zeros(1).__reduce__()[0]  # numpy's multiarray._reconstruct, any numpy version
_NUMPY_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer (pickle protocol 5)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles from Python 3 use it for bytes: latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise RefusedPickleError(f"it calls _codecs.encode with encoding {encoding!r} "
                                 "(only latin1 is allowed)")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_REBUILD,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_REBUILD,
    ("numpy.core.numeric", "_frombuffer"): _NUMPY_FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _NUMPY_FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array-rebuilding globals and refuses all others."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickleError(f"it references the global {module}.{name}, which is not allowed "
                                     "(only numpy array globals are)") from None


def _read_cifar_batch(path: Path, want_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One CIFAR-10 python batch → uint8 ``(n, 3, 32, 32)`` and, if wanted, its labels ``(n,)``
    (``None`` if the batch has none), read without running pickled code."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except RefusedPickleError as e:
        raise InputError(f"refused to read CIFAR-10 batch {path}: {e}; a CIFAR-10 batch holds only "
                         "numpy arrays and lists, so this file is not one (tampered?)") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError) as e:
        raise InputError(f"CIFAR-10 batch {path} is corrupt or truncated: {type(e).__name__}: {e}") from e
    if not isinstance(batch, dict):
        raise InputError(f"CIFAR-10 batch {path}: expected a pickled dict with key b'data', "
                         f"got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise InputError(f"CIFAR-10 batch {path}: expected b'data' to be a uint8 array of shape (n, 3072), "
                         f"got {got}")
    # Each row is 1024 red, then 1024 green, then 1024 blue values, each a row-major 32×32 image.
    labels = batch.get(b"labels", batch.get("labels")) if want_labels else None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer) \
                or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
            raise InputError(f"CIFAR-10 batch {path}: expected b'labels' to be {len(data)} integers in "
                             f"0..9, got {labels.dtype} values of shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar10(path: str | None, split: str, n: int | None, data_range: tuple[float, float],
             want_labels: bool) -> Loaded:
    files = CIFAR_TRAIN_FILES if split == "train" else CIFAR_TEST_FILES
    expected = ", ".join(CIFAR_TRAIN_FILES + CIFAR_TEST_FILES)
    if path is None:
        raise InputError(f"data set 'cifar10' needs path= the 'cifar-10-batches-py' folder (with {expected})")
    folder = Path(path).expanduser()
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder {folder} not found; expected the 'cifar-10-batches-py' "
                                f"folder with {expected} (from the python version of CIFAR-10)")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 folder {folder} lacks {', '.join(missing)}; split {split!r} "
                                f"needs {', '.join(files)}")
    parts, have = [], 0
    for name in files:
        if n is not None and have >= n:
            break
        parts.append(_read_cifar_batch(folder / name, want_labels))
        have += len(parts[-1][0])
    what = f"CIFAR-10 split {split!r} in {folder}"
    pixels = _take(np.concatenate([p for p, _ in parts]), n, what)
    labels = None
    if not any(y is None for _, y in parts):
        labels = _take(np.concatenate([y for _, y in parts]), n, what)
    return _scaled("cifar10", pixels, 256, data_range, labels)


def _image_layout(a: np.ndarray, where: str) -> np.ndarray:
    """Integer image array → uint8 ``(N, C, H, W)``."""
    if a.min(initial=0) < 0 or a.max(initial=0) > 255:
        raise InputError(f"{where}: integer arrays are read as 8-bit images with values in 0..255, "
                         f"got values in [{a.min()}, {a.max()}]")
    a = a.astype(np.uint8)
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4:
        # (N, H, W, C) is numpy/PIL's layout and wins when both readings fit (images of 4 px or less).
        if a.shape[-1] in (1, 3, 4):
            return a.transpose(0, 3, 1, 2)
        if a.shape[1] in (1, 3, 4):
            return a
    raise InputError(f"{where}: expected images of shape (N, H, W, C), (N, C, H, W) or (N, H, W) with "
                     f"C in (1, 3, 4), got {a.shape}")


def _npz_labels(y: np.ndarray | None, count: int, where: str) -> np.ndarray | None:
    """An npz label array checked against its ``count`` samples: integers ``>= 0``, one each."""
    if y is not None and (y.shape != (count,) or not np.issubdtype(y.dtype, np.integer)
                          or y.min(initial=0) < 0):
        raise InputError(f"{where}: expected {count} integer class labels >= 0 (one per sample), "
                         f"got {y.dtype} values of shape {y.shape}")
    return y


def _npz(path: str | None, split: str, n: int | None, data_range: tuple[float, float],
         want_labels: bool) -> Loaded:
    if path is None:
        raise InputError("data set 'npz' needs path= an .npz file with an array named 'x' or 'images'")
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f".npz file {file} not found")
    keys = ("x", "images", "x_train", "images_train") if split == "train" else ("x_test", "images_test")
    label_keys = ("labels", "y", "labels_train", "y_train") if split == "train" else ("labels_test", "y_test")
    try:
        with np.load(file, allow_pickle=False) as archive:
            names = list(archive.files)
            key = next((k for k in keys if k in names), None)
            a = None if key is None else archive[key]
            label_key = next((k for k in label_keys if k in names), None) if want_labels else None
            y = None if label_key is None else archive[label_key]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read {file} as an .npz of plain numeric arrays (corrupt, truncated, "
                         f"or holding pickled objects?): {e}") from e
    if a is None:
        raise InputError(f"{file} has no array named {' or '.join(repr(k) for k in keys)} for split "
                         f"{split!r}; it holds {names}")
    where = f"{file}[{key!r}]"
    if a.ndim < 2 or len(a) == 0:
        raise InputError(f"{where}: expected an array (N, ...) with N >= 1 samples, got shape {a.shape}")
    y = _npz_labels(y, len(a), f"{file}[{label_key!r}]")
    y = None if y is None else _take(y, n, where)
    if np.issubdtype(a.dtype, np.floating):
        x = torch.from_numpy(np.ascontiguousarray(_take(a, n, where), dtype=np.float32))
        if not torch.isfinite(x).all():
            raise InputError(f"{where}: continuous data must be finite")
        labels = None if y is None else torch.from_numpy(y.astype(np.int64))
        return x, labels, DataSpec("npz", tuple(x.shape[1:]), None, CONTINUOUS_RANGE)
    if np.issubdtype(a.dtype, np.integer):
        return _scaled("npz", _take(_image_layout(a, where), n, where), 256, data_range, y)
    raise InputError(f"{where}: expected an integer (8-bit image) or float array, got dtype {a.dtype}")


# PIL's modes of greyscale images: 1-bit, 8-bit, and 16-bit PNGs (opened as "I;16..." or "I").
GREY_MODES = ("1", "L", "I;16", "I;16B", "I;16L", "I")


def _eight_bit(im: Any, file: Path, grey: bool) -> np.ndarray:
    """An opened PIL image as 8-bit pixels, ``(H, W)`` if ``grey`` else ``(H, W, 3)``: a 16-bit
    greyscale PNG is rescaled by 255/65535 (rounded, so an 8-bit image stored in 16 bits comes back
    exactly); 16-bit colour PNGs PIL already reads as 8-bit RGB."""
    if not im.mode.startswith("I"):
        return np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8)
    a = np.asarray(im).astype(np.int64)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise InputError(f"image {file} has {im.mode} pixels in [{a.min()}, {a.max()}]; expected 8- or "
                         "16-bit images (pixels in [0, 65535])")
    a = np.rint(a * (255 / 65535)).astype(np.uint8)
    return a if grey else np.repeat(a[..., None], 3, axis=-1)


def _folder(path: str | None, split: str, n: int | None, data_range: tuple[float, float],
            want_labels: bool) -> Loaded:
    from PIL import Image

    if path is None:
        raise InputError("data set 'folder' needs path= a folder of PNG/JPEG images")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    if (folder / split).is_dir():
        folder = folder / split
    elif split == "test":
        raise InputError(f"image folder {folder} has no 'test' subfolder; put test images in {folder}/test "
                         "(and training images in the folder itself or in a 'train' subfolder)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"image folder {folder} holds no images (expected files ending in "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    files = _take(files, n, f"image folder {folder}")
    images = []
    for file in files:
        try:
            with warnings.catch_warnings():  # PIL's warning band (1-2x its pixel limit) refused too
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file) as im:
                    im.load()
                    images.append(im.copy())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise InputError(f"image {file} is too large for an image data set ({e}); resize it, or remove "
                             "it from the folder") from None
        except OSError as e:
            raise InputError(f"cannot read image {file}: {e}") from e
    grey = all(im.mode in GREY_MODES for im in images)
    size = images[0].size
    arrays = []
    for file, im in zip(files, images):
        if im.size != size:
            raise InputError(f"images in {folder} must all have one size: {files[0].name} is "
                             f"{size[0]}×{size[1]} (W×H) but {file.name} is {im.size[0]}×{im.size[1]}")
        arrays.append(_eight_bit(im, file, grey))
    pixels = np.stack(arrays)
    pixels = pixels[:, None] if grey else pixels.transpose(0, 3, 1, 2)
    return _scaled("folder", pixels, 256, data_range)  # no labels


# --- entry point ------------------------------------------------------------------------------

IMAGE_LOADERS: dict[str, Callable[..., Loaded]] = {
    "cifar10": _cifar10,
    "npz": _npz,
    "folder": _folder,
}
DATASETS: tuple[str, ...] = (*GENERATED, "digits", *IMAGE_LOADERS)
# The sets with class labels (an npz file only where it holds a label array).
LABELLED: tuple[str, ...] = ("gmm2d", "moons", "digits", "cifar10", "npz")


def _load(name: str, split: str, path: str | Path | None, n: int | None, seed: int,
          data_range: tuple[float, float], want_labels: bool) -> Loaded:
    if name not in DATASETS:
        raise InputError(f"unknown data set {name!r}; available: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise InputError(f"n must be a positive integer or None, got {n!r}")
    if name in GENERATED:
        return _generated(name, split, n, seed)
    data_range = _check_range(data_range)
    if name == "digits":
        return _digits(split, n, data_range)
    return IMAGE_LOADERS[name](None if path is None else str(path), split, n, data_range, want_labels)


def load_dataset(name: str, split: str = "train", *, path: str | Path | None = None, n: int | None = None,
                 seed: int = 0, data_range: tuple[float, float] = (-1.0, 1.0)) -> tuple[Tensor, DataSpec]:
    """Load data set ``name`` (see the module docstring) as a float32 tensor and its :class:`DataSpec`.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        path: file or folder for ``cifar10``, ``npz`` and ``folder``; ignored otherwise.
        n: number of samples: generated sets draw ``n`` (default 10000); image sets take the
            first ``n`` of the split (default all).
        seed: fixes generated sets; image sets ignore it (their splits are fixed).
        data_range: ``(lo, hi)`` that image pixels are scaled to; continuous data ignore it.

    Raises:
        ValueError: unknown name or split, bad ``n``/``data_range``, a malformed file.
        FileNotFoundError: a missing file or folder (the message names what was expected).
        ImportError: ``digits`` without scikit-learn.
    """
    x, _, spec = _load(name, split, path, n, seed, data_range, want_labels=False)
    return x, spec


def load_labelled_dataset(name: str, split: str = "train", *, path: str | Path | None = None,
                          n: int | None = None, seed: int = 0,
                          data_range: tuple[float, float] = (-1.0, 1.0)) -> tuple[Tensor, Tensor, DataSpec]:
    """:func:`load_dataset` with the class labels: ``(x, labels, spec)``, ``labels`` int64 ``(N,)``
    (one per sample of ``x``, which is the tensor :func:`load_dataset` returns; what the labels
    are for each set is in the module docstring).

    Raises:
        ValueError: as :func:`load_dataset`, and for a set without labels (one not in
            :data:`LABELLED`, or an npz file without a label array).
    """
    x, labels, spec = _load(name, split, path, n, seed, data_range, want_labels=True)
    if labels is None:
        where = f"the npz file {path} has no label array ('labels' or 'y'; 'labels_test' or 'y_test' for " \
                "split 'test')" if name == "npz" else f"data set {name!r} has no class labels"
        raise InputError(f"{where}; sets with labels: {', '.join(LABELLED)}")
    return x, labels, spec
