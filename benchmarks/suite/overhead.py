"""Framework overhead: time per step of every sampler with a network of negligible cost.

The network is :class:`~scoresde.bench.common.StandardNormalEps` (two tensor ops: ``σ(t)·x``,
the exact eps of N(0, I) data), the state a small ``(batch, 2)`` tensor, so the time is the
sampler's own bookkeeping: time grids, coefficient maths, the model wrapper, noise draws,
solver logic. Every variant runs ``steps`` steps (dopri5 at rtol = atol = 1e-5 picks its own);
the median of ``repeats`` runs is reported per step and per network evaluation, and as a
ratio to our ``ddim`` (η = 0) per step. ``net_ms`` is the cost of one bare network call.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from suite import report
from suite.common import Variant, cheap_model, ddpm_sde, dopri5, timed, write_csv
from suite.runs import run_variant, warm_up

COLUMNS = ["device", "device_name", "torch_version", "diffusers_version", "date", "threads", "library",
           "sampler", "options", "batch", "steps", "nfe", "repeats", "wall_s", "ms_per_step", "ms_per_nfe",
           "ratio_to_ddim_per_step", "ratio_to_ddim_per_nfe", "net_ms"]


def net_call_ms(device: torch.device, batch: int, calls: int = 200) -> float:
    """Milliseconds per bare call of the cheap network."""
    model = cheap_model(ddpm_sde())
    x = torch.randn(batch, 2, device=device)
    c = torch.full((batch,), 500.0, device=device)

    def loop() -> None:
        for _ in range(calls):
            model.net(x, c)

    loop()
    return 1e3 * timed(loop, device)[1] / calls


def run_overhead(variants: Sequence[Variant], device: torch.device, steps: int = 100, batch: int = 64,
                 repeats: int = 5, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One row per variant: median wall time of ``repeats`` runs and the per-step ratios."""
    variants = [v for v in variants if not v.adaptive] + [dopri5(1e-5)]
    warm_up(variants, device)
    model = cheap_model(ddpm_sde())
    x_T = torch.randn(batch, 2, generator=torch.Generator().manual_seed(0)).to(device)
    net_ms = net_call_ms(device, batch)
    rows = []
    for v in variants:
        runs = []
        for _ in range(repeats):
            runs.append(run_variant(v, model, x_T, None, seed=0, steps=steps))
        wall = statistics.median(r.wall_s for r in runs)
        n_steps = runs[0].steps
        rows.append({"library": v.library, "sampler": v.label, "options": v.options_json(), "batch": batch,
                     "steps": n_steps, "nfe": runs[0].nfe, "repeats": repeats, "wall_s": wall,
                     "ms_per_step": 1e3 * wall / n_steps if n_steps else None,
                     "ms_per_nfe": 1e3 * wall / runs[0].nfe, "net_ms": net_ms})
        log(f"[overhead] {v.label:<28} {rows[-1]['nfe']:>4} NFE  {1e3 * wall / runs[0].nfe:.3f} ms/NFE")
    ddim = next(r for r in rows if r["sampler"] == "ddim eta=0")
    for r in rows:
        if r["ms_per_step"] is not None:
            r["ratio_to_ddim_per_step"] = r["ms_per_step"] / ddim["ms_per_step"]
        r["ratio_to_ddim_per_nfe"] = r["ms_per_nfe"] / ddim["ms_per_nfe"]
    return rows


def write_results(rows: Sequence[dict[str, Any]], env: dict[str, Any], out_dir: Path,
                  stem: str) -> list[Path]:
    """``<stem>.csv`` and ``<stem>.md``."""
    rows = [{**env, **r} for r in rows]
    csv_path = write_csv(out_dir / f"{stem}.csv", rows, COLUMNS)
    body = [[r["sampler"], r["library"], str(r["steps"] or "adaptive"), str(r["nfe"]),
             "—" if r["ms_per_step"] is None else f"{r['ms_per_step']:.3f}", f"{r['ms_per_nfe']:.3f}",
             "—" if r.get("ratio_to_ddim_per_step") is None else f"{r['ratio_to_ddim_per_step']:.2f}×",
             f"{r['ratio_to_ddim_per_nfe']:.2f}×"] for r in rows]
    r0 = rows[0]
    md = "\n".join([
        f"# Framework overhead per step ({r0['date']})", "",
        f"device `{r0['device']}` ({r0['device_name']}), torch {r0['torch_version']}, diffusers "
        f"{r0['diffusers_version']}, {r0['threads']} thread(s). Network: σ(t)·x (exact eps of N(0, I) "
        f"data, {r0['net_ms']:.3f} ms per bare call), state ({r0['batch']}, 2), median of {r0['repeats']} "
        "runs. Regenerate: `python benchmarks/samplers.py --parts overhead`.", "",
        report.table(["sampler", "library", "steps", "NFE", "ms/step", "ms/NFE", "× ddim per step",
                      "× ddim per NFE"], body, "llrrrrrr"), ""])
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(md)
    return [csv_path, md_path]
