"""PF-ODE log-likelihood: scoresde (torchdiffeq dopri5, torchode) vs a score_sde-style scipy reference.

Usage::

    python benchmarks/likelihood_vs_scipy.py            # batches of 64 and 512, 3 repeats; writes
                                                        # results/likelihood_<device>.csv/.md and
                                                        # results/likelihood_<device>_coordinates.csv/.md
    python benchmarks/likelihood_vs_scipy.py --quick    # smoke run (8 samples, 1 repeat), prints only
    python benchmarks/likelihood_vs_scipy.py --device cuda
    python benchmarks/likelihood_vs_scipy.py --parts coordinates   # only the NFE ablation

All methods integrate the same probability-flow ODE of the same exact Gaussian-mixture score
at the same tolerance (rtol = atol = 1e-5) from eps = 1e-5 to T = 1, on the same samples,
with the same divergence estimator (exact trace for D ≤ 8, otherwise one fixed Rademacher
probe per sample, the *same* probe for all) and the exact p_T of the mixture as prior, so the
error columns measure the ODE solve, not the prior mismatch.

Part ``main`` (wall time and NFE of the library against the reference):

* ``scoresde``: ``sd.log_likelihood(method="dopri5")`` — torchdiffeq on the device, in the
  library's likelihood coordinates (state x, variable u = asinh σ̄; see scoresde/likelihood.py),
  one step size for the whole batch.
* ``scoresde per-sample``: ``sd.log_likelihood(method="torchode_dopri5")`` — torchode, each
  sample with its own steps (skipped when torchode is not installed).
* ``reference``: written below, the approach of score_sde's ``likelihood.py``: scipy
  ``solve_ivp(RK45)`` on a flattened float64 numpy copy of the batch plus the log-density, in
  t: ``dx/dt = f(t)x − ½g(t)² score(x, t)``, ``d(Δlogp)/dt = div_x(drift)``; every evaluation
  copies the state host → device and the result device → host. ``log p = log p_T(z) + Δlogp``.

Columns: ``nfe`` network evaluations of the whole batch solve (for the per-sample method those of
its slowest sample: every call evaluates the whole batch); ``nfe_per_sample_mean`` the mean over
samples of the evaluations each sample's own solve needed (= ``nfe`` with a shared step size);
``wall_s`` median wall time over ``--repeats`` side-by-side repeats (methods interleaved);
``err_nats_per_dim`` mean |log p − exact log p_eps(x)| / D (for Hutchinson rows this includes the
probe's estimation error, identical for all methods); ``solver_err_nats_per_dim`` mean
|log p − tight| / D where ``tight`` is the same estimator with the same probe solved by the
reference at DOP853, rtol = atol = 1e-10.

Part ``coordinates`` (where the VP NFE gap came from): the same problems solved in three
coordinate systems — ``t, x`` (score_sde's, the reference's ODE), ``σ̄, x̄`` (flow.py's
``dx̄/dσ̄ = eps``, the library's likelihood coordinates before issue 13) and ``asinh σ̄, x`` (the
library's now) — each by torchdiffeq dopri5, scipy RK45 (both through ``sd.ode``, float64, one
shared step size) and torchode dopri5 (per sample; the mean per-sample NFE), plus dopri5 on a
float32 state. NFE and error only (no timing).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy
import torch
from scipy.integrate import solve_ivp

import scoresde as sd
from scoresde.likelihood import divergence, likelihood_field
from scoresde.sde import batch_coeff

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


HAVE_TORCHODE = importlib.util.find_spec("torchode") is not None


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: data, exact answers, the oracle and its divergence estimator."""

    name: str
    dim: int
    sde_name: str
    sde: sd.SDE
    gmm: sd.GaussianMixture
    x: torch.Tensor
    exact: torch.Tensor
    model: sd.ScoreModel
    trace: str
    probe: torch.Tensor | None

    def prior(self, z: torch.Tensor) -> torch.Tensor:
        return self.gmm.log_prob_at(self.sde, z, T)  # exact p_T of the mixture

    def errors(self, logp: torch.Tensor, tight: torch.Tensor) -> dict:
        return {"err_nats_per_dim": float((logp - self.exact).abs().mean()) / self.dim,
                "solver_err_nats_per_dim": float((logp - tight).abs().mean()) / self.dim}


def make_problem(name: str, sde_name: str, n: int, device: str) -> Problem:
    dim, k, seed = PROBLEMS[name]
    sde = SDES[sde_name]()
    gmm = mixture(dim, k, seed)
    x = gmm.sample(n, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64).to(device)
    model = gmm.score_model(sde, prediction="score", time_input="continuous")  # the same oracle
    probe = None
    if dim > 8:
        probe = torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 200),
                                       dtype=torch.float64)).to(device)
    return Problem(name, dim, sde_name, sde, gmm, x, gmm.log_prob_at(sde, x, EPS), model,
                   "exact" if probe is None else "rademacher", probe)


