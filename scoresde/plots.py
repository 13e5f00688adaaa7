"""PNG figures for the command line and the demo: image grids, scatter panels, pairs and paths.

Everything is drawn with matplotlib's object-oriented API (``matplotlib.figure.Figure``), never
``pyplot``: importing this module does not touch the global backend, so it is safe inside a
notebook or a GUI session as well as on a headless machine.

Images come in as integer pixels ``(N, C, H, W)`` with ``C`` = 1 (shown in grey) or 3 (RGB)
and ``levels`` grey levels (:func:`scoresde.data.to_pixels` produces them); 2-D point sets as
``(N, 2)`` tensors or arrays.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from torch import Tensor

from scoresde.errors import InputError

__all__ = [
    "ImagePanel",
    "ScatterPanel",
    "axis_limits",
    "image_grid",
    "save_image_panels",
    "save_pair_scatter",
    "save_path_scatter",
    "save_scatter_panels",
]

PAD_VALUE = 0.5  # the grey between the tiles of an image grid


def _wrap(title: str, inches: float, fontsize: float) -> str:
    """``title`` with each line wrapped to fit ``inches`` of width at ``fontsize`` points."""
    width = max(16, int(inches * 130 / fontsize))
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def image_grid(pixels: Tensor | np.ndarray, levels: int, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images into one array for ``imshow``.

    Args:
        pixels: integer pixels ``(N, C, H, W)`` in ``[0, levels − 1]``, ``C`` 1 or 3.
        levels: number of grey levels (17 for digits, 256 for 8-bit images).
        ncol: images per row (default: ``ceil(sqrt(N))``, a near-square grid).
        pad: pixels of grey between and around the tiles.

    Returns:
        a float array in ``[0, 1]``, ``(rows·(H + pad) + pad, ncol·(W + pad) + pad)`` for
        grey images or with a trailing axis of 3 for colour ones. Unused tiles stay grey.
    """
    p = _numpy(pixels)
    if p.ndim != 4 or p.shape[1] not in (1, 3):
        raise InputError(f"pixels must be (N, C, H, W) with C = 1 or 3, got shape {p.shape}")
    if len(p) == 0:
        raise InputError("no images to draw")
    if levels < 2:
        raise InputError(f"levels must be >= 2, got {levels}")
    n, c, h, w = p.shape
    ncol = math.ceil(math.sqrt(n)) if ncol is None else int(ncol)
    if ncol < 1:
        raise InputError(f"ncol must be >= 1, got {ncol}")
    nrow = math.ceil(n / ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), PAD_VALUE, dtype=np.float64)
    scaled = np.clip(p.astype(np.float64) / (levels - 1), 0.0, 1.0).transpose(0, 2, 3, 1)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = scaled[i]
    return grid[..., 0] if c == 1 else grid


@dataclass(frozen=True)
class ImagePanel:
    """One titled grid of images in a figure; ``ncol`` images per row (default near-square)."""

    title: str
    pixels: Tensor | np.ndarray
    ncol: int | None = None


