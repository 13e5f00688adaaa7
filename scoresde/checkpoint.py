"""Checkpoints: written atomically, read without unpickling code, tied to the config that made them.

A checkpoint file is ``torch.save`` of::

    {"format": "scoresde-checkpoint-v1",
     "config_json": json.dumps(config, sort_keys=True),
     "state": state}

where ``state`` holds only tensors, numbers, strings, ``None`` and lists/tuples/dicts of those
(``state_dict()`` of a network, optimizer or EMA, the step, RNG states as tensors).

Safety and integrity:

- **Atomic writes.** The file is written to a temporary file in the same folder, flushed and
  fsynced, then renamed over the target with ``os.replace`` and the folder fsynced. A crash at
  any point leaves either the old file or the new one, never a partial file under the real name;
  temporary files (``.ckpt_*.tmp``) are ignored by :func:`latest_checkpoint`.
- **No code from pickles.** Files are read with ``torch.load(weights_only=True)`` only; a file
  whose pickle references any other class or function is refused with ``ValueError``.
- **Damage detected.** torch's files are zip archives with a CRC per entry; a truncated or
  corrupted file fails that check (or the load) and raises ``ValueError`` naming the file.
- **Config identity.** ``load_checkpoint(path, config)`` compares ``config`` with the stored one
  and lists every differing dotted key with both values.

Layout in a workdir: ``workdir/checkpoints/ckpt_{step:08d}.pt``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import uuid
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from scoresde.errors import InputError, InputTypeError

__all__ = [
    "FORMAT",
    "atomic_write",
    "checkpoint_config",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_and_prune",
    "save_checkpoint",
]

FORMAT = "scoresde-checkpoint-v1"
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
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


# --- writing ----------------------------------------------------------------------------------


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
    never a partial file under ``path``; on an error the temporary file is removed."""
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    # os.open with mode 0o666 honours the umask, unlike tempfile's 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


# --- reading ----------------------------------------------------------------------------------


def _verify_archive(path: Path) -> None:
    """Raise ``ValueError`` unless ``path`` is a complete zip archive whose entries pass their CRCs."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError, NotImplementedError) as e:
        raise InputError(f"checkpoint {path} is truncated or corrupt (not a complete torch zip archive: "
                         f"{e}); delete it to resume from an earlier one") from e
    if bad is not None:
        raise InputError(f"checkpoint {path} is truncated or corrupt (entry {bad!r} fails its CRC check); "
                         "delete it to resume from an earlier one")


def _read_payload(path: Path, map_location: Any) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    _verify_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
            detail = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "")
            detail = detail.split(". Please use", 1)[0]  # drop torch's hint to allowlist the global
            raise InputError(f"checkpoint {path} refused: it contains pickled code/objects that "
                             f"weights_only loading does not allow ({detail or 'see the cause'}); "
                             "scoresde checkpoints hold only tensors, numbers and strings, so this file "
                             "was not written by save_checkpoint — do not load it unless you trust it") from e
        raise InputError(f"checkpoint {path} is truncated or corrupt: {e}") from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise InputError(f"checkpoint {path} is truncated or corrupt: {type(e).__name__}: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"{path} is not a scoresde checkpoint: expected format {FORMAT!r}, found {found!r}")
    if not isinstance(payload.get("config_json"), str) or not isinstance(payload.get("state"), dict):
        raise InputError(f"checkpoint {path} is malformed: expected a 'config_json' string and a "
                         "'state' dict")
    return payload


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
        ValueError: the file is truncated or corrupt; it holds pickled objects beyond tensors and
            plain data (refused, never executed); it is not a scoresde checkpoint; or ``config``
            differs from the stored one (every differing dotted key is listed with both values).
    """
    path = Path(path)
    payload = _read_payload(path, map_location)
    if config is not None:
        try:
            stored = json.loads(payload["config_json"])
        except json.JSONDecodeError as e:
            raise InputError(f"checkpoint {path} has an unreadable config: {e}") from e
        given = json.loads(_config_json(config))
        diffs = _config_differences(stored, given)
        if diffs:
            raise InputError(f"checkpoint {path} was written with a different config; differing keys:\n  "
                             + "\n  ".join(diffs))
    return payload["state"]


def checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config stored in checkpoint ``path`` (as plain dicts and lists)."""
    path = Path(path)
    return json.loads(_read_payload(path, "cpu")["config_json"])


# --- workdir layout ---------------------------------------------------------------------------


def checkpoint_path(workdir: str | os.PathLike, step: int) -> Path:
    """``workdir/checkpoints/ckpt_{step:08d}.pt``."""
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise InputError(f"step must be a non-negative integer, got {step!r}")
    return Path(workdir) / CHECKPOINT_DIR / f"ckpt_{step:08d}.pt"


def list_checkpoints(workdir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint file in ``workdir/checkpoints``, by increasing step.

    Temporary files of unfinished writes are not checkpoints and are not listed.
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
    """The intact checkpoint with the highest step in ``workdir/checkpoints``, or ``None``.

    A damaged file (truncated, failing its CRC check) is skipped with a warning, so training
    resumes from the newest intact checkpoint. Files are not unpickled here: a refused or
    foreign file is reported by :func:`load_checkpoint` when it is read.
    """
    for _, path in reversed(list_checkpoints(workdir)):
        try:
            _verify_archive(path)
        except ValueError as e:
            warnings.warn(f"skipping {e}", stacklevel=2)
            continue
        return path
    return None


def save_and_prune(workdir: str | os.PathLike, step: int, state: Mapping[str, Any],
                   config: Mapping[str, Any], keep: int = 3) -> Path:
    """Save ``state`` as the checkpoint for ``step`` and delete all but the ``keep`` newest.

    "Newest" is by step number; the checkpoint just written is always kept. Returns its path.
    """
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise InputError(f"keep must be an integer >= 1, got {keep!r}")
    path = checkpoint_path(workdir, step)
    save_checkpoint(path, state, config)
    existing = list_checkpoints(workdir)
    kept = {p for _, p in existing[-keep:]} | {path}
    for _, p in existing:
        if p not in kept:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    return path
