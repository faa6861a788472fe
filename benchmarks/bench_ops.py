"""Kernel ops: agop numba vs generic vs xRFM vs the floor.  Same as `agop bench ops`.

    pip install -e '.[test]' xrfm torch==2.13.0
    python benchmarks/bench_ops.py --out benchmarks/results/bench_ops.md
"""

import sys

from agop.bench.ops import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
