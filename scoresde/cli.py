"""scoresde command line: ``scoresde MODE --config=configs/x.py --workdir=DIR [--config.KEY=VALUE ...]``.

One config file per experiment (an ml_collections ConfigDict, as in score_sde); any key can be
overridden on the command line, e.g. ``--config.training.steps=500``. A key the config does
not have is an error that names the nearest keys.

Modes:
  train        train (or resume) the experiment in --workdir; checkpoints under DIR/checkpoints.
  export       write the latest checkpoint's EMA weights alone to --out (a small file that
               loads like a checkpoint, e.g. for shipping a model).
  sample       draw --n samples with --sampler at --steps (defaults: the config's `sampling`
               group); writes DIR/samples.png (an image grid, or a scatter for 2-D data) and
               DIR/samples.npz; prints NFE and time.
  likelihood   bits/dim (and NLL in nats) of the test split by the probability-flow ODE with
               the config's `eval` settings; integer pixels are uniformly dequantized. Prints
               mean ± standard error and NFE; writes DIR/likelihood.npz.
  bench        with --config: every registered sampler at each of --steps (plus one adaptive
               ODE solve) on the trained model: NFE, time and, for 2-D data, MMD² to the test
               split; writes DIR/bench.csv. Without --config: the sampler benchmarks of
               benchmarks/samplers.py (--quick for smoke sizes; --workdir = output folder).
  reconstruct  encode a test batch to latents with a deterministic sampler (ddim by default)
               and decode it back; writes originals and reconstructions side by side in
               DIR/reconstruct.png (+ .npz) and prints the per-dimension MSE.
  interpolate  decode --n_interp slerp interpolations between the latents of pairs of test
               points; writes a strip per pair to DIR/interpolate.png (+ .npz).
  demo         the researcher's loop on the shipped trained digits model (models/digits_vp:
               every sampler side by side, NFE, time, test-set bits/dim), then every sampler
               on an exact 2-D Gaussian-mixture oracle (NFE, time, MMD²); outputs in
               --workdir (default demo_out). --problem=gmm|digits runs one part.

Examples:
  scoresde train --config=configs/digits_vp.py --workdir=models/digits_vp
  scoresde train --config=configs/gmm2d_vp.py --workdir=runs/gmm --config.training.steps=500
  scoresde sample --config=configs/digits_vp.py --workdir=models/digits_vp --sampler=pc --steps=100
  scoresde sample --config=configs/gmm2d_vp.py --workdir=runs/gmm --sampler=ode \\
      --sampler_options=method=dopri5,rtol=1e-5,atol=1e-5
  scoresde likelihood --config=configs/digits_vp.py --workdir=models/digits_vp --n=100
  scoresde bench --config=configs/gmm2d_vp.py --workdir=runs/gmm --steps=5,10,20
  scoresde reconstruct --config=configs/digits_vp.py --workdir=models/digits_vp --steps=100
  scoresde interpolate --config=configs/digits_vp.py --workdir=models/digits_vp --n_interp=10
  scoresde demo --workdir=demo_out
"""

from __future__ import annotations

import ast
import difflib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags
from torch import Tensor

import scoresde as sd
from scoresde import demo
from scoresde.data import DataSpec, to_pixels

FLAGS = flags.FLAGS

config_flags.DEFINE_config_file(
    "config", None,
    "Experiment config file defining get_config(), e.g. configs/digits_vp.py (score_sde style). "
    "Override any key with --config.KEY=VALUE, e.g. --config.training.steps=500. Required by every "
    "mode but demo (whose digits part defaults to configs/digits_vp.py).",
    lock_config=True)
flags.DEFINE_string(
    "workdir", None,
    "Experiment folder. train: checkpoints go to WORKDIR/checkpoints (an existing one is resumed). "
    "sample, likelihood, bench, reconstruct, interpolate: the model is loaded from its latest "
    "checkpoint and outputs are written here. demo: the output folder (default demo_out).")
