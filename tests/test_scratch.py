"""Scratch buffers kept for a loop (agop._lib._scratch) and the ops that use them."""

from __future__ import annotations

import threading

import numpy as np

import agop
from agop._lib._scratch import scratch, scratch_pool


def test_outside_a_pool_every_call_allocates():
    a = scratch("x", (3, 4), np.float32)
    b = scratch("x", (3, 4), np.float32)
    assert a.shape == (3, 4) and a.dtype == np.float32 and not np.shares_memory(a, b)


def test_a_pool_reuses_the_largest_buffer_per_name_and_dtype():
    with scratch_pool():
        a = scratch("x", (10, 4), np.float64)
        b = scratch("x", (5, 4), np.float64)
        assert np.shares_memory(a, b) and b.shape == (5, 4) and b.flags.c_contiguous
        c = scratch("x", (20, 4), np.float64)  # larger: a new buffer, kept from now on
        assert not np.shares_memory(a, c)
        assert np.shares_memory(c, scratch("x", (3, 3), np.float64))
        assert not np.shares_memory(c, scratch("x", (3, 3), np.float32))  # other dtype
        assert not np.shares_memory(scratch("y", (3, 3), np.float32),
                                    scratch("x", (3, 3), np.float32))
        seen = []
        t = threading.Thread(target=lambda: seen.append(scratch("x", (3, 3), np.float32)))
        t.start()
        t.join()
        assert not np.shares_memory(seen[0], scratch("x", (3, 3), np.float32))
    d = scratch("x", (3, 3), np.float32)  # the pool is gone with the block
    assert not np.shares_memory(c, d)


def test_ops_give_the_same_numbers_with_pooled_buffers():
    """Reused buffers hold the previous call's numbers; the ops overwrite them fully."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    Z = rng.normal(size=(200, 5)).astype(np.float32)
    coef = rng.normal(size=(200, 2)).astype(np.float32)
    k = agop.Laplace(3.0)
    with agop.config_context(block_rows=70):  # the same blocks, fresh buffers (BLAS
        # round-off depends on a row's place in its block)
        ref_mv = agop.kernel_mv(k, X, Z, coef)
        ref_agop = agop.agop(k, X, Z, coef)
        ref_g = agop.predictor_grads(k, X, Z, coef)
    with scratch_pool(), agop.config_context(block_rows=70):
        agop.kernel_mv(k, X * 3, Z, coef)  # leave other numbers in the buffers
        agop.agop(k, X * 3, Z, coef)
        np.testing.assert_array_equal(agop.kernel_mv(k, X, Z, coef), ref_mv)
        np.testing.assert_allclose(agop.agop(k, X, Z, coef), ref_agop, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(agop.predictor_grads(k, X, Z, coef), ref_g, rtol=1e-5,
                                   atol=1e-6)


def test_pcg_solves_in_a_pool_equal_fresh_ones():
    """The Nystrom preconditioner's buffers come from the pool too: a second solve in
    the same pool (other kernel, buffers holding the first solve's numbers) gives the
    coefficients of a solve outside any pool."""
    from agop.solvers import solve_kernel_ridge

    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 4)).astype(np.float32)
    Y = rng.normal(size=(400, 2)).astype(np.float32)
    with scratch_pool(), agop.config_context(pcg_rank=100):
        ws = {}
        solve_kernel_ridge(agop.Gaussian(1.0), X, Y, 1e-2, solver="pcg", random_state=1,
                           workspace=ws)
        got, _ = solve_kernel_ridge(agop.Laplace(3.0), X, Y, 1e-2, solver="pcg",
                                    random_state=0, workspace=ws)
    with agop.config_context(pcg_rank=100):
        ref, _ = solve_kernel_ridge(agop.Laplace(3.0), X, Y, 1e-2, solver="pcg",
                                    random_state=0)
    np.testing.assert_array_equal(got, ref)
