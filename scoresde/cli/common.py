"""What the command-line modes share: flags, config loading with checked overrides, the checks made
before a mode starts (config values, output folders), one-line error reports, model and data loading,
and the sampler-run table (run, measure, print, write CSV) that ``demo`` and ``bench`` both use.
"""

from __future__ import annotations

import ast
import csv
import difflib
import errno
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from absl import flags
from ml_collections import ConfigDict, config_flags
from torch import Tensor
from tqdm.auto import tqdm

import scoresde as sd
from scoresde import assets, distributed, experiment
from scoresde.config import check_values, default_config
from scoresde.data import DataSpec, to_pixels
from scoresde.errors import InputError
from scoresde.metrics import mmd2

FLAGS = flags.FLAGS

config_flags.DEFINE_config_file(
    "config", None,
    "Experiment config file defining get_config(), e.g. configs/digits_vp.py (score_sde style). "
    "Override any key with --config.KEY=VALUE, e.g. --config.training.steps=500. Required by train "
    "and export; the model-loading modes take the config stored in the checkpoint when it is "
    "omitted.",
    lock_config=True)
flags.DEFINE_string(
    "workdir", None,
    "Experiment folder. train: checkpoints go to WORKDIR/checkpoints (an existing one is resumed). "
    "sample, likelihood, bench, reconstruct, interpolate: outputs are written here, and the model "
    "is loaded from its latest checkpoint unless --model_dir says otherwise. demo: the output "
    "folder (default demo_out).")
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
flags.DEFINE_string(
    "timesteps_file", None,
    "sample: read the time grid from this file instead of --steps: a JSON list of strictly "
    "decreasing times in [0, T] (e.g. one of scoresde.assets.digits_grid's), or whitespace/comma "
    "separated numbers.")
flags.DEFINE_integer(
    "n", None,
    "How many. sample, bench: samples per run (default config.sampling.n). likelihood: test "
    "points (default config.eval.n_test; 0 there means the whole split). reconstruct: test points "
    "(default 64). interpolate: pairs of test points (default 4). demo: samples per oracle run "
    "(default 2000).", lower_bound=1)
# torchrun's argument parser takes --n=... for an abbreviation of its own --nnodes/--nproc_per_node
# and stops; under torchrun write --num_samples=....
flags.DEFINE_alias("num_samples", "n")
flags.DEFINE_integer(
    "shard_size", 1000,
    "sample: samples per shard, each drawn as one batch with scoresde.PerSampleNoise (sample i from stream "
    "i) and written to WORKDIR/shards/ before the merge into samples.npz; a killed run resumes the "
    "missing shards, under torchrun they are dealt over the processes. The samples do not depend on "
    "the number of processes.", lower_bound=1)
flags.DEFINE_integer(
    "seed", None,
    "Random seed of the prior draw, the samplers' noise, dequantization and Hutchinson probes "
    "(default config.sampling.seed; demo: 0).", lower_bound=0)
flags.DEFINE_bool("ema", True, "Load the EMA weights of the checkpoint (--noema: the raw weights).")
flags.DEFINE_integer(
    "threads", None,
    "torch intra-op threads (default: 1 for demo, whose tensors are too small to gain from more; "
    "torch's default otherwise).", lower_bound=1)
flags.DEFINE_string(
    "model_dir", None,
    "Where the model-loading modes (sample, likelihood, bench, reconstruct, interpolate, demo) load "
    "the trained model from: a workdir (its latest checkpoint), a checkpoint file, the name of a "
    "shipped model (digits_vp), or a local diffusers folder (a pipeline folder with model_index.json, "
    "or a UNet folder with its scheduler_config.json; with vae/ a latent model on its AutoencoderKL). "
    "Default: --workdir (demo: the shipped digits_vp).")

flags.DEFINE_integer(
    "class", None,
    "sample: draw this class (0..num_classes-1) from a class-conditional model (config "
    "model.num_classes > 0, e.g. the shipped digits_vp_cond). Without it a conditional model is "
    "sampled unconditionally (its null label).", lower_bound=0)
