"""Checkpoint reliability: forged and damaged files refused with the problem named, a damaged
latest checkpoint skipped (train and sample fall back to the newest intact one), pruning that
never trades an intact checkpoint for a damaged one, stale temporary files of killed writes
cleaned up, a full disk reported in one message, and kill -9 trials during checkpoint writes."""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from scoresde import checkpoint as ck
from scoresde.errors import CheckpointError, InputError, InputWarning
from scoresde.experiment import identity, load_config_file, load_trained
from scoresde.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"model": {"name": "kill-trials"}}  # the plain checkpoint tests' config


def _tiny():
    config = load_config_file(ROOT / "configs" / "tiny_gmm2d.py")
    config.training.steps = 10
    config.training.ckpt_every = 10
    return config


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real 10-step training checkpoint of the tiny 2-D config: ``(config, state, raw bytes)``."""
    config = _tiny()
    workdir = tmp_path_factory.mktemp("trained")
    train(config, workdir, progress=False, log=_quiet)
    path = ck.checkpoint_path(workdir, 10)
    return config, ck.load_checkpoint(path), path.read_bytes()


# --- zip surgery --------------------------------------------------------------------------------


def _central_directory(raw: bytes) -> dict[str, int]:
    """Offset of each entry's record in the zip's central directory, by entry name."""
    eocd = raw.rindex(b"PK\x05\x06")
    (pos,) = struct.unpack_from("<I", raw, eocd + 16)
    entries = {}
    while raw[pos:pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", raw, pos + 28)
        entries[raw[pos + 46:pos + 46 + name_len].decode()] = pos
        pos += 46 + name_len + extra_len + comment_len
    assert entries, "no central directory found"
    return entries


# Central-directory damage (entry, field offset in its record, bit mask) that no CRC covers and that
# zipfile's CRC test passes. The last sets the DOS "directory" attribute of a tensor's entry: torch's
# reader then returns an unread buffer, and the file used to load with garbage weights.
_CD_FLIPS = {"cd-entry-size": ("data/1", 20, 0x01), "cd-disk-number": ("data.pkl", 34, 0xFF),
             "cd-directory-attribute": ("data/0", 38, 0x10)}


def _flip_central_directory(raw: bytes, case: str) -> bytes:
    suffix, field, mask = _CD_FLIPS[case]
    entries = _central_directory(raw)
    (name,) = [n for n in entries if n.endswith("/" + suffix)]
    out = bytearray(raw)
    out[entries[name] + field] ^= mask
    return bytes(out)


def _data_offset(raw: bytes, name: str) -> int:
    """Where entry ``name``'s bytes start (after its local header, which torch pads for alignment)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        start = archive.getinfo(name).header_offset
    name_len, extra_len = struct.unpack_from("<HH", raw, start + 26)
    return start + 30 + name_len + extra_len


