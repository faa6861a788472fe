"""xRFM trees at scale: agop vs HistGradientBoosting, xgboost and xRFM (each fit in a
fresh process, 2 threads each).  Same as `agop bench scale`.

    pip install -e '.[test]' xgboost xrfm torch==2.13.0
    python benchmarks/bench_scale.py --sizes 100000,300000,1000000 \
        --out benchmarks/results/bench_scale.md
"""

import sys

from agop.bench.scale import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
