"""The two-process side of tests/distributed/test_distributed.py, started by torchrun:

    python -m torch.distributed.run --nproc_per_node=2 tests/distributed/dist_worker.py OUT AUTOENCODER

runs every job of ``dist_jobs`` on one thread per process (gloo) and writes rank 0's results to OUT.
"""

import sys
from pathlib import Path

import dist_jobs
import torch

if __name__ == "__main__":
    torch.set_num_threads(1)
    dist_jobs.run_all(Path(sys.argv[1]), Path(sys.argv[2]))