flags.DEFINE_string(
    "sampler", None,
    "Sampler name (see scoresde.samplers.available()). sample: default config.sampling.sampler; "
    "reconstruct, interpolate: a deterministic one, default ddim.")
flags.DEFINE_list(
    "steps", None,
    "Sampler steps. sample, reconstruct, interpolate: one integer (default config.sampling.steps; "
    "omit it for an adaptive ODE method). bench: a comma-separated list (default 5,10,20,50). "
    "demo: the 2-D oracle's list (default 5,10,20,50).")
flags.DEFINE_list(
    "sampler_options", [],
    "Extra sampler options as KEY=VALUE pairs, comma-separated; values are Python literals or "
    "plain strings, e.g. method=dopri5,rtol=1e-5,atol=1e-5 (ode), eta=0.5 (ddim), "
    "snr=0.1,n_corrector=2 (pc), variance=beta (ancestral), grid=karras (any fixed-step sampler).")
flags.DEFINE_integer(
    "n", None,
    "How many. sample, bench: samples per run (default config.sampling.n). likelihood: test "
    "points (default config.eval.n_test; 0 there means the whole split). reconstruct: test points "
    "(default 64). interpolate: pairs of test points (default 4). demo: samples per oracle run "
    "(default 2000).", lower_bound=1)
flags.DEFINE_integer(
    "seed", None,
    "Random seed of the prior draw, the samplers' noise, dequantization and Hutchinson probes "
    "(default config.sampling.seed; demo: 0).", lower_bound=0)
flags.DEFINE_bool("quick", False, "bench without --config: smoke sizes (about a minute).")
flags.DEFINE_string("out", None, "export: the file to write the EMA weights to.")
flags.DEFINE_integer("n_interp", 8, "interpolate: latents per path, both ends included.", lower_bound=2)
flags.DEFINE_enum("interpolation", "slerp", ["slerp", "linear"],
                  "interpolate: slerp (keeps Gaussian latents at their typical norm) or linear.")
flags.DEFINE_bool("ema", True, "Load the EMA weights of the checkpoint (--noema: the raw weights).")
flags.DEFINE_integer(
    "threads", None,
    "torch intra-op threads (default: 1 for demo, whose tensors are too small to gain from more; "
    "torch's default otherwise).", lower_bound=1)
# demo
flags.DEFINE_enum("problem", "all", ["all", "gmm", "digits"],
                  "demo: which part to run: the trained digits model, the 2-D oracle, or both.")
flags.DEFINE_string("model_dir", demo.DEFAULT_MODEL_DIR,
                    "demo: the trained digits model: its workdir, a folder holding its checkpoint, or the "
                    f"checkpoint file; its config is --config if given, else {demo.DEFAULT_MODEL_CONFIG}.")
flags.DEFINE_integer("digits_steps", 20, "demo: steps of each fixed-step sampler on the digits model.",
                     lower_bound=1)
flags.DEFINE_integer("digits_n", 64, "demo: digits sampled per sampler.", lower_bound=1)
flags.DEFINE_integer("nll_n", 64, "demo: test images in the digits model's bits/dim estimate.",
                     lower_bound=2)
flags.DEFINE_enum("sde", "vp", ["vp", "subvp", "ve"],
                  "demo (oracle): forward SDE: vp (DDPM's linear VP, beta 0.1..20), subvp, or ve "
                  "(sigma 0.01..50).")
flags.DEFINE_integer("plot_steps", 20,
                     "demo (oracle): step count shown in the scatter plot (the nearest one in --steps).",
                     lower_bound=1)


@flags.validator("steps", message="--steps must be a comma-separated list of integers >= 1, e.g. 5,10,20")
def _check_steps(value: list[str] | None) -> bool:
    if value is None:
        return True
    try:
        return len(value) > 0 and all(int(v) >= 1 for v in value)
    except ValueError:
        return False


@flags.validator("sampler_options",
                 message="--sampler_options must be KEY=VALUE pairs, e.g. eta=0.5,grid=karras")
