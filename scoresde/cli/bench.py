"""``scoresde bench``: every sampler variant of the registry's table on a trained model.

Runs each variant of :func:`scoresde.samplers.variants` at each of --steps (plus one adaptive
ODE solve) from one prior draw: NFE, time and, for 2-D data, MMD² to the test split against the
noise floor of the training set; writes ``bench.csv`` to --workdir. The analytic benchmark suite
(exact oracles, peers, plots) lives in the repository: ``python benchmarks/samplers.py``.

Under ``torchrun`` the runs (sampler variant × steps) are dealt round-robin over the processes
(:func:`scoresde.distributed.map_shards`); each run is the same as in one process (same prior draw,
same samples, same MMD²), rank 0 gathers the rows in table order and writes the CSV. Wall times are
measured per process: give each process its own device (or CPU cores, ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import torch

import scoresde as sd
from scoresde import distributed, experiment
from scoresde.cli.common import (
    ADAPTIVE,
    FLAGS,
    IMAGE_ADAPTIVE,
    FlagError,
    Row,
    Run,
    data_spec,
    format_floor,
    format_table,
    load_model,
    noise_floor,
    run_samplers,
    sample_shape,
    sampler_runs,
    seed,
    steps_list,
    test_split,
    to_device,
    workdir,
    write_csv,
)


def main() -> None:
    if FLAGS.model_dir is None and FLAGS.config is None:
        raise FlagError("scoresde bench measures a trained model: pass --model_dir=PATH (or --config and "
                        "the model's --workdir); the analytic benchmark suite runs from the repository: "
                        "python benchmarks/samplers.py")
    world = distributed.init()
    wd = workdir()
    model, cfg = load_model()
    to_device(model, world)
    n = FLAGS.n or cfg.sampling.n
    s = seed(cfg)
    spec = data_spec(model, cfg)
    reference = floor = None
    if spec.shape == (2,):
        reference, _ = test_split(cfg, n)
        train_set, _ = experiment.load_data(cfg, "train")
        g = torch.Generator().manual_seed(s)
        size = min(n, len(train_set))
        floor = noise_floor(lambda: train_set[torch.randperm(len(train_set), generator=g)[:size]], reference)
        reference = reference.to(world.device)
    adaptive = ADAPTIVE if reference is not None else IMAGE_ADAPTIVE
    runs = sampler_runs(steps_list(), sd.samplers.variants(), adaptive)
    shape = (n, *sample_shape(model, spec))

    def measure(_: int, run: Run) -> Row:
        return run_samplers(model, shape, [run], s, reference, progress=False, device=world.device)[0][0]

    rows = distributed.map_shards(measure, runs, world, progress=True, desc="bench")
    if not world.is_main:
        return
    wd.mkdir(parents=True, exist_ok=True)
    csv_path = wd / "bench.csv"
    write_csv(rows, csv_path, floor)
    print(f"\n{spec.name}, trained model from {FLAGS.model_dir or wd}, n={n}")
    print(format_table(rows))
    if floor is not None:
        print("\n" + format_floor(floor, n, "training points and the test split"))
    print(f"\nwrote {csv_path}")