flags.DEFINE_float(
    "guidance", None,
    "sample: classifier-free guidance weight w with --class (Ho & Salimans: eps_c + w*(eps_c - eps_u); "
    "0 = plain conditional sampling; diffusers' guidance_scale is 1 + w).")
flags.DEFINE_list(
    "guidance_interval", None,
    "sample: guide only for times t_lo,t_hi in [0, 1] (Kynkaanniemi et al. 2024), e.g. 0.1,0.7.")
flags.DEFINE_bool(
    "debug", False,
    "On a user error (bad flag, config, path, data or checkpoint) print the traceback above the one-line "
    "message. Errors that are not user errors (bugs) always show their traceback.")


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


class ConfigError(InputError):
    """The --config file cannot be loaded, or one of its values is out of range (a usage error)."""


class ConfigKeyError(ConfigError):
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


def load_config_argument(argv: Sequence[str]) -> ConfigDict | None:
    """The config of ``--config=FILE[:ARGUMENT]`` in ``argv`` (``None`` without one), loaded here
    first so that a missing file, a syntax error or an exception in ``get_config()`` is one line
    naming the file (and line) rather than ml_collections' traceback.

    Raises:
        ConfigError: the file is missing or fails to load.
    """
    source = _config_argument(argv)
    if source is None:
        return None
    path, _, argument = source.partition(":")
    if not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "not found"
        raise ConfigError(f"config file {path} {what} (--config={source}); pass a Python file defining "
                          "get_config(), e.g. --config=configs/digits_vp.py")
    try:
        return experiment.load_config_file(path, argument or None)
    except SyntaxError as e:
        code = f": {e.text.strip()!r}" if e.text else ""
        raise ConfigError(f"config file {e.filename or path}, line {e.lineno}: {e.msg}{code}; fix the "
                          "file's Python syntax") from e
    except Exception as e:  # the user's own code in get_config() failed: their error, in one line
        raise ConfigError(f"config file {path} failed to load: {type(e).__name__}: {e} (--debug shows "
                          "where)") from e


def check_config_overrides(argv: Sequence[str], config: ConfigDict | None = None) -> None:
    """Check every ``--config.KEY`` in ``argv`` against the keys of the ``--config`` file
    (``config``: that file already loaded, else it is loaded here).

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
    path = source.partition(":")[0]
    config = load_config_argument(argv) if config is None else config
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


# Exit statuses (see the package docstring): a usage error, found before the mode starts or by the
# command line's own checks of flags and config; a user error found while the mode runs.
USAGE, RUNTIME = 2, 1
# OS errors of the paths a user names, reported as one line: missing, unwritable, file-not-folder
# and folder-not-file paths, and (as OSError with these errno) a full disk or a read-only file system.
USER_OS_ERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)
USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.EACCES: "pass a path you can write to",
    errno.EPERM: "pass a path you can write to",
    errno.EROFS: "the file system is read-only: pass a path on a writable one",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder: pass a file",
    errno.ENOSPC: "the disk is full: free space or pass a path on another disk",
    errno.EDQUOT: "the disk quota is used up: free space or pass a path on another disk",
}


def is_user_error(e: BaseException) -> bool:
    """An error of the user's input (reported in one line), not a bug (which keeps its traceback):
    the library's :class:`~scoresde.errors.InputError` family (which includes :class:`FlagError` and
    :class:`ConfigError`) and the OS errors of user paths (:data:`USER_OS_ERRORS`, :data:`USER_ERRNOS`)."""
    return isinstance(e, (InputError, *USER_OS_ERRORS)) or (isinstance(e, OSError) and e.errno in USER_ERRNOS)


def error_message(e: BaseException) -> str:
    """The one-line text of a user error: its message, or for an OS error its reason, the path and a
    hint (``No space left on device: runs/x/samples.npz (the disk is full: ...)``)."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        hint = OS_HINTS.get(e.errno or 0)
        return f"{e.strerror}: {e.filename}" + (f" ({hint})" if hint else "")
    return str(e) or type(e).__name__


def fail(message: str, code: int = USAGE, mode: str | None = None) -> NoReturn:
    """Print ``scoresde MODE: MESSAGE`` (``scoresde: MESSAGE`` without a mode) to stderr as one line
    (a message of several lines is joined with "; ") and exit with ``code``."""
    text = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"scoresde {mode}: {text}" if mode else f"scoresde: {text}", file=sys.stderr)
    sys.exit(code)


