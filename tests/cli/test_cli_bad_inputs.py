"""The command line's bad-input table: every user error is one line on stderr, no traceback.

Each row is a command line a user could type with one thing wrong; it must exit with the status the
package docstring promises (2: a usage error found by the command line's own checks — mode, flags,
the --config file and its values, output folders — before any work; 1: a user error found while the
mode runs — data, checkpoints, the library's refusals), write exactly one line to stderr, without
"Traceback", and that line must hold the words naming the problem. All rows run in ONE subprocess
(``cli_rows.py``: the CLI entry point in-process per row, absl's flags reset between rows), as a
Python + torch start costs seconds. ``--debug`` adds the traceback; an injected bug (an exception
outside the user-error family) keeps its traceback.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from scoresde.cli import MODES, common
from scoresde.data import load_dataset
from scoresde.errors import InputError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TINY = REPO / "configs" / "tiny_gmm2d.py"


@dataclass(frozen=True)
class Row:
    """One bad command line: ``argv`` (``{name}`` placeholders for the files the fixture makes),
    the exit status, and words the one stderr line must contain."""

    id: str
    argv: tuple[str, ...]
    code: int
    words: tuple[str, ...]
    inject: str = ""


def _train(*args: str) -> tuple[str, ...]:
    return ("train", "--config={tiny}", "--workdir={tmp}/w", *args)


def _sample(*args: str, model: str = "digits_vp") -> tuple[str, ...]:
    return ("sample", f"--model_dir={model}", "--workdir={tmp}/s", "--n=2", "--steps=2", *args)


COND = "digits_vp_cond"
ROWS = (
    # the mode and the flags (absl's own errors, reported in one line)
    Row("no-mode", (), 2, ("missing mode", "train, train_autoencoder, export, sample")),
    Row("unknown-mode", ("no-such-mode",), 2, (
        "unknown mode 'no-such-mode'", "available modes: train, train_autoencoder, export, sample, "
        "likelihood, bench, reconstruct, inpaint, interpolate, demo")),
    Row("extra-argument", ("sample", "extra"), 2, ("unexpected arguments", "'extra'", "--name=value")),
    Row("unknown-flag", ("sample", "--nn=3"), 2, ("Unknown command line flag 'nn'", "--helpshort")),
    Row("n-zero", ("sample", "--n=0"), 2, ("--n=0", "not a positive integer")),
    Row("steps-word", ("sample", "--steps=abc"), 2, ("--steps", "integers >= 1")),
    Row("seed-negative", ("sample", "--seed=-1"), 2, ("--seed=-1",)),
    Row("sampler-options-syntax", _sample("--sampler_options=eta"), 2, ("KEY=VALUE",)),
    # the --config file
    Row("config-missing", ("train", "--config={tmp}/missing.py", "--workdir={tmp}/w"), 2,
        ("config file", "missing.py", "not found")),
    Row("config-folder", ("train", "--config={tmp}", "--workdir={tmp}/w"), 2, ("is a folder, not a file",)),
    Row("config-syntax", ("train", "--config={syntax}", "--workdir={tmp}/w"), 2,
        ("syntax.py, line 3", "def get_config(:")),
    Row("config-raises", ("train", "--config={raises}", "--workdir={tmp}/w"), 2,
        ("raises.py failed to load", "KeyError", "no such group")),
    Row("config-no-get-config", ("train", "--config={noget}", "--workdir={tmp}/w"), 2,
        ("defines no get_config",)),
    Row("override-unknown-key", _train("--config.training.stepz=5"), 2,
        ("unknown config key 'training.stepz'", "nearest keys: training.steps")),
    Row("override-without-config", ("train", "--workdir={tmp}/w", "--config.training.steps=5"), 2,
        ("no --config=FILE was given",)),
    Row("override-bad-type", _train("--config.training.steps=abc"), 2, ("--config.training.steps=abc",)),
    # config values: checked before any work
    Row("ckpt-every-zero", _train("--config.training.ckpt_every=0"), 2,
        ("training.ckpt_every", ">= 1", "got 0")),
    Row("log-every-zero", _train("--config.training.log_every=0"), 2,
        ("training.log_every", ">= 1", "got 0")),
    Row("batch-size-zero", _train("--config.training.batch_size=0"), 2, ("training.batch_size", "got 0")),
    Row("steps-negative", _train("--config.training.steps=-5"), 2, ("training.steps", ">= 1", "got -5")),
    Row("steps-zero", _train("--config.training.steps=0"), 2, ("training.steps", "got 0")),
    Row("lr-negative", _train("--config.training.lr=-0.1"), 2, ("training.lr", "> 0", "got -0.1")),
    Row("lr-nan", _train("--config.training.lr=nan"), 2, ("training.lr", "finite", "got nan")),
    Row("ema-decay", _train("--config.training.ema_decay=1.5"), 2, ("training.ema_decay", "[0, 1]")),
    Row("keep-zero", _train("--config.training.keep_checkpoints=0"), 2, ("training.keep_checkpoints",)),
    Row("data-range-scalar", _train("--config.data.data_range=5"), 2,
        ("data.data_range", "2 finite numbers", "got (5,)")),
    Row("data-range-reversed", _train("--config.data.data_range=1,0"), 2, ("data.data_range", "lo < hi")),
    Row("sampling-n-zero", ("sample", "--config={tiny}", "--workdir={tmp}/s", "--config.sampling.n=0"), 2,
        ("sampling.n", "got 0")),
    Row("eval-rtol-zero", ("likelihood", "--config={tiny}", "--workdir={tmp}/s", "--config.eval.rtol=0.0"), 2,
        ("eval.rtol", "> 0")),
    # output folders: checked before any work
    Row("workdir-is-file", ("train", "--config={tiny}", "--workdir={file}"), 2, ("is a file, not a folder",)),
    Row("workdir-inside-file", ("train", "--config={tiny}", "--workdir={file}/run"), 2,
        ("cannot be created", "is a file, not a folder")),
    Row("workdir-unwritable", ("train", "--config={tiny}", "--workdir={readonly}"), 2, ("is not writable",)),
    Row("output-folder-unwritable", ("sample", "--model_dir=digits_vp", "--workdir={readonly}/out"), 2,
        ("--workdir=", "is not writable", "where it would be created")),
    Row("sample-workdir-is-file", ("sample", "--model_dir=digits_vp", "--workdir={file}"), 2,
        ("--workdir=", "is a file",)),
    Row("export-out-missing", ("export", "--config={tiny}", "--workdir={tmp}/w"), 2, ("needs --out=PATH",)),
    Row("export-out-is-folder", ("export", "--config={tiny}", "--workdir={tmp}/w", "--out={tmp}"), 2,
        ("--out=", "is a folder")),
    Row("export-out-unwritable", ("export", "--config={tiny}", "--workdir={tmp}/w",
                                  "--out={readonly}/m.pt"), 2, ("--out=", "is not writable")),
    # samplers and their options
    Row("sampler-unknown", _sample("--sampler=nope"), 2, ("--sampler=nope", "unknown sampler", "available")),
    Row("sampler-option-misspelt", _sample("--sampler_options=etaa=0.5"), 2,
        ("--sampler_options=etaa=0.5", "no option 'etaa'", "did you mean 'eta'")),
    Row("sampler-option-word", _sample("--sampler_options=eta=abc"), 2,
        ("--sampler_options=eta=abc", "'eta'", "must be a number", "'abc'")),
    Row("reconstruct-stochastic", ("reconstruct", "--model_dir=digits_vp", "--workdir={tmp}/s", "--n=2",
                                   "--steps=2", "--sampler=ancestral"), 2,
        ("--sampler=ancestral", "stochastic and cannot encode")),
    Row("interpolate-stochastic", ("interpolate", "--model_dir=digits_vp", "--workdir={tmp}/s", "--n=1",
                                   "--steps=2", "--sampler=pc"), 2, ("--sampler=pc", "stochastic")),
    # --timesteps_file
    Row("timesteps-missing", ("sample", "--model_dir=digits_vp", "--workdir={tmp}/s", "--n=2",
                              "--timesteps_file={tmp}/none.json"), 2, ("--timesteps_file=", "is not a file")),
    Row("timesteps-increasing", ("sample", "--model_dir=digits_vp", "--workdir={tmp}/s", "--n=2",
                                 "--timesteps_file={up}"), 2, ("--timesteps_file=", "strictly decreasing")),
    Row("timesteps-words", ("sample", "--model_dir=digits_vp", "--workdir={tmp}/s", "--n=2",
                            "--timesteps_file={words}"), 2, ("expected a JSON list or numbers",)),
    Row("timesteps-and-steps", _sample("--timesteps_file={up}"), 2, ("either --steps or --timesteps_file",)),
    # models and conditioning
    Row("model-dir-empty", ("sample", "--config={tiny}", "--workdir={tmp}/empty"), 1,
        ("no trained model in", "train one first")),
    Row("class-unconditional", _sample("--class=3"), 2, ("needs a class-conditional model",)),
    Row("class-out-of-range", _sample("--class=10", model=COND), 2, ("--class must lie in 0..9",)),
    Row("guidance-without-class", _sample("--guidance=2", model=COND), 2, ("need --class=C",)),
    Row("guidance-negative", _sample("--class=1", "--guidance=-3", model=COND), 1,
        ("guidance weight w must be >= -1",)),
    Row("guidance-interval-one", _sample("--class=1", "--guidance=1", "--guidance_interval=0.5",
                                         model=COND), 2, ("must be two times",)),
    Row("guidance-interval-reversed", _sample("--class=1", "--guidance=1", "--guidance_interval=0.9,0.1",
                                              model=COND), 1, ("0 <= t_lo < t_hi <= T",)),
    Row("inpaint-mask", ("inpaint", "--model_dir=digits_vp", "--workdir={tmp}/s", "--config={digits}",
                         "--config.inpaint.mask=diagonal", "--n=2", "--steps=2"), 1,
        ("inpaint.mask must be one of",)),
    # data
    Row("data-folder-missing", _train("--config.data.name=folder", "--config.data.path={tmp}/no-images"), 1,
        ("image folder", "no-images", "not found")),
    Row("png-decompression-bomb", _train("--config.data.name=folder", "--config.data.path={bomb}",
                                         "--config.data.n=0"), 1,
        ("bomb.png", "too large", "decompression bomb")),
)


def _png(path: Path, width: int, height: int, rows: bytes, bit_depth: int = 8, colour: int = 0) -> None:
    """A PNG file written byte by byte (``colour``: 0 grey, 2 RGB), so that a header can claim any size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG of ``pixels`` (uint16, ``(H, W)`` grey or ``(H, W, 3)`` RGB)."""
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter 0 per row
    _png(path, pixels.shape[1], pixels.shape[0], rows, 16, 2 if pixels.ndim == 3 else 0)


def _unwritable(tmp: Path) -> Path | None:
    """A folder no file can be created in: a mode-555 folder, or (as root, who ignores modes) /sys/kernel."""
    folder = tmp / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys/kernel")):
        try:
            (candidate / ".probe").touch()
            (candidate / ".probe").unlink()
        except OSError:
            return candidate
    return None


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "a_file").write_text("not a folder")
    (tmp / "syntax.py").write_text("from scoresde.config import default_config\n\ndef get_config(:\n")
    (tmp / "raises.py").write_text("def get_config():\n    raise KeyError('no such group')\n")
    (tmp / "noget.py").write_text("X = 1\n")
    (tmp / "up.json").write_text("[0.0, 0.5, 1.0]")
    (tmp / "words.txt").write_text("one two")
    (tmp / "empty").mkdir()
    (tmp / "bomb").mkdir()
    _png(tmp / "bomb" / "bomb.png", 20000, 20000, b"")  # PIL refuses it from the header alone
    readonly = _unwritable(tmp)
    return {"tmp": str(tmp), "file": str(tmp / "a_file"), "tiny": str(TINY), "syntax": str(tmp / "syntax.py"),
            "raises": str(tmp / "raises.py"), "noget": str(tmp / "noget.py"), "up": str(tmp / "up.json"),
            "words": str(tmp / "words.txt"), "bomb": str(tmp / "bomb"),
            "digits": str(REPO / "configs" / "digits_vp.py"), "readonly": str(readonly or "")}


EXTRA = (
    Row("debug", ("train", "--config={syntax}", "--workdir={tmp}/w", "--debug"), 2, ("syntax.py, line 3",)),
    Row("debug-runtime", _sample("--class=1", "--guidance=-3", "--debug", model=COND), 1,
        ("guidance weight w must be >= -1",)),
    Row("bug-keyerror", _sample(), 1, ("KeyError: 'injected bug'",), inject="KeyError"),
    Row("bug-valueerror", _sample(), 1, ("ValueError: injected bug",), inject="ValueError"),
    Row("bug-floatingpoint", _sample(), 1, ("FloatingPointError: injected bug",),
        inject="FloatingPointError"),
)


@pytest.fixture(scope="module")
def results(paths: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every row of ROWS and EXTRA run in one subprocess; id -> {"code", "stdout", "stderr"}."""
    rows = [r for r in (*ROWS, *EXTRA) if paths["readonly"] or "{readonly}" not in "".join(r.argv)]
    folder = tmp_path_factory.mktemp("rows")
    spec = [{"argv": [a.format(**paths) for a in r.argv], "cwd": paths["tmp"], "inject": r.inject}
            for r in rows]
    (folder / "rows.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(HERE / "cli_rows.py"), str(folder / "rows.json"),
                           str(folder / "out.json")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((folder / "out.json").read_text())
    return {r.id: o for r, o in zip(rows, out)}


def test_the_table_is_large_and_its_ids_unique() -> None:
    assert len(ROWS) >= 30 and len({r.id for r in (*ROWS, *EXTRA)}) == len(ROWS) + len(EXTRA)


def shown_lines(text: str) -> list[str]:
    """The non-empty lines a terminal shows for ``text``: of each line what follows its last carriage
    return (a progress bar cleared with ``\r`` leaves nothing)."""
    return [shown for line in text.split("\n") if (shown := line.rsplit("\r", 1)[-1].strip())]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_bad_input_is_one_line(row: Row, results: dict[str, dict], paths: dict[str, str]) -> None:
    if row.id not in results:
        pytest.skip("no folder that cannot be written to on this machine")
    got = results[row.id]
    lines = shown_lines(got["stderr"])
    assert got["code"] == row.code and len(lines) == 1, got["stderr"]
    mode = row.argv[0] if row.argv and row.argv[0] in MODES else None
    assert lines[0].startswith(f"scoresde {mode}: " if mode else "scoresde: "), lines[0]
    assert "Traceback" not in got["stderr"]
    for word in row.words:
        assert word in lines[0], (word, lines[0])
    assert not Path(paths["tmp"], "w").exists()  # no row got as far as training


def test_debug_shows_the_traceback(results: dict[str, dict]) -> None:
    """--debug: the traceback first, then the same one line last (the exit status unchanged)."""
    for name in ("debug", "debug-runtime"):
        got, row = results[name], next(r for r in EXTRA if r.id == name)
        assert got["code"] == row.code and "Traceback (most recent call last)" in got["stderr"]
        last = shown_lines(got["stderr"])[-1]
        assert last.startswith(f"scoresde {row.argv[0]}: ") and row.words[0] in last


def test_a_bug_keeps_its_traceback(results: dict[str, dict]) -> None:
    """An exception outside the user-error family (here a plain KeyError, ValueError and FloatingPointError
    raised in place of the mode) is a bug: the interpreter's traceback, exit status 1, no one-line report."""
    for row in EXTRA:
        if row.inject:
            got = results[row.id]
            assert got["code"] == 1 and "Traceback (most recent call last)" in got["stderr"], got["stderr"]
            assert row.words[0] in got["stderr"] and "scoresde sample:" not in got["stderr"]


def test_user_errors_and_their_messages() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/samples.npz")
    assert common.is_user_error(full) and common.is_user_error(InputError("x"))
    assert common.is_user_error(PermissionError(errno.EACCES, "Permission denied", "/x"))
    assert not common.is_user_error(OSError(errno.EIO, "Input/output error", "/x"))  # the disk, not the user
    assert not common.is_user_error(ValueError("x")) and not common.is_user_error(KeyError("x"))
    assert common.error_message(full) == ("No space left on device: /runs/x/samples.npz (the disk is full: "
                                          "free space or pass a path on another disk)")
    assert common.error_message(FileNotFoundError("no trained model in x")) == "no trained model in x"


def test_fail_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        common.fail("first problem\n  second problem\n", code=2, mode="train")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "scoresde train: first problem; second problem\n"


def test_sixteen_bit_pngs_load_scaled(tmp_path: Path) -> None:
    """A 16-bit PNG holding the 8-bit values v·257 (how 8-bit images are widened) loads back as exactly v
    (grey: one channel; RGB: three); before, PIL's conversion saturated grey values above 255."""
    v = np.arange(256, dtype=np.uint16).reshape(16, 16)
    (tmp_path / "grey").mkdir()
    _png16(tmp_path / "grey" / "a.png", v * 257)
    x, spec = load_dataset("folder", path=tmp_path / "grey", data_range=(0.0, 255.0))
    assert spec.shape == (1, 16, 16)
    np.testing.assert_array_equal(x[0, 0].numpy(), v)  # data_range (0, 255): the pixels themselves
    (tmp_path / "rgb").mkdir()
    rgb = np.stack([v, 255 - v, v // 2], axis=-1)
    _png16(tmp_path / "rgb" / "a.png", rgb * 257)
    x, spec = load_dataset("folder", path=tmp_path / "rgb", data_range=(0.0, 255.0))
    assert spec.shape == (3, 16, 16)
    np.testing.assert_array_equal(x[0].numpy(), rgb.transpose(2, 0, 1))
