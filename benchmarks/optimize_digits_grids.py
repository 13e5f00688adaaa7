"""Optimised time grids for the shipped 8×8-digits model: writes scoresde/assets/digits_vp_grids.json.

For ddim, dpm_solver (order 2, data prediction) and unipc at NFE 5, 10 and 20, with
:mod:`scoresde.grid_search` (GITS-style dynamic programming over one-step errors propagated to
t = 0 along a reference PF-ODE). One reference (``--n_ref`` prior draws, ``--candidates``
log-σ̄-uniform candidate times, RK4) serves every grid; the cost matrix is computed once per
sampler. The three samplers' matrices coincide up to rounding (the multistep samplers' cost is
their first-order warm-up step, which is DDIM; see the module's docstring), so their grids are
expected to be the same. The JSON records the settings, the seconds and the grids; load one with
``scoresde.assets.digits_grid(sampler, nfe)``.

    python benchmarks/optimize_digits_grids.py            # ~4 min on one busy CPU thread
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde import assets, experiment
from scoresde import grid_search as gs

OUT = Path(__file__).resolve().parents[1] / "scoresde" / "assets" / "digits_vp_grids.json"
SAMPLERS = {"ddim": {}, "dpm_solver": {"order": 2, "prediction": "data"}, "unipc": {}}
NFES = (5, 10, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_ref", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=80)
    parser.add_argument("--reference_steps", type=int, default=1)
    parser.add_argument("--probes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = experiment.load_trained(None, assets.shipped_model("digits_vp"))
    shape = (1, 8, 8)
    ref = gs.grid_reference(model, shape=shape, generator=torch.Generator().manual_seed(args.seed),
                            n_ref=args.n_ref, candidates=args.candidates, t_end=0.0,
                            reference_steps=args.reference_steps, dtype=torch.float32, probes=args.probes)
    print(f"reference: {ref.nfe} network calls, {ref.seconds:.1f} s")
    grids: dict[str, dict[str, list[float]]] = {}
    for name, options in SAMPLERS.items():
        spec = sd.samplers.get(name)
        opts = spec.parse(options)
        cost = gs.cost_matrix(model, spec, opts, ref, power=2.0, cost="propagated")
        grids[name] = {}
        for nfe in NFES:
            steps = gs.steps_for_nfe(spec, opts, model.sde, nfe, float(ref.times[0]), float(ref.times[-1]))
            grid = ref.times[gs.best_path(cost, steps)]
            grids[name][str(nfe)] = sd.grids.check_timesteps(grid, model.sde).tolist()
            print(name, nfe, [round(t, 4) for t in grids[name][str(nfe)]])
    record = {
        "model": "digits_vp",
        "method": "scoresde.grid_search: DP over one-step errors propagated to t_end (cost='propagated', "
                  "power=2); multistep samplers via their first-order step",
        "settings": {"n_ref": args.n_ref, "candidates": args.candidates,
                     "reference_steps": args.reference_steps,
                     "probes": args.probes, "seed": args.seed, "t_start": 1.0, "t_end": 0.0,
                     "dtype": "float32", "sampler_options": SAMPLERS},
        "reference_nfe": ref.nfe,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "grids": grids,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out} in {record['seconds']} s")


if __name__ == "__main__":
    main()
