"""Checkpoints: written atomically, read without unpickling code, tied to the config that made them.

A checkpoint file is ``torch.save`` of::

    {"format": "scoresde-checkpoint-v1",
     "config_json": json.dumps(config, sort_keys=True),
     "state": state}

where ``state`` holds only tensors, numbers, strings, ``None`` and lists/tuples/dicts of those
(``state_dict()`` of a network, optimizer or EMA, the step, RNG states as tensors).

Safety and integrity:

- **Atomic writes.** The file is written to a temporary file ``.NAME.PID.RANDOM.tmp`` in the same
  folder, flushed and fsynced, then renamed over the target with ``os.replace`` and the folder
  fsynced. A crash at any point leaves either the old file or the new one, never a partial file
  under the real name. A write that fails (a full disk, a read-only folder) removes its temporary
  file and raises :class:`WriteError` (an :class:`~scoresde.errors.InputError` and an ``OSError``)
  naming the path and the cause; the file under that name, if any, is unchanged.
- **No code from pickles.** Files are read with ``torch.load(weights_only=True)`` only; a file
  whose pickle references any other class or function is refused with
  :class:`~scoresde.errors.CheckpointError`.
- **Damage detected.** torch's files are zip archives with a CRC per entry. A file is *intact* when
  every entry, read by torch's own zip reader (the bytes ``torch.load`` uses), has the size and CRC
  the zip's central directory records, and its pickle then loads with ``weights_only`` (with
  ``mmap=True`` while checking, so the tensors are located but not copied again). That also catches
  damage to the central directory, which no CRC covers. A file that is not intact raises
  ``CheckpointError`` naming it and what is wrong. Checking costs one read of the file.
- **Contents checked.** :func:`load_checkpoint` refuses a ``step`` that is not a non-negative
  integer and any floating tensor holding NaN or inf (a diverged run), naming the tensors;
  :func:`load_weights` checks a network's (and EMA's) tensors name by name and shape by shape
  against the network the config builds before loading them.
- **Config identity.** ``load_checkpoint(path, config)`` compares ``config`` with the stored one
  and lists every differing dotted key with both values.

Layout in a workdir: ``workdir/checkpoints/ckpt_{step:08d}.pt``. Housekeeping there:

- :func:`latest_checkpoint` returns the newest *intact* checkpoint; each newer damaged one is
  skipped with an :class:`~scoresde.errors.InputWarning` naming it (train resumes, sample loads,
  from the earlier one). If checkpoints exist but none is intact it raises ``CheckpointError``
  rather than letting training start afresh.
- :func:`save_and_prune` counts only intact checkpoints towards ``keep``: a damaged file is never
  the reason an intact one is deleted. A damaged file it meets among the newest is not deleted
  either: it is renamed ``NAME.damaged`` (kept for inspection, no longer listed) with a warning.
- Temporary files of writes killed mid-way are removed by :func:`remove_stale_temp_files`, which
  :func:`save_and_prune` runs before each write and :func:`scoresde.train.train` at its start.
  Only names of the library's own pattern (``.ckpt_STEP.pt.PID.RANDOM.tmp``) are touched, and only
  when the process ``PID`` that wrote the file is this one (which is not writing while it cleans)
  or no longer runs on this machine. A write still under way in another live process is therefore
  left alone. The check is per machine: two trainers writing into one workdir from different
  machines are not supported (they would also overwrite each other's checkpoints).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch

from scoresde.errors import CheckpointError, InputError, InputTypeError, InputWarning

if TYPE_CHECKING:
    from scoresde.nn.ema import EMA

__all__ = [
    "FORMAT",
    "WriteError",
    "atomic_write",
    "check_tensors",
    "checkpoint_config",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "remove_stale_temp_files",
    "require_entries",
    "save_and_prune",
    "save_checkpoint",
]

FORMAT = "scoresde-checkpoint-v1"
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
_TEMP = re.compile(r"^\.ckpt_\d+\.pt\.(\d+)\.[0-9a-f]{8}\.tmp$")  # atomic_write's temp files of checkpoints
DAMAGED_SUFFIX = ".damaged"
_LEAVES = (torch.Tensor, bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)
_MISSING = object()  # a key present in only one config


# --- config handling --------------------------------------------------------------------------


def _plain(value: Any, key: str) -> Any:
    """``value`` as JSON-ready Python: mappings → dicts, sequences → lists, numpy scalars → numbers."""
    if hasattr(value, "to_dict") and callable(value.to_dict):  # ml_collections.ConfigDict
        value = value.to_dict()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputTypeError(f"config keys must be strings, got {k!r} at {key or '<root>'}")
            out[k] = _plain(v, f"{key}.{k}" if key else k)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return _plain(value.item(), key)
    if isinstance(value, Path):
        return str(value)
    raise InputTypeError(f"config value at {key or '<root>'} must be JSON-like (numbers, strings, lists, "
                         f"dicts), got {type(value).__name__}: {value!r}")


def _config_json(config: Mapping[str, Any]) -> str:
    return json.dumps(_plain(config, ""), sort_keys=True, allow_nan=True)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "<root>": d}


def _config_differences(stored: Any, given: Any) -> list[str]:
    """Dotted keys whose values differ, each as ``key: checkpoint X, given Y``."""
    a, b = _flatten(stored), _flatten(given)
    lines = []
    for key in sorted(a.keys() | b.keys()):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if not _same(va, vb):
            lines.append(f"{key}: checkpoint {_show(va)}, given {_show(vb)}")
    return lines


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    """Equal leaves: 1 and 1.0 agree, True and 1 do not, NaN agrees with NaN."""
    if _is_number(a) and _is_number(b):
        return a == b or (a != a and b != b)
    return type(a) is type(b) and a == b


def _show(v: Any) -> str:
    return "<missing>" if v is _MISSING else json.dumps(v)


# --- state validation -------------------------------------------------------------------------


def _check_state(value: Any, key: str) -> None:
    """Raise ``TypeError`` if ``value`` holds anything ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(value, _LEAVES):
        return
    if isinstance(value, dict):  # includes OrderedDict (network state_dicts)
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise InputTypeError(f"state keys must be str or int, got {k!r} at {key}")
            _check_state(v, f"{key}.{k}")
        return
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_state(v, f"{key}[{i}]")
        return
    raise InputTypeError(f"checkpoint state may hold only tensors, numbers, strings, None and lists/tuples/"
                         f"dicts of those; {key} is a {type(value).__module__}.{type(value).__qualname__} "
                         "(store its state_dict() or a tensor instead)")


