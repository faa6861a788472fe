"""Benchmarks run by ``agop bench NAME`` (and by the scripts in ``benchmarks/``).

Each submodule ``agop.bench.NAME`` has ``main(argv) -> int``: it times agop against
its peers (xRFM, scikit-learn) on identical data in one run, prints a table with the
ratios and can write it to ``benchmarks/results/``. Benchmarks are not tests.
"""

from __future__ import annotations

import pkgutil


def names() -> list[str]:
    """The benchmark names ``agop bench`` accepts."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
