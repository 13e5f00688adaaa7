"""Result presentation: Markdown tables and quality-vs-NFE plots from result rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from suite.common import fmt

Row = dict[str, Any]
SUMMARY_NFE = (5, 10, 20)


def table(header: Sequence[str], body: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A Markdown table; ``align`` one character per column (``l`` or ``r``, default: first
    column left, others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *body]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def labels_in_order(rows: Sequence[Row]) -> list[str]:
    """Sampler labels in first-seen order, the floor row excluded."""
    seen: dict[str, None] = {}
    for r in rows:
        if r["library"] != "exact":
            seen.setdefault(r["sampler"], None)
    return list(seen)


def fixed_rows(rows: Sequence[Row], label: str) -> dict[int, Row]:
    """A label's fixed-step runs keyed by target NFE."""
    return {r["target_nfe"]: r for r in rows if r["sampler"] == label and r.get("target_nfe") is not None}


def adaptive_rows(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r["library"] != "exact" and r.get("target_nfe") is None]


def metric_table(rows: Sequence[Row], targets: Sequence[int], cell: Callable[[Row], str]) -> str:
    """Rows = fixed-step variants, columns = target NFE; ``—`` where a target was skipped.
    A cell whose actual NFE differs from its target shows it as ``value (NFE n)``."""
    body = []
    for label in labels_in_order(rows):
        runs = fixed_rows(rows, label)
        if not runs:
            continue
        cells = []
        for t in targets:
            r = runs.get(t)
            if r is None:
                cells.append("—")
            else:
                extra = f" ({r['nfe']})" if r["nfe"] != t else ""
                cells.append(cell(r) + extra)
        body.append([label, *cells])
    return table(["sampler \\ NFE", *(str(t) for t in targets)], body)


def floor_reached(runs: Sequence[Row]) -> Row | None:
    """The run with the fewest NFE from which on every run with more NFE is at the floor."""
    runs = sorted(runs, key=lambda r: r["nfe"])
    first = None
    for r in runs:
        if r["at_floor"]:
            first = first or r
        else:
            first = None
    return first


def summary_rows(rows: Sequence[Row], problem: str) -> list[list[str]]:
    """Per variant: smallest NFE at the floor (and staying there), MMD² at 5, 10 and 20 NFE."""
    rows = [r for r in rows if r["problem"] == problem]
    body = []
    for label in labels_in_order(rows):
        runs = [r for r in rows if r["sampler"] == label]
        reached = floor_reached(runs)
        by_target = fixed_rows(rows, label)
        at = []
        for t in SUMMARY_NFE:
            r = by_target.get(t)
            at.append("—" if r is None else fmt(r["mmd2"]) + (f" ({r['nfe']})" if r["nfe"] != t else ""))
        if reached is None:
            first = "not reached"
        elif reached.get("target_nfe") is None:
            tol = f"tol {reached['rtol']:g}" if reached.get("rtol") is not None else reached["options"]
            first = f"{reached['nfe']} ({tol})"
        else:
            first = str(reached["nfe"])
        body.append([label, runs[0]["library"], first, *at])
    return body


def summary_table(rows: Sequence[Row], problem: str) -> str:
    return table(["sampler", "library", "smallest NFE at the floor",
                  *(f"MMD² at {t} NFE" for t in SUMMARY_NFE)],
                 summary_rows(rows, problem), "llr" + "r" * len(SUMMARY_NFE))


# --- plots --------------------------------------------------------------------------------------

PANELS = (
    ("mmd2", "MMD² to exact samples (floored at the noise threshold)"),
    ("sw", "sliced Wasserstein-2"),
    ("logp_gap", "mean log p(samples) − mean log p(exact)  [nats]"),
)


PEER_COLORS = ("black", "dimgray", "darkgoldenrod", "darkviolet", "olive", "navy")


def _style(index: int, library: str) -> dict[str, Any]:
    """Line style of the ``index``-th sampler: ours solid in tab10 colours, peers dashed in others."""
    ours = library == "scoresde"
    color = plt.get_cmap("tab10").colors[index % 10] if ours else PEER_COLORS[index % len(PEER_COLORS)]
    return {"color": color, "linestyle": "-" if ours else "--", "marker": "o" if ours else "s",
            "markersize": 3, "linewidth": 1.2}


