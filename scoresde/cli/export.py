"""``scoresde export``: the latest checkpoint's EMA weights alone, to --out (for shipping), or a
diffusers pipeline folder (``--export_format=diffusers``, :func:`scoresde.interop.export_diffusers`)."""

from __future__ import annotations

from absl import flags

from scoresde.cli.common import FlagError, config, workdir
from scoresde.experiment import export_model, load_trained

flags.DEFINE_string("out", None,
                    "export: the file (scoresde) or folder (diffusers) to write the EMA weights to.")
flags.DEFINE_enum("export_format", "scoresde", ["scoresde", "diffusers"],
                  "export: scoresde (a weights-only checkpoint) or diffusers (a pipeline folder that "
                  "diffusers' DDIMPipeline.from_pretrained and --model_dir load; needs the network "
                  "diffusers_unet2d on a ddpm SDE with time_input index).")
FLAGS = flags.FLAGS


def main() -> None:
    if not FLAGS.out:
        raise FlagError("export needs --out=PATH, e.g. ship/digits_vp.pt (or a folder with "
                        "--export_format=diffusers)")
    if FLAGS.export_format == "diffusers":
        from scoresde.interop import export_diffusers

        path = export_diffusers(load_trained(config(), workdir(), use_ema=True), FLAGS.out)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        print(f"wrote the diffusers pipeline folder {path} ({size / 1e6:.1f} MB, EMA weights)")
        return
    path = export_model(config(), workdir(), FLAGS.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, EMA weights only)")
