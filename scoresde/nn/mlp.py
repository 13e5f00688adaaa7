"""A time-conditioned residual MLP for low-dimensional data (2-D toys, small vectors).

    e = W_t2 · SiLU(W_t1 · emb(c))                      (time features, width ``hidden``)
    h_0 = W_in · x
    h_{k+1} = h_k + W_k · SiLU(h_k + e)                  (k = 0..layers−1)
    out = W_out · SiLU(h_L)                              (W_out zero-initialised)

Inputs of any shape ``(batch, ...)`` with ``dim`` elements per sample are flattened and the
output is reshaped back, so the same network serves ``(B, 2)`` points and ``(B, 1, 8, 8)`` images.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.nn.embedding import time_embedding


class TimeMLP(nn.Module):
    """``net(x, c) -> tensor shaped like x`` for ``x`` with ``dim`` elements per sample.

    Args:
        dim: elements per sample.
        hidden: width of the hidden layers and the time features.
        layers: number of residual hidden layers.
        emb_dim: size of the time embedding.
        embedding: ``"sinusoidal"`` or ``"fourier"`` (see :mod:`scoresde.nn.embedding`).
    """

    def __init__(self, dim: int, hidden: int = 256, layers: int = 3, emb_dim: int = 64,
                 embedding: str = "sinusoidal"):
        super().__init__()
        self.dim = dim
        self.embed = time_embedding(embedding, emb_dim)
        self.time = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        flat = x.flatten(1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"TimeMLP(dim={self.dim}) got input of shape {tuple(x.shape)} "
                             f"({flat.shape[1]} elements per sample)")
        e = self.time(self.embed(c))
        h = self.inp(flat)
        for layer in self.hidden:
            h = h + layer(F.silu(h + e))
        return self.out(F.silu(h)).reshape(x.shape)
