"""Each of our sampler families beside its peer implementation, and the issue's targets.

A *pair* is one of our variants (by its label in :func:`scoresde.samplers.variants`) and the peer
that implements the same method. It is measured twice:

* **equal grid**: our sampler on the peer's own time grid (diffusers' trailing timesteps, our
  ``trailing`` grid; k-diffusion's Karras sigmas, our ``edm`` grid) — same method, same grid, same
  NFE, so the ratio of MMD² tests the implementation (deterministic pairs coincide to float
  precision; stochastic ones differ by their noise draws);
* **own defaults**: our variant on its default grid against the peer on its recommended grid.

Ratios are ours / peer at equal NFE, of the metric raised to the noise floor's threshold (below
it runs cannot be told apart); ≤ 1 means ours is at least as good.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import scoresde as sd
from suite import report
from suite.common import Variant, fmt

# (our variant label, peer label, the peer's grid in our names)
PAIRS: tuple[tuple[str, str, str], ...] = (
    ("ancestral posterior", "diffusers DDPM", "trailing"),
    ("ddim eta=0", "diffusers DDIM", "trailing"),
    ("dpm++ 2M", "diffusers DPM-Solver++(2M)", "trailing"),
    ("dpm++ 3M", "diffusers DPM-Solver++(3M)", "trailing"),
    ("unipc bh2 2", "diffusers UniPC", "trailing"),
    ("euler ancestral", "diffusers Euler-ancestral", "trailing"),
    ("edm heun", "k-diffusion Heun", "edm"),
    ("edm euler", "k-diffusion Euler", "edm"),
    ("dpm++ 2M", "k-diffusion DPM++(2M)", "edm"),
    ("lms 4", "k-diffusion LMS", "edm"),
    ("euler ancestral", "k-diffusion Euler-ancestral", "edm"),
    ("dpm++ 2M SDE", "k-diffusion DPM++(2M) SDE", "edm"),
    ("dpm++ 3M SDE", "k-diffusion DPM++(3M) SDE", "edm"),
)
TARGETS = (5, 10, 20)


def equal_grid_label(label: str, grid: str) -> str:
    return f"{label} [{grid} grid]"


def pair_variants(ours: Sequence[Variant], peers: Sequence[Variant]) -> list[Variant]:
    """Our side of every pair whose two variants exist, re-run on the peer's grid."""
    by_label = {v.label: v for v in ours}
    peer_labels = {v.label for v in peers}
    out: dict[str, Variant] = {}
    for label, peer, grid in PAIRS:
        v = by_label.get(label)
        if v is None or peer not in peer_labels:
            continue
        name = equal_grid_label(label, grid)
        out[name] = Variant(name, v.sampler, dict(v.options), grid=grid)
    return list(out.values())


def _by_target(rows: Sequence[dict[str, Any]], label: str, metric: str) -> dict[int, dict[str, Any]]:
    return {r["target_nfe"]: r for r in rows if r["sampler"] == label and r.get("target_nfe") is not None
            and math.isfinite(r.get(metric, math.nan))}


def floored(row: dict[str, Any], metric: str) -> float:
    """``metric`` raised to the noise floor's threshold where the row has one: below it two runs
    cannot be told apart (and the unbiased MMD² may be negative there)."""
    return max(row[metric], row.get("floor_threshold") or 0.0)


def ratio(a: dict[str, Any], b: dict[str, Any], metric: str) -> float:
    """``a/b`` of the floored metric (:func:`floored`)."""
    den = floored(b, metric)
    return floored(a, metric) / den if den > 0 else math.nan


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, metric: str) -> str:
    if a is None or b is None or a["nfe"] != b["nfe"]:
        return "—"
    if a.get("at_floor") and b.get("at_floor"):
        return "both at floor"
    return f"{ratio(a, b, metric):.2f}"


def pairs_table(rows: Sequence[dict[str, Any]], metric: str = "mmd2") -> str:
    """Ratios ours/peer at :data:`TARGETS`, on the peer's grid and on each side's defaults."""
    body = []
    for label, peer, grid in PAIRS:
        equal = _by_target(rows, equal_grid_label(label, grid), metric)
        ours = _by_target(rows, label, metric)
        theirs = _by_target(rows, peer, metric)
        if not theirs or not ours:
            continue
        cells = [_ratio(equal.get(t), theirs.get(t), metric) for t in TARGETS]
        cells += [_ratio(ours.get(t), theirs.get(t), metric) for t in TARGETS]
        body.append([f"{label} vs {peer}", *cells])
    head = ["pair (ours vs peer)", *(f"equal grid, {t} NFE" for t in TARGETS),
            *(f"own defaults, {t} NFE" for t in TARGETS)]
    return report.table(head, body)


def best_at(rows: Sequence[dict[str, Any]], library: str | None, target: int,
            metric: str = "mmd2") -> dict[str, Any] | None:
    """The run with the lowest ``metric`` at exactly ``target`` NFE among ``library``'s variants at
    their defaults (``None``: the peers), equal-grid re-runs and optimised grids excluded."""
    def eligible(r: dict[str, Any]) -> bool:
        if r["library"] == "exact" or r.get("target_nfe") != target or r["nfe"] != target:
            return False
        if "[" in r["sampler"]:
            return False
        return r["library"] != "scoresde" if library is None else r["library"] == library
    runs = [r for r in rows if eligible(r) and math.isfinite(r.get(metric, math.nan))]
    return min(runs, key=lambda r: r[metric]) if runs else None


def targets_lines(rows: Sequence[dict[str, Any]], problem: str, metric: str = "mmd2") -> list[str]:
    """The issue's measured targets for one problem, as Markdown lines."""
    rows = [r for r in rows if r["problem"] == problem]
    lines = []
    ours_main = {v.label for v in sd.samplers.variants()}
    reached = []
    for label in ours_main:
        runs = [r for r in rows if r["sampler"] == label]
        first = report.floor_reached(runs) if runs and metric == "mmd2" else None
        if first is not None:
            reached.append((first["nfe"], label))
    if metric == "mmd2":
        if reached:
            nfe, label = min(reached)
            lines.append(f"- Fewest NFE at the noise floor (and staying there), scoresde at its defaults: "
                         f"**{nfe}** (`{label}`); target ≤ 10: {'met' if nfe <= 10 else 'not met'}.")
        peer_reached = []
        for label in {r["sampler"] for r in rows if r["library"] not in ("scoresde", "exact")}:
            first = report.floor_reached([r for r in rows if r["sampler"] == label])
            if first is not None:
                peer_reached.append((first["nfe"], label))
        if peer_reached:
            nfe, label = min(peer_reached)
            lines.append(f"- Fewest NFE at the floor among the peers: {nfe} (`{label}`).")
    for target in TARGETS:
        ours, theirs = best_at(rows, "scoresde", target, metric), best_at(rows, None, target, metric)
        if ours is None or theirs is None:
            continue
        if ours.get("at_floor") and theirs.get("at_floor"):
            lines.append(f"- {target} NFE: best scoresde `{ours['sampler']}` and best peer "
                         f"`{theirs['sampler']}` are both at the noise floor ({fmt(ours[metric])} vs "
                         f"{fmt(theirs[metric])}).")
            continue
        r = ratio(ours, theirs, metric)
        lines.append(f"- {target} NFE: best scoresde `{ours['sampler']}` {fmt(ours[metric])}, best peer "
                     f"`{theirs['sampler']}` {fmt(theirs[metric])}: ratio **{r:.2f}** (target ≤ 0.5: "
                     f"{'met' if r <= 0.5 else 'not met'}).")
    return lines