def _tensors(value: Any, key: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a state, with its dotted key (``net.layers.0.weight``, ``history[2]``)."""
    if isinstance(value, torch.Tensor):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{key}[{i}]")


def _check_contents(state: dict[str, Any], path: Path) -> None:
    """Refuse a non-integer or negative ``step`` and non-finite floating tensors, naming them."""
    step = state.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {path} has step {step!r} ({type(step).__name__}); a checkpoint's "
                              "step must be a non-negative integer, so this file was not written by "
                              "scoresde or was edited")
    bad = []
    for key, t in _tensors(state, ""):
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            bad.append(f"{key} ({nan} NaN and {inf} inf of {t.numel()} values)")
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise CheckpointError(f"checkpoint {path} holds non-finite weights in {len(bad)} tensor(s): {shown}; "
                              "it was written by a diverged run: use an earlier checkpoint and lower "
                              "training.lr (or set training.grad_clip)")


# --- writing ----------------------------------------------------------------------------------


class WriteError(InputError, OSError):
    """A file could not be written (a full disk, a read-only folder…); the file under its name, if
    any, is unchanged and the partial temporary file was removed. ``errno`` is the cause's."""


_WRITE_HINTS = {errno.ENOSPC: "free disk space (or write to another disk) and run again",
                errno.EDQUOT: "free space within your disk quota and run again",
                errno.EACCES: "make the folder writable or choose another one",
                errno.EPERM: "make the folder writable or choose another one",
                errno.EROFS: "the file system is read-only: choose a folder on a writable one"}


def _write_error(path: Path, cause: OSError, removed: bool) -> WriteError:
    code = errno.errorcode.get(cause.errno) if cause.errno is not None else None
    reason = cause.strerror or str(cause) or type(cause).__name__
    temp = "the partial temporary file was removed" if removed else "no temporary file was left"
    error = WriteError(f"cannot write {path}: {reason}{f' ({code})' if code else ''}; any file already under "
                       f"that name is unchanged and {temp}; "
                       f"{_WRITE_HINTS.get(cause.errno, 'check the disk and the folder, then run again')}")
    error.errno = cause.errno
    return error


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Write ``state`` and ``config`` to ``path`` atomically (see the module docstring).

    Args:
        path: the checkpoint file; its folder is created if missing.
        state: tensors, numbers, strings, ``None`` and lists/tuples/dicts of those.
        config: the experiment config (a mapping or ``ConfigDict``) of JSON-like values; stored
            as sorted JSON and compared by :func:`load_checkpoint`.

    Raises:
        TypeError: ``state`` holds an object ``weights_only`` loading would refuse (e.g. a
            module or optimizer instead of its ``state_dict()``), or ``config`` is not JSON-like.
        WriteError: the file could not be written (see :func:`atomic_write`).
    """
    path = Path(path)
    if not isinstance(state, Mapping):
        raise InputTypeError(f"state must be a mapping of names to values, got {type(state).__name__}")
    state = dict(state)
    _check_state(state, "state")
    payload = {"format": FORMAT, "config_json": _config_json(config), "state": state}
    atomic_write(path, lambda f: torch.save(payload, f))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file atomically: ``write(f)`` fills a temporary file ``.NAME.PID.RANDOM.tmp`` in the
    same folder (created if missing), which is flushed, fsynced and renamed over ``path``
    (``os.replace``), then the folder is fsynced. A crash leaves the old file or the new one,
    never a partial file under ``path``; on an error the temporary file is removed.

    Raises:
        WriteError: an ``OSError`` while creating the folder or writing, syncing or renaming the
            file (``ENOSPC``, ``EACCES``, ``EROFS``…), reported with ``path`` and the cause.
            Other exceptions (including ``KeyboardInterrupt``) pass through unchanged.
    """
    path = Path(path)
    folder = path.parent
    tmp = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # os.open with mode 0o666 honours the umask, unlike tempfile's 0o600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _write_error(path, e, removed=False) from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, InputError):
            raise _write_error(path, e, removed=True) from e
        raise
    _fsync_dir(folder)


# --- reading ----------------------------------------------------------------------------------


def _corrupt(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is truncated or corrupt ({what})")


def _miniz(e: BaseException) -> str:
    """torch's zip-reader error without its boilerplate."""
    return f"{type(e).__name__}: " + str(e).split(". This is an internal miniz error", 1)[0]


def _verify_archive(path: Path) -> None:
    """Raise ``CheckpointError`` unless every entry of the zip archive ``path``, read by torch's own
    zip reader (the bytes ``torch.load`` uses), has the size and CRC its directory records.

    zipfile's own CRC test is not enough: torch's reader (miniz) returns an unread buffer for an
    entry whose directory record carries the DOS "directory" attribute, so a one-bit flip there
    passed zipfile's test and loaded garbage weights.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError, NotImplementedError) as e:
        raise _corrupt(path, f"not a complete torch zip archive: {e}") from e
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        records = reader.get_all_records()
    except (RuntimeError, ValueError) as e:  # ValueError: a record name that is not UTF-8
        raise _corrupt(path, _miniz(e)) from e
    listed = {info.filename.split("/", 1)[-1]: info for info in infos}  # torch names drop "archive/"
    if len(listed) != len(infos) or sorted(records) != sorted(listed):
        raise _corrupt(path, "its zip directory does not list each entry once")
    for name in records:
        info = listed[name]
        try:
            data = reader.get_record(name)
        except (RuntimeError, ValueError) as e:
            raise _corrupt(path, _miniz(e)) from e
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise _corrupt(path, f"entry {info.filename!r} fails its CRC check")


def _read_payload(path: Path, map_location: Any, mmap: bool = False) -> dict[str, Any]:
    """The checked payload of ``path``; ``mmap=True`` locates the tensors without reading them."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; pass the file (or the workdir "
                              "holding checkpoints/)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    _verify_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "GLOBAL " in str(e):
            detail = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "")
            detail = detail.split(". Please use", 1)[0]  # drop torch's hint to allowlist the global
            raise CheckpointError(f"checkpoint {path} refused: it contains pickled code/objects that "
                                  f"weights_only loading does not allow ({detail or 'see the cause'}); "
                                  "scoresde checkpoints hold only tensors, numbers and strings, so this "
                                  "file was not written by save_checkpoint — do not load it unless you "
                                  "trust it") from e
        first = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line), "")
        raise _corrupt(path, f"its pickle does not parse{': ' + first if first else ''}") from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise _corrupt(path, _miniz(e)) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a scoresde checkpoint: expected format {FORMAT!r}, "
                              f"found {found!r}")
    if not isinstance(payload.get("config_json"), str) or not isinstance(payload.get("state"), dict):
        raise CheckpointError(f"checkpoint {path} is malformed: expected a 'config_json' string and a "
                              "'state' dict")
    return payload


