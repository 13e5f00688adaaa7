"""Latent diffusion (Rombach et al. 2022): a diffusion model in the latent space of an autoencoder.

An :class:`Autoencoder` maps data to *raw* latents, ``encode(x)`` (deterministic: the posterior
mean/mode of a KL autoencoder), and back, ``decode(raw)``. The diffusion model lives on the
*scaled* latents

    z = to_latent(x) = scale·(E(x) − shift),          x = to_data(z) = D(z/scale + shift),

the convention of Stable Diffusion (``scale = 0.18215``, ``shift = 0``; LDM's ``scale_factor`` is
``1/std`` of the training latents) and SD3 (both set; diffusers' ``vae.config.scaling_factor`` and
``shift_factor``). :class:`LatentDiffusion` wraps a :class:`~scoresde.model.DiffusionModel` on z
together with the autoencoder. It *is* a DiffusionModel on z (``.sde`` and ``.predict`` are the
inner model's), so every sampler runs it unchanged; the entry points give it its data-space
meaning:

* ``sd.sample(ldm, (n, *ldm.latent_shape(data_shape)))`` samples latents and returns the decoded
  data in ``.x`` (the latents in ``.latents``);
* ``sd.encode(ldm, x)`` maps data with :meth:`LatentDiffusion.to_latent` and runs the
  deterministic sampler forward (``.latents`` holds ``to_latent(x)``);
* ``sd.log_likelihood(ldm, x)`` is the density of ``z = to_latent(x)`` in latent space, labelled
  ``space="latent"``; ``sd.variational_bound(ldm, x)`` is the DDPM bound on ``−log p(z)``, also
  labelled; ``sd.bits_per_dim`` refuses a latent model (see :func:`scoresde.log_likelihood`).

**The density is a latent one.** With ``d = dim z`` smaller than the data's ``D`` the model puts all
its mass on the decoder's image, a d-dimensional set, so the data have no density in ``R^D`` and
the latent log-density is the honest number. For an invertible decoder (``d = D``, ``J = ∂z/∂x``)
the two differ by the change of variables, ``log p_x(x) = log p_z(z) + log|det J|``; for
:class:`LinearAutoencoder` with a square ``W`` that is ``d·log(scale) − log|det W|``.

**Wrappers.** A LatentDiffusion composes with the other wrappers in either order:
``ClassifierFreeGuidance(LatentDiffusion(model, ae), w)`` and
``LatentDiffusion(ClassifierFreeGuidance(model, w), ae)`` sample the same latents and decode them
alike. The entry points find the latent model with :func:`find_latent_model`, which follows the
wrappers' ``.model`` attribute (the convention of :class:`~scoresde.ClassifierFreeGuidance`,
:class:`~scoresde.ClassifierGuidance`, :class:`~scoresde.AnalyticVariance` and
:class:`~scoresde.CountingModel`); a wrapper of one's own must keep its inner model there too, or
the entry points take it for a data-space model and return latents undecoded. Guiding a loaded
latent model is the outer form, ``ClassifierFreeGuidance(ldm, w)``.

**NFE.** One NFE is one ``predict`` call of the latent model, as for any model; encoding and
decoding through the autoencoder are not network evaluations of the diffusion model and are not
counted (``sample`` decodes once, ``encode``/``log_likelihood`` encode once).
"""

from __future__ import annotations

import math
import os
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from scoresde.errors import InputError, InputTypeError, NonFiniteError
from scoresde.guidance import check_scale
from scoresde.model import Cond, DiffusionModel, Prediction, check_model
from scoresde.sde import SDE

AUTOENCODER_MEMBERS = ("encode", "decode", "latent_shape", "scale_factor", "shift_factor")


@runtime_checkable
class Autoencoder(Protocol):
    """What :class:`LatentDiffusion` needs of an autoencoder.

    ``encode(x)`` maps data ``(batch, *data_shape)`` to raw latents ``(batch, *latent_shape(data_shape))``
    deterministically (a KL autoencoder's posterior mean/mode); ``decode(raw)`` maps raw latents
    back to data. ``latent_shape(data_shape)`` gives the per-sample latent shape (no batch axis) of
    a per-sample data shape and raises ``ValueError`` for a data shape the autoencoder cannot
    encode. ``scale_factor`` (> 0) and ``shift_factor`` are the defaults of ``z = scale·(raw − shift)``
    (``shift_factor = 0`` unless the autoencoder has one).
    """

    scale_factor: float
    shift_factor: float

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]: ...


