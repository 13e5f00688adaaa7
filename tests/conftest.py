"""Test-session settings.

The tests run small tensors (batches of a few hundred 2- to 64-dimensional points), where
torch's intra-op thread pool costs more than it gains; on a busy 2-core machine it made some
solves 5–20× slower. One thread keeps the suite's run time predictable.
"""

import sys
from pathlib import Path

import torch

# Test modules in subfolders (tests/samplers/, ...) import the shared fixtures of tests/oracles.py;
# the benchmark suite (benchmarks/suite, not installed) holds the peers' loaders that the
# equivalence tests share with the benchmarks.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "benchmarks"))

torch.set_num_threads(1)
