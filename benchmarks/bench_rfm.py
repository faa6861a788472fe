"""RFM fits: agop vs xRFM (same data, settings and threads).  Same as `agop bench rfm`.

    pip install -e '.[test]' xrfm torch==2.13.0
    python benchmarks/bench_rfm.py --out benchmarks/results/bench_rfm.md
"""

import sys

from agop.bench.rfm import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