def check_autoencoder(autoencoder: Any) -> None:
    """Refuse an object that does not implement :class:`Autoencoder`, naming what it lacks."""
    missing = [m for m in AUTOENCODER_MEMBERS if not hasattr(autoencoder, m)]
    missing += [m for m in AUTOENCODER_MEMBERS[:3]
                if m not in missing and not callable(getattr(autoencoder, m))]
    if missing:
        raise InputTypeError(f"autoencoder must implement the Autoencoder protocol "
                             f"({', '.join(AUTOENCODER_MEMBERS)}), e.g. a scoresde.LinearAutoencoder or "
                             f"DiffusersAutoencoder; {type(autoencoder).__name__} lacks {', '.join(missing)}")


def check_scale_factor(value: Any) -> float:
    """The latent scale as a float: finite and > 0 (latents are divided by it on decoding)."""
    value = check_scale(value, 0.0, "scale_factor", "z = scale·(E(x) − shift) is divided by it")
    if value == 0.0:
        raise InputError("scale_factor must be > 0 (z = scale·(E(x) − shift) is divided by it), got 0")
    return value


def check_shift_factor(value: Any) -> float:
    """The latent shift as a finite float."""
    return check_scale(value, -math.inf, "shift_factor", "")


def find_latent_model(model: Any) -> LatentDiffusion | None:
    """The :class:`LatentDiffusion` that ``model`` is or wraps (following each wrapper's ``.model``),
    else ``None`` (a pixel-space model)."""
    seen = set()
    while model is not None and id(model) not in seen:
        if isinstance(model, LatentDiffusion):
            return model
        seen.add(id(model))
        model = getattr(model, "model", None)
    return None


