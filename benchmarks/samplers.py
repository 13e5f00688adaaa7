"""Samplers: NFE versus quality and wall time for every registered sampler (issue 6).

    python benchmarks/samplers.py                  # everything; see benchmarks/README.md for timings
    python benchmarks/samplers.py --quick          # smoke sizes, ~1 min; writes samplers_quick_*
    python benchmarks/samplers.py --parts analytic,overhead
    python benchmarks/samplers.py --parts image --device cuda   # the image-scale part on a GPU

The code lives in ``benchmarks/suite/`` (in the repository, not installed); this script is its
command line. Results go to benchmarks/results/samplers_*. (``scoresde bench`` measures one
trained model with the same variant table.)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import main

if __name__ == "__main__":
    main()
