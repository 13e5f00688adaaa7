"""A compact DDPM++-style U-Net (Ho et al. 2020; Song et al. 2021, "DDPM++") for images.

    temb = W2 · SiLU(W1 · emb(c)) [+ E[label]]                     (width 4·channels)
    ResBlock(x) = (skip(x) + h)/√2,  h = Conv(Drop(SiLU(GN(Conv(SiLU(GN(x))) + W·SiLU(temb)))))
    AttnBlock(x) = (x + Proj(softmax(QᵀK/√C) V))/√2                (one head, Q, K, V = 1×1 convs of GN(x))

Layout: a 3×3 input conv; per level ``i`` (resolution ``resolution/2^i``) ``num_res_blocks``
residual blocks of ``channels·channel_mult[i]`` channels, each followed by self-attention when
the level's resolution is in ``attn_resolutions``, then a stride-2 conv (except at the last
level); a middle ResBlock–Attn–ResBlock; the mirror image upwards with ``num_res_blocks + 1``
blocks per level, each taking the matching skip connection, and nearest ×2 upsampling + conv;
GroupNorm, SiLU and a zero-initialised 3×3 output conv, so the untrained net outputs 0.
The 1/√2 is score_sde's ``skip_rescale``.

With ``num_classes > 0`` the network is class-conditional, ``net(x, c, labels)``: a learned class
embedding ``E[label]`` (:class:`~scoresde.nn.embedding.ClassEmbedding`, the null label −1 its last
row) is added to ``temb``, as guided-diffusion's ``label_emb``. With ``learned_variance`` the
output conv has ``2·in_channels`` channels: the prediction, then the variance interpolation (the
split ``ScoreModel(learned_variance=True)`` makes on axis 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.errors import InputError
from scoresde.nn.embedding import add_class_embedding, class_embedding, time_embedding


def _norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (where ``ch`` allows).

    A group of one channel would subtract the per-channel time-embedding bias that the
    residual blocks add just before normalising, and so erase the time conditioning.
    """
    return nn.GroupNorm(math.gcd(32, ch, max(ch // 4, 1)), ch)


class ResBlock(nn.Module):
    """DDPM residual block with the time embedding added after the first conv."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float):
        super().__init__()
        self.norm0, self.conv0 = _norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_ch, out_ch)
        self.norm1, self.conv1 = _norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        y = self.conv0(F.silu(self.norm0(h)))
        y = y + self.temb(F.silu(temb))[:, :, None, None]
        y = self.conv1(self.dropout(F.silu(self.norm1(y))))
        return (self.skip(h) + y) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``H·W`` positions."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        B, C, H, W = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(B, 3, C, H * W).transpose(2, 3).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C), scale 1/√C
        return (h + self.proj(y.transpose(1, 2).reshape(B, C, H, W))) / math.sqrt(2.0)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3×3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        return self.conv(h)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class _Stage(nn.ModuleList):
    """Blocks applied in order as ``block(h, temb)``; those without time conditioning ignore ``temb``."""

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        for block in self:
            h = block(h, temb)
        return h


class UNet(nn.Module):
    """``net(x, c[, labels]) -> tensor shaped like x`` for images ``x`` of shape ``(B, in_channels, R, R)``.

    Args:
        in_channels: image channels (input and output).
        channels: base width; level ``i`` has ``channels·channel_mult[i]`` channels.
        channel_mult: one multiplier per resolution level.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: resolutions at which self-attention follows each residual block.
        dropout: dropout rate inside the residual blocks.
        resolution: the image side ``R``; must be divisible by ``2^(len(channel_mult) − 1)``.
        embedding: ``"sinusoidal"`` or ``"fourier"`` time embedding.
        fourier_scale: scale of the Fourier embedding's random frequencies.
        num_classes: number of classes of a class-conditional network (0: unconditional).
        learned_variance: also output the variance interpolation (twice the output channels).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1,
                 resolution: int = 32, embedding: str = "sinusoidal", fourier_scale: float = 16.0,
                 num_classes: int = 0, learned_variance: bool = False):
        super().__init__()
        levels = len(channel_mult)
        if levels < 1 or resolution % 2 ** (levels - 1):
            raise InputError(f"resolution {resolution} must be divisible by 2^(len(channel_mult) − 1) "
                             f"= {2 ** (levels - 1)} (channel_mult={tuple(channel_mult)})")
        self.in_channels, self.resolution = in_channels, resolution
        temb_ch = 4 * channels
        self.embed = nn.Sequential(time_embedding(embedding, channels, fourier_scale),
                                   nn.Linear(channels, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.classes = class_embedding(num_classes, temb_ch)

        def res_stage(in_ch: int, out_ch: int, res: int) -> _Stage:
            stage = _Stage([ResBlock(in_ch, out_ch, temb_ch, dropout)])
            if res in attn_resolutions:
                stage.append(AttnBlock(out_ch))
            return stage

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        # Every down stage yields one skip tensor; `skips` records their channel counts.
        self.down, skips, ch, res = nn.ModuleList(), [channels], channels, resolution
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(res_stage(ch, channels * mult, res))
                ch = channels * mult
                skips.append(ch)
            if level < levels - 1:
                self.down.append(_Stage([Downsample(ch)]))
                res //= 2
                skips.append(ch)
        self.mid = _Stage([ResBlock(ch, ch, temb_ch, dropout), AttnBlock(ch),
                           ResBlock(ch, ch, temb_ch, dropout)])
        # Every up stage consumes one skip tensor, in reverse order.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(res_stage(ch + skips.pop(), channels * mult, res))
                ch = channels * mult
            if level > 0:
                self.up[-1].append(Upsample(ch))
                res *= 2
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, 2 * in_channels if learned_variance else in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c: Tensor, labels: Tensor | None = None) -> Tensor:
        expected = (self.in_channels, self.resolution, self.resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise InputError(f"UNet expects input of shape (batch, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        temb = add_class_embedding(self.embed(c), self.classes, labels)
        h = self.conv_in(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, temb)
            hs.append(h)
        h = self.mid(h, temb)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))