def tight_solution(pb: Problem) -> torch.Tensor:
    return reference_log_likelihood(pb.model.score, pb.sde, pb.x, pb.prior, pb.probe, method="DOP853",
                                    rtol=1e-10, atol=1e-10)[0]


def run_problem(pb: Problem, repeats: int, device: str) -> list[dict]:
    """Part ``main``: the library's solves (shared and per-sample steps) against the reference."""
    kwargs = {} if pb.probe is None else {"probes": 1, "generator": FixedProbe(pb.probe)}

    def ours(method: str):
        def run():
            res = sd.log_likelihood(pb.model, pb.x, trace=pb.trace, method=method, rtol=TOL, atol=TOL,
                                    eps=EPS, prior_logp=pb.prior, **kwargs)
            return res.logp, int(res.nfe.max()), float(res.nfe.double().mean())
        return run

    def reference():
        logp, _, nfe = reference_log_likelihood(pb.model.score, pb.sde, pb.x, pb.prior, pb.probe)
        return logp, nfe, float(nfe)

    methods = {"scoresde": ("torchdiffeq dopri5 (asinh sigma_bar, x)", ours("dopri5"))}
    if HAVE_TORCHODE:
        methods["scoresde per-sample"] = ("torchode dopri5 (asinh sigma_bar, x)", ours("torchode_dopri5"))
    methods["reference"] = ("scipy RK45 (t, x)", reference)
    tight = tight_solution(pb)
    walls = {label: [] for label in methods}
    outs = {}
    for _ in range(repeats):
        for label, (_, fn) in methods.items():
            outs[label], wall = timed(fn, device)
            walls[label].append(wall)

    rows = []
    tight_vs_exact = float((tight - pb.exact).abs().mean()) / pb.dim
    for label, (solver, _) in methods.items():
        logp, nfe, nfe_mean = outs[label]
        wall = statistics.median(walls[label])
        rows.append({
            "problem": pb.name, "dim": pb.dim, "sde": pb.sde_name, "n_samples": len(pb.x), "method": label,
            "solver": solver, "trace": pb.trace, "rtol": TOL, "atol": TOL, "nfe": nfe,
            "nfe_per_sample_mean": nfe_mean, "wall_s": wall, "ms_per_nfe": 1e3 * wall / nfe,
            **pb.errors(logp, tight),
            # sanity: the tight solution is the exact log-density when the trace is exact
            "tight_vs_exact_nats_per_dim": tight_vs_exact,
        })
    return rows


# --- part coordinates: the same ODE in three coordinate systems ----------------------------------