def report(e: BaseException, code: int, mode: str | None, debug: bool) -> NoReturn:
    """:func:`fail` with the user error ``e``'s message; with ``debug`` its traceback first. Progress
    bars still open (the error came mid-run) are cleared first, so the message is the line left."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.leave = False
        bar.close()
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    fail(error_message(e), code, mode)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser for :func:`run`: loads the --config file and checks its override keys, then
    parses the flags; every error is one line (exit status 2), with its traceback under --debug."""
    mode = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
    debug = "--debug" in argv
    try:
        check_config_overrides(argv, load_config_argument(argv))
        return FLAGS(argv)
    except flags.Error as e:  # absl: an unknown flag, a bad value, a validator's refusal
        report(FlagError(str(e)), USAGE, mode, debug)
    except (AttributeError, KeyError) as e:  # ml_collections' report of a key missing after all
        report(ConfigError(f"bad config override: {e}"), USAGE, mode, debug)
    except InputError as e:
        report(e, USAGE, mode, debug)


# --- helpers shared by the modes --------------------------------------------------------------


class FlagError(InputError):
    """A flag is missing or does not fit the mode (reported in one line, with a pointer to --help)."""

    def __str__(self) -> str:
        return f"{super().__str__()} (`scoresde --helpshort` lists the flags)"


def config() -> ConfigDict:
    """The parsed --config (overrides applied); a :class:`FlagError` if none was given."""
    if FLAGS.config is None:
        raise FlagError("--config=FILE is required, e.g. --config=configs/digits_vp.py")
    return FLAGS.config


def workdir() -> Path:
    """--workdir as a path; a :class:`FlagError` if none was given."""
    if not FLAGS.workdir:
        raise FlagError("--workdir=DIR is required")
    return Path(FLAGS.workdir)


