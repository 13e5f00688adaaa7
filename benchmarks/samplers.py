"""Samplers: NFE versus quality and wall time for every registered sampler (issue 6).

    python benchmarks/samplers.py                  # everything; see benchmarks/README.md for timings
    python benchmarks/samplers.py --quick          # smoke sizes, ~1 min; writes samplers_quick_*
    python benchmarks/samplers.py --parts analytic,overhead
    python benchmarks/samplers.py --parts image --device cuda   # the image-scale part on a GPU

Also ``scoresde bench``. The code lives in :mod:`scoresde.bench` so that the installed package
reaches it; this script is its command line. Results go to benchmarks/results/samplers_*.
"""

from scoresde.bench import main

if __name__ == "__main__":
    main()
