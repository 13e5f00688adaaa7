"""Time-conditional classifier networks ``net(x, c) -> logits (batch, num_classes)`` for noisy inputs.

* :class:`TimeClassifierMLP` (vectors): the residual MLP of :mod:`scoresde.nn.mlp` with a logits head,

      e = W_t2 · SiLU(W_t1 · emb(c)),   h_0 = W_in · x,   h_{k+1} = h_k + W_k · SiLU(h_k + e),
      logits = W_out · SiLU(h_L).

* :class:`TimeClassifierConv` (images): the encoder half of the U-Net (guided-diffusion's
  ``EncoderUNetModel`` without attention), built from :mod:`scoresde.nn.unet`'s blocks: a 3×3
  conv, per level a time-conditioned residual block and a stride-2 conv, a last residual block,
  GroupNorm, SiLU, global average pooling and a linear head.

Both take the time input ``c`` a :class:`~scoresde.NoisyClassifier` gives them (its
``time_input``) through the embeddings of :mod:`scoresde.nn.embedding`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.errors import InputError
from scoresde.nn.embedding import time_embedding
from scoresde.nn.unet import Downsample, ResBlock, _norm


def _check_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes!r}")


class TimeClassifierMLP(nn.Module):
    """``net(x, c) -> logits (batch, num_classes)`` for ``x`` with ``dim`` elements per sample.

    Args:
        dim: elements per sample (inputs of any shape ``(batch, ...)`` are flattened).
        num_classes: number of classes (>= 2).
        hidden: width of the hidden layers and the time features.
        layers: number of residual hidden layers.
        emb_dim: size of the time embedding.
        embedding: ``"sinusoidal"`` or ``"fourier"``.
    """

    def __init__(self, dim: int, num_classes: int, hidden: int = 128, layers: int = 2, emb_dim: int = 64,
                 embedding: str = "sinusoidal"):
        super().__init__()
        _check_classes(num_classes)
        self.dim, self.num_classes = dim, num_classes
        self.embed = time_embedding(embedding, emb_dim)
        self.time = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        flat = x.flatten(1)
        if flat.shape[1] != self.dim:
            raise InputError(f"TimeClassifierMLP(dim={self.dim}) got input of shape {tuple(x.shape)} "
                             f"({flat.shape[1]} elements per sample)")
        e = self.time(self.embed(c))
        h = self.inp(flat)
        for layer in self.hidden:
            h = h + layer(F.silu(h + e))
        return self.out(F.silu(h))


class TimeClassifierConv(nn.Module):
    """``net(x, c) -> logits (batch, num_classes)`` for images ``(batch, in_channels, H, W)``.

    Args:
        in_channels: image channels.
        num_classes: number of classes (>= 2).
        channels: base width; level ``i`` has ``channels·channel_mult[i]`` channels.
        channel_mult: one multiplier per level; every level but the last halves the resolution.
        dropout: dropout rate inside the residual blocks.
        embedding: ``"sinusoidal"`` or ``"fourier"``.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2), dropout: float = 0.0, embedding: str = "sinusoidal"):
        super().__init__()
        _check_classes(num_classes)
        if not channel_mult:
            raise InputError("channel_mult needs at least one level")
        self.in_channels, self.num_classes = in_channels, num_classes
        temb_ch = 4 * channels
        self.embed = nn.Sequential(time_embedding(embedding, channels), nn.Linear(channels, temb_ch),
                                   nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks, ch = nn.ModuleList(), channels
        for level, mult in enumerate(channel_mult):
            self.blocks.append(ResBlock(ch, channels * mult, temb_ch, dropout))
            ch = channels * mult
            if level < len(channel_mult) - 1:
                self.blocks.append(Downsample(ch))
        self.blocks.append(ResBlock(ch, ch, temb_ch, dropout))
        self.norm_out = _norm(ch)
        self.out = nn.Linear(ch, num_classes)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"TimeClassifierConv expects images (batch, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        temb = self.embed(c)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(F.silu(self.norm_out(h)).mean(dim=(2, 3)))
