"""A small convolutional KL-autoencoder: Rombach et al. 2022's "KL-f" autoencoder, scaled down.

    encoder  x → conv_in → per level: num_res_blocks × ResBlock, then a stride-2 conv (not at the
             last level) → ResBlock → GN, SiLU, conv → (μ, log σ²), each latent_channels wide
    decoder  z → conv_in → ResBlock → per level, coarsest first: (num_res_blocks + 1) × ResBlock,
             then nearest ×2 + conv (not at the finest) → GN, SiLU, conv → h
             x̂ = lo + (hi − lo)·sigmoid(h)                      (always inside data_range (lo, hi))
    ResBlock(x) = (skip(x) + Conv(SiLU(GN(Conv(SiLU(GN(x)))))))/√2    (the U-Net's block without time)

The encoder defines a diagonal Gaussian posterior q(z | x) = N(μ(x), diag σ²(x)); with
``len(channel_mult)`` levels an image ``(C, H, W)`` has latents ``(latent_channels, H/f, W/f)``,
``f = 2^(len(channel_mult) − 1)``. :meth:`ConvAutoencoder.encode` returns the posterior mean μ
(deterministic, as the :class:`scoresde.latent.Autoencoder` protocol asks); training draws
``z = μ + σ·ε`` and pays ``kl_weight·KL(q(z | x) ‖ N(0, I))`` (:func:`kl_divergence`, see
:mod:`scoresde.autoencoding`).

``scale_factor`` and ``shift_factor`` (plain floats, 1 and 0 until measured) map raw latents to
the diffusion's: ``z_diffusion = scale_factor·(μ − shift_factor)``; training measures them on the
training latents (:func:`scoresde.autoencoding.measure_latent_statistics`) and stores them with
the weights (:func:`autoencoder_state`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from scoresde.errors import InputError
from scoresde.nn.unet import _norm


class ResBlock(nn.Module):
    """``(skip(x) + Conv(SiLU(GN(Conv(SiLU(GN(x)))))))/√2``."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1),
                                  _norm(out_ch), nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return (self.skip(x) + self.body(x)) / math.sqrt(2.0)


def _upsample(ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1))


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²)`` per sample, ``(batch,)``."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


class ConvAutoencoder(nn.Module):
    """Images ``(B, in_channels, H, W)`` ↔ latents ``(B, latent_channels, H/f, W/f)``.

    Args:
        in_channels: image channels.
        latent_channels: channels of the latent.
        channels: base width; level ``i`` has ``channels·channel_mult[i]`` channels.
        channel_mult: one multiplier per level; ``f = 2^(len(channel_mult) − 1)``.
        num_res_blocks: residual blocks per level in the encoder (one more in the decoder).
        data_range: ``(lo, hi)``, the range the decoder's output is squashed into (the data's).
    """

    def __init__(self, in_channels: int = 1, latent_channels: int = 2, channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 data_range: Sequence[float] = (-1.0, 1.0)):
        super().__init__()
        lo, hi = (float(v) for v in data_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InputError(f"data_range must be finite with lo < hi, got {tuple(data_range)}")
        if not channel_mult or num_res_blocks < 1 or latent_channels < 1:
            raise InputError(f"need at least one level, one residual block and one latent channel; got "
                             f"channel_mult={tuple(channel_mult)}, num_res_blocks={num_res_blocks}, "
                             f"latent_channels={latent_channels}")
        self.config = {"in_channels": in_channels, "latent_channels": latent_channels, "channels": channels,
                       "channel_mult": tuple(int(m) for m in channel_mult), "num_res_blocks": num_res_blocks,
                       "data_range": (lo, hi)}
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.factor = 2 ** (len(channel_mult) - 1)
        self.lo, self.hi = lo, hi
        self.scale_factor, self.shift_factor = 1.0, 0.0
        widths = [channels * m for m in channel_mult]

        enc: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1)]
        ch = channels
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(ResBlock(ch, width))
                ch = width
            if level < len(widths) - 1:
                enc.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        enc += [ResBlock(ch, ch), _norm(ch), nn.SiLU(), nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(latent_channels, ch, 3, padding=1), ResBlock(ch, ch)]
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                dec.append(ResBlock(ch, width))
                ch = width
            if level > 0:
                dec.append(_upsample(ch))
        dec += [_norm(ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def latent_shape(self, data_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(C, H, W) -> (latent_channels, H/f, W/f)`` for one sample (no batch axis)."""
        shape, f = tuple(int(s) for s in data_shape), self.factor
        if len(shape) != 3 or shape[0] != self.in_channels or shape[1] % f or shape[2] % f:
            raise InputError(f"ConvAutoencoder expects samples of shape ({self.in_channels}, H, W) with H "
                             f"and W divisible by {f}, got {shape}")
        return self.latent_channels, shape[1] // f, shape[2] // f

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ, log σ²)`` of q(z | x), each ``(B, latent_channels, H/f, W/f)``."""
        if x.ndim != 4:
            raise InputError(f"ConvAutoencoder.encode expects images (batch, C, H, W), got shape "
                             f"{tuple(x.shape)}")
        self.latent_shape(x.shape[1:])
        return self.encoder(x).chunk(2, dim=1)

    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean μ(x): the raw (unscaled) latent."""
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Images in ``data_range`` from raw latents ``(B, latent_channels, h, w)``."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise InputError(f"ConvAutoencoder.decode expects latents (batch, {self.latent_channels}, h, w), "
                             f"got shape {tuple(z.shape)}")
        return self.lo + (self.hi - self.lo) * torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor) -> Tensor:
        """The deterministic reconstruction ``decode(encode(x))``."""
        return self.decode(self.encode(x))


def autoencoder_state(autoencoder: ConvAutoencoder) -> dict[str, Any]:
    """What a checkpoint stores of an autoencoder: ``{"config", "net", "scale_factor", "shift_factor"}``
    (constructor arguments, weights, latent statistics), plain data that
    :func:`autoencoder_from_state` rebuilds it from."""
    return {"config": dict(autoencoder.config), "net": autoencoder.state_dict(),
            "scale_factor": float(autoencoder.scale_factor), "shift_factor": float(autoencoder.shift_factor)}


def autoencoder_from_state(state: Mapping[str, Any], where: str = "the checkpoint") -> ConvAutoencoder:
    """The :class:`ConvAutoencoder` that :func:`autoencoder_state` described (in eval mode)."""
    missing = sorted({"config", "net", "scale_factor", "shift_factor"} - set(state))
    if missing:
        raise InputError(f"{where} holds no complete autoencoder: missing {missing}")
    from scoresde.checkpoint import check_tensors  # the workflow layer's check, imported when used

    config = dict(state["config"])
    autoencoder = ConvAutoencoder(**config)
    check_tensors(state["net"], autoencoder.state_dict(), f"{where}, the autoencoder's entry 'net'")
    autoencoder.load_state_dict(state["net"])
    autoencoder.scale_factor = float(state["scale_factor"])
    autoencoder.shift_factor = float(state["shift_factor"])
    return autoencoder.eval()

