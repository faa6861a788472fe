"""Configuration and the memory planner: blocked reductions stay inside their budget."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import agop
from agop._lib._blocking import plan_blocks


def test_config_context_nests_and_restores():
    base = agop.get_config()["working_memory_mb"]
    with agop.config_context(working_memory_mb=8):
        assert agop.get_config()["working_memory_mb"] == 8.0
        with agop.config_context(block_rows=3):
            assert agop.get_config()["block_rows"] == 3
            assert agop.get_config()["working_memory_mb"] == 8.0
        assert agop.get_config()["block_rows"] is None
    assert agop.get_config()["working_memory_mb"] == base


@pytest.mark.parametrize(
    "kw,exc",
    [
        ({"nope": 1}, ValueError),
        ({"block_rows": 0}, ValueError),
        ({"block_rows": 2.5}, ValueError),
        ({"working_memory_mb": -1}, ValueError),
        ({"check_finite": "yes"}, TypeError),
        ({"own_blas_threads": 1}, TypeError),
        ({"pcg_landmarks": "random"}, ValueError),
        ({"pcg_landmarks": None}, ValueError),
    ],
)
def test_config_rejects_bad_values(kw, exc):
    with pytest.raises(exc):
        with agop.config_context(**kw):
            pass


def test_set_config_changes_the_current_context():
    import contextvars

    def inner():
        agop.set_config(block_rows=5)
        return agop.get_config()["block_rows"]

    assert contextvars.copy_context().run(inner) == 5
    assert agop.get_config()["block_rows"] is None


def test_planner():
    with agop.config_context(working_memory_mb=1):
        plan = plan_blocks(10_000, bytes_per_row=1000, fixed_bytes=2**19)
        assert plan.block_rows == (2**20 - 2**19) // 1000
        assert plan.peak_bytes <= 2**20
        assert sum(b - a for a, b in plan) == 10_000
        assert plan_blocks(10, bytes_per_row=10**9).block_rows == 1  # never below one row
    with agop.config_context(block_rows=7):
        assert list(plan_blocks(15, 8)) == [(0, 7), (7, 14), (14, 15)]


@pytest.mark.parametrize("kernel", [agop.Laplace(3.0), agop.ProductLaplace(3.0)], ids=repr)
def test_blocked_reductions_stay_within_the_working_memory(kernel):
    """kernel_mv and agop at n = 3000 x m = 2000 never hold the 48 MB kernel matrix."""
    rng = np.random.default_rng(0)
    d = 8 if kernel.family == "lp" else 20
    X, Z = rng.normal(size=(3000, d)), rng.normal(size=(2000, d))
    coef = rng.normal(size=(2000, 2))
    budget_mb = 4
    inputs = X.nbytes + Z.nbytes + coef.nbytes
    with agop.config_context(working_memory_mb=budget_mb):
        for op in (
            lambda: agop.kernel_mv(kernel, X, Z, coef),
            lambda: agop.agop(kernel, X, Z, coef, centering="per_output"),
        ):
            tracemalloc.start()
            op()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            # one planned block, the (n, c) output and copies of the inputs at most
            assert peak < budget_mb * 2**20 * 1.5 + 2 * inputs, peak / 2**20
            assert peak < X.shape[0] * Z.shape[0] * 8  # never the whole kernel matrix