def _shape_tuple(shape: Any, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a tuple of ints, got {shape!r}") from None
    if not all(n >= 1 and n == m for n, m in zip(out, shape)):
        raise InputError(f"{what} must be a tuple of positive ints, got {tuple(shape)}")
    return out


class LatentDiffusion(nn.Module):
    """``model``, a diffusion model on ``z = scale·(E(x) − shift)``, with its autoencoder.

    Args:
        model: any :class:`~scoresde.model.DiffusionModel` on the scaled latents (guidance and
            other wrappers included, see the module docstring).
        autoencoder: an :class:`Autoencoder`.
        scale_factor, shift_factor: override the autoencoder's ``scale_factor``/``shift_factor``
            (finite; the scale > 0).

    ``.sde`` and ``.predict`` are the inner model's: on its own, a LatentDiffusion is the latent
    model; :func:`scoresde.sample`, :func:`scoresde.encode`, :func:`scoresde.log_likelihood` and
    :func:`scoresde.variational_bound` add the maps to and from data.
    """

    def __init__(self, model: DiffusionModel, autoencoder: Autoencoder, *, scale_factor: float | None = None,
                 shift_factor: float | None = None):
        super().__init__()
        check_model(model)
        check_autoencoder(autoencoder)
        if find_latent_model(model) is not None:
            raise InputError("model is already a latent model (a LatentDiffusion, or a wrapper of one); "
                             "a latent model of a latent model is not supported")
        self.model = model
        self.autoencoder = autoencoder
        self.scale_factor = check_scale_factor(
            autoencoder.scale_factor if scale_factor is None else scale_factor)
        self.shift_factor = check_shift_factor(
            autoencoder.shift_factor if shift_factor is None else shift_factor)

    @property
    def sde(self) -> SDE:
        return self.model.sde

    def predict(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Prediction:
        """The inner model's prediction at latents ``x`` (one NFE)."""
        return self.model.predict(x, t, cond)

    def forward(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Prediction:
        return self.predict(x, t, cond)

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-sample latent shape of per-sample data of ``data_shape`` (no batch axes)."""
        data_shape = _shape_tuple(data_shape, "data_shape")
        return _shape_tuple(self.autoencoder.latent_shape(data_shape), "the autoencoder's latent_shape")

    def to_latent(self, x: Tensor) -> Tensor:
        """``z = scale·(E(x) − shift)`` for data ``x`` of shape ``(batch, *data_shape)``."""
        if not isinstance(x, Tensor) or x.ndim < 2:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(f"x must be a data tensor of shape (batch, ...), got {got}")
        expected = (x.shape[0], *self.latent_shape(tuple(x.shape[1:])))
        raw = self.autoencoder.encode(x)
        if not isinstance(raw, Tensor) or tuple(raw.shape) != expected:
            got = tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
            raise InputError(f"the autoencoder encoded data {tuple(x.shape)} to {got}, but its latent_shape "
                             f"says {expected}")
        if not torch.isfinite(raw).all():
            raise NonFiniteError("the autoencoder's encode returned non-finite latents")
        return self.scale_factor * (raw - self.shift_factor)

    def to_data(self, z: Tensor) -> Tensor:
        """``x = D(z/scale + shift)`` for scaled latents ``z`` of shape ``(batch, *latent_shape)``."""
        if not isinstance(z, Tensor) or z.ndim < 2:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise InputError(f"z must be a latent tensor of shape (batch, ...), got {got}")
        x = self.autoencoder.decode(z / self.scale_factor + self.shift_factor)
        if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] != z.shape[0]:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(f"the autoencoder decoded latents {tuple(z.shape)} to {got}: expected a "
                             f"(batch={z.shape[0]}, ...) data tensor")
        back = self.latent_shape(tuple(x.shape[1:]))
        if back != tuple(z.shape[1:]):
            raise InputError(f"latents of shape {tuple(z.shape[1:])} decoded to data of shape "
                             f"{tuple(x.shape[1:])}, whose latent shape is {back}: sample a latent model "
                             "with shape (batch, *ldm.latent_shape(data_shape))")
        if not torch.isfinite(x).all():
            raise NonFiniteError("the autoencoder's decode returned non-finite data")
        return x


class LinearAutoencoder(nn.Module):
    """The affine autoencoder ``decode(z) = W z + b``, ``encode(x) = W⁺(x − b)`` (``W⁺`` the
    Moore–Penrose pseudo-inverse), data ``(D,)`` and raw latents ``(d,)``, ``d <= D``.

    ``W`` (``(D, d)``) must have full column rank, so that ``encode(decode(z)) = z`` exactly and
    ``decode(encode(x))`` is the projection of ``x`` onto the affine subspace ``{W z + b}``
    (``= x`` on it). A Gaussian mixture of raw latents decodes to a mixture of Gaussians on that
    subspace, so this is the exact autoencoder of the latent tests. Computed in float64, returned
    in the input's dtype.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None, scale_factor: float = 1.0,
                 shift_factor: float = 0.0):
        super().__init__()
        w = torch.as_tensor(weight, dtype=torch.float64)
        if w.ndim != 2 or w.shape[1] > w.shape[0] or w.numel() == 0:
            raise InputError(f"weight must be a (D, d) matrix with d <= D (data dimension D, latent d), "
                             f"got shape {tuple(w.shape)}")
        D, d = w.shape
        b = torch.zeros(D, dtype=torch.float64) if bias is None else torch.as_tensor(bias, dtype=w.dtype)
        if b.shape != (D,):
            raise InputError(f"bias must have shape ({D},), got {tuple(b.shape)}")
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise InputError("weight and bias must be finite")
        sv = torch.linalg.svdvals(w)
        if sv.min() <= sv.max() * D * torch.finfo(torch.float64).eps:
            raise InputError(f"weight must have full column rank {d} (singular values {sv.tolist()})")
        self.register_buffer("weight", w)
        self.register_buffer("bias", b)
        self.register_buffer("pinv", torch.linalg.pinv(w))
        self.scale_factor = check_scale_factor(scale_factor)
        self.shift_factor = check_shift_factor(shift_factor)

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        D, d = self.weight.shape
        if tuple(data_shape) != (D,):
            raise InputError(f"LinearAutoencoder encodes data of shape ({D},), got {tuple(data_shape)}")
        return (d,)

    def _check(self, v: Tensor, n: int, what: str) -> None:
        if not isinstance(v, Tensor) or v.ndim != 2 or v.shape[1] != n:
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise InputError(f"LinearAutoencoder {what} of shape (batch, {n}), got {got}")

    def encode(self, x: Tensor) -> Tensor:
        """``W⁺(x − b)`` per sample."""
        self._check(x, self.weight.shape[0], "encodes data")
        return ((x.to(torch.float64) - self.bias) @ self.pinv.T).to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """``W z + b`` per sample."""
        self._check(z, self.weight.shape[1], "decodes raw latents")
        return (z.to(torch.float64) @ self.weight.T + self.bias).to(z.dtype)


class DiffusersAutoencoder(nn.Module):
    """diffusers' ``AutoencoderKL`` as an :class:`Autoencoder`.

    ``encode(x) = vae.encode(x).latent_dist.mode()`` (the posterior mean: a deterministic encoder),
    ``decode(z) = vae.decode(z).sample``; ``scale_factor = vae.config.scaling_factor`` and
    ``shift_factor = vae.config.shift_factor`` (0 where the config has none), as diffusers' pipelines
    use them. Data are ``(in_channels, H, W)`` with H and W multiples of ``2^(len(block_out_channels) − 1)``
    (the pipelines' ``vae_scale_factor``); latents ``(latent_channels, H/f, W/f)``. Inputs are cast to
    the autoencoder's dtype and device, outputs back to the input's. A config with per-channel
    ``latents_mean``/``latents_std`` is refused (only a scalar scale and shift are modelled).
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        config = getattr(vae, "config", None)
        if not (callable(getattr(vae, "encode", None)) and callable(getattr(vae, "decode", None))
                and config is not None and hasattr(config, "latent_channels")):
            raise InputTypeError(f"vae must be a diffusers AutoencoderKL (encode, decode, config), "
                                 f"got {type(vae).__name__}")
        for key in ("latents_mean", "latents_std"):
            if getattr(config, key, None) is not None:
                raise InputError(f"this autoencoder's config sets per-channel {key}; only a scalar "
                                 "scaling_factor and shift_factor are supported")
        self.vae = vae
        self.in_channels = int(config.in_channels)
        self.latent_channels = int(config.latent_channels)
        self.downsample = 2 ** (len(config.block_out_channels) - 1)
        self.scale_factor = check_scale_factor(config.scaling_factor)
        shift = getattr(config, "shift_factor", None)
        self.shift_factor = check_shift_factor(0.0 if shift is None else shift)

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        f = self.downsample
        shape = tuple(data_shape)
        if len(shape) != 3 or shape[0] != self.in_channels or shape[1] % f or shape[2] % f:
            raise InputError(f"this AutoencoderKL encodes images ({self.in_channels}, H, W) with H and W "
                             f"multiples of {f}, got {shape}")
        return (self.latent_channels, shape[1] // f, shape[2] // f)

    def _param(self) -> Tensor:
        return next(self.vae.parameters())

    def encode(self, x: Tensor) -> Tensor:
        """The posterior mode (= mean) of the raw latent of ``x``."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise InputError(f"AutoencoderKL encodes images (batch, C, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        self.latent_shape(tuple(x.shape[1:]))
        p = self._param()
        out = self.vae.encode(x.to(device=p.device, dtype=p.dtype)).latent_dist.mode()
        return out.to(device=x.device, dtype=x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """The decoded image of raw latents ``z``."""
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != self.latent_channels:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise InputError(f"AutoencoderKL decodes latents (batch, {self.latent_channels}, h, w), "
                             f"got {got}")
        p = self._param()
        out = self.vae.decode(z.to(device=p.device, dtype=p.dtype)).sample
        return out.to(device=z.device, dtype=z.dtype)


def load_autoencoder_kl(path: str | os.PathLike, *, subfolder: str | None = None,
                        dtype: torch.dtype = torch.float32) -> DiffusersAutoencoder:
    """An ``AutoencoderKL`` from a local folder (nothing is downloaded), in eval mode.

    ``path`` is the autoencoder's folder (``config.json`` and its weights, as ``save_pretrained``
    writes them) or a pipeline folder with a ``vae/`` subfolder (used unless ``subfolder`` says
    otherwise).
    """
    from diffusers import AutoencoderKL

    root = os.fspath(path)
    if subfolder is None and not os.path.isfile(os.path.join(root, "config.json")) \
            and os.path.isfile(os.path.join(root, "vae", "config.json")):
        subfolder = "vae"
    folder = root if subfolder is None else os.path.join(root, subfolder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"no AutoencoderKL folder at {folder!r}: expected a local folder with "
                                "config.json (as AutoencoderKL.save_pretrained writes it) or a pipeline "
                                "folder with vae/")
    if not os.path.isfile(os.path.join(folder, "diffusion_pytorch_model.safetensors")):
        raise FileNotFoundError(f"no safetensors weights in {folder!r} (pickled .bin weights are not loaded: "
                                "re-save them with save_pretrained(..., safe_serialization=True))")
    vae = AutoencoderKL.from_pretrained(root, subfolder=subfolder, torch_dtype=dtype, local_files_only=True,
                                        use_safetensors=True, low_cpu_mem_usage=False)
    return DiffusersAutoencoder(vae.eval())
