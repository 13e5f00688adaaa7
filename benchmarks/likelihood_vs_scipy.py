"""PF-ODE log-likelihood: scoresde (torchdiffeq dopri5) vs a score_sde-style scipy reference.

Usage::

    python benchmarks/likelihood_vs_scipy.py            # batches of 64 and 512, 3 repeats;
                                                        # writes results/likelihood_<device>.csv/.md
    python benchmarks/likelihood_vs_scipy.py --quick    # smoke run (8 samples, 1 repeat), prints only
    python benchmarks/likelihood_vs_scipy.py --device cuda

Both methods integrate the same probability-flow ODE of the same exact Gaussian-mixture score
at the same tolerance (rtol = atol = 1e-5) from eps = 1e-5 to T = 1, on the same samples,
with the same divergence estimator (exact trace for D ≤ 8, otherwise one fixed Rademacher
probe per sample, the *same* probe for both) and the exact p_T of the mixture as prior, so the
error columns measure the ODE solve, not the prior mismatch:

* ``scoresde``: ``sd.log_likelihood(method="dopri5")`` — torchdiffeq on the device, in DDIM
  coordinates ``dx̄/dσ̄ = eps`` (see scoresde/likelihood.py).
* ``reference``: written below, the approach of score_sde's ``likelihood.py``: scipy
  ``solve_ivp(RK45)`` on a flattened float64 numpy copy of the batch plus the log-density, in
  t: ``dx/dt = f(t)x − ½g(t)² score(x, t)``, ``d(Δlogp)/dt = div_x(drift)``; every evaluation
  copies the state host → device and the result device → host. ``log p = log p_T(z) + Δlogp``.

Columns: ``nfe`` network evaluations of the whole batch solve; ``wall_s`` median wall time over
``--repeats`` side-by-side repeats (methods interleaved); ``err_nats_per_dim`` mean |log p − exact
log p_eps(x)| / D (for Hutchinson rows this includes the probe's estimation error, identical for
both methods); ``solver_err_nats_per_dim`` mean |log p − tight| / D where ``tight`` is the same
estimator with the same probe solved by the reference at DOP853, rtol = atol = 1e-10.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import torch
from scipy.integrate import solve_ivp

import scoresde as sd

EPS, T = 1e-5, 1.0
TOL = 1e-5
RESULTS = Path(__file__).resolve().parent / "results"


# --- problems -------------------------------------------------------------------------------


def mixture(dim: int, k: int, seed: int) -> sd.GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(k, dim, generator=g, dtype=torch.float64)
    stds = 0.3 + 0.4 * torch.rand(k, generator=g, dtype=torch.float64)
    return sd.GaussianMixture(means, stds, 0.5 + torch.rand(k, generator=g, dtype=torch.float64))


PROBLEMS = {  # name: (dimension, components, seed)
    "gmm2d": (2, 3, 0),
    "gmm64d": (64, 4, 1),
}
SDES = {"vp": sd.VPSDE, "ve": sd.VESDE}


class FixedProbe:
    """A NoiseSource that hands scoresde the benchmark's own Rademacher probe (±1 is kept by
    ``sign``), so that both methods estimate the divergence with identical vectors."""

    def __init__(self, probe: torch.Tensor):
        self.probe = probe

    def randn(self, shape, dtype, device):
        assert tuple(shape) == tuple(self.probe.shape)
        return self.probe.to(device=device, dtype=dtype)


# --- the reference: score_sde's approach with scipy ----------------------------------------------


def reference_log_likelihood(score_fn, sde: sd.SDE, x: torch.Tensor, prior_logp, probe=None,
                             method: str = "RK45", rtol: float = TOL, atol: float = TOL):
    """log p(x) by scipy ``solve_ivp`` on the t-domain PF-ODE; returns (logp, z, nfe)."""
    device, shape = x.device, x.shape
    b, d = shape[0], x[0].numel()

    def drift_fn(x_t: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((b,), t, dtype=torch.float64, device=device)
        f, g2 = float(sde.f(t)), float(sde.g2(t))
        return f * x_t - 0.5 * g2 * score_fn(x_t, tt)

    def divergence(drift: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        if probe is not None:  # Hutchinson-Skilling with a fixed probe
            (vjp,) = torch.autograd.grad(drift, x_t, probe)
            return (vjp * probe).flatten(1).sum(1)
        flat, div = drift.flatten(1), torch.zeros(b, dtype=x_t.dtype, device=device)
        for i in range(d):
            (g,) = torch.autograd.grad(flat[:, i].sum(), x_t, retain_graph=i < d - 1)
            div = div + g.flatten(1)[:, i]
        return div

    def ode_func(t: float, state: np.ndarray) -> np.ndarray:
        x_t = torch.from_numpy(state[: b * d]).reshape(shape).to(device).requires_grad_(True)
        with torch.enable_grad():
            drift = drift_fn(x_t, t)
            div = divergence(drift, x_t)
        return np.concatenate([drift.detach().cpu().numpy().ravel(), div.detach().cpu().numpy()])

    init = np.concatenate([x.detach().cpu().numpy().astype(np.float64).ravel(), np.zeros(b)])
    sol = solve_ivp(ode_func, (EPS, T), init, rtol=rtol, atol=atol, method=method)
    if not sol.success:
        raise RuntimeError(sol.message)
    end = sol.y[:, -1]
    z = torch.from_numpy(end[: b * d]).reshape(shape).to(device)
    delta = torch.from_numpy(end[b * d:]).to(device)
    return prior_logp(z) + delta, z, sol.nfev


# --- the benchmark --------------------------------------------------------------------------


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def run_problem(name: str, sde_name: str, n: int, repeats: int, device: str) -> list[dict]:
    dim, k, seed = PROBLEMS[name]
    sde = SDES[sde_name]()
    gmm = mixture(dim, k, seed)
    x = gmm.sample(n, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64).to(device)
    model = gmm.score_model(sde, prediction="score", time_input="continuous")  # the same oracle
    exact = gmm.log_prob_at(sde, x, EPS)
    prior = lambda z: gmm.log_prob_at(sde, z, T)  # noqa: E731 - exact p_T of the mixture

    if dim <= 8:
        trace, probe, ours_kwargs = "exact", None, {}
    else:
        trace = "rademacher"
        probe = torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 200),
                                       dtype=torch.float64)).to(device)
        ours_kwargs = {"probes": 1, "generator": FixedProbe(probe)}

    def ours():
        res = sd.log_likelihood(model, x, trace=trace, method="dopri5", rtol=TOL, atol=TOL, eps=EPS,
                                prior_logp=prior, **ours_kwargs)
        return res.logp, int(res.nfe[0])

    def reference():
        logp, _, nfe = reference_log_likelihood(model.score, sde, x, prior, probe)
        return logp, nfe

    tight, _, _ = reference_log_likelihood(model.score, sde, x, prior, probe, method="DOP853",
                                           rtol=1e-10, atol=1e-10)
    walls = {"scoresde": [], "reference": []}
    outs = {}
    for _ in range(repeats):
        for label, fn in (("scoresde", ours), ("reference", reference)):
            outs[label], wall = timed(fn, device)
            walls[label].append(wall)

    rows = []
    for label, solver in (("scoresde", "torchdiffeq dopri5 (sigma_bar)"), ("reference", "scipy RK45 (t)")):
        logp, nfe = outs[label]
        rows.append({
            "problem": name, "dim": dim, "sde": sde_name, "n_samples": n, "method": label,
            "solver": solver, "trace": trace, "rtol": TOL, "atol": TOL, "nfe": nfe,
            "wall_s": statistics.median(walls[label]),
            "ms_per_nfe": 1e3 * statistics.median(walls[label]) / nfe,
            "err_nats_per_dim": float((logp - exact).abs().mean()) / dim,
            "solver_err_nats_per_dim": float((logp - tight).abs().mean()) / dim,
        })
    # sanity: the tight solution is the exact log-density when the trace is exact
    rows[0]["tight_vs_exact_nats_per_dim"] = rows[1]["tight_vs_exact_nats_per_dim"] = (
        float((tight - exact).abs().mean()) / dim)
    return rows


COLUMNS = ["device", "torch_version", "scipy_version", "date", "problem", "dim", "sde", "n_samples",
           "method", "solver", "trace", "rtol", "atol", "nfe", "wall_s", "ms_per_nfe", "err_nats_per_dim",
           "solver_err_nats_per_dim", "tight_vs_exact_nats_per_dim", "repeats", "threads"]


def markdown(rows: list[dict]) -> str:
    head = ("| problem | D | SDE | n | trace | method | NFE | wall (s) | ms/NFE | speed-up "
            "| err vs exact (nats/dim) | solver err (nats/dim) |\n"
            "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for i in range(0, len(rows), 2):
        ours, ref = rows[i], rows[i + 1]
        for r in (ours, ref):
            speed = ref["wall_s"] / r["wall_s"]
            lines.append(f"| {r['problem']} | {r['dim']} | {r['sde']} | {r['n_samples']} | {r['trace']} "
                         f"| {r['method']} | {r['nfe']} | {r['wall_s']:.3f} | {r['ms_per_nfe']:.2f} "
                         f"| {speed:.2f}× | {r['err_nats_per_dim']:.2e} "
                         f"| {r['solver_err_nats_per_dim']:.2e} |")
    r0 = rows[0]
    meta = (f"\ndevice `{r0['device']}`, torch {r0['torch_version']}, scipy {r0['scipy_version']}, "
            f"{r0['date']}, rtol = atol = {TOL:g}, eps = {EPS:g}, median of "
            f"{r0['repeats']} repeats, {r0['threads']} CPU thread(s). Speed-up = reference wall time "
            "/ this row's wall time.\n")
    return head + "\n".join(lines) + "\n" + meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 samples, 1 repeat, print only")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--n", default=None,
                        help="comma-separated batch sizes, one solve of the whole batch each "
                             "(default 64,512)")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: these are many tiny ops, where the "
                             "thread pool only adds overhead; 0 keeps torch's default)")
    parser.add_argument("--out", default=None,
                        help="CSV path (default results/likelihood_<device>.csv; --quick writes none)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda requested but torch.cuda.is_available() is False")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sizes = [int(v) for v in args.n.split(",")] if args.n else ([8] if args.quick else [64, 512])
    repeats = args.repeats or (1 if args.quick else 3)
    meta = {"device": args.device, "torch_version": torch.__version__, "scipy_version": scipy.__version__,
            "date": dt.date.today().isoformat(), "repeats": repeats, "threads": torch.get_num_threads()}

    start = time.perf_counter()
    rows = []
    for n in sizes:
        for name in PROBLEMS:
            for sde_name in SDES:
                t0 = time.perf_counter()
                for r in run_problem(name, sde_name, n, repeats, args.device):
                    rows.append({**meta, **r})
                print(f"n={n} {name}/{sde_name}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    table = markdown(rows)
    print("\n" + table)
    print(f"total {time.perf_counter() - start:.1f} s")

    out = args.out or (None if args.quick else str(RESULTS / f"likelihood_{args.device.split(':')[0]}.csv"))
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for r in rows:
                writer.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in COLUMNS})
        path.with_suffix(".md").write_text("# PF-ODE likelihood: scoresde vs scipy reference\n\n" + table)
        print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