def save_image_panels(path: str | Path, panels: Sequence[ImagePanel], levels: int,
                      suptitle: str | None = None, cols: int | None = None,
                      panel_inches: float = 2.8) -> None:
    """Save image grids side by side (``cols`` panels per row, default all) as a PNG.

    Each panel is drawn pixel-exact (nearest-neighbour), keeping the grid's aspect ratio.
    """
    if not panels:
        raise InputError("no panels to draw")
    grids = [image_grid(p.pixels, levels, p.ncol) for p in panels]
    cols = len(panels) if cols is None else min(int(cols), len(panels))
    rows = math.ceil(len(panels) / cols)
    aspect = max(g.shape[1] / g.shape[0] for g in grids)
    panel_width = panel_inches * max(1.0, aspect)
    fig = Figure(figsize=(panel_width * cols, (panel_inches + 0.6) * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, panel, grid in zip(axes.flat, panels, grids):
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0,
                  interpolation="nearest")
        ax.set_title(_wrap(panel.title, panel_width, 9), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if suptitle:
        fig.suptitle(_wrap(suptitle, panel_width * cols, 10), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)


def axis_limits(*xs: Tensor | np.ndarray, margin: float = 0.08) -> tuple[float, float]:
    """One symmetric-looking range ``(lo, hi)`` holding the 0.5–99.5 % quantiles of all sets
    on both axes, widened by ``margin`` of its length (stray outliers do not squash the plot)."""
    pts = np.concatenate([_numpy(x).reshape(-1, 2) for x in xs])
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return -1.0, 1.0
    lo, hi = float(np.quantile(pts, 0.005)), float(np.quantile(pts, 0.995))
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    d = (hi - lo) * margin
    return lo - d, hi + d


def _square(ax, lim: tuple[float, float]) -> None:
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=8)


@dataclass(frozen=True)
class ScatterPanel:
    """One titled scatter of 2-D points; ``color`` is a matplotlib colour (``"C0"`` = reference)."""

    title: str
    x: Tensor | np.ndarray
    color: str = "C1"


def save_scatter_panels(path: str | Path, panels: Sequence[ScatterPanel], suptitle: str | None = None,
                        lim: tuple[float, float] | None = None, cols: int = 3) -> None:
    """Save 2-D scatter plots, ``cols`` panels per row, on one shared square range, as a PNG.

    ``lim`` defaults to :func:`axis_limits` of all panels.
    """
    if not panels:
        raise InputError("no panels to draw")
    for p in panels:
        if _numpy(p.x).ndim != 2 or _numpy(p.x).shape[1] != 2:
            raise InputError(f"scatter panel {p.title!r} needs (N, 2) points, got shape {_numpy(p.x).shape}")
    lim = axis_limits(*(p.x for p in panels)) if lim is None else lim
    cols = min(cols, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.6 * cols, 4.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, p in zip(axes.flat, panels):
        x = _numpy(p.x)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.35, color=p.color, rasterized=True)
        ax.set_title(_wrap(p.title, 3.6, 10), fontsize=10)
        _square(ax, lim)
    if suptitle:
        fig.suptitle(_wrap(suptitle, 3.6 * cols, 11), fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)


def save_pair_scatter(path: str | Path, original: Tensor | np.ndarray, reconstructed: Tensor | np.ndarray,
                      title: str) -> None:
    """2-D originals (left) and their reconstructions (right), with a segment from each
    original to its reconstruction drawn in the right panel."""
    a, b = _numpy(original), _numpy(reconstructed)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 2:
        raise InputError(f"need two (N, 2) sets of one shape, got {a.shape} and {b.shape}")
    lim = axis_limits(a, b)
    fig = Figure(figsize=(8.0, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2, squeeze=True)
    left.scatter(a[:, 0], a[:, 1], s=6, color="C0")
    left.set_title("originals (test split)", fontsize=10)
    right.add_collection(LineCollection(np.stack([a, b], axis=1), colors="0.6", linewidths=0.6))
    right.scatter(a[:, 0], a[:, 1], s=6, color="C0", label="original")
    right.scatter(b[:, 0], b[:, 1], s=6, color="C1", label="reconstruction")
    right.legend(fontsize=8, loc="upper right")
    right.set_title("reconstructions (segments: error)", fontsize=10)
    for ax in (left, right):
        _square(ax, lim)
    fig.suptitle(_wrap(title, 8.0, 10), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)


def save_path_scatter(path: str | Path, background: Tensor | np.ndarray, paths: Tensor | np.ndarray,
                      ends: Tensor | np.ndarray, title: str) -> None:
    """2-D interpolation paths ``(n_interp, pairs, 2)`` drawn over ``background`` points, with
    the data points the paths join (``ends``: ``(2, pairs, 2)``) marked."""
    bg, pts, e = _numpy(background), _numpy(paths), _numpy(ends)
    if pts.ndim != 3 or pts.shape[2] != 2 or e.shape != (2, *pts.shape[1:]):
        raise InputError(f"need paths (n, pairs, 2) and ends (2, pairs, 2), got {pts.shape} and {e.shape}")
    lim = axis_limits(bg, pts, e)
    fig = Figure(figsize=(5.0, 5.3), layout="constrained")
    ax = fig.subplots()
    ax.scatter(bg[:, 0], bg[:, 1], s=2, alpha=0.25, color="0.5", rasterized=True)
    for j in range(pts.shape[1]):
        color = f"C{j % 10}"
        ax.plot(pts[:, j, 0], pts[:, j, 1], "-o", ms=3, lw=1, color=color)
        ax.scatter(e[:, j, 0], e[:, j, 1], s=60, marker="*", color=color, edgecolors="k", zorder=3)
    ax.set_title(_wrap(title, 5.0, 10), fontsize=10)
    _square(ax, lim)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)