@dataclass(frozen=True)
class Coordinates:
    """A coordinate system for the augmented PF-ODE: ``u`` at time t, the field on ``[state, ℓ]``,
    the start state from ``x`` and ``(z, Δlog p)`` from the end state."""

    name: str
    u_of_t: Callable[[sd.SDE, torch.Tensor], torch.Tensor]
    field: Callable[[Problem], Callable]
    start: Callable[[Problem], torch.Tensor]
    finish: Callable[[Problem, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _probes(pb: Problem):
    return None if pb.probe is None else pb.probe[None]


def _augmented(fn):
    """``[state, ℓ] -> [out, div out]`` for ``out = fn(problem, u, state)``."""
    def field(pb: Problem):
        def f(u, y):
            with torch.enable_grad():
                state = y[:, :-1].detach().requires_grad_(True)
                out = fn(pb, u, state)
                div = divergence(out, state, pb.trace, _probes(pb))
            return torch.cat([out.detach(), div.detach()[:, None]], 1)
        return f
    return field


def _t_x(pb: Problem, t, x):
    return batch_coeff(pb.sde.f(t), x) * x - 0.5 * batch_coeff(pb.sde.g2(t), x) * pb.model.score(x, t)


def _sigma_bar_xbar(pb: Problem, sigma_bar, x_bar):
    t = pb.sde.t_from_sigma_bar(sigma_bar)
    return pb.model.predict(batch_coeff(pb.sde.alpha(t), x_bar) * x_bar, t).eps


def _asinh_x(pb: Problem):
    return likelihood_field(pb.model.predict, pb.sde, tuple(pb.x.shape), pb.trace, _probes(pb))


def _alpha_log_ratio(pb: Problem) -> torch.Tensor:
    return pb.dim * (torch.log(pb.sde.alpha(T)) - torch.log(pb.sde.alpha(EPS)))


COORDINATES = (
    Coordinates("t, x", lambda sde, t: t, _augmented(_t_x),
                lambda pb: pb.x, lambda pb, y: (y[:, :-1], y[:, -1])),
    Coordinates("sigma_bar, x_bar", lambda sde, t: sde.sigma_bar(t), _augmented(_sigma_bar_xbar),
                lambda pb: pb.x / pb.sde.alpha(EPS).to(pb.x),
                lambda pb, y: (y[:, :-1] * pb.sde.alpha(T).to(y), y[:, -1] + _alpha_log_ratio(pb).to(y))),
    Coordinates("asinh sigma_bar, x", lambda sde, t: torch.asinh(sde.sigma_bar(t)),
                _asinh_x,
                lambda pb: pb.x, lambda pb, y: (y[:, :-1], y[:, -1] + _alpha_log_ratio(pb).to(y))),
)


def run_coordinates(pb: Problem) -> list[dict]:
    """Part ``coordinates``: NFE and error of each coordinate system × solver on one problem."""
    tight = tight_solution(pb)
    solvers = [("dopri5", torch.float64), ("RK45", torch.float64), ("dopri5", torch.float32)]
    if HAVE_TORCHODE:
        solvers.append(("torchode_dopri5", torch.float64))
    rows = []
    ends = torch.tensor([EPS, T], dtype=torch.float64)
    for coords in COORDINATES:
        field = coords.field(pb)
        for method, dtype in solvers:
            y0 = torch.cat([coords.start(pb), pb.x.new_zeros(len(pb.x), 1)], 1).to(dtype)
            sol = sd.ode.solve_with_stats(field, y0, coords.u_of_t(pb.sde, ends), method, TOL, TOL)
            z, delta = coords.finish(pb, sol.y.to(torch.float64))
            rows.append({"problem": pb.name, "dim": pb.dim, "sde": pb.sde_name, "n_samples": len(pb.x),
                         "coordinates": coords.name, "method": method, "dtype": str(dtype).split(".")[-1],
                         "trace": pb.trace, "nfe": int(sol.nfe.max()),
                         "nfe_per_sample_mean": float(sol.nfe.double().mean()),
                         **pb.errors(pb.prior(z) + delta, tight)})
    return rows


# --- output --------------------------------------------------------------------------------------


COLUMNS = ["device", "torch_version", "scipy_version", "date", "problem", "dim", "sde", "n_samples",
           "method", "solver", "trace", "rtol", "atol", "nfe", "nfe_per_sample_mean", "wall_s", "ms_per_nfe",
           "err_nats_per_dim", "solver_err_nats_per_dim", "tight_vs_exact_nats_per_dim", "repeats", "threads"]
COORD_COLUMNS = ["device", "torch_version", "date", "problem", "dim", "sde", "n_samples", "coordinates",
                 "method", "dtype", "trace", "nfe", "nfe_per_sample_mean", "err_nats_per_dim",
                 "solver_err_nats_per_dim"]


def markdown(rows: list[dict]) -> str:
    head = ("| problem | D | SDE | n | trace | method | NFE | NFE/sample | wall (s) | ms/NFE | speed-up "
            "| err vs exact (nats/dim) | solver err (nats/dim) |\n"
            "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    refs = {(r["problem"], r["sde"], r["n_samples"]): r for r in rows if r["method"] == "reference"}
    for r in rows:
        speed = refs[r["problem"], r["sde"], r["n_samples"]]["wall_s"] / r["wall_s"]
        lines.append(f"| {r['problem']} | {r['dim']} | {r['sde']} | {r['n_samples']} | {r['trace']} "
                     f"| {r['method']} | {r['nfe']} | {r['nfe_per_sample_mean']:.1f} | {r['wall_s']:.3f} "
                     f"| {r['ms_per_nfe']:.2f} | {speed:.2f}× | {r['err_nats_per_dim']:.2e} "
                     f"| {r['solver_err_nats_per_dim']:.2e} |")
    r0 = rows[0]
    meta = (f"\ndevice `{r0['device']}`, torch {r0['torch_version']}, scipy {r0['scipy_version']}, "
            f"{r0['date']}, rtol = atol = {TOL:g}, eps = {EPS:g}, median of "
            f"{r0['repeats']} repeats, {r0['threads']} CPU thread(s). Speed-up = reference wall time "
            "/ this row's wall time. NFE: network calls of the batch solve; NFE/sample: the mean of each "
            "sample's own count (the same with a shared step size).\n")
    return head + "\n".join(lines) + "\n" + meta


def coordinates_markdown(rows: list[dict]) -> str:
    """One line per problem × coordinate system: NFE (solver error) of each solver."""
    solvers = list(dict.fromkeys((r["method"], r["dtype"]) for r in rows))
    label = {"dopri5": "torchdiffeq dopri5", "RK45": "scipy RK45",
             "torchode_dopri5": "torchode dopri5, mean/sample"}
    head = ("| problem | SDE | n | coordinates | "
            + " | ".join(f"{label[m]}{' (float32)' if d == 'float32' else ''}" for m, d in solvers) + " |\n"
            + "|---|---|---:|---|" + "---:|" * len(solvers) + "\n")
    lines = []
    for key in dict.fromkeys((r["problem"], r["sde"], r["n_samples"], r["coordinates"]) for r in rows):
        cells = {(r["method"], r["dtype"]): r for r in rows
                 if (r["problem"], r["sde"], r["n_samples"], r["coordinates"]) == key}
        vals = []
        for solver in solvers:
            r = cells[solver]
            nfe = f"{r['nfe_per_sample_mean']:.1f}" if r["method"] == "torchode_dopri5" else str(r["nfe"])
            vals.append(f"{nfe} ({r['solver_err_nats_per_dim']:.0e})")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(vals) + " |")
    r0 = rows[0]
    meta = (f"\nNFE of the batch solve (torchode: the mean of the per-sample NFE) and, in brackets, the mean "
            f"solver error |log p − tight| / D in nats/dim; rtol = atol = {TOL:g}, float64 unless marked. "
            f"device `{r0['device']}`, torch {r0['torch_version']}, {r0['date']}.\n")
    return head + "\n".join(lines) + "\n" + meta


def write(path: Path, rows: list[dict], columns: list[str], title: str, table: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in columns})
    path.with_suffix(".md").write_text(f"# {title}\n\n" + table)
    print(f"wrote {path} and {path.with_suffix('.md')}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 samples, 1 repeat, print only")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--n", default=None,
                        help="comma-separated batch sizes, one solve of the whole batch each "
                             "(default 64,512)")
    parser.add_argument("--parts", default="main,coordinates",
                        help="comma-separated parts: main (timing vs the reference), coordinates (NFE "
                             "ablation)")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: these are many tiny ops, where the "
                             "thread pool only adds overhead; 0 keeps torch's default)")
    parser.add_argument("--out", default=None,
                        help="CSV path of part main (default results/likelihood_<device>.csv; part "
                             "coordinates beside it, <name>_coordinates.csv; --quick writes none)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda requested but torch.cuda.is_available() is False")
    parts = args.parts.split(",")
    if unknown := set(parts) - {"main", "coordinates"}:
        sys.exit(f"unknown --parts {sorted(unknown)}; available: main, coordinates")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not HAVE_TORCHODE:
        print("torchode is not installed (pip install torchode): skipping the per-sample rows")
    sizes = [int(v) for v in args.n.split(",")] if args.n else ([8] if args.quick else [64, 512])
    repeats = args.repeats or (1 if args.quick else 3)
    device = args.device.split(":")[0]
    meta = {"device": device, "torch_version": torch.__version__, "scipy_version": scipy.__version__,
            "date": dt.date.today().isoformat(), "repeats": repeats, "threads": torch.get_num_threads()}

    start = time.perf_counter()
    rows, coord_rows = [], []
    for n in sizes:
        for name in PROBLEMS:
            for sde_name in SDES:
                t0 = time.perf_counter()
                pb = make_problem(name, sde_name, n, args.device)
                if "main" in parts:
                    rows += [{**meta, **r} for r in run_problem(pb, repeats, args.device)]
                if "coordinates" in parts:
                    coord_rows += [{**meta, **r} for r in run_coordinates(pb)]
                print(f"n={n} {name}/{sde_name}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    if rows:
        print("\n" + markdown(rows))
    if coord_rows:
        print("\n" + coordinates_markdown(coord_rows))
    print(f"total {time.perf_counter() - start:.1f} s")

    out = args.out or (None if args.quick else str(RESULTS / f"likelihood_{device}.csv"))
    if out:
        path = Path(out)
        if rows:
            write(path, rows, COLUMNS, "PF-ODE likelihood: scoresde vs scipy reference", markdown(rows))
        if coord_rows:
            write(path.with_name(f"{path.stem}_coordinates{path.suffix}"), coord_rows,
                  COORD_COLUMNS, "PF-ODE likelihood: NFE by coordinate system and solver",
                  coordinates_markdown(coord_rows))


if __name__ == "__main__":
    main()
