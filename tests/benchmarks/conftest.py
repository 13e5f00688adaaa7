"""The benchmark suite lives in the repository's benchmarks/ folder (not installed): import it
from there, as ``python benchmarks/samplers.py`` does."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