def _passes_crc_check(raw: bytes) -> bool:
    """The integrity check before this fix: every entry passes zipfile's CRC test."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            return archive.testzip() is None
    except Exception:
        return False


def _first_weight(state: dict) -> str:
    return next(iter(state["net"]))


class _RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _forge(case: str, state: dict, raw: bytes, path: Path) -> None:
    """Write the forged or damaged checkpoint ``case`` to ``path``."""
    def edited(change):
        new = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}
        change(new)
        ck.save_checkpoint(path, new, identity(_tiny()))

    name = _first_weight(state)
    if case == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif case == "data-bit-flip":
        out = bytearray(raw)
        out[_data_offset(raw, "archive/data/1") + 5] ^= 0x10  # inside a tensor: only its CRC notices
        path.write_bytes(bytes(out))
    elif case in _CD_FLIPS:
        forged = _flip_central_directory(raw, case)
        assert _passes_crc_check(forged)  # what made the old "latest" check accept it
        path.write_bytes(forged)
    elif case == "empty-file":
        path.write_bytes(b"")
    elif case == "folder":
        path.mkdir()
    elif case == "foreign-torch-file":
        torch.save({"weights": torch.ones(2)}, path)
    elif case == "pickled-code":
        torch.save({"format": ck.FORMAT, "config_json": "{}",
                    "state": {**state, "extra": _RunsCode(path.parent / "pwned")}}, path)
    elif case in ("nan-weights", "inf-weights"):
        bad = state["net"][name].clone()
        bad.view(-1)[:2] = float("nan") if case == "nan-weights" else float("inf")
        edited(lambda s: s["net"].update({name: bad}))
    elif case == "missing-net":
        edited(lambda s: s.pop("net"))
    elif case == "net-not-a-dict":
        edited(lambda s: s.update(net=torch.zeros(3)))
    elif case == "wrong-shape":
        edited(lambda s: s["net"].update({name: torch.zeros(7, 3)}))
    elif case == "unknown-tensor":
        edited(lambda s: s["net"].update({"extra.weight": torch.zeros(2)}))
    elif case == "ema-wrong-shape":
        edited(lambda s: s.update(ema={**s["ema"], "shadow": {**s["ema"]["shadow"], name: torch.zeros(1)}}))
    elif case in ("float-step", "string-step", "negative-step", "bool-step"):
        step = {"float-step": 10.0, "string-step": "10", "negative-step": -10, "bool-step": True}[case]
        edited(lambda s: s.update(step=step))
    else:
        raise AssertionError(case)


# case: (error type, words the message must contain (regex))
FORGED = {
    "truncated": (CheckpointError, r"ckpt\.pt is truncated or corrupt"),
    "data-bit-flip": (CheckpointError, r"ckpt\.pt is truncated or corrupt \(entry 'archive/data/1' fails its "
                                       r"CRC check"),
    "cd-entry-size": (CheckpointError, r"ckpt\.pt is truncated or corrupt .*invalid header or archive"),
    "cd-disk-number": (CheckpointError, r"ckpt\.pt is truncated or corrupt .*multidisk"),
    "cd-directory-attribute": (CheckpointError, r"ckpt\.pt is truncated or corrupt \(entry 'archive/data/0' "
                                                r"fails its CRC check"),
    "empty-file": (CheckpointError, r"ckpt\.pt is truncated or corrupt \(not a complete torch zip"),
    "folder": (FileNotFoundError, r"no checkpoint in .*ckpt\.pt \(a checkpoint file, a workdir"),
    "foreign-torch-file": (CheckpointError, r"ckpt\.pt is not a scoresde checkpoint: expected format"),
    "pickled-code": (CheckpointError, r"ckpt\.pt refused: it contains pickled code/objects .*system"),
    "nan-weights": (CheckpointError, r"non-finite weights in 1 tensor\(s\): net\.{w} \(2 NaN and 0 inf of "
                                     r"1024 values\); it was written by a diverged run"),
    "inf-weights": (CheckpointError, r"non-finite weights in 1 tensor\(s\): net\.{w} \(0 NaN and 2 inf of "
                                     r"1024 values\)"),
    "missing-net": (CheckpointError, r"lacks the entry 'net' \(it holds: .*'optimizer'.*'ema'"),
    "net-not-a-dict": (CheckpointError, r"entry 'net': expected a dict of tensors, got Tensor"),
    "wrong-shape": (CheckpointError, r"entry 'net': the tensors do not fit the network the config builds: "
                                     r"{w}: expected shape \(32, 32\), checkpoint has \(7, 3\)"),
    "unknown-tensor": (CheckpointError, r"entry 'net': the tensors do not fit .*unknown tensors "
                                        r"\['extra\.weight'\]"),
    "ema-wrong-shape": (CheckpointError, r"entry 'ema\.shadow': the tensors do not fit .*{w}: expected shape "
                                         r"\(32, 32\), checkpoint has \(1,\)"),
    "float-step": (CheckpointError, r"has step 10\.0 \(float\); a checkpoint's step must be a "
                                    r"non-negative integer"),
    "string-step": (CheckpointError, r"has step '10' \(str\)"),
    "negative-step": (CheckpointError, r"has step -10 \(int\)"),
    "bool-step": (CheckpointError, r"has step True \(bool\)"),
}
# Files that are not intact (damaged, foreign, forged): a workdir holding only one of them is an error.
NOT_INTACT = {"truncated", "data-bit-flip", *_CD_FLIPS, "empty-file", "foreign-torch-file", "pickled-code"}


@pytest.mark.parametrize("case", list(FORGED))
def test_forged_or_damaged_checkpoint_is_refused_with_the_problem_named(tmp_path, trained, case):
    config, state, raw = trained
    path = tmp_path / "ckpt.pt"
    _forge(case, state, raw, path)
    error, words = FORGED[case]
    words = words.format(w=_first_weight(state).replace(".", r"\."))
    # The sampling path: load and apply to the network the config builds.
    with pytest.raises(error, match=words):
        load_trained(config, path)
    # The resume path: the same file as a workdir's only checkpoint.
    workdir = tmp_path / "work"
    target = ck.checkpoint_path(workdir, 10)
    target.parent.mkdir(parents=True)
    (shutil.copytree if path.is_dir() else shutil.copyfile)(path, target)
    if case == "folder":  # not a checkpoint file: not listed (training would start afresh)
        with pytest.raises(CheckpointError, match=r"ckpt\.pt is a folder, not a checkpoint file"):
            ck.load_checkpoint(path)
        assert ck.latest_checkpoint(workdir) is None
    elif case in NOT_INTACT:  # with no intact checkpoint: an error, not a fresh start
        no_intact = r"no intact checkpoint in .*checkpoints: .*ckpt_00000010\.pt"
        with pytest.raises(CheckpointError, match=no_intact):
            train(config, workdir, progress=False, log=_quiet)
    else:  # intact files that are wrong inside are refused when loaded
        with pytest.raises(error, match=words.replace(r"ckpt\.pt", r"ckpt_00000010\.pt")):
            train(config, workdir, progress=False, log=_quiet)
    assert not (tmp_path / "pwned").exists()


def test_exported_ema_only_files_still_load(tmp_path, trained):
    config, state, _ = trained
    path = tmp_path / "shipped.pt"
    ck.save_checkpoint(path, {"net": state["net"], "step": 10}, identity(config))
    model = load_trained(config, path)
    for name, value in model.net.state_dict().items():
        assert torch.equal(value, state["net"][name])
    ck.save_checkpoint(path, {"step": 10}, identity(config))
    with pytest.raises(CheckpointError, match="lacks the entry 'net' \\(it holds: 'step'\\)"):
        load_trained(config, path)


# --- a damaged latest checkpoint: fall back with a warning --------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "cd-disk-number"])
def test_damaged_latest_falls_back_to_the_newest_intact_checkpoint(tmp_path, damage):
    """Train to 20 (checkpoints 10, 20), damage 20, train to 30: the run warns, resumes at step 10,
    ends bit for bit where a straight run ends, and samples load from the newest intact file."""
    config = _tiny()
    config.training.steps = 20
    train(config, tmp_path / "work", progress=False, log=_quiet)
    latest = ck.checkpoint_path(tmp_path / "work", 20)
    raw = latest.read_bytes()
    raw = raw[:len(raw) // 2] if damage == "truncated" else _flip_central_directory(raw, damage)
    latest.write_bytes(raw)
    earlier = ck.checkpoint_path(tmp_path / "work", 10)
    skip = (r"skipping a damaged checkpoint: checkpoint .*ckpt_00000020\.pt is truncated or corrupt .*; "
            r"using .*ckpt_00000010\.pt, the newest intact checkpoint, instead")
    with pytest.warns(InputWarning, match=skip):
        fallback = load_trained(config, tmp_path / "work")  # sampling proceeds from step 10
    reference = load_trained(config, earlier)
    for a, b in zip(fallback.net.state_dict().values(), reference.net.state_dict().values()):
        assert torch.equal(a, b)

    config.training.steps = 30
    messages = []
    with pytest.warns(InputWarning) as caught:
        resumed = train(config, tmp_path / "work", progress=False, log=messages.append)
    texts = [str(w.message) for w in caught]
    assert any("ckpt_00000020.pt" in t and "using" in t for t in texts)
    # Rewriting step 20 first sets the damaged file aside, never overwrites it.
    assert any("renamed it to ckpt_00000020.pt.damaged" in t for t in texts)
    assert (latest.parent / "ckpt_00000020.pt.damaged").read_bytes() == raw
    assert any("resumed from" in m and "ckpt_00000010.pt at step 10" in m for m in messages)
    straight = train(config, tmp_path / "straight", progress=False, log=_quiet)
    # Resuming is bit exact on CPU (tests/test_train.py), so the detour changes nothing.
    for a, b in zip(straight.model.net.state_dict().values(), resumed.model.net.state_dict().values()):
        assert torch.equal(a, b)
    assert [s for s, _ in ck.list_checkpoints(tmp_path / "work")] == [20, 30]  # keep_checkpoints = 2


def test_latest_with_no_intact_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    ck.save_and_prune(tmp_path, 5, {"step": 5}, CONFIG)
    ck.checkpoint_path(tmp_path, 5).write_bytes(b"PK")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint in .*ckpt_00000005\.pt is truncated.*"
                                              r"move these files away"):
        ck.latest_checkpoint(tmp_path)


# --- pruning ------------------------------------------------------------------------------------


def test_pruning_counts_only_intact_checkpoints(tmp_path):
    """The issue's case: after resuming past a damaged latest, keep=2 used to keep the damaged file
    and delete the intact earlier ones."""
    for step in (100, 200, 300):
        ck.save_and_prune(tmp_path, step, {"step": step, "w": torch.full((4,), float(step))}, CONFIG, keep=3)
    damaged = ck.checkpoint_path(tmp_path, 300)
    raw = _flip_central_directory(damaged.read_bytes(), "cd-disk-number")
    damaged.write_bytes(raw)
    with pytest.warns(InputWarning, match=r"skipping .*ckpt_00000300\.pt"):
        assert ck.latest_checkpoint(tmp_path) == ck.checkpoint_path(tmp_path, 200)  # resume from 200
    with pytest.warns(InputWarning, match=r"ckpt_00000300\.pt is truncated or corrupt .*renamed it to "
                                          r"ckpt_00000300\.pt\.damaged \(kept for inspection"):
        ck.save_and_prune(tmp_path, 250, {"step": 250}, CONFIG, keep=2)
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [200, 250]  # two intact ones
    assert (damaged.parent / "ckpt_00000300.pt.damaged").read_bytes() == raw  # data left as it was
    assert ck.load_checkpoint(ck.checkpoint_path(tmp_path, 200), CONFIG)["step"] == 200
    # A second damaged file of the same name does not overwrite the first one set aside.
    ck.save_and_prune(tmp_path, 300, {"step": 300}, CONFIG, keep=2)
    damaged.write_bytes(b"junk")
    with pytest.warns(InputWarning, match=r"renamed it to ckpt_00000300\.pt\.damaged\.2"):
        ck.save_and_prune(tmp_path, 300, {"step": 300}, CONFIG, keep=2)
    assert (damaged.parent / "ckpt_00000300.pt.damaged").read_bytes() == raw
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [250, 300]


# --- stale temporary files ----------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_temp_files_are_removed_and_live_ones_kept(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    zombie = os.fork()
    if zombie == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stale = {f".ckpt_00000020.pt.{pid}.{tag}.tmp" for pid, tag in
                 ((_dead_pid(), "0123abcd"), (os.getpid(), "89abcdef"), (zombie, "deadbeef"))}
        live = {f".ckpt_00000030.pt.{os.getppid()}.0a1b2c3d.tmp"}  # a live writer on this machine
        foreign = {".ckpt_00000030.pt.tmp", f".samples.npz.{_dead_pid()}.0123abcd.tmp", "notes.tmp",
                   f".ckpt_00000030.pt.{_dead_pid()}.NOTHEX00.tmp"}
        for name in stale | live | foreign:
            (folder / name).write_bytes(b"partial")
        removed = ck.remove_stale_temp_files(tmp_path)
    finally:
        os.waitpid(zombie, 0)
    assert {p.name for p in removed} == stale
    assert {p.name for p in folder.iterdir()} == live | foreign
    assert ck.remove_stale_temp_files(tmp_path / "absent") == []


def test_the_next_save_and_the_next_training_start_remove_stale_temp_files(tmp_path):
    config = _tiny()
    train(config, tmp_path, progress=False, log=_quiet)
    folder = tmp_path / "checkpoints"
    stale = folder / f".ckpt_00000020.pt.{_dead_pid()}.0123abcd.tmp"
    stale.write_bytes(b"partial")
    messages = []
    train(config, tmp_path, progress=False, log=messages.append)  # nothing left to train: a start only
    assert not stale.exists() and any(f"removed {stale}" in m for m in messages)
    stale.write_bytes(b"partial")
    ck.save_and_prune(tmp_path, 11, {"step": 11}, CONFIG)
    assert not stale.exists()


# --- a full disk --------------------------------------------------------------------------------


@pytest.mark.parametrize("fails", ["torch.save", "os.fsync", "os.open"])
def test_a_full_disk_is_one_clear_error_and_keeps_earlier_checkpoints(tmp_path, monkeypatch, fails):
    ck.save_and_prune(tmp_path, 10, {"step": 10}, CONFIG)
    ck.save_and_prune(tmp_path, 20, {"step": 20}, CONFIG)
    before = {p: p.read_bytes() for _, p in ck.list_checkpoints(tmp_path)}
    real_save, real_fsync = torch.save, os.fsync
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def partial_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise full

    def fsync(fd):
        if os.path.isfile(f"/proc/self/fd/{fd}"):
            raise full
        real_fsync(fd)

    def no_open(*args, **kwargs):
        raise full

    patch = {"torch.save": (ck.torch, "save", partial_save), "os.fsync": (ck.os, "fsync", fsync),
             "os.open": (ck.os, "open", no_open)}[fails]
    monkeypatch.setattr(*patch)
    with pytest.raises(ck.WriteError) as e:
        ck.save_and_prune(tmp_path, 30, {"step": 30}, CONFIG)
    monkeypatch.undo()
    message = str(e.value)
    assert message.startswith(f"cannot write {ck.checkpoint_path(tmp_path, 30)}: No space left on device "
                              "(ENOSPC); any file already under that name is unchanged")
    assert "free disk space" in message and "\n" not in message
    assert e.value.errno == errno.ENOSPC
    # The command line reports ValueErrors (InputError) as one line; it is an OSError for callers too.
    assert isinstance(e.value, InputError) and isinstance(e.value, OSError)
    assert {p: p.read_bytes() for _, p in ck.list_checkpoints(tmp_path)} == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [p.name for p in before]


def test_interrupts_pass_through_unchanged(tmp_path, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path / "ck.pt", {"step": 1}, CONFIG)
    assert not list(tmp_path.iterdir())


# --- kill -9 during checkpoint writes -----------------------------------------------------------

_WEIGHTS = 1_000_000  # 4 MB per checkpoint, like the trials


def _expected(step: int) -> torch.Tensor:
    return torch.arange(_WEIGHTS, dtype=torch.float32) + step


def _write_forever(workdir: Path, keep: int) -> None:
    """In the forked child: resume like a trainer, then write checkpoints until killed."""
    try:
        latest = ck.latest_checkpoint(workdir)
        step = 0 if latest is None else ck.load_checkpoint(latest, CONFIG)["step"]
        while True:
            step += 1
            ck.save_and_prune(workdir, step, {"step": step, "net": {"w": _expected(step)}}, CONFIG, keep=keep)
    finally:
        os._exit(1)  # never return into pytest


def _kill_trials(workdir: Path, trials: int, seed: int) -> tuple[int, int]:
    """Fork a writer, SIGKILL it at a random moment, check the workdir; repeat. Returns (trials
    that left a temporary file, the final step). Forked children start without importing torch
    again, so a trial costs its sleep plus one check."""
    rng = random.Random(seed)
    folder = workdir / "checkpoints"
    left_temp, earlier_pids, before = 0, [], 0
    for _ in range(trials):
        pid = os.fork()
        if pid == 0:
            _write_forever(workdir, keep=2)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        temps = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.is_dir() else []
        left_temp += any(f".{pid}." in name for name in temps)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no checkpoint under its real name is damaged
            for step, path in ck.list_checkpoints(workdir):
                state = ck.load_checkpoint(path, CONFIG)
                assert state["step"] == step and torch.equal(state["net"]["w"], _expected(step))
            steps = [step for step, _ in ck.list_checkpoints(workdir)]
            newest = ck.checkpoint_path(workdir, steps[-1]) if steps else None
            assert ck.latest_checkpoint(workdir) == newest
        if steps and steps[-1] > before:  # this writer saved, so it first removed its predecessors' temps
            assert not [n for n in temps for old in earlier_pids if f".{old}." in n], temps
        earlier_pids.append(pid)
        before = steps[-1] if steps else 0
    # The next start: its first save removes the last writer's temp file and prunes to keep=2.
    latest = ck.latest_checkpoint(workdir)
    step = 1 + (0 if latest is None else ck.load_checkpoint(latest, CONFIG)["step"])
    ck.save_and_prune(workdir, step, {"step": step, "net": {"w": _expected(step)}}, CONFIG, keep=2)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(ck.list_checkpoints(workdir)) == min(2, step)
    return left_temp, step


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the trials fork writers")
def test_kill_during_save_leaves_an_intact_latest_checkpoint(tmp_path):
    _, step = _kill_trials(tmp_path, trials=4, seed=0)
    assert step > 0  # the writers made progress across the trials


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the trials fork writers")
def test_kill_during_save_many_trials(tmp_path):
    left_temp, step = _kill_trials(tmp_path, trials=40, seed=1)
    # The writers spend most of their time inside a write (a 4 MB save, fsync and verifying the
    # previous checkpoint), so most kills land mid-write (the issue saw 32 of 40); at least 5 of 40
    # fails only if under ~1 in 8 kills did, which would mean the trials no longer test writes.
    assert left_temp >= 5, left_temp
    assert step > 40


@pytest.mark.slow
def test_every_central_directory_flip_is_refused_or_harmless(tmp_path):
    """Flip bits of each byte of the zip's central directory and end records: the file is either
    refused by load_checkpoint (and then not intact for latest_checkpoint) or loads exactly the
    saved state (and then is intact): the intact check agrees with loading. (Before the check read
    entries through torch's own reader, a flipped "directory" attribute loaded garbage weights.)"""
    state = {"step": 3, "net": {"w": torch.arange(6.0), "b": torch.ones(2, 2)}, "note": "x"}
    path = tmp_path / "ckpt.pt"
    ck.save_checkpoint(path, state, CONFIG)
    raw = path.read_bytes()
    start = min(_central_directory(raw).values())
    refused = 0
    flips = [(i, mask) for i in range(start, len(raw)) for mask in (0x01, 0x10, 0xFF)]
    for i, mask in flips:
        out = bytearray(raw)
        out[i] ^= mask
        path.write_bytes(bytes(out))
        try:
            loaded = ck.load_checkpoint(path, CONFIG)
        except CheckpointError:
            refused += 1
            assert ck._damage(path) is not None, (i, mask)
            continue
        assert ck._damage(path) is None, (i, mask)
        assert loaded["step"] == 3 and loaded["note"] == "x"
        assert all(torch.equal(loaded["net"][k], v) for k, v in state["net"].items()), (i, mask)
    assert refused > len(flips) // 4  # most fields matter; the rest (times, attributes) do not


@pytest.mark.slow  # a command-line subprocess: ~10 s here
def test_a_write_error_leaves_no_traceback_in_the_command_line(tmp_path):
    """``scoresde train`` into a workdir whose checkpoints path is a file: one line, exit code 1."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "checkpoints").write_text("not a folder")
    run = subprocess.run([sys.executable, "-m", "scoresde.cli", "train",
                          f"--config={ROOT / 'configs' / 'tiny_gmm2d.py'}", f"--workdir={workdir}",
                          "--config.training.steps=2", "--config.training.ckpt_every=2"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "cannot write" in run.stderr and "checkpoints" in run.stderr
