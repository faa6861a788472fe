"""agop's own threads (agop._lib._threads): BLAS held at one thread inside the ops and
restored after, row-split products equal to NumPy's, every row of a parallel pass run
exactly once."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest
from numba import njit, prange

import agop
from agop._lib import _threads
from agop._lib._threads import (
    blas_controller,
    gram,
    matmul,
    own_threads,
    row_chunks,
    run_rows,
    threads_in_use,
)

needs_openblas = pytest.mark.skipif(blas_controller() is None,
                                    reason="NumPy's BLAS is not an OpenBLAS agop can find")


def _controller_with_threads():
    """NumPy's OpenBLAS control and its thread count; skip where BLAS or numba has one
    thread (nothing for the ops to take over)."""
    ctl = blas_controller()
    before = ctl.get()
    if min(before, numba.get_num_threads()) < 2:
        pytest.skip("BLAS or numba has one thread here: nothing to take over")
    return ctl, before


@needs_openblas
def test_own_threads_holds_blas_at_one_thread_and_restores_it():
    ctl, before = _controller_with_threads()
    with own_threads() as threads:
        assert ctl.get() == 1
        assert threads == threads_in_use() == min(before, numba.get_num_threads())
        with own_threads() as inner:  # re-entrant
            assert inner == threads and ctl.get() == 1
        assert ctl.get() == 1
    assert ctl.get() == before and threads_in_use() == 1


@needs_openblas
def test_own_threads_restores_after_the_last_of_concurrent_ops():
    """Two threads inside ops at once: BLAS stays at one thread until both have left."""
    ctl, before = _controller_with_threads()
    inside, release = threading.Event(), threading.Event()

    def other():
        with own_threads():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(10)
    with own_threads():
        assert ctl.get() == 1
    assert ctl.get() == 1  # the other op is still running
    release.set()
    t.join()
    assert ctl.get() == before


@needs_openblas
def test_own_threads_leaves_blas_alone_when_turned_off_or_limited():
    ctl = blas_controller()
    before = ctl.get()
    with agop.config_context(own_blas_threads=False), own_threads() as threads:
        assert threads == 1 and ctl.get() == before
    ctl.set(1)  # a user limit of one BLAS thread holds
    try:
        with own_threads() as threads:
            assert threads == 1 and ctl.get() == 1
    finally:
        ctl.set(before)
    assert ctl.get() == before


def test_own_threads_restores_after_an_exception():
    ctl = blas_controller()
    before = None if ctl is None else ctl.get()
    with pytest.raises(RuntimeError):
        with own_threads():
            raise RuntimeError("boom")
    assert threads_in_use() == 1
    if ctl is not None:
        assert ctl.get() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_and_gram_equal_numpy(dtype):
    """Split products equal NumPy's: by rows and (short, wide) by columns, plain,
    transposed views, into a strided out."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(700, 300)).astype(dtype)
    B = rng.normal(size=(300, 90)).astype(dtype)
    big = np.zeros((800, 120), dtype=dtype)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-11}
    with own_threads():
        np.testing.assert_allclose(matmul(A, B), A @ B, **tol)
        np.testing.assert_allclose(matmul(A[:, :90].T, A[:, 90:180]),
                                   A[:, :90].T @ A[:, 90:180], **tol)
        out = matmul(A, B, out=big[50:750, 10:100])
        assert out.shape == (700, 90)
        np.testing.assert_allclose(big[50:750, 10:100], A @ B, **tol)
        assert np.all(big[:50] == 0) and np.all(big[:, :10] == 0)
        G = gram(A)
        # a short, wide product (split by columns), also into a strided out
        W = rng.normal(size=(300, 2000)).astype(dtype)
        np.testing.assert_allclose(matmul(A[:100], W), A[:100] @ W, **tol)
        wide = np.zeros((120, 2100), dtype=dtype)
        matmul(A[:100], W, out=wide[10:110, 50:2050])
        np.testing.assert_allclose(wide[10:110, 50:2050], A[:100] @ W, **tol)
        assert np.all(wide[:10] == 0) and np.all(wide[:, :50] == 0) and np.all(wide[:, 2050:] == 0)
    np.testing.assert_allclose(G, A.T @ A, **tol)
    np.testing.assert_array_equal(G, G.T)


def test_row_chunks_cover_the_rows():
    for n in (1, 7, 100, 12_800):
        for parts in (1, 3, 8):
            for triangle in (False, True):
                b = row_chunks(n, parts, triangle=triangle, multiple=4)
                assert b[0] == 0 and b[-1] == n and np.all(np.diff(b) > 0)
                assert np.all(b[1:-1] % 4 == 0)
    # equal areas of a triangle: the later chunks are narrower
    b = row_chunks(1000, 4, triangle=True)
    assert np.all(np.diff(np.diff(b)) < 0)
    area = np.diff(b ** 2)
    np.testing.assert_allclose(area, area.mean(), rtol=0.02)


@njit(parallel=True, nogil=True)
def _mark(out, value, r0, r1):  # pragma: no cover - jitted
    for i in prange(r0, r1):
        out[i] += value


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("triangle", [False, True])
def test_run_rows_runs_every_row_once(threads, triangle):
    before = numba.get_num_threads()
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    try:
        for n in (1, 5, 1001):
            out = np.zeros(n)
            _mark(out, 1.0, 0, 1)  # numba's first parallel loop has run: the layer is known
            out[:] = 0
            run_rows(_mark, n, out, 1.0, triangle=triangle)
            np.testing.assert_array_equal(out, 1.0)
        assert numba.get_num_threads() == threads  # put back on this thread
    finally:
        numba.set_num_threads(before)


def test_run_rows_propagates_errors_after_all_chunks_stopped():
    calls = []

    def boom(r0, r1):
        calls.append((r0, r1))
        raise ValueError("bad chunk")

    if _threads._threading_layer() in (None, "workqueue") or numba.get_num_threads() < 2:
        pytest.skip("runs on numba's own threads here")
    with pytest.raises(ValueError, match="bad chunk"):
        run_rows(boom, 100)
    assert calls


@njit(nogil=True)
def _mark_serial(out, starts, r0, r1):  # pragma: no cover - jitted
    for i in range(r0, r1):
        out[i] += 1.0
    starts[r0] = 1


def test_run_rows_serial_loops_in_whole_tiles():
    """A compiled loop without prange (the L_p loops) runs in chunks whose bounds are
    multiples of the tile, every row once."""
    n = 1001
    out, starts = np.zeros(n), np.zeros(n)
    run_rows(_mark_serial, n, out, starts, multiple=16, serial=True)
    np.testing.assert_array_equal(out, 1.0)
    assert np.all(np.flatnonzero(starts) % 16 == 0)
    if numba.get_num_threads() > 1:
        assert np.count_nonzero(starts) > 1
