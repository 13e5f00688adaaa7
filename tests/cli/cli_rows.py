"""Run many ``scoresde`` command lines in this one process (a Python + torch start costs seconds).

``python tests/cli/cli_rows.py ROWS.json OUT.json``: ``ROWS.json`` is a list of rows
``{"argv": [...], "cwd": DIR, "inject": NAME}``; each row runs :func:`scoresde.cli.run` as the
console script would (``sys.argv = ["scoresde", *argv]``), with absl's flags reset between rows and
the process's file descriptors 1 and 2 captured, so whatever any code writes (print, absl logging,
warnings, tqdm) is seen; progress bars left open are closed after the row, as at a process's exit.
``inject`` (optional) replaces the mode's function with one that raises that built-in exception, a
stand-in for a bug. ``OUT.json`` gets one ``{"code", "stdout", "stderr", "wall_s"}`` per row:
``code`` is the exit status the process would have had (an uncaught exception: 1, with the
traceback the interpreter would print).
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import tempfile
import time
import traceback
from typing import Any

import torch
from tqdm.auto import tqdm

import scoresde.cli as cli
from scoresde.cli.common import FLAGS


def _injected(name: str) -> Any:
    def bug() -> None:
        raise getattr(builtins, name)("injected bug")

    return bug


def reset_flags() -> None:
    """Every flag back to unparsed, and the ``--config.KEY`` override flags (which ml_collections
    defines while parsing) removed, as in a fresh process."""
    FLAGS.unparse_flags()
    for name in [n for n in FLAGS if n.startswith("config.")]:
        delattr(FLAGS, name)


def run_row(row: dict[str, Any]) -> dict[str, Any]:
    """One command line: its exit status and what it wrote to stdout and stderr."""
    start = time.perf_counter()
    reset_flags()
    sys.argv = ["scoresde", *row["argv"]]
    mode = row["argv"][0] if row["argv"] else ""
    saved = dict(cli.MODES)
    if row.get("inject"):
        cli.MODES[mode] = _injected(row["inject"])
    here = os.getcwd()
    os.chdir(row.get("cwd", here))
    captured = {}
    saved_fds = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    try:
        for fd, f in files.items():
            os.dup2(f.fileno(), fd)
        try:
            cli.run()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        for bar in list(tqdm._instances):  # as at the exit of a process: unfinished bars close
            bar.close()
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, f in files.items():
            os.dup2(saved_fds[fd], fd)
            os.close(saved_fds[fd])
            f.seek(0)
            captured[fd] = f.read().decode(errors="replace")
            f.close()
        os.chdir(here)
        cli.MODES.clear()
        cli.MODES.update(saved)
    return {"code": code, "stdout": captured[1], "stderr": captured[2], "wall_s": time.perf_counter() - start}


def main() -> None:
    rows_path, out_path = sys.argv[1:3]
    torch.set_num_threads(1)
    with open(rows_path) as f:
        rows = json.load(f)
    results = [run_row(row) for row in rows]
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
