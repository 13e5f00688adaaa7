"""Test-session settings.

The tests run small tensors (batches of a few hundred 2- to 64-dimensional points), where
torch's intra-op thread pool costs more than it gains; on a busy 2-core machine it made some
solves 5–20× slower. One thread keeps the suite's run time predictable.
"""

import sys
from pathlib import Path

import torch

# Test modules in subfolders (tests/samplers/, ...) import the shared fixtures of tests/oracles.py.
sys.path.insert(0, str(Path(__file__).resolve().parent))

torch.set_num_threads(1)
