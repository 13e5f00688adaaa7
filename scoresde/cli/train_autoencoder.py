"""``scoresde train_autoencoder``: train (or resume) the autoencoder of a latent-diffusion experiment.

The config's ``autoencoder`` group is the network and ``training`` the optimisation
(:func:`scoresde.autoencoding.train_autoencoder`); the latent experiment then names the workdir in
``latent.autoencoder`` and trains with ``scoresde train``.
"""

from __future__ import annotations

import time

from scoresde.cli.common import config, workdir


def main() -> None:
    """:func:`scoresde.autoencoding.train_autoencoder` on --config in --workdir."""
    from scoresde.autoencoding import train_autoencoder

    cfg, wd = config(), workdir()
    start = time.perf_counter()
    result = train_autoencoder(cfg, wd)
    wall = time.perf_counter() - start
    ae = result.autoencoder
    last = f"; last logged loss {result.losses[-1][1]:.5f}" if result.losses else ""
    print(f"autoencoder at step {result.step} ({wall:.1f} s){last}; latent scale factor "
          f"{ae.scale_factor:.5g}, shift {ae.shift_factor:.5g}; checkpoints in {wd / 'checkpoints'}")
