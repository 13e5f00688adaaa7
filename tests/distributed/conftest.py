"""The torch.distributed tests import their shared jobs (``dist_jobs``, also run by torchrun's workers
through ``dist_worker.py``) and launch helpers (``dist_launch``) from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "distributed: launches torchrun (2 processes, gloo); in the default run, selectable with "
        "-m distributed")
