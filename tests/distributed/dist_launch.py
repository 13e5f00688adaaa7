"""Launching subprocesses for the torch.distributed tests: ``torchrun --nproc_per_node=2`` on a free
``--master_port`` and the command line, each with one thread per process (``OMP_NUM_THREADS=1``, as
the test process runs, tests/conftest.py), this checkout first on the path, and a timeout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment() -> dict[str, str]:
    """One thread per process, and this checkout's package first on the path."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 ARGS`` (as ``python -m torch.distributed.run``) on a free port."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", *args]
    return subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=TIMEOUT)


def scoresde(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m scoresde.cli ARGS`` in one process."""
    return subprocess.run([sys.executable, "-m", "scoresde.cli", *args], cwd=cwd, env=environment(),
                          capture_output=True, text=True, timeout=TIMEOUT)


def ok(proc: subprocess.CompletedProcess) -> str:
    """stdout of a run that must have succeeded (else fail showing its output)."""
    assert proc.returncode == 0, (f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                                  f"stderr:\n{proc.stderr[-5000:]}")
    return proc.stdout
