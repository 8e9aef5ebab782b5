"""Benchmark the student beside its teacher and peers; same as ``python -m mobileunet bench``.

    python benchmarks/bench_models.py            # full run, ~10 minutes on 2 cores
    python benchmarks/bench_models.py --quick    # one size, fewer models, ~1-2 minutes
"""
import sys

from mobileunet.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