def check_output_folder(folder: Path, flag: str) -> None:
    """Refuse an output folder that cannot be written before any work is done: a path that is a
    file, or inside a file, or in a folder where no file can be created (read-only, no permission).
    A folder that does not exist yet is fine if it can be created; nothing is created here.

    Raises:
        FlagError: naming the flag, the path and why.
    """
    if folder.exists() and not folder.is_dir():
        raise FlagError(f"{flag}={folder} is a file, not a folder; pass a folder (it is created if missing)")
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise FlagError(f"{flag}={folder} cannot be created: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        where = "in it" if existing == folder.absolute() else f"in {existing}, where it would be created"
        raise FlagError(f"{flag}={folder} is not writable: cannot create a file {where} ({e.strerror}); "
                        "pass a folder you can write to") from e


def output_folders(mode: str) -> list[tuple[str, Path]]:
    """(flag, folder) of every folder mode ``mode`` writes to (none where the flag is missing: the
    mode reports that itself)."""
    if mode == "export":
        if not FLAGS.out:
            return []
        out = Path(FLAGS.out)
        if FLAGS.export_format == "scoresde":
            if out.is_dir():
                raise FlagError(f"--out={out} is a folder; pass the file to write, e.g. {out / 'model.pt'}")
            return [("--out", out.parent)]
        if out.exists() and not out.is_dir():
            raise FlagError(f"--out={out} is a file; --export_format=diffusers writes a folder: pass a new "
                            "folder's path")
        return [("--out", out.parent)]  # the folder is written beside its place and renamed into it
    if mode == "demo":
        return [("--workdir", Path(FLAGS.workdir or "demo_out"))]
    return [("--workdir", Path(FLAGS.workdir))] if FLAGS.workdir else []


def preflight(mode: str) -> None:
    """The checks made before mode ``mode`` starts, so that a bad value is reported before any
    training or sampling rather than at the first write: the --config values (types and ranges,
    :func:`scoresde.config.check_values`), the output folders (:func:`check_output_folder`) and
    the --timesteps_file.

    Raises:
        InputError: the first problem found (the caller reports it as a usage error).
    """
    if FLAGS.config is not None:
        check_values(FLAGS.config)
    for flag, folder in output_folders(mode):
        check_output_folder(folder, flag)
    if FLAGS.timesteps_file and not Path(FLAGS.timesteps_file).is_file():
        raise FlagError(f"--timesteps_file={FLAGS.timesteps_file} is not a file; pass a JSON list or "
                        "numbers in a text file")


def one_steps(default: int | None) -> int | None:
    """The single --steps value, or ``default`` when --steps was not given."""
    if FLAGS.steps is None:
        return default
    if len(FLAGS.steps) != 1:
        raise FlagError(f"--steps takes one value in this mode, got {','.join(FLAGS.steps)}")
    return int(FLAGS.steps[0])


def steps_list(default: Sequence[int] = (5, 10, 20, 50)) -> list[int]:
    """--steps as a list of integers, or ``default``."""
    return [int(s) for s in FLAGS.steps] if FLAGS.steps is not None else list(default)


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


def sampler_and_options(cfg: ConfigDict | None, default: str) -> tuple[str, dict[str, Any]]:
    """--sampler (or ``default``) and its options: the config's ``sampling.options`` when it
    names that sampler, updated by --sampler_options; checked against the sampler's declared
    options (a misspelt name is an error listing the valid ones, a value of the wrong type an error
    naming the type expected). The library's refusals become :class:`FlagError` (usage errors)."""
    name = FLAGS.sampler or default
    try:
        spec = sd.samplers.get(name)  # an unknown name fails here, listing the available ones
    except InputError as e:
        raise FlagError(f"--sampler={name}: {e}") from e
    options: dict[str, Any] = {}
    if cfg is not None and name == cfg.sampling.sampler and cfg.sampling.get("options"):
        options.update(dict(cfg.sampling.options))
    options.update(parse_options(FLAGS.sampler_options))
    try:
        spec.parse(options)
    except InputError as e:
        given = f"--sampler_options={','.join(FLAGS.sampler_options)}" if FLAGS.sampler_options else (
            "config sampling.options")
        raise FlagError(f"{given}: {e}") from e
    return name, options


def encoder_and_options() -> tuple[str, dict[str, Any]]:
    """--sampler (default ddim) and its options for encoding (reconstruct, interpolate): refused
    before any work when the sampler, with these options, is stochastic and so cannot encode."""
    name, options = sampler_and_options(None, "ddim")
    if sd.samplers.get(name).parse(options).stochastic:
        raise FlagError(f"--sampler={name} is stochastic and cannot encode; pass a deterministic one "
                        "(ddim with eta=0, ode, dpm_solver, unipc, ...)")
    return name, options


def steps_for(name: str, options: dict[str, Any], default: int) -> int | None:
    """One step count, or ``None`` for an adaptive solver when --steps was not given."""
    if FLAGS.steps is None and not sd.samplers.get(name).parse(options).uses_grid:
        return None
    return one_steps(default)


def timesteps_from_file(path: str | Path) -> Tensor:
    """The float64 time grid in ``path`` (a JSON list, or numbers separated by whitespace or
    commas); checked by the sampler's entry point (decreasing, in [0, T])."""
    import json

    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise FlagError(f"--timesteps_file={path} is not a text file; expected a JSON list or "
                        "numbers") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        try:
            values = [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            raise FlagError(f"--timesteps_file={path}: expected a JSON list or numbers, "
                            f"got {text[:60]!r}") from None
    if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
        raise FlagError(f"--timesteps_file={path}: expected a list of numbers, got {text[:60]!r}")
    return torch.tensor(values, dtype=torch.float64)


def seed(cfg: ConfigDict) -> int:
    """--seed, else ``config.sampling.seed``."""
    return cfg.sampling.seed if FLAGS.seed is None else FLAGS.seed


def model_source(default: str | Path | None = None) -> Path:
    """Where to load the model from: --model_dir (a path, or a shipped model's name), else
    ``default``, else --workdir."""
    given = FLAGS.model_dir or default
    if given is None:
        if not FLAGS.workdir:
            raise FlagError("pass --model_dir=PATH (a workdir, a checkpoint or a shipped model: "
                            f"{', '.join(assets.SHIPPED)}) or --workdir=DIR of a trained model")
        given = FLAGS.workdir
    if not Path(given).exists() and str(given) in assets.SHIPPED:
        return assets.shipped_model(str(given))
    return Path(given)


def is_diffusers_folder(path: Path) -> bool:
    """A diffusers pipeline folder (``model_index.json``) or model folder (``config.json``)."""
    return path.is_dir() and ((path / "model_index.json").is_file() or (path / "config.json").is_file())


def load_diffusers_folder(source: Path) -> tuple[sd.DiffusionModel, ConfigDict]:
    """A diffusers folder as a model (:func:`scoresde.interop.load_diffusers`; a pipeline folder with
    ``vae/`` is a latent model on its AutoencoderKL) and a config: --config if given (its data group
    is what the model is evaluated on), else the defaults with no data set (``data.name = ""``)."""
    from scoresde import interop

    model: sd.DiffusionModel = interop.load_diffusers(source)
    if type(model.net.unet).__name__ == "UNet2DConditionModel":
        raise FlagError(f"{source} holds a UNet2DConditionModel, which needs text embeddings "
                        "(encoder_hidden_states) that the command line cannot make; sample it from Python: "
                        "sd.sample(model, shape, cond=embeddings), see the README's 'Use a diffusers model'")
    if (source / "vae" / "config.json").is_file():  # Stable Diffusion's layout: a latent model
        model = sd.LatentDiffusion(model, sd.load_autoencoder_kl(source, subfolder="vae"))
    if FLAGS.config is not None:
        data_spec(model, FLAGS.config)  # the data must fit the model
        return model, FLAGS.config
    cfg = default_config()
    cfg.data.name = ""  # no data set: sample and bench only
    cfg.sampling.n = 16
    return model, cfg


def _pixel_model(model: sd.DiffusionModel) -> sd.DiffusionModel:
    """The model that runs the sampler: a latent model's inner model, else ``model``."""
    latent = sd.latent.find_latent_model(model)
    return model if latent is None else latent.model


def diffusers_data_shape(model: sd.DiffusionModel) -> tuple[int, ...] | None:
    """The per-sample data shape of a diffusers model (see :func:`load_diffusers_folder`): the UNet's
    ``(in_channels, *sample_size)``, times the AutoencoderKL's downsampling for a latent model;
    ``None`` for other models."""
    from scoresde import interop

    net = getattr(_pixel_model(model), "net", None)
    if not isinstance(net, interop.DiffusersUNet):
        return None
    unet = net.unet.config
    size = tuple(unet.sample_size) if isinstance(unet.sample_size, (list, tuple)) else (unet.sample_size,) * 2
    latent = sd.latent.find_latent_model(model)
    if latent is None:
        return (unet.in_channels, *size)
    vae = latent.autoencoder.vae.config
    factor = 2 ** (len(vae.block_out_channels) - 1)
    return (vae.in_channels, *(n * factor for n in size))


def data_spec(model: sd.DiffusionModel, cfg: ConfigDict) -> DataSpec:
    """What one sample of ``model`` is: the config's data set, or for a diffusers model without
    one, 8-bit images on [−1, 1] of the UNet's shape (diffusers' convention)."""
    diffusers_shape = diffusers_data_shape(model)
    if not cfg.data.name and diffusers_shape is not None:
        return DataSpec("diffusers model", diffusers_shape, 256, (-1.0, 1.0))
    _, spec = test_split(cfg, 2)
    if diffusers_shape is not None and tuple(spec.shape) != diffusers_shape:
        raise FlagError(f"--config's data ({spec.name}, shape {tuple(spec.shape)}) does not fit the model "
                        f"in --model_dir, which makes samples of shape {diffusers_shape}")
    return spec


def to_device(model: sd.DiffusionModel, world: distributed.World) -> sd.DiffusionModel:
    """``model`` moved to the device of this process (a no-op on the CPU): under torchrun with CUDA,
    ``cuda:LOCAL_RANK``."""
    if world.device.type != "cpu" and isinstance(model, torch.nn.Module):
        model.to(world.device)
    return model


def sample_shape(model: sd.DiffusionModel, spec: DataSpec) -> tuple[int, ...]:
    """The per-sample shape the sampler runs in: the data's, or a latent model's latent shape."""
    latent = sd.latent.find_latent_model(model)
    return tuple(spec.shape) if latent is None else latent.latent_shape(tuple(spec.shape))


def load_model(default_source: str | Path | None = None) -> tuple[sd.DiffusionModel, ConfigDict]:
    """The trained model and its config: --config if given (it must match the checkpoint),
    else the config stored in the checkpoint. EMA weights unless --noema. A diffusers folder
    loads through :func:`load_diffusers_folder`."""
    source = model_source(default_source)
    if is_diffusers_folder(source):
        return load_diffusers_folder(source)
    found = experiment.find_model(source)
    if found is None:
        raise FileNotFoundError(f"no trained model in {source} (a workdir with checkpoints/, a "
                                "checkpoint file, or a shipped model name); train one first: "
                                "scoresde train --config=FILE --workdir=DIR")
    cfg = FLAGS.config if FLAGS.config is not None else experiment.config_from_checkpoint(found)
    return experiment.load_trained(cfg, found, use_ema=FLAGS.ema), cfg


def conditioning(model: sd.ScoreModel, cfg: ConfigDict,
                 n: int) -> tuple[sd.DiffusionModel, Tensor | None, str]:
    """The model to sample, the condition of ``n`` samples and a description, from --class,
    --guidance and --guidance_interval: the plain model and no condition without them; the
    classifier-free-guided model (:class:`scoresde.ClassifierFreeGuidance`) with --guidance."""
    label, w, interval = FLAGS["class"].value, FLAGS.guidance, FLAGS.guidance_interval
    classes = cfg.model.get("num_classes", 0)
    if label is None:
        if w is not None or interval is not None:
            raise FlagError("--guidance and --guidance_interval need --class=C (the class to guide towards)")
        return model, None, ""
    if classes == 0:
        raise FlagError(f"--class={label} needs a class-conditional model (config model.num_classes > 0, "
                        "e.g. --model_dir=digits_vp_cond); this one is unconditional")
    if label >= classes:
        raise FlagError(f"--class must lie in 0..{classes - 1} for this model, got {label}")
    cond = torch.full((n,), label, dtype=torch.long)
    if w is None:
        if interval is not None:
            raise FlagError("--guidance_interval needs --guidance=W")
        return model, cond, f"class {label}"
    if interval is not None:
        given = ",".join(interval)
        try:
            interval = tuple(float(v) for v in interval)
        except ValueError:
            interval = ()
        if len(interval) != 2:
            raise FlagError(f"--guidance_interval must be two times t_lo,t_hi, got {given}")
    guided = sd.ClassifierFreeGuidance(model, w, interval=interval)
    text = f"class {label}, guidance w={w:g}"
    if interval is not None:
        text += f" on t in [{interval[0]:g}, {interval[1]:g}]"
    return guided, cond, text


def test_split(cfg: ConfigDict, n: int | None = None) -> tuple[Tensor, DataSpec]:
    """The config's test split: ``n`` points, or ``config.eval.n_test`` (0: all) by default."""
    if not cfg.data.name:
        raise FlagError("this mode needs data and the model in --model_dir comes without a data set: pass "
                        "--config=FILE whose data group names the images to evaluate on")
    if n is not None:
        cfg = cfg.copy_and_resolve_references()
        cfg.eval.n_test = int(n)
    return experiment.load_data(cfg, "test")


def steps_text(steps: int | None) -> str:
    """``"20 steps"``, or ``"adaptive"`` for ``None``."""
    return "adaptive" if steps is None else f"{steps} steps"


def format_options(options: Mapping[str, Any]) -> str:
    """``{"eta": 0.0, "method": "heun"}`` → ``"eta=0 method=heun"``."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())


def describe(name: str, options: Mapping[str, Any]) -> str:
    """``"ode method=dopri5 rtol=1e-05"``, or just the name without options."""
    return f"{name} {format_options(options)}" if options else name


def pixels(x: Tensor, spec: DataSpec) -> Tensor:
    """Model-range images → integer pixels (clamped to the data range) on the CPU."""
    return to_pixels(x.detach().cpu(), spec)


# --- the sampler-run table of ``demo`` and ``bench`` ----------------------------------------------

# One run with an adaptive solver, which picks its own steps.
ADAPTIVE = sd.samplers.Variant("ode dopri5", "ode", {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5})
# On images a looser tolerance: the samples look the same and the run stays a few seconds.
IMAGE_ADAPTIVE = sd.samplers.Variant("ode dopri5 1e-3", "ode",
                                     {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3})
# Independent exact sets compared with the reference to measure how much MMD² scatters.
FLOOR_SETS = 5


@dataclass(frozen=True)
class Run:
    """One sampler run to make: a variant of the registry's table and its steps (``None``: adaptive)."""

    variant: sd.samplers.Variant
    steps: int | None


@dataclass(frozen=True)
class Row:
    """One sampler run: what ran, what it cost and (where a reference exists) how close it came."""

    label: str
    sampler: str
    options: str
    grid: str
    steps: int | None  # None for an adaptive solver
    nfe: int
    wall_s: float
    mmd2: float | None  # None where no reference was given (images)


@dataclass(frozen=True)
class NoiseFloor:
    """MMD² of one independent exact set to the reference, and its spread over several sets."""

    mmd2: float
    std: float


def sampler_runs(steps: Sequence[int], variants: Sequence[sd.samplers.Variant],
                 adaptive: sd.samplers.Variant | None = ADAPTIVE) -> list[Run]:
    """Every fixed-step variant at every count in ``steps`` and every adaptive one once, plus one
    run of ``adaptive`` after the fixed-step runs of its sampler."""
    steps = sorted({int(s) for s in steps})
    if not steps or steps[0] < 1:
        raise InputError(f"steps must be integers >= 1, got {steps}")

    def counts(v: sd.samplers.Variant) -> list[int | None]:
        return steps if sd.samplers.get(v.sampler).parse(v.options).uses_grid else [None]

    runs = [Run(v, k) for v in variants for k in counts(v)]
    if adaptive is not None:
        ours = [i for i, r in enumerate(runs) if r.variant.sampler == adaptive.sampler]
        last = ours[-1] if ours else len(runs) - 1
        runs.insert(last + 1, Run(adaptive, None))
    return runs


def run_samplers(model: sd.ScoreModel, shape: tuple[int, ...], runs: Sequence[Run], seed: int = 0,
                 reference: Tensor | None = None, progress: bool = True,
                 desc: str = "samplers", device: torch.device | None = None) -> list[tuple[Row, Tensor]]:
    """Run each of ``runs`` on ``model`` (on ``device``, default the CPU) and measure it.

    Every run starts from the same prior draw (generator seeded with ``seed + 1``); wall time
    is measured around :func:`scoresde.sample` only, after one tiny warm-up call so the first
    run does not pay torch's start-up costs. With ``reference`` the unbiased MMD² of the
    samples to it is recorded as well.
    """
    sd.sample(model, (2, *shape[1:]), "ddim", 1, generator=torch.Generator().manual_seed(seed), device=device)
    results: list[tuple[Row, Tensor]] = []
    for run in tqdm(runs, desc=desc, unit="run", disable=not progress):
        v = run.variant
        gen = torch.Generator().manual_seed(seed + 1)  # same prior draw for every run
        start = time.perf_counter()
        out = sd.sample(model, shape, v.sampler, run.steps, generator=gen, device=device, **v.options)
        wall = time.perf_counter() - start
        spec = sd.samplers.get(v.sampler)
        grid = "adaptive" if run.steps is None else spec.grid_for(model.sde, spec.parse(v.options))
        distance = None if reference is None else mmd2(out.x, reference)
        results.append((Row(v.label, v.sampler, format_options(v.options), grid, run.steps, out.nfe, wall,
                            distance), out.x))
    return results


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table (the MMD² column only if some row has one)."""
    with_mmd = any(r.mmd2 is not None for r in rows)
    header = ("variant", "options", "grid", "steps", "NFE", "time [s]") + (("MMD²",) if with_mmd else ())
    cells = [
        (r.label, r.options, r.grid, "-" if r.steps is None else str(r.steps), str(r.nfe), f"{r.wall_s:.3f}")
        + ((("-" if r.mmd2 is None else f"{r.mmd2:+.2e}"),) if with_mmd else ())
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    right = {3, 4, 5, 6}

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def format_floor(floor: NoiseFloor, n: int, what: str = "two independent exact sets") -> str:
    """One sentence on the MMD² noise floor, for under a table."""
    return (f"noise floor: MMD² between {what} of {n}: {floor.mmd2:+.2e} "
            f"(std over {FLOOR_SETS} sets: {floor.std:.1e}: differences of this size are noise)")


def write_csv(rows: Sequence[Row], path: str | Path, floor: NoiseFloor | None = None) -> None:
    """Write the rows to ``path``.

    Columns: variant, sampler, options, grid, steps (empty for the adaptive run), nfe, wall_s,
    mmd2 (empty where not measured) and, with ``floor``, mmd2_noise_floor and mmd2_noise_std.
    """
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        extra = ["mmd2_noise_floor", "mmd2_noise_std"] if floor is not None else []
        w.writerow(["variant", "sampler", "options", "grid", "steps", "nfe", "wall_s", "mmd2", *extra])
        for r in rows:
            values = [r.label, r.sampler, r.options, r.grid, "" if r.steps is None else r.steps, r.nfe,
                      f"{r.wall_s:.6f}", "" if r.mmd2 is None else f"{r.mmd2:.6e}"]
            if floor is not None:
                values += [f"{floor.mmd2:.6e}", f"{floor.std:.6e}"]
            w.writerow(values)


def noise_floor(draw: Any, reference: Tensor, sets: int = FLOOR_SETS) -> NoiseFloor:
    """MMD² of ``sets`` independent sets ``draw()`` to ``reference``: the first, and their std."""
    floors = [mmd2(draw(), reference) for _ in range(sets)]
    return NoiseFloor(floors[0], float(torch.tensor(floors, dtype=torch.float64).std()))


def split_bits_per_dim(model: sd.ScoreModel, cfg: ConfigDict, x: Tensor, spec: DataSpec, seed: int,
                       progress: bool = True, world: distributed.World | None = None) -> sd.BitsPerDim:
    """Bits/dim of data ``x`` of ``spec`` with the config's ``eval`` settings (trace, probes,
    method, rtol, atol, batch size); image splits are uniformly dequantized pixels.

    Without ``world``: one process, the noise from ``torch.Generator().manual_seed(seed)``. With it:
    :func:`scoresde.distributed.bits_per_dim_sharded`, chunks of ``eval.batch_size`` dealt over its
    ranks with the noise of sample ``i`` from ``PerSampleNoise(seed)``'s stream ``i``, so the values
    do not depend on the number of processes."""
    ev = cfg.eval
    options = {"trace": ev.trace, "probes": ev.get("probes", 1), "method": ev.get("method", "dopri5"),
               "rtol": ev.rtol, "atol": ev.atol, "progress": progress}
    if spec.is_image:  # exact: the split lies on the pixel grid
        data = pixels(x, spec)
        options.update(data_range=spec.data_range, levels=spec.levels, dtype=x.dtype)
    else:
        data = x
    if world is not None:
        return distributed.bits_per_dim_sharded(model, data.to(world.device), seed=seed,
                                                batch_size=ev.batch_size, world=world, **options)
    return sd.bits_per_dim(model, data, generator=torch.Generator().manual_seed(seed),
                           batch_size=ev.batch_size, **options)


def likelihood_settings(cfg: ConfigDict) -> str:
    """``"dopri5 rtol=0.0001 atol=0.0001, trace=rademacher"``: how :func:`split_bits_per_dim` solved."""
    ev = cfg.eval
    return f"PF-ODE {ev.get('method', 'dopri5')} rtol={ev.rtol:g} atol={ev.atol:g}, trace={ev.trace}"


def decode(model: sd.ScoreModel, z: Tensor, name: str, enc_grid: Tensor,
           options: dict[str, Any]) -> sd.SampleResult:
    """Decode latents ``z`` over the encoder's grid reversed, without the final denoising."""
    return sd.sample(model, tuple(z.shape), name, timesteps=enc_grid.flip(0), x_T=z, denoise=False, **options)
