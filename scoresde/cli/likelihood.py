"""``scoresde likelihood``: bits/dim (and NLL in nats) of the test split by the PF-ODE."""

from __future__ import annotations

import math
import time

import numpy as np

from scoresde.cli.common import (
    FLAGS,
    likelihood_settings,
    load_model,
    split_bits_per_dim,
    test_split,
    workdir,
)


def main() -> None:
    """Mean ± standard error over the test split with the config's ``eval`` settings; integer
    pixels are uniformly dequantized. Writes ``likelihood.npz``."""
    wd = workdir()
    model, cfg = load_model()
    x, spec = test_split(cfg, FLAGS.n)
    if len(x) < 2:
        raise ValueError(f"likelihood needs >= 2 test points for a standard error, got {len(x)}")
    start = time.perf_counter()
    bpd = split_bits_per_dim(model, cfg, x, spec, FLAGS.seed or 0)
    wall = time.perf_counter() - start
    nats = bpd.bpd * spec.num_dims * math.log(2.0)
    nfe = bpd.likelihood.nfe.double()
    wd.mkdir(parents=True, exist_ok=True)
    np.savez(wd / "likelihood.npz", bpd=bpd.bpd.numpy(), nll_nats=nats.numpy(),
             nfe=bpd.likelihood.nfe.numpy())
    kind = (f"uniformly dequantized {spec.levels}-level pixels on {tuple(spec.data_range)}"
            if spec.is_image else "continuous data")
    print(f"{spec.name} test split, {len(x)} points ({kind}); {likelihood_settings(cfg)}")
    print(f"bits/dim: {bpd.mean:.4f} ± {bpd.stderr:.4f} (mean ± standard error)")
    print(f"NLL: {float(nats.mean()):.4f} ± {float(nats.std() / math.sqrt(len(nats))):.4f} nats per sample")
    print(f"NFE: {float(nfe.mean()):.0f} per solve (batch_size {cfg.eval.batch_size}); time {wall:.2f} s")
    print(f"wrote {wd / 'likelihood.npz'}")
