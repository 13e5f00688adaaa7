"""Reconstruction error of encode -> decode (DDIM inversion and the PF-ODE) vs steps and NFE.

Each problem's data are encoded with ``sd.encode`` (data placed at t_end = 1e-3, the default)
and decoded with ``sd.sample(..., x_T=z, t_end=1e-3, denoise=False)`` over the same grid (the
samplers' default, uniform in t). Methods: DDIM (η = 0, Euler in σ̄), the PF-ODE with Heun and
RK4 at 5, 10, 20, 50, 100 steps, and adaptive dopri5 at a few tolerances (rtol = atol).

Problems:
  ring2d   the 2-D ring mixture (scoresde.data.ring_mixture), VP, exact eps oracle, float64
  gmm64    an 8-component 64-D Gaussian mixture in [-1, 1]-ish pixel scale, VP, exact oracle, float64
  digits   the shipped 8×8 digits DDPM (configs/digits_vp.py, package data digits_vp), float32, its
           297 test images; skipped with a printed line if the checkpoint is absent

Reported per row: per-dimension MSE (the DDIM paper's metric: CIFAR-10 0.014 at 10 steps to
0.0009 at 100), MSE relative to the data's per-dimension variance, max |error|, NFE of encode
and decode, wall time of both, and the std of the latents in prior units (≈ 1 if they look like
prior draws).

    python benchmarks/reconstruction.py            # full run, writes results/reconstruction_<device>.*
    python benchmarks/reconstruction.py --quick    # smoke run: 2 step counts, small batches, prints only
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.assets import SHIPPED, shipped_model
from scoresde.data import ring_mixture
from scoresde.experiment import config_from_checkpoint, find_model, load_data, load_trained

RESULTS = Path(__file__).parent / "results"
T_END = 1e-3
STEPS = (5, 10, 20, 50, 100)
TOLS_ORACLE = (1e-3, 1e-5, 1e-7)
TOLS_NET = (1e-3, 1e-4, 1e-5)  # a float32 network: tighter tolerances only chase round-off
METHODS = (("ddim", "ddim", {}), ("heun", "ode", {"method": "heun"}), ("rk4", "ode", {"method": "rk4"}))
# DDIM paper (Song et al. 2021), Table 2: CIFAR-10 test set, per-dimension MSE, S steps each way.
DDIM_PAPER_CIFAR10 = {10: 0.014, 100: 0.0009}


REF_N = 32  # latents checked against the reference: the first REF_N points of each problem
REF_STEPS = 400  # reference encoder: RK4 on the logSNR grid (fine near the data end)


class Problem:
    def __init__(self, name: str, model: sd.ScoreModel, x: torch.Tensor, note: str, tols: tuple[float, ...]):
        self.name, self.model, self.x, self.note, self.tols = name, model, x, note, tols
        self.z_ref: torch.Tensor | None = None
        self.ref_err = float("nan")

    def reference(self, quick: bool) -> None:
        """A tight encoding of the first REF_N points, and its own error estimate (vs RK4 on the
        Karras grid at the same steps). Needed because the round trip of a fixed-step method
        over one grid is far more accurate than either half (see benchmarks/README.md)."""
        steps = 100 if quick else REF_STEPS
        x = self.x[:REF_N]
        self.z_ref = sd.encode(self.model, x, "ode", steps, method="rk4", grid="logsnr", t_end=T_END).x
        check = sd.encode(self.model, x, "ode", steps, method="rk4", grid="karras", t_end=T_END).x
        self.ref_err = rms(check - self.z_ref) / self.model.sde.prior_std


def rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt())


def oracle_problems(n: int, device: torch.device) -> list[Problem]:
    f64 = torch.float64
    ring = ring_mixture()
    g = torch.Generator().manual_seed(0)
    # 8 modes with means in [-0.6, 0.6]^64 and stds 0.1–0.3: image-like scale and per-dim variance.
    gmm = sd.GaussianMixture(0.6 * (2 * torch.rand(8, 64, generator=g, dtype=f64) - 1),
                             0.1 + 0.2 * torch.rand(8, generator=g, dtype=f64))
    out = []
    for name, mix, note in (("ring2d", ring, "2-D ring mixture (8 modes + centre), VP, exact eps"),
                            ("gmm64", gmm, "64-D 8-component mixture, VP, exact eps")):
        x = mix.sample(n, torch.Generator().manual_seed(1), f64).to(device)
        out.append(Problem(name, mix.score_model(sd.VPSDE(), prediction="eps"), x, note, TOLS_ORACLE))
    return out


def digits_problem(source: str, n: int | None, device: torch.device) -> Problem | None:
    ckpt = find_model(shipped_model(source) if source in SHIPPED else Path(source))
    if ckpt is None:
        print(f"digits: skipped — no trained model in {source} (train one with `scoresde train "
              "--config=configs/digits_vp.py --workdir=DIR` and pass --digits-model=DIR)")
        return None
    config = config_from_checkpoint(ckpt)  # a checkpoint stores its data/sde/model config
    model = load_trained(config, ckpt)
    model.net.to(device)
    x, _ = load_data(config, "test")
    x = x[:n] if n else x
    return Problem("digits", model, x.to(device=device, dtype=torch.float32),
                   f"8×8 digits DDPM ({ckpt.name}), {len(x)} test images in [-1, 1], float32", TOLS_NET)


def run_one(problem: Problem, method: str, sampler: str, steps: int | None, options: dict,
            device: torch.device) -> dict:
    x, model = problem.x, problem.model
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    # The uniform grid explicitly (the results were measured on it; the samplers' defaults changed
    # since); adaptive methods take no grid.
    grid = {} if steps is None else {"grid": "uniform"}
    z = sd.encode(model, x, sampler, steps, t_end=T_END, **grid, **options)
    sync()
    t1 = time.perf_counter()
    back = sd.sample(model, tuple(x.shape), sampler, steps, x_T=z.x, t_end=T_END, denoise=False,
                     dtype=x.dtype, device=device, **grid, **options)
    sync()
    t2 = time.perf_counter()
    err = (back.x - x).double()
    xd = x.double().flatten(1)
    mse = float(err.pow(2).mean())
    return {
        "problem": problem.name, "method": method,
        "steps": steps if steps is not None else "",
        "tol": options.get("rtol", ""),
        "dim": xd.shape[1], "n": len(x), "dtype": str(x.dtype).replace("torch.", ""),
        "nfe_encode": z.nfe, "nfe_decode": back.nfe, "nfe": z.nfe + back.nfe,
        "mse": mse, "rel_mse": mse / float(xd.var(0).mean()),
        "max_abs_err": float(err.abs().max()),
        "latent_std": float((z.x.double() / model.sde.prior_std).std()),
        "latent_rmse": rms(z.x[:REF_N] - problem.z_ref) / model.sde.prior_std,
        "wall_encode_s": t1 - t0, "wall_decode_s": t2 - t1, "wall_s": t2 - t0,
    }


def configurations(problem: Problem, quick: bool):
    steps = (5, 20) if quick else STEPS
    for method, sampler, options in METHODS:
        for s in steps:
            yield method, sampler, s, options
    for tol in problem.tols[:1] if quick else problem.tols:
        yield "dopri5", "ode", None, {"method": "dopri5", "rtol": tol, "atol": tol}


def _steps_table(title: str, problems, rows: list[dict], cell) -> list[str]:
    """A Markdown section: one row per (problem, method), one column per step count."""
    lines = ["", f"## {title}", "", "| problem | method | " + " | ".join(f"{s} steps" for s in STEPS) + " |",
             "|---|---|" + "---|" * len(STEPS)]
    for p in problems:
        for method, _, _ in METHODS:
            cells = []
            for s in STEPS:
                r = [r for r in rows if r["problem"] == p.name and r["method"] == method and r["steps"] == s]
                cells.append(cell(r[0]) if r else "—")
            lines.append(f"| {p.name} | {method} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict], problems: list[Problem], meta: dict, skipped: str | None) -> str:
    lines = [f"# Reconstruction error: encode -> decode ({meta['date']}, torch {meta['torch']}, "
             f"{meta['device']}, {meta['threads']} thread(s))", "",
             "Per-dimension MSE of `decode(encode(x))` against `x`, data placed at t_end = 1e-3, "
             "uniform grid, same grid both ways. NFE = encode + decode. The DDIM paper reports "
             "CIFAR-10 per-dimension MSE 0.014 at 10 steps and 0.0009 at 100 (Table 2).", ""]
    for p in problems:
        lines.append(f"* **{p.name}**: {p.note}; n = {len(p.x)}, D = {p.x[0].numel()}; reference "
                     f"latents' own error ≈ {p.ref_err:.1e}")
    if skipped:
        lines.append(f"* **digits**: {skipped}")
    lines += _steps_table("MSE at each step count (NFE in brackets)", problems, rows,
                          lambda r: f"{r['mse']:.2e} ({r['nfe']})")
    lines += _steps_table("Error of the latent itself (RMS vs the reference encoding, prior units)",
                          problems, rows, lambda r: f"{r['latent_rmse']:.1e}")
    lines += ["", "## All runs", "",
              "Columns: NFE of encode + decode; per-dimension MSE of the reconstruction; the same "
              "relative to the data's per-dimension variance; max |error|; RMS error of the latent "
              f"(first {REF_N} points) against the reference, in prior units; std of the latents in "
              "prior units; wall time of encode + decode.", "",
              "| problem | method | steps | tol | NFE enc+dec | MSE/dim | rel. MSE | max abs err "
              "| latent RMSE | latent std | wall s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tol = f"{r['tol']:.0e}" if r["tol"] != "" else ""
        lines.append(f"| {r['problem']} | {r['method']} | {r['steps']} | {tol} | "
                     f"{r['nfe_encode']}+{r['nfe_decode']} | {r['mse']:.2e} | {r['rel_mse']:.2e} | "
                     f"{r['max_abs_err']:.2e} | {r['latent_rmse']:.1e} | {r['latent_std']:.3f} | "
                     f"{r['wall_s']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], problems: list[Problem], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(problems), figsize=(4.6 * len(problems), 4.0), squeeze=False)
    colors = {"ddim": "C0", "heun": "C1", "rk4": "C2", "dopri5": "C3"}
    for ax, p in zip(axes[0], problems):
        for method in colors:
            rs = sorted((r for r in rows if r["problem"] == p.name and r["method"] == method),
                        key=lambda r: r["nfe"])
            if rs:
                ax.loglog([r["nfe"] for r in rs], [max(r["mse"], 1e-30) for r in rs], "o-",
                          color=colors[method], label=method)
        if p.name == "digits":
            ax.loglog([2 * s for s in DDIM_PAPER_CIFAR10], list(DDIM_PAPER_CIFAR10.values()), "k*",
                      ms=10, label="DDIM paper, CIFAR-10")
        ax.set_title(p.name)
        ax.set_xlabel("NFE (encode + decode)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("per-dimension MSE of the reconstruction")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="steps 5 and 20, one tolerance, 64 oracle points and 32 digits; prints only")
    parser.add_argument("--n", type=int, default=512, help="oracle problems' batch size")
    parser.add_argument("--n-digits", type=int, default=0, help="digits test images (0: all 297)")
    parser.add_argument("--digits-model", default="digits_vp",
                        help="trained digits model: workdir, checkpoint or shipped name (default digits_vp)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=None,
                        help="CSV path (default results/reconstruction_<device>.csv; .md and .png beside it)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = 64 if args.quick else args.n
    n_digits = 32 if args.quick else args.n_digits

    try:
        from tqdm.auto import tqdm
    except ImportError:  # optional
        tqdm = None

    start = time.perf_counter()
    problems = oracle_problems(n, device)
    digits = digits_problem(args.digits_model, n_digits, device)
    skipped = None if digits is not None else f"skipped: no trained model in {args.digits_model}"
    if digits is not None:
        problems.append(digits)

    for p in problems:
        t0 = time.perf_counter()
        p.reference(args.quick)
        print(f"{p.name}: reference latents of {min(REF_N, len(p.x))} points in "
              f"{time.perf_counter() - t0:.0f} s, own error ≈ {p.ref_err:.1e} (RMS, prior units)")
    jobs = [(p, *cfg) for p in problems for cfg in configurations(p, args.quick)]
    rows = []
    bar = tqdm(jobs, unit="run", disable=None) if tqdm is not None else jobs  # off without a TTY
    for p, method, sampler, steps, options in bar:
        row = run_one(p, method, sampler, steps, options, device)
        rows.append(row)
        msg = (f"{p.name:7s} {method:6s} steps={row['steps']!s:>4s} tol={row['tol']!s:>6s} "
               f"nfe={row['nfe']:5d} mse={row['mse']:.3e} rel={row['rel_mse']:.2e} "
               f"latent_rmse={row['latent_rmse']:.2e} latent_std={row['latent_std']:.3f} "
               f"wall={row['wall_s']:.2f}s")
        if tqdm is not None:
            bar.write(msg)
        else:
            print(msg, flush=True)
    total = time.perf_counter() - start
    print(f"total {total:.0f} s")

    meta = {"device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": datetime.date.today().isoformat()}
    if args.quick and args.out is None:
        print(markdown(rows, problems, meta, skipped))
        return
    out = Path(args.out) if args.out else RESULTS / f"reconstruction_{device.type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*meta, *rows[0]])
        writer.writeheader()
        for row in rows:
            writer.writerow({**meta, **row})
    out.with_suffix(".md").write_text(markdown(rows, problems, meta, skipped)
                                      + f"\nTotal run time {total:.0f} s.\n")
    plot(rows, problems, out.with_suffix(".png"))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