def _check_sampler_options(value: list[str]) -> bool:
    return all("=" in v and v.split("=", 1)[0].strip().isidentifier() for v in value)


# --- config overrides: a bad key names the nearest ones ---------------------------------------


class ConfigKeyError(ValueError):
    """An override ``--config.KEY=VALUE`` names a key the config does not have."""


def flatten_keys(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of a (nested) config, groups included: ``["data", "data.name", ...]``."""
    keys = []
    for k, v in config.items():
        key = f"{prefix}{k}"
        keys.append(key)
        if isinstance(v, Mapping | ConfigDict):
            keys += flatten_keys(v, key + ".")
    return keys


def nearest_keys(key: str, keys: Sequence[str], n: int = 5) -> list[str]:
    """The keys closest to ``key``: difflib matches on the whole dotted key first, then keys
    whose last part is close to ``key``'s last part (``steps`` → ``training.steps``)."""
    found = difflib.get_close_matches(key, keys, n=n, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    leaves: dict[str, list[str]] = {}
    for k in keys:
        leaves.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    for close in difflib.get_close_matches(leaf, list(leaves), n=n, cutoff=0.6):
        found += [k for k in leaves[close] if k not in found]
    return found[:n]


def _config_argument(argv: Sequence[str]) -> str | None:
    """The value of ``--config=FILE`` (or ``--config FILE``) in ``argv``, if any."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def override_keys(argv: Sequence[str]) -> list[str]:
    """The keys of the ``--config.KEY[=VALUE]`` (and boolean ``--noconfig.KEY``) arguments."""
    keys = []
    for arg in argv:
        if arg == "--":
            break
        for prefix in ("--config.", "--noconfig."):
            if arg.startswith(prefix):
                keys.append(arg[len(prefix):].split("=", 1)[0])
    return keys


def check_config_overrides(argv: Sequence[str]) -> None:
    """Check every ``--config.KEY`` in ``argv`` against the keys of the ``--config`` file.

    Raises:
        ConfigKeyError: naming each unknown key and the nearest existing ones.
    """
    keys = override_keys(argv)
    if not keys:
        return
    source = _config_argument(argv)
    if source is None:
        raise ConfigKeyError(f"--config.{keys[0]} overrides a key of the config file, but no "
                             "--config=FILE was given")
    path, _, argument = source.partition(":")
    try:
        config = demo.load_config_file(path, argument or None)
    except Exception:  # absl's own parse reports a config file that fails to load
        return
    known = flatten_keys(config)
    problems = []
    for key in keys:
        if key.split("[", 1)[0] in known:
            continue
        near = nearest_keys(key, known)
        group = key.split(".", 1)[0]
        hint = (f"nearest keys: {', '.join(near)}" if near else
                f"keys of group {group!r}: {', '.join(k for k in known if k.startswith(group + '.'))}"
                if group in known else f"top-level groups: {', '.join(k for k in known if '.' not in k)}")
        problems.append(f"unknown config key {key!r} (in --config.{key}) for {path}; {hint}")
    if problems:
        raise ConfigKeyError("\n".join(problems))


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print ``scoresde: error: MESSAGE`` to stderr and exit with ``code``."""
    print(f"scoresde: error: {message}", file=sys.stderr)
    sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser for :func:`run`: checks config override keys, then parses as absl does."""
    try:
        check_config_overrides(argv)
    except ConfigKeyError as e:
        _fail(str(e))
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:  # ml_collections' report of a key missing after all
        _fail(f"bad config override: {e}")


# --- helpers shared by the modes --------------------------------------------------------------


class FlagError(ValueError):
    """A flag is missing or does not fit the mode (reported in one line, with a pointer to --help)."""

    def __str__(self) -> str:
        return f"{super().__str__()} (`scoresde --helpshort` lists the flags)"


def _config() -> ConfigDict:
    """The parsed --config (overrides applied); a :class:`FlagError` if none was given."""
    if FLAGS.config is None:
        raise FlagError("--config=FILE is required, e.g. --config=configs/digits_vp.py")
    return FLAGS.config


def _workdir() -> Path:
    """--workdir as a path; a :class:`FlagError` if none was given."""
    if not FLAGS.workdir:
        raise FlagError("--workdir=DIR is required")
    return Path(FLAGS.workdir)


def _one_steps(default: int | None) -> int | None:
    """The single --steps value, or ``default`` when --steps was not given."""
    if FLAGS.steps is None:
        return default
    if len(FLAGS.steps) != 1:
        raise FlagError(f"--steps takes one value in this mode, got {','.join(FLAGS.steps)}")
    return int(FLAGS.steps[0])


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["method=dopri5", "rtol=1e-5"]`` → ``{"method": "dopri5", "rtol": 1e-05}``: values are
    Python literals where they parse as one, else strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        options[key.strip()] = value
    return options


def _sampler_and_options(config: ConfigDict | None, default: str) -> tuple[str, dict[str, Any]]:
    """--sampler (or ``default``) and its options: the config's ``sampling.options`` when it
    names that sampler, updated by --sampler_options."""
    name = FLAGS.sampler or default
    sd.samplers.get(name)  # an unknown name fails here, listing the available ones
    options: dict[str, Any] = {}
    if config is not None and name == config.sampling.sampler and config.sampling.get("options"):
        options.update(dict(config.sampling.options))
    options.update(parse_options(FLAGS.sampler_options))
    return name, options


def _steps_for(name: str, options: dict[str, Any], default: int) -> int | None:
    """One step count, or ``None`` for an adaptive solver when --steps was not given."""
    if FLAGS.steps is None and not sd.samplers.get(name).uses_grid(options):
        return None
    return _one_steps(default)


def _seed(config: ConfigDict) -> int:
    """--seed, else ``config.sampling.seed``."""
    return config.sampling.seed if FLAGS.seed is None else FLAGS.seed


def load_model(config: ConfigDict, workdir: Path, use_ema: bool = True) -> sd.ScoreModel:
    """The model of ``config`` with the latest checkpoint's weights in ``workdir``."""
    from scoresde.train import load_trained

    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {workdir} does not exist; train a model there first: "
                                f"scoresde train --config=FILE --workdir={workdir}")
    return load_trained(config, workdir, use_ema=use_ema)


def test_split(config: ConfigDict, n: int | None = None) -> tuple[Tensor, DataSpec]:
    """The config's test split: ``n`` points, or ``config.eval.n_test`` (0: all) by default."""
    from scoresde.train import load_data

    if n is not None:
        config = config.copy_and_resolve_references()
        config.eval.n_test = int(n)
    return load_data(config, "test")


def _steps_text(steps: int | None) -> str:
    """``"20 steps"``, or ``"adaptive"`` for ``None``."""
    return "adaptive" if steps is None else f"{steps} steps"


def _describe(name: str, options: dict[str, Any]) -> str:
    """``"ode method=dopri5 rtol=1e-05"``, or just the name without options."""
    return f"{name} {demo.format_options(options)}" if options else name


def _pixels(x: Tensor, spec: DataSpec) -> Tensor:
    """Model-range images → integer pixels (clamped to the data range) on the CPU."""
    return to_pixels(x.detach().cpu(), spec)


# --- modes ------------------------------------------------------------------------------------


def train_mode() -> None:
    """``scoresde train``: :func:`scoresde.train.train` on --config in --workdir (resumes)."""
    from scoresde.train import train

    config, workdir = _config(), _workdir()
    start = time.perf_counter()
    result = train(config, workdir)
    wall = time.perf_counter() - start
    if result.losses:
        print(f"trained to step {result.step} in {wall:.1f} s; last logged loss {result.losses[-1][1]:.5f}; "
              f"checkpoints in {workdir / 'checkpoints'}")
    else:
        print(f"nothing to train: the checkpoint in {workdir} is at step {result.step} >= "
              f"training.steps={config.training.steps} (raise it with --config.training.steps=N)")


def export_mode() -> None:
    """``scoresde export``: the latest checkpoint's EMA weights alone, to ``--out`` (for shipping)."""
    from scoresde.train import export_model

    if not FLAGS.out:
        raise FlagError("export needs --out=PATH, e.g. models/NAME/checkpoints/ckpt_00003000.pt")
    path = export_model(_config(), _workdir(), FLAGS.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, EMA weights only)")


def sample_mode() -> None:
    """``scoresde sample``: draw samples, write ``samples.png`` and ``samples.npz``."""
    from scoresde import plots

    config, workdir = _config(), _workdir()
    name, options = _sampler_and_options(config, config.sampling.sampler)
    steps = _steps_for(name, options, config.sampling.steps)
    n = FLAGS.n or config.sampling.n
    model = load_model(config, workdir, FLAGS.ema)
    _, spec = test_split(config, 2)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(_seed(config))
    out = sd.sample(model, (n, *spec.shape), name, steps, generator=generator, progress=True, **options)
    wall = time.perf_counter() - start
    x = out.x.detach().cpu()

    workdir.mkdir(parents=True, exist_ok=True)
    title = f"{_describe(name, options)}, {_steps_text(steps)}: NFE {out.nfe}, {wall:.2f} s"
    arrays: dict[str, Any] = {"x": x.numpy(), "nfe": out.nfe, "wall_s": wall, "sampler": name,
                              "steps": -1 if steps is None else steps, "timesteps": out.timesteps.numpy()}
    if spec.is_image:
        pixels = _pixels(x, spec)
        arrays["pixels"] = pixels.numpy()
        plots.save_image_panels(workdir / "samples.png", [plots.ImagePanel(title, pixels)], spec.levels)
    elif spec.shape == (2,):
        plots.save_scatter_panels(workdir / "samples.png", [plots.ScatterPanel(title, x)])
    else:
        logging.warning("no plot for %s data of shape %s; writing samples.npz only", spec.name, spec.shape)
    np.savez(workdir / "samples.npz", **arrays)
    print(f"{_describe(name, options)}, {_steps_text(steps)}, n={n}")
    print(f"NFE {out.nfe}, time {wall:.3f} s ({n / wall:.0f} samples/s)")
    print(f"wrote {workdir / 'samples.png'} and {workdir / 'samples.npz'}")


def likelihood_mode() -> None:
    """``scoresde likelihood``: bits/dim of the test split, mean ± standard error."""
    config, workdir = _config(), _workdir()
    ev = config.eval
    model = load_model(config, workdir, FLAGS.ema)
    x, spec = test_split(config, FLAGS.n)
    if len(x) < 2:
        raise ValueError(f"likelihood needs >= 2 test points for a standard error, got {len(x)}")
    generator = torch.Generator().manual_seed(FLAGS.seed or 0)
    method = ev.get("method", "dopri5")
    options = {"trace": ev.trace, "probes": ev.get("probes", 1), "method": method, "rtol": ev.rtol,
               "atol": ev.atol, "batch_size": ev.batch_size, "progress": True}
    start = time.perf_counter()
    if spec.is_image:
        data = _pixels(x, spec)  # exact: the split lies on the pixel grid
        bpd = sd.bits_per_dim(model, data, data_range=spec.data_range, levels=spec.levels,
                              generator=generator, dtype=x.dtype, **options)
    else:
        bpd = sd.bits_per_dim(model, x, generator=generator, **options)
    wall = time.perf_counter() - start
    d = spec.num_dims
    nats = bpd.bpd * d * math.log(2.0)
    nfe = bpd.likelihood.nfe.double()
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(workdir / "likelihood.npz", bpd=bpd.bpd.numpy(), nll_nats=nats.numpy(),
             nfe=bpd.likelihood.nfe.numpy())
    kind = (f"uniformly dequantized {spec.levels}-level pixels on {tuple(spec.data_range)}"
            if spec.is_image else "continuous data")
    print(f"{spec.name} test split, {len(x)} points ({kind}); PF-ODE {method} rtol={ev.rtol:g} "
          f"atol={ev.atol:g}, trace={ev.trace}")
    print(f"bits/dim: {bpd.mean:.4f} ± {bpd.stderr:.4f} (mean ± standard error)")
    print(f"NLL: {float(nats.mean()):.4f} ± {float(nats.std() / math.sqrt(len(nats))):.4f} nats per sample")
    print(f"NFE: {float(nfe.mean()):.0f} per solve (batch_size {ev.batch_size}); time {wall:.2f} s")
    print(f"wrote {workdir / 'likelihood.npz'}")


def bench_mode() -> None:
    """``scoresde bench``: with --config, the demo's sampler grid on the trained model in
    --workdir (writes ``bench.csv``); without, the project's sampler benchmarks
    (:func:`scoresde.bench.run`, ``--quick`` for smoke sizes) into benchmarks/results."""
    if FLAGS.config is None:
        from scoresde import bench

        bench.run(quick=FLAGS.quick, out=FLAGS.workdir or bench.DEFAULT_OUT)
        return
    config, workdir = _config(), _workdir()
    steps = [int(s) for s in (FLAGS.steps or ["5", "10", "20", "50"])]
    n = FLAGS.n or config.sampling.n
    seed = _seed(config)
    model = load_model(config, workdir, FLAGS.ema)
    _, spec = test_split(config, 2)
    reference = floor = None
    if spec.shape == (2,):
        from scoresde.train import load_data

        reference, _ = test_split(config, n)
        train_set, _ = load_data(config, "train")
        g = torch.Generator().manual_seed(seed)
        size = min(n, len(train_set))
        floor = demo.noise_floor(lambda: train_set[torch.randperm(len(train_set), generator=g)[:size]],
                                 reference)
    runs = demo.sampler_runs(steps, demo.ADAPTIVE_RUN if reference is not None else demo.IMAGE_ADAPTIVE_RUN)
    results = demo.run_samplers(model, (n, *spec.shape), runs, seed, reference, desc="bench")
    rows = [row for row, _ in results]
    workdir.mkdir(parents=True, exist_ok=True)
    csv_path = workdir / "bench.csv"
    demo.write_csv(rows, csv_path, floor)
    print(f"\n{spec.name}, trained model in {workdir}, n={n}")
    print(demo.format_table(rows))
    if floor is not None:
        print("\n" + demo.format_floor(floor, n, "training points and the test split"))
    print(f"\nwrote {csv_path}")


def _decode(model: sd.ScoreModel, z: Tensor, name: str, enc_grid: Tensor,
            options: dict[str, Any]) -> sd.sampling.SampleResult:
    """Decode latents ``z`` over the encoder's grid reversed, without the final denoising."""
    return sd.sample(model, tuple(z.shape), name, timesteps=enc_grid.flip(0), x_T=z, denoise=False, **options)


def reconstruct_mode() -> None:
    """``scoresde reconstruct``: encode → decode test points; PNG side by side and MSE."""
    from scoresde import plots

    config, workdir = _config(), _workdir()
    name, options = _sampler_and_options(None, "ddim")
    steps = _steps_for(name, options, config.sampling.steps)
    model = load_model(config, workdir, FLAGS.ema)
    x, spec = test_split(config, FLAGS.n or 64)

    start = time.perf_counter()
    enc = sd.encode(model, x, name, steps, **options)
    t_enc = time.perf_counter() - start
    start = time.perf_counter()
    dec = _decode(model, enc.x, name, enc.timesteps, options)
    t_dec = time.perf_counter() - start
    x_rec = dec.x.detach().cpu()
    err = (x_rec - x).pow(2).flatten(1).mean(1)
    mse = float(err.mean())

    workdir.mkdir(parents=True, exist_ok=True)
    title = (f"{_describe(name, options)}, {_steps_text(steps)}: encode NFE {enc.nfe}, "
             f"decode NFE {dec.nfe}; per-dim MSE {mse:.2e}")
    arrays = {"x": x.numpy(), "z": enc.x.detach().cpu().numpy(), "x_rec": x_rec.numpy(), "mse": err.numpy()}
    lines = [f"{_describe(name, options)}, {_steps_text(steps)}, "
             f"{len(x)} test points of {spec.name}",
             f"encode: NFE {enc.nfe}, {t_enc:.2f} s; decode: NFE {dec.nfe}, {t_dec:.2f} s",
             f"per-dimension MSE: {mse:.4e} (model's data scale)"]
    if spec.is_image:
        lo, hi = spec.data_range
        lines[-1] += f"; {mse / (hi - lo) ** 2:.4e} on the [0, 1] pixel scale"
        px, px_rec = _pixels(x, spec), _pixels(x_rec, spec)
        arrays["pixels"], arrays["pixels_rec"] = px.numpy(), px_rec.numpy()
        lines.append(f"pixels changed after quantizing: {float((px != px_rec).double().mean()):.2%}")
        plots.save_image_panels(workdir / "reconstruct.png",
                                [plots.ImagePanel("originals (test split)", px),
                                 plots.ImagePanel("reconstructions", px_rec)], spec.levels, title)
    elif spec.shape == (2,):
        plots.save_pair_scatter(workdir / "reconstruct.png", x, x_rec, title)
    else:
        logging.warning("no plot for %s data of shape %s; writing reconstruct.npz only",
                        spec.name, spec.shape)
    np.savez(workdir / "reconstruct.npz", **arrays)
    print("\n".join(lines))
    print(f"wrote {workdir / 'reconstruct.png'} and {workdir / 'reconstruct.npz'}")


def interpolate_mode() -> None:
    """``scoresde interpolate``: decode interpolations between latents of test points."""
    from scoresde import plots

    config, workdir = _config(), _workdir()
    name, options = _sampler_and_options(None, "ddim")
    steps = _steps_for(name, options, config.sampling.steps)
    pairs, k = FLAGS.n or 4, FLAGS.n_interp
    model = load_model(config, workdir, FLAGS.ema)
    x, spec = test_split(config, 2 * pairs)

    start = time.perf_counter()
    enc = sd.encode(model, x, name, steps, **options)
    z = enc.x.detach()
    zs = sd.interpolate(z[0::2], z[1::2], k, method=FLAGS.interpolation)  # (k, pairs, ...)
    dec = _decode(model, zs.reshape(k * pairs, *spec.shape), name, enc.timesteps, options)
    wall = time.perf_counter() - start
    paths = dec.x.detach().cpu().reshape(k, pairs, *spec.shape)
    ends = torch.stack([x[0::2], x[1::2]])  # (2, pairs, ...)

    workdir.mkdir(parents=True, exist_ok=True)
    title = (f"{FLAGS.interpolation} interpolation of {name} latents ({_steps_text(steps)}), "
             f"{k} per path; encode NFE {enc.nfe}, decode NFE {dec.nfe}")
    arrays = {"ends": ends.numpy(), "latents": zs.cpu().numpy(), "paths": paths.numpy()}
    if spec.is_image:
        # One row per pair: the first test image, the k decoded latents, the second test image.
        strip = torch.cat([ends[0][None], paths, ends[1][None]]).transpose(0, 1)  # (pairs, k + 2, ...)
        pixels = _pixels(strip.reshape(pairs * (k + 2), *spec.shape), spec)
        arrays["pixels"] = pixels.numpy()
        panel = plots.ImagePanel(title + "\nfirst and last columns: the test images", pixels, k + 2)
        plots.save_image_panels(workdir / "interpolate.png", [panel], spec.levels,
                                panel_inches=max(1.6, 0.8 * pairs))
    elif spec.shape == (2,):
        from scoresde.train import load_data

        background, _ = load_data(config, "train")
        plots.save_path_scatter(workdir / "interpolate.png", background, paths, ends,
                                title + "\n(grey: training data; stars: the test points joined)")
    else:
        logging.warning("no plot for %s data of shape %s; writing interpolate.npz only",
                        spec.name, spec.shape)
    np.savez(workdir / "interpolate.npz", **arrays)
    print(f"{pairs} pairs of {spec.name} test points, {k} {FLAGS.interpolation} latents per path; "
          f"{name} {_steps_text(steps)}: encode NFE {enc.nfe}, decode NFE {dec.nfe}, {wall:.2f} s")
    print(f"wrote {workdir / 'interpolate.png'} and {workdir / 'interpolate.npz'}")


def demo_mode() -> None:
    """``scoresde demo``: the trained digits model (if shipped), then the 2-D oracle."""
    workdir = FLAGS.workdir or "demo_out"
    seed = 0 if FLAGS.seed is None else FLAGS.seed
    if FLAGS.problem in ("all", "digits"):
        model_dir = demo.resolve_path(FLAGS.model_dir)
        if demo.find_model(model_dir) is not None:
            config = FLAGS.config if FLAGS.config is not None else demo.load_config_file(
                demo.resolve_path(demo.DEFAULT_MODEL_CONFIG))
            demo.run_digits_demo(workdir, config, model_dir, steps=FLAGS.digits_steps, n=FLAGS.digits_n,
                                 nll_n=FLAGS.nll_n, seed=seed)
        else:
            message = (f"no trained model in {FLAGS.model_dir} (train it with `{demo.TRAIN_COMMAND}`, "
                       "or point --model_dir at one)")
            if FLAGS.problem == "digits":
                raise FileNotFoundError(message)
            print(f"{message}; running the 2-D oracle demo only.")
    if FLAGS.problem in ("all", "gmm"):
        demo.run_demo(workdir, n=FLAGS.n or 2000, seed=seed,
                      steps=[int(s) for s in (FLAGS.steps or ["5", "10", "20", "50"])],
                      sde_name=FLAGS.sde, plot_steps=FLAGS.plot_steps)


# --- modes and entry point --------------------------------------------------------------------

MODES: dict[str, Callable[[], None]] = {
    "train": train_mode,
    "export": export_mode,
    "sample": sample_mode,
    "likelihood": likelihood_mode,
    "bench": bench_mode,
    "reconstruct": reconstruct_mode,
    "interpolate": interpolate_mode,
    "demo": demo_mode,
}
# Errors that mean "bad input or missing files": reported as one line, not a traceback
# (--verbosity=1 logs the traceback too).
USER_ERRORS = (ValueError, FileNotFoundError, ImportError, FloatingPointError)


def main(argv: Sequence[str]) -> None:
    """absl main: ``argv[1]`` is the mode; everything else arrived as flags."""
    modes = ", ".join(MODES)
    if len(argv) < 2:
        raise app.UsageError(f"missing mode: run `scoresde MODE [flags]` with MODE one of: {modes}")
    if len(argv) > 2:
        raise app.UsageError(f"unexpected arguments {list(argv[2:])}; flags are written --name=value")
    mode = argv[1]
    if mode not in MODES:
        raise app.UsageError(f"unknown mode {mode!r}; available modes: {modes}")
    threads = FLAGS.threads or (1 if mode == "demo" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        MODES[mode]()
    except USER_ERRORS as e:
        logging.debug("traceback of the error below", exc_info=True)
        _fail(f"{mode}: {e}", code=1)


def run() -> None:
    """Console-script entry point (``scoresde``)."""
    main_module = sys.modules["__main__"]
    if main_module.__doc__ is None:
        # absl prints __main__'s docstring and the flags of the module named sys.argv[0] as
        # usage; the console-script wrapper has neither, so lend it this module's.
        main_module.__doc__ = __doc__
        for flag in FLAGS.get_flags_for_module(__name__):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
