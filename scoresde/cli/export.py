"""``scoresde export``: the latest checkpoint's EMA weights alone, to --out (for shipping)."""

from __future__ import annotations

from absl import flags

from scoresde.cli.common import FlagError, config, workdir
from scoresde.experiment import export_model

flags.DEFINE_string("out", None, "export: the file to write the EMA weights to.")
FLAGS = flags.FLAGS


def main() -> None:
    if not FLAGS.out:
        raise FlagError("export needs --out=PATH, e.g. ship/digits_vp.pt")
    path = export_model(config(), workdir(), FLAGS.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, EMA weights only)")