def _styles(rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """A style per sampler label, counting ours and peers separately."""
    counts: dict[bool, int] = {True: 0, False: 0}
    styles = {}
    for label in labels_in_order(rows):
        library = next(r["library"] for r in rows if r["sampler"] == label)
        ours = library == "scoresde"
        styles[label] = _style(counts[ours], library)
        counts[ours] += 1
    return styles


def plot_quality(rows: Sequence[Row], problem: str, title: str, path: Path) -> Path:
    """Quality vs NFE, log axes, one line per sampler (dashed: diffusers), three panels."""
    rows = [r for r in rows if r["problem"] == problem]
    floor = next(r for r in rows if r["library"] == "exact")
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    styles = _styles(rows)
    for label, style in styles.items():
        runs = sorted((r for r in rows if r["sampler"] == label and math.isfinite(r["mmd2"])),
                      key=lambda r: r["nfe"])
        if not runs:
            continue
        nfe = [r["nfe"] for r in runs]
        axes[0].plot(nfe, [max(r["mmd2"], floor["floor_threshold"]) for r in runs], label=label, **style)
        axes[1].plot(nfe, [r["sw"] for r in runs], **style)
        axes[2].plot(nfe, [r["logp_gap"] for r in runs], **style)
    axes[0].axhline(floor["floor_threshold"], color="grey", linestyle=":",
                    label="noise floor (mean + 2 sd)")
    axes[1].axhline(floor["sw"] + 2 * floor["sw_sd"], color="grey", linestyle=":")
    for sign in (1, -1):
        axes[2].axhline(floor["logp_gap"] + sign * 2 * floor["logp_gap_sd"], color="grey", linestyle=":")
    for ax, (key, name) in zip(axes, PANELS):
        ax.set_xscale("log")
        if key == "logp_gap":
            linthresh = 10.0 ** math.ceil(math.log10(max(1e-2, 2 * floor["logp_gap_sd"])))
            ax.set_yscale("symlog", linthresh=linthresh)
        else:
            ax.set_yscale("log")
        ax.set_xlabel("NFE (network evaluations)")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    fig.legend(loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metric(rows: Sequence[Row], metric: str, floor: float | None, floor_label: str, ylabel: str,
                title: str, path: Path) -> Path:
    """One metric vs NFE, log axes, one line per sampler (dashed: diffusers), a floor line."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, style in _styles(rows).items():
        runs = sorted((r for r in rows if r["sampler"] == label and math.isfinite(r[metric])),
                      key=lambda r: r["nfe"])
        if runs:
            ax.plot([r["nfe"] for r in runs], [r[metric] for r in runs], label=label, **style)
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle=":", label=floor_label)
    ax.set(xscale="log", yscale="log", xlabel="NFE (network evaluations)", ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


LIBRARY_COLORS = {"scoresde": "tab:blue", "diffusers": "tab:orange", "k-diffusion": "tab:green"}


def plot_pareto(rows: Sequence[Row], metric: str, floor: float | None, ylabel: str, title: str,
                path: Path) -> Path:
    """Quality against NFE on log axes: every variant as a thin line, and per library the Pareto
    front — at each NFE the best of its variants (at their own defaults; equal-grid re-runs
    excluded) — as a thick one."""
    rows = [r for r in rows if r["library"] != "exact" and r.get("target_nfe") is not None
            and math.isfinite(r.get(metric, math.nan)) and "[" not in r["sampler"]]
    fig, ax = plt.subplots(figsize=(9, 6))
    low = floor if floor is not None else min((r[metric] for r in rows if r[metric] > 0), default=1e-6)
    for label in labels_in_order(rows):
        runs = sorted((r for r in rows if r["sampler"] == label), key=lambda r: r["nfe"])
        color = LIBRARY_COLORS.get(runs[0]["library"], "grey")
        ax.plot([r["nfe"] for r in runs], [max(r[metric], low) for r in runs], color=color, alpha=0.2,
                linewidth=0.8)
    for library, color in LIBRARY_COLORS.items():
        front: dict[int, float] = {}
        for r in rows:
            if r["library"] == library:
                front[r["nfe"]] = min(front.get(r["nfe"], math.inf), max(r[metric], low))
        if front:
            nfe = sorted(front)
            best = [min(front[n] for n in nfe if n <= m) for m in nfe]  # best at this NFE or fewer
            ax.plot(nfe, best, color=color, linewidth=2.5, marker="o", markersize=4,
                    label=f"{library}: best variant at each NFE")
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle=":", label="noise floor")
    ax.set(xscale="log", yscale="log", xlabel="NFE (network evaluations)", ylabel=ylabel, title=title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
