"""``scoresde train``: train (or resume) the experiment of --config in --workdir."""

from __future__ import annotations

import time

from scoresde import distributed
from scoresde.cli.common import config, workdir


def main() -> None:
    """:func:`scoresde.train.train` on --config in --workdir; checkpoints under DIR/checkpoints."""
    from scoresde.train import train

    cfg, wd = config(), workdir()
    start = time.perf_counter()
    result = train(cfg, wd)
    wall = time.perf_counter() - start
    if not distributed.init().is_main:  # under torchrun, rank 0 reports for all
        return
    if result.losses:
        print(f"trained to step {result.step} in {wall:.1f} s; last logged loss {result.losses[-1][1]:.5f}; "
              f"checkpoints in {wd / 'checkpoints'}")
    else:
        print(f"nothing to train: the checkpoint in {wd} is at step {result.step} >= "
              f"training.steps={cfg.training.steps} (raise it with --config.training.steps=N)")
