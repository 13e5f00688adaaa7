"""Imputation: each inpainting method against the exact conditional of a Gaussian mixture, vs steps.

For a mixture with diagonal components the conditional given observed coordinates is a mixture
again (``GaussianMixture.condition_on``), so completions can be scored against exact conditional
draws. Methods (``scoresde.inpainting.inpaint``): replacement (score_sde's PC inpainting, ancestral
predictor), DDIM with replacement, and RePaint (jump_length = n_resample = 10, its paper's setting)
at 10, 20, 50, 100, 200, 500 steps on the VP SDE (β 0.1 → 20) with the exact eps oracle, float64,
the methods' default grids.

Problems (one observation vector each, the same for the whole batch):
  coupled4d  tests/test_inpainting.py's COUPLED: 2 components, prior weights 0.75/0.25, observe
             coordinates 0–1 where the posterior is 0.3/0.7, impute 2–3 (two modes)
  gmm16      16 coordinates (a 4×4 "image"), 6 components with random means and diagonal stds,
             observe the left half (8), impute the right half; y is the draw (of 200) whose exact
             conditional has the most even component weights

Reported per run: NFE, unbiased MMD² to exact conditional draws (the floor: mean + 4 sd over 16
exact-vs-exact pairs), and the total-variation distance between the component weights of the exact
conditional and the completions' (each completion assigned to its most responsible component; the
same statistic of exact draws is its floor).

    python benchmarks/imputation.py            # writes results/imputation_<device>.{csv,md,png}
    python benchmarks/imputation.py --quick    # 2 step counts, 256 samples; prints only
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite.common import environment, fmt, write_csv
from suite.report import table

import scoresde as sd
from scoresde.inpainting import inpaint
from scoresde.metrics import mmd2

F64 = torch.float64
RESULTS = Path(__file__).parent / "results"
STEPS = (10, 20, 50, 100, 200, 500)
METHODS = ("replace", "ddim", "repaint")
COLORS = {"replace": "C0", "ddim": "C1", "repaint": "C2"}


@dataclass(frozen=True)
class Problem:
    name: str
    mix: sd.GaussianMixture
    mask: torch.Tensor  # (D,) bools, True = observed
    y: torch.Tensor  # (D,), NaN where missing
    note: str

    @property
    def exact(self) -> sd.GaussianMixture:
        return self.mix.condition_on(self.mask, self.y)


def coupled4d() -> Problem:
    mix = sd.GaussianMixture(torch.tensor([[0.0, 0.0, -1.0, 0.0], [2.0, 2.0, 1.0, 0.0]], dtype=F64),
                             torch.full((2,), 0.3, dtype=F64), torch.tensor([0.75, 0.25], dtype=F64))
    c = (0.09 * math.log(7.0) + 4.0) / 4.0  # posterior log-odds log(0.7/0.3), see the test
    y = torch.tensor([c, c, math.nan, math.nan], dtype=F64)
    return Problem("coupled4d", mix, torch.tensor([True, True, False, False]), y,
                   "4-D, 2 components (prior 0.75/0.25), observe 2 coordinates, posterior 0.3/0.7")


def gmm16() -> Problem:
    g = torch.Generator().manual_seed(3)
    mix = sd.GaussianMixture(2 * torch.rand(6, 16, generator=g, dtype=F64) - 1,
                             0.15 + 0.2 * torch.rand(6, 16, generator=g, dtype=F64),
                             0.5 + torch.rand(6, generator=g, dtype=F64))
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:, :2] = True
    mask = mask.flatten()

    def entropy(y: torch.Tensor) -> float:
        w = mix.condition_on(mask, y).weights
        return float(-(w * w.log()).sum())

    y = max(mix.sample(200, g, F64), key=entropy).clone()
    y[~mask] = math.nan
    w = mix.condition_on(mask, y).weights
    return Problem("gmm16", mix, mask, y, "16-D (4×4), 6 components, observe the left half; exact "
                   f"conditional weights {', '.join(f'{v:.2f}' for v in sorted(w.tolist(), reverse=True))}")


def weight_tv(exact: sd.GaussianMixture, x: torch.Tensor) -> float:
    """TV distance between ``exact.weights`` and the share of ``x`` most responsible to each component."""
    logp = torch.stack([sd.GaussianMixture(mu[None], s[None]).log_prob(x) + w.log()
                        for mu, s, w in zip(exact.means, exact.stds, exact.weights)], 1)
    share = torch.bincount(logp.argmax(1), minlength=exact.num_components).to(F64) / len(x)
    return float(0.5 * (share - exact.weights).abs().sum())


def floors(p: Problem, n: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(7)
    exact = p.exact
    m = torch.tensor([mmd2(exact.sample(n, g, F64), exact.sample(n, g, F64)) for _ in range(16)])
    tv = torch.tensor([weight_tv(exact, exact.sample(n, g, F64)) for _ in range(16)])
    return {"mmd2_floor": float(m.mean() + 4 * m.std()), "tv_floor": float(tv.mean() + 4 * tv.std())}


def run_one(p: Problem, method: str, steps: int, n: int) -> dict:
    model = p.mix.score_model(sd.VPSDE(), prediction="eps")
    y = p.y.expand(n, -1).clone()
    t0 = time.perf_counter()
    out = inpaint(model, y, p.mask, method=method, steps=steps, generator=torch.Generator().manual_seed(1))
    wall = time.perf_counter() - t0
    x = out.x[:, ~p.mask]
    exact = p.exact.sample(n, torch.Generator().manual_seed(11), F64)
    return {"problem": p.name, "method": method, "steps": steps, "nfe": out.nfe, "n": n,
            "mmd2": mmd2(x, exact), "weight_tv": weight_tv(p.exact, x), "wall_s": wall}


def markdown(rows: list[dict], problems: list[Problem], fl: dict[str, dict], env: dict, total: float) -> str:
    lines = [f"# Imputation against the exact conditional ({env['date']}, torch {env['torch_version']}, "
             f"device {env['device']} ({env['device_name']}), {env['threads']} thread(s))", "",
             "Completions of `sd.inpainting.inpaint` against exact draws of the mixture's conditional "
             "given the observed coordinates (VP SDE, exact eps oracle, float64, default grids). "
             "RePaint: jump_length = n_resample = 10. Cells: MMD² (NFE in brackets); the floor is mean + "
             "4 sd over 16 exact-vs-exact pairs. Then the TV distance of the component weights.", ""]
    for p in problems:
        f = fl[p.name]
        lines.append(f"* **{p.name}**: {p.note}; n = {rows[0]['n']}; MMD² floor {fmt(f['mmd2_floor'])}, "
                     f"weight-TV floor {f['tv_floor']:.3f}")
    for title, cell in (("MMD² to exact conditional draws", lambda r: f"{fmt(r['mmd2'])} ({r['nfe']})"),
                        ("TV distance of the component weights", lambda r: f"{r['weight_tv']:.3f}")):
        steps = sorted({r["steps"] for r in rows})
        body = []
        for p in problems:
            for m in METHODS:
                cells = {r["steps"]: cell(r) for r in rows if r["problem"] == p.name and r["method"] == m}
                body.append([p.name, m, *(cells.get(s, "—") for s in steps)])
        lines += ["", f"## {title}", "", table(["problem", "method", *(f"{s} steps" for s in steps)], body,
                                               "ll" + "r" * len(steps))]
    lines += ["", f"Total run time {total:.0f} s."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], problems: list[Problem], fl: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(problems), figsize=(5.2 * len(problems), 4.2), squeeze=False)
    for ax, p in zip(axes[0], problems):
        floor = fl[p.name]["mmd2_floor"]
        for m in METHODS:
            rs = sorted((r for r in rows if r["problem"] == p.name and r["method"] == m),
                        key=lambda r: r["nfe"])
            ax.plot([r["nfe"] for r in rs], [max(r["mmd2"], floor / 10) for r in rs], "o-", color=COLORS[m],
                    markersize=3, label=m)
        ax.axhline(floor, color="grey", linestyle=":", label="noise floor (mean + 4 sd)")
        ax.set(xscale="log", yscale="log", xlabel="NFE (network evaluations)", title=p.name)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("MMD² to the exact conditional")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="steps 10 and 50, 256 samples; prints only")
    parser.add_argument("--n", type=int, default=1000, help="completions per run (and exact draws)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    n = 256 if args.quick else args.n
    steps = (10, 50) if args.quick else STEPS
    start = time.perf_counter()
    problems = [coupled4d(), gmm16()]
    fl = {p.name: floors(p, n) for p in problems}
    rows = []
    for p in problems:
        for m in METHODS:
            for s in steps:
                rows.append(run_one(p, m, s, n))
                r = rows[-1]
                print(f"{p.name:9s} {m:8s} steps={s:4d} nfe={r['nfe']:5d} mmd2={r['mmd2']:.3e} "
                      f"(floor {fl[p.name]['mmd2_floor']:.1e}) weight_tv={r['weight_tv']:.3f} "
                      f"wall={r['wall_s']:.1f}s", flush=True)
    total = time.perf_counter() - start
    env = environment(torch.device("cpu"))
    for r in rows:
        r.update(fl[r["problem"]], **env)
    text = markdown(rows, problems, fl, env, total)
    if args.quick:
        print(text)
        return
    csv_path = RESULTS / f"imputation_{env['device']}.csv"
    columns = ["problem", "method", "steps", "nfe", "n", "mmd2", "mmd2_floor", "weight_tv", "tv_floor",
               "wall_s", *env]
    write_csv(csv_path, rows, columns)
    csv_path.with_suffix(".md").write_text(text)
    plot(rows, problems, fl, csv_path.with_suffix(".png"))
    print(f"wrote {csv_path}, {csv_path.with_suffix('.md')}, {csv_path.with_suffix('.png')} ({total:.0f} s)")


if __name__ == "__main__":
    main()
