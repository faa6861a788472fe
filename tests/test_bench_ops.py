"""``agop bench ops``: its FLOP counts, its floor and a tiny run of the table."""

from __future__ import annotations

import pytest

from agop.bench import names
from agop.bench.ops import floor_seconds, flops, main


def test_flop_counts_by_hand():
    n, d, c = 10, 3, 2
    assert flops("kernel_matrix", "laplace", n, d, c) == 2 * n * n * d
    assert flops("kernel_mv", "laplace", n, d, c) == 2 * n * n * d + 2 * n * n * c
    assert flops("agop", "laplace", n, d, c) == (2 * n * n * d + 2 * n * n * c * d
                                                 + 2 * n * c * d * d)
    assert flops("kernel_matrix", "l1", n, d, c) == 3 * n * n * d


def test_kernel_matrix_floor_counts_writing_the_output():
    # 1 GFLOP/s, 1 GB/s: n = 1000, d = 1 -> 2e6 FLOP (2 ms) but 4e6 bytes to write (4 ms)
    assert floor_seconds("kernel_matrix", "laplace", 1000, 1, 1, 1.0, 1.0) == pytest.approx(4e-3)
    assert floor_seconds("kernel_mv", "laplace", 1000, 1, 1, 1.0, 1.0) == pytest.approx(4e-3)
    assert floor_seconds("kernel_matrix", "laplace", 1000, 100, 1, 1.0, 1.0) == pytest.approx(0.2)


def test_bench_ops_runs_small(tmp_path, capsys):
    out = tmp_path / "ops.md"
    argv = ["--sizes", "60,120", "--dims", "3", "--outputs", "1,2", "--kernels", "laplace,l1",
            "--no-xrfm", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| laplace") or
            line.startswith("| l1")]
    # per kernel and size: one kernel matrix, and kernel_mv + agop for each c
    assert len(rows) == 2 * 2 * (1 + 2 * 2)
    assert out.read_text() == text
    assert "ops" in names()