def _damage(path: Path) -> str | None:
    """``None`` if ``path`` is intact (see the module docstring), else what is wrong with it."""
    try:
        _read_payload(path, "cpu", mmap=True)
    except CheckpointError as e:
        return str(e)
    return None


def load_checkpoint(path: str | os.PathLike, config: Mapping[str, Any] | None = None,
                    map_location: Any = "cpu") -> dict[str, Any]:
    """The ``state`` saved in ``path``, loaded with ``torch.load(weights_only=True)``.

    Args:
        path: a file written by :func:`save_checkpoint`.
        config: if given, it must equal the stored config (after JSON normalisation: tuples and
            lists compare equal).
        map_location: passed to ``torch.load``; default ``"cpu"``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is a folder, truncated or corrupt; it holds pickled objects
            beyond tensors and plain data (refused, never executed); it is not a scoresde
            checkpoint; ``config`` differs from the stored one (every differing dotted key is
            listed with both values); its ``step`` is not a non-negative integer; or a floating
            tensor holds NaN or inf (the tensors are named).
    """
    path = Path(path)
    payload = _read_payload(path, map_location)
    if config is not None:
        try:
            stored = json.loads(payload["config_json"])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"checkpoint {path} has an unreadable config: {e}") from e
        given = json.loads(_config_json(config))
        diffs = _config_differences(stored, given)
        if diffs:
            raise CheckpointError(f"checkpoint {path} was written with a different config; differing "
                                  "keys:\n  " + "\n  ".join(diffs))
    _check_contents(payload["state"], path)
    return payload["state"]


def checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config stored in checkpoint ``path`` (as plain dicts and lists)."""
    path = Path(path)
    return json.loads(_read_payload(path, "cpu")["config_json"])


# --- applying a state -------------------------------------------------------------------------


def require_entries(state: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    """Raise ``CheckpointError`` unless ``state`` (described by ``where``, e.g. ``"checkpoint
    PATH"``) holds every entry of ``keys``; the message names the missing and the present ones."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: expected a dict of entries, got {type(state).__name__}")
    missing = [k for k in keys if k not in state]
    if missing:
        present = ", ".join(map(repr, state)) or "nothing"
        raise CheckpointError(f"{where} lacks the entr{'y' if len(missing) == 1 else 'ies'} "
                              f"{', '.join(map(repr, missing))} (it holds: {present}); it was not written "
                              "by scoresde's training or export, or was edited")


def check_tensors(given: Any, expected: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise ``CheckpointError`` unless ``given`` maps exactly ``expected``'s names to tensors of
    ``expected``'s shapes; the message lists missing and unknown names and every wrong shape."""
    if not isinstance(given, Mapping):
        raise CheckpointError(f"{where}: expected a dict of tensors, got {type(given).__name__}")
    missing = [k for k in expected if k not in given]
    unknown = [k for k in given if k not in expected]
    wrong = []
    for k, want in expected.items():
        if k not in given:
            continue
        have = given[k]
        if not isinstance(have, torch.Tensor):
            wrong.append(f"{k}: expected a tensor of shape {tuple(want.shape)}, got {type(have).__name__}")
        elif have.shape != want.shape:
            wrong.append(f"{k}: expected shape {tuple(want.shape)}, checkpoint has {tuple(have.shape)}")
    problems = ([f"missing tensors {missing}"] if missing else []) + \
        ([f"unknown tensors {unknown}"] if unknown else []) + wrong
    if problems:
        raise CheckpointError(f"{where}: the tensors do not fit the network the config builds: "
                              + "; ".join(problems) + " (was it written by another version of the network, "
                              "or edited?)")


def load_weights(state: Mapping[str, Any], path: str | os.PathLike, net: torch.nn.Module,
                 ema: EMA | None = None) -> None:
    """Load ``state["net"]`` into ``net`` and, if ``ema`` is given, ``state["ema"]`` into ``ema``,
    after checking that the entries exist and every tensor's name and shape fits (see
    :func:`require_entries`, :func:`check_tensors`); ``path`` names the checkpoint in errors."""
    where = f"checkpoint {path}"
    require_entries(state, ("net",) if ema is None else ("net", "ema"), where)
    check_tensors(state["net"], net.state_dict(), f"{where}, entry 'net'")
    if ema is not None:
        require_entries(state["ema"], ("decay", "num_updates", "shadow"), f"{where}, entry 'ema'")
        check_tensors(state["ema"]["shadow"], ema.shadow, f"{where}, entry 'ema.shadow'")
    net.load_state_dict(state["net"])
    if ema is not None:
        ema.load_state_dict(state["ema"])


# --- workdir layout ---------------------------------------------------------------------------


def checkpoint_path(workdir: str | os.PathLike, step: int) -> Path:
    """``workdir/checkpoints/ckpt_{step:08d}.pt``."""
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise InputError(f"step must be a non-negative integer, got {step!r}")
    return Path(workdir) / CHECKPOINT_DIR / f"ckpt_{step:08d}.pt"


def list_checkpoints(workdir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint file in ``workdir/checkpoints``, by increasing step.

    Temporary files of unfinished writes, files set aside as damaged and folders are not listed.
    """
    folder = Path(workdir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(workdir: str | os.PathLike) -> Path | None:
    """The intact checkpoint with the highest step in ``workdir/checkpoints``, or ``None`` if there
    are no checkpoints.

    Each newer damaged file (truncated, failing a CRC check, a damaged zip directory, a pickle that
    does not load with ``weights_only``) is skipped with an :class:`~scoresde.errors.InputWarning`
    naming it and what is wrong, so training resumes (and sampling loads) from the newest intact
    checkpoint. Nothing is deleted or renamed here.

    Raises:
        CheckpointError: checkpoints exist but none is intact (each is listed with its damage).
    """
    skipped = []
    for _, path in reversed(list_checkpoints(workdir)):
        reason = _damage(path)
        if reason is None:
            for damage in skipped:
                warnings.warn(f"skipping a damaged checkpoint: {damage}; using {path}, the newest intact "
                              "checkpoint, instead", InputWarning, stacklevel=2)
            return path
        skipped.append(reason)
    if skipped:
        raise CheckpointError(f"no intact checkpoint in {Path(workdir) / CHECKPOINT_DIR}: "
                              + "; ".join(skipped) + "; move these files away to start afresh")
    return None


def _writer_alive(pid: int) -> bool:
    """Whether process ``pid`` (a temp file's writer) may still be writing it: not this process
    (which does not write while it cleans), and a running, non-zombie process on this machine."""
    if pid == os.getpid():
        return False
    if os.name != "posix":  # no cheap, side-effect-free liveness test: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists under another user
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]  # a killed child not yet reaped


def remove_stale_temp_files(workdir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed checkpoint writes left in ``workdir/checkpoints``.

    Only files named like :func:`atomic_write`'s temporary files of checkpoints
    (``.ckpt_STEP.pt.PID.RANDOM.tmp``) are removed, and only when their writer ``PID`` is this
    process or no longer runs on this machine (see the module docstring). Returns the removed paths.
    """
    folder = Path(workdir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.iterdir()):
        m = _TEMP.match(p.name)
        if m and p.is_file() and not _writer_alive(int(m.group(1))):
            try:
                p.unlink()
            except FileNotFoundError:  # its writer renamed or removed it meanwhile
                continue
            removed.append(p)
    return removed


def _set_aside(path: Path, damage: str) -> None:
    """Rename a damaged checkpoint to ``NAME.damaged`` (``.damaged.2``… if taken), with a warning."""
    target, n = path.with_name(path.name + DAMAGED_SUFFIX), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}.{n}")
    os.replace(path, target)
    warnings.warn(f"{damage}; renamed it to {target.name} (kept for inspection; it is no longer used, "
                  "counted towards keep or deleted)", InputWarning, stacklevel=3)


def save_and_prune(workdir: str | os.PathLike, step: int, state: Mapping[str, Any],
                   config: Mapping[str, Any], keep: int = 3) -> Path:
    """Save ``state`` as the checkpoint for ``step`` and delete all intact checkpoints but the
    ``keep`` newest. Returns its path.

    "Newest" is by step number; the checkpoint just written is always kept and counts as one of
    the ``keep``. Only intact checkpoints count: a damaged one among the newest (or a damaged file
    under this step's name) is renamed ``NAME.damaged`` with an :class:`~scoresde.errors.InputWarning`,
    never deleted and never the reason an intact one is deleted; files older than the ``keep``
    newest intact ones are deleted. Stale temporary files are removed first
    (:func:`remove_stale_temp_files`).

    Raises:
        WriteError: the checkpoint could not be written; nothing was deleted.
    """
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise InputError(f"keep must be an integer >= 1, got {keep!r}")
    path = checkpoint_path(workdir, step)
    remove_stale_temp_files(workdir)
    if path.is_file() and (damage := _damage(path)) is not None:
        _set_aside(path, damage)
    save_checkpoint(path, state, config)
    intact = 0
    for _, p in reversed(list_checkpoints(workdir)):
        if p == path:
            intact += 1
        elif intact >= keep:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        elif (damage := _damage(p)) is None:
            intact += 1
        else:
            _set_aside(p, damage)
    return path
