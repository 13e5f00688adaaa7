"""scoresde command line: ``scoresde MODE --config=configs/x.py --workdir=DIR [--config.KEY=VALUE ...]``.

One config file per experiment (an ml_collections ConfigDict, as in score_sde); any key can be
overridden on the command line, e.g. ``--config.training.steps=500``. A key the config does
not have is an error that names the nearest keys.

Modes (one module each in this package; shared plumbing in ``common``):
  train        train (or resume) the experiment in --workdir; checkpoints under DIR/checkpoints.
               A latent-diffusion config (latent.autoencoder set) trains on the autoencoder's latents.
  train_autoencoder
               train (or resume) the autoencoder of a latent-diffusion experiment (the config's
               autoencoder group) in --workdir.
  export       write the latest checkpoint's EMA weights alone to --out (a small file that
               loads like a checkpoint, e.g. for shipping a model); --export_format=diffusers
               writes a diffusers pipeline folder instead (a model on the diffusers_unet2d network).
  sample       draw --n samples with --sampler at --steps (defaults: the config's `sampling`
               group); writes DIR/samples.png (an image grid, or a scatter for 2-D data) and
               DIR/samples.npz; prints NFE and time. The model-loading modes (sample, likelihood,
               bench, reconstruct, interpolate, demo) load from --model_dir (a workdir, a
               checkpoint file, a shipped model such as digits_vp, or a local diffusers folder;
               default --workdir), with --config or else the config stored in the checkpoint.
  likelihood   bits/dim (and NLL in nats) of the test split by the probability-flow ODE with
               the config's `eval` settings; integer pixels are uniformly dequantized. Prints
               mean ± standard error and NFE; writes DIR/likelihood.npz.
  bench        every sampler variant of the registry's table at each of --steps (plus one
               adaptive ODE solve) on a trained model: NFE, time and, for 2-D data, MMD² to the
               test split; writes DIR/bench.csv. (The analytic benchmark suite runs from the
               repository: python benchmarks/samplers.py.)
  reconstruct  encode a test batch to latents with a deterministic sampler (ddim by default)
               and decode it back; writes originals and reconstructions side by side in
               DIR/reconstruct.png (+ .npz) and prints the per-dimension MSE.
  inpaint      complete --n test points whose config `inpaint.mask` part is missing, with
               `inpaint.method` (replace | repaint | ddim, scoresde.inpaint) at --steps (default
               inpaint.steps); writes masked inputs, completions and truths side by side to
               DIR/inpaint.png (+ .npz) and prints NFE and the MSE on the missing part.
  interpolate  decode --n_interp slerp interpolations between the latents of pairs of test
               points; writes a strip per pair to DIR/interpolate.png (+ .npz).
  demo         the researcher's loop on the shipped trained digits model (digits_vp, package
               data: every sampler side by side, NFE, time, test-set bits/dim), then every
               sampler on an exact 2-D Gaussian-mixture oracle (NFE, time, MMD²); outputs in
               --workdir (default demo_out). --problem=gmm|digits runs one part.

Errors: a user error is reported as one line on stderr, ``scoresde MODE: <what was expected, what
was given, how to fix it>``, without a traceback (``--debug`` prints the traceback too). User errors
are the library's InputError family (scoresde.errors: bad values, damaged checkpoints, non-finite
training, missing optional dependencies) and the OS errors of the paths a user names (missing,
unwritable, a file for a folder, a full disk). Exit status 2: a usage error: the mode, a flag, the
--config file or one of its values, or an output folder that cannot be written; these are checked
before the mode does any work. Exit status 1: a user error found while the mode runs (data,
checkpoints, the library's refusal of a combination of values). Any other exception is a bug and
keeps its traceback (exit status 1).

Examples:
  scoresde train --config=configs/digits_vp.py --workdir=models/digits_vp
  scoresde train --config=configs/gmm2d_vp.py --workdir=runs/gmm --config.training.steps=500
  scoresde train_autoencoder --config=configs/digits_ae.py --workdir=/tmp/digits_ae_work
  scoresde train --config=configs/digits_latent.py --workdir=/tmp/digits_latent_work  # names that AE
  scoresde sample --model_dir=path/to/diffusers_pipeline --workdir=out --sampler=dpm_solver --steps=20
  scoresde sample --model_dir=digits_vp --workdir=out --sampler=pc --steps=100
  scoresde sample --model_dir=digits_vp_cond --workdir=out --class=3 --guidance=2.0
  scoresde inpaint --model_dir=digits_vp --workdir=out --config=configs/digits_vp.py \\
      --config.inpaint.mask=top_half --config.inpaint.method=repaint
  scoresde sample --config=configs/gmm2d_vp.py --workdir=runs/gmm --sampler=ode \\
      --sampler_options=method=dopri5,rtol=1e-5,atol=1e-5
  scoresde likelihood --model_dir=digits_vp --workdir=out --n=100
  scoresde bench --config=configs/gmm2d_vp.py --workdir=runs/gmm --steps=5,10,20
  scoresde reconstruct --model_dir=digits_vp --workdir=out --steps=100
  scoresde interpolate --model_dir=digits_vp --workdir=out --n_interp=10
  scoresde demo --workdir=demo_out
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence

import torch
from absl import app

from scoresde.cli import (
    bench,
    common,
    demo,
    export,
    inpaint,
    interpolate,
    likelihood,
    reconstruct,
    sample,
    train,
    train_autoencoder,
)
from scoresde.cli.common import (
    FLAGS,
    RUNTIME,
    USAGE,
    FlagError,
    fail,
    is_user_error,
    parse_flags,
    preflight,
    report,
)

# --- modes and entry point --------------------------------------------------------------------

MODES: dict[str, Callable[[], None]] = {
    module.__name__.rsplit(".", 1)[-1]: module.main
    for module in (train, train_autoencoder, export, sample, likelihood, bench, reconstruct, inpaint,
                   interpolate, demo)
}


def _one_line_warning(mode: str) -> Callable[..., str]:
    def format_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
        return f"scoresde {mode}: {category.__name__}: {message}\n"

    return format_warning


def main(argv: Sequence[str]) -> None:
    """absl main: ``argv[1]`` is the mode; everything else arrived as flags. Runs :func:`preflight`
    then the mode; a user error (:func:`common.is_user_error`) is one line on stderr and exit status
    2 (usage: found before the mode started, or a flag/config error) or 1 (found while running);
    any other exception propagates with its traceback. Warnings print as one line each too."""
    modes = ", ".join(MODES)
    if len(argv) < 2:
        fail(f"missing mode: run `scoresde MODE [flags]` with MODE one of: {modes}")
    mode = argv[1]
    if mode not in MODES:
        fail(f"unknown mode {mode!r}; available modes: {modes} (`scoresde --helpshort` lists the flags)")
    if len(argv) > 2:
        fail(f"unexpected arguments {list(argv[2:])}; flags are written --name=value", mode=mode)
    warnings.formatwarning = _one_line_warning(mode)
    threads = FLAGS.threads or (1 if mode == "demo" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        preflight(mode)
    except Exception as e:
        if not is_user_error(e):
            raise
        report(e, USAGE, mode, FLAGS.debug)
    try:
        MODES[mode]()
    except Exception as e:
        if not is_user_error(e):
            raise
        report(e, USAGE if isinstance(e, FlagError | common.ConfigError) else RUNTIME, mode, FLAGS.debug)


def run() -> None:
    """Console-script entry point (``scoresde``)."""
    main_module = sys.modules["__main__"]
    if main_module.__doc__ is None:
        # absl prints __main__'s docstring and the flags of the module named sys.argv[0] as
        # usage; the console-script wrapper has neither, so lend it this module's.
        main_module.__doc__ = __doc__
        for module in (common, *(sys.modules[m.__module__] for m in MODES.values())):
            for flag in FLAGS.get_flags_for_module(module.__name__):
                FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
