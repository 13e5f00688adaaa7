"""A time-conditioned residual MLP for low-dimensional data (2-D toys, small vectors).

    e = W_t2 · SiLU(W_t1 · emb(c)) [+ E[label]]         (time [and class] features, width ``hidden``)
    h_0 = W_in · x
    h_{k+1} = h_k + W_k · SiLU(h_k + e)                  (k = 0..layers−1)
    out = W_out · SiLU(h_L)                              (W_out zero-initialised)

Inputs of any shape ``(batch, ...)`` with ``dim`` elements per sample are flattened and the
output is reshaped back, so the same network serves ``(B, 2)`` points and ``(B, 1, 8, 8)`` images.

With ``num_classes > 0`` the network is class-conditional, ``net(x, c, labels)``, and adds the
learned class embedding ``E[label]`` (:class:`~scoresde.nn.embedding.ClassEmbedding`, the null
label −1 its last row) to the time features, as guided-diffusion does. With
``learned_variance`` it has ``2·dim`` outputs, returned as ``(B, 2·C, ...)`` for input
``(B, C, ...)``: the first ``dim`` are the prediction and the last ``dim`` the variance
interpolation, which is how ``ScoreModel(learned_variance=True)`` splits axis 1.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.errors import InputError
from scoresde.nn.embedding import add_class_embedding, class_embedding, time_embedding


class TimeMLP(nn.Module):
    """``net(x, c[, labels]) -> tensor shaped like x`` for ``x`` with ``dim`` elements per sample.

    Args:
        dim: elements per sample.
        hidden: width of the hidden layers and the time features.
        layers: number of residual hidden layers.
        emb_dim: size of the time embedding.
        embedding: ``"sinusoidal"`` or ``"fourier"`` (see :mod:`scoresde.nn.embedding`).
        num_classes: number of classes of a class-conditional network (0: unconditional).
        learned_variance: also output the variance interpolation (twice the channels).
    """

    def __init__(self, dim: int, hidden: int = 256, layers: int = 3, emb_dim: int = 64,
                 embedding: str = "sinusoidal", num_classes: int = 0, learned_variance: bool = False):
        super().__init__()
        self.dim = dim
        self.learned_variance = bool(learned_variance)
        self.embed = time_embedding(embedding, emb_dim)
        self.time = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.classes = class_embedding(num_classes, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, 2 * dim if self.learned_variance else dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c: Tensor, labels: Tensor | None = None) -> Tensor:
        flat = x.flatten(1)
        if flat.shape[1] != self.dim:
            raise InputError(f"TimeMLP(dim={self.dim}) got input of shape {tuple(x.shape)} "
                             f"({flat.shape[1]} elements per sample)")
        e = add_class_embedding(self.time(self.embed(c)), self.classes, labels)
        h = self.inp(flat)
        for layer in self.hidden:
            h = h + layer(F.silu(h + e))
        out = self.out(F.silu(h))
        if self.learned_variance:
            return out.reshape(x.shape[0], 2 * x.shape[1], *x.shape[2:])
        return out.reshape(x.shape)
