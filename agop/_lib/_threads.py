"""agop's own threads for the compiled CPU ops: matrix products and element passes.

Two thread pools that poll for work after finishing slow down whatever runs next on
their cores (measured on 2 cores):

- after every call, OpenBLAS's worker threads keep polling (``sched_yield`` in a loop)
  for about 0.1 s before they sleep, a length fixed when the library is loaded
  (``OPENBLAS_THREAD_TIMEOUT``): a compiled pass started in that window ran 2.5x slower
  than alone, a symmetric product 2x;
- after every parallel loop, numba's OpenMP threads spin for several milliseconds
  (GNU OpenMP's default wait policy): a small GEMM started in that window ran 5x slower.

The ops alternate products with element passes, so inside them both run on agop's own
worker threads, which block when idle instead of polling: :func:`matmul` splits a
product by rows with NumPy's OpenBLAS held at one thread (inside :func:`own_threads`,
which each op enters), and :func:`run_rows` runs a compiled row-range function
(``nogil``) over chunks of rows.  numba's parallel loops remain for the conjugate-
gradient products, which follow one another and gain from the spinning.

The BLAS thread count in force before is put back when the last op running leaves (ops
may run in several threads at once), and products use the smaller of that count and
numba's thread count, so that a user's limit on either holds; while an op runs, BLAS
calls of other threads of the process get one thread too.
``agop.config_context(own_blas_threads=False)`` leaves BLAS alone (then products run in
one multi-threaded BLAS call); so does a NumPy whose BLAS is not an OpenBLAS that agop
can find.  Passes use numba's thread count (``numba.set_num_threads``).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from ._config import get_config

__all__ = ["blas_controller", "gram", "matmul", "own_threads", "row_chunks", "run_rows",
           "threads_in_use", "with_own_threads"]

#: products smaller than this many multiply-adds run in one BLAS call
_MIN_SPLIT_WORK = 4_000_000

#: (set, get) symbol names of the thread count, by OpenBLAS build
_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


class BlasController:
    """Get and set the thread count of one loaded OpenBLAS library."""

    def __init__(self, path: str, setter: Any, getter: Any) -> None:
        self.path = path
        self._set, self._get = setter, getter

    def get(self) -> int:
        return int(self._get())

    def set(self, threads: int) -> None:
        self._set(int(threads))


def _candidate_paths() -> list[str]:
    """NumPy's bundled OpenBLAS first (wheels), then any OpenBLAS mapped into the process."""
    here = os.path.dirname(np.__file__)
    paths = sorted(glob.glob(os.path.join(here, os.pardir, "numpy.libs", "*openblas*.so*")))
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.split()[-1] if line.strip() else ""
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:  # pragma: no cover - not Linux
        pass
    return paths


def _load(path: str) -> BlasController | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:  # pragma: no cover - a listed file that does not load
        return None
    for set_name, get_name in _SYMBOLS:
        setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
        if setter is not None and getter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            return BlasController(path, setter, getter)
    return None  # pragma: no cover - an OpenBLAS without the thread-count API


@functools.lru_cache(maxsize=1)
def blas_controller() -> BlasController | None:
    """The thread-count control of NumPy's OpenBLAS, or ``None`` when NumPy uses another
    BLAS (or agop cannot find it)."""
    for path in _candidate_paths():
        ctl = _load(path)
        if ctl is not None:
            return ctl
    return None


# process-wide state: how many ops are inside own_threads, and the count to put back
_lock = threading.Lock()
_depth = 0
_saved = 1
#: threads the current context splits products over (1: plain NumPy calls)
_THREADS: ContextVar[int] = ContextVar("agop_blas_threads", default=1)
_pool: ThreadPoolExecutor | None = None


def _reset_after_fork() -> None:  # pragma: no cover - runs in a forked child
    global _pool, _depth, _lock
    _pool, _depth, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1) - 1),
                                   thread_name_prefix="agop-worker")
    return _pool


def threads_in_use() -> int:
    """Threads :func:`matmul` splits over in the current context (1 outside ops)."""
    return _THREADS.get()


@contextmanager
def own_threads() -> Iterator[int]:
    """Run the block with NumPy's OpenBLAS at one thread and :func:`matmul` on agop's
    threads; yields their number (1 when turned off, unavailable, or when BLAS or numba
    is already limited to one thread).  Re-entrant."""
    if _THREADS.get() > 1:
        yield _THREADS.get()
        return
    ctl = blas_controller() if get_config()["own_blas_threads"] else None
    if ctl is None:
        yield 1
        return
    from numba import get_num_threads

    global _depth, _saved
    with _lock:
        if _depth == 0:
            before = ctl.get()
            take = min(before, get_num_threads()) > 1  # else nothing to gain
            if take:
                _saved = before
                ctl.set(1)
        else:  # another op holds BLAS at one thread already
            take = True
        if take:
            threads = max(1, min(_saved, get_num_threads()))
            _depth += 1
    if not take:
        yield 1
        return
    token = _THREADS.set(threads)
    try:
        yield threads
    finally:
        _THREADS.reset(token)
        with _lock:
            _depth -= 1
            if _depth == 0:
                ctl.set(_saved)


def with_own_threads(fn: Callable) -> Callable:
    """Decorator: run ``fn`` inside :func:`own_threads`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with own_threads():
            return fn(*args, **kwargs)

    return wrapper


def _run(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run ``jobs``: the first on this thread, the rest on the pool."""
    futures = [_executor().submit(job) for job in jobs[1:]]
    try:
        first = jobs[0]()
    finally:  # never leave workers writing into arrays the caller is done with
        for f in futures:
            f.exception()  # waits for it
    return [first] + [f.result() for f in futures]


#: a product with fewer rows than this (and at least 4x as many columns) splits columns
_FEW_ROWS = 512


def matmul(A: np.ndarray, B: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``A @ B`` for 2-d NumPy arrays; inside :func:`own_threads` split by rows of ``A``
    (a short, wide product: by columns of ``B``) over agop's threads (small products
    run in one call)."""
    threads = _THREADS.get()
    m = A.shape[0]
    if (threads <= 1 or A.ndim != 2 or B.ndim != 2 or m < 2 * threads
            or m * A.shape[1] * B.shape[1] < _MIN_SPLIT_WORK):
        return np.matmul(A, B, out=out)
    if out is None:
        out = np.empty((m, B.shape[1]), dtype=np.result_type(A, B))
    p = B.shape[1]
    if m < _FEW_ROWS and p >= 4 * m and out.strides[1] == out.itemsize:
        # a short, wide product (the preconditioner's 100-row blocks times n columns):
        # split by columns instead, each thread reading half of B rather than all of it
        # (15 % faster for 100 x 400 times 400 x 12 800); the column blocks of a
        # C-ordered out are still BLAS operands (row stride = its width)
        bounds = row_chunks(p, threads).tolist()
        _run([functools.partial(np.matmul, A, B[:, a:b], out=out[:, a:b])
              for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
        return out
    bounds = row_chunks(m, threads).tolist()
    _run([functools.partial(np.matmul, A[a:b], B, out=out[a:b])
          for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    return out


def gram(C: np.ndarray) -> np.ndarray:
    """``C^T C`` of a tall 2-d NumPy array, symmetrized; inside :func:`own_threads` as
    a sum of row-block products on agop's threads."""
    threads = _THREADS.get()
    n, r = C.shape
    if threads <= 1 or n < 2 * threads or n * r * r < _MIN_SPLIT_WORK:
        G = C.T @ C
    else:
        bounds = row_chunks(n, threads).tolist()
        parts = _run([functools.partial(lambda a, b: C[a:b].T @ C[a:b], a, b)
                      for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
        G = parts[0]
        for P in parts[1:]:
            G += P
    return (G + G.T) / 2.0


#: chunks per thread of :func:`run_rows` (taken in turn, so that uneven chunks even out)
_CHUNKS_PER_THREAD = 4


def row_chunks(n: int, parts: int, *, triangle: bool = False, multiple: int = 1) -> np.ndarray:
    """``parts + 1`` increasing row bounds over ``0..n``: equal row counts, or with
    ``triangle=True`` equal areas of a lower triangle (row ``i`` costs ``i``); inner
    bounds rounded down to a multiple of ``multiple``."""
    parts = max(1, min(parts, n))
    t = np.arange(parts + 1) / parts
    b = np.round(n * (np.sqrt(t) if triangle else t)).astype(np.int64)
    if multiple > 1:
        b[1:-1] -= b[1:-1] % multiple
    return np.unique(b)


def _threading_layer() -> str | None:
    """numba's threading layer, ``None`` before its first parallel loop has run."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return None


def run_rows(fn: Callable[..., Any], n: int, *args: Any, triangle: bool = False,
             multiple: int = 1, serial: bool = False) -> None:
    """``fn(*args, r0, r1)``, a numba parallel loop over the rows ``r0:r1`` (``nogil``),
    over chunks of the rows ``0..n``: on numba's number of threads, this one and agop's
    workers, each running its chunks with numba's thread count at one (a loop of one
    thread runs on its caller: no OpenMP team, nothing left spinning after it), taking
    the next chunk when done.  ``triangle=True``: chunks of equal area of a lower
    triangle; ``multiple``: chunk bounds at multiples of it (row tiles).  With numba's
    "workqueue" layer, which must not be entered from several threads at once, (or
    before numba's first parallel loop) ``fn`` runs on all rows with numba's own
    threads.  ``serial=True``: ``fn`` is a compiled loop without ``prange`` (it always
    runs in chunks on the threads)."""
    from numba import get_num_threads, set_num_threads

    threads = max(1, min(get_num_threads(), -(-n // multiple)))
    if threads == 1 or (not serial and _threading_layer() in (None, "workqueue")):
        fn(*args, 0, n)
        return
    bounds = row_chunks(n, threads * _CHUNKS_PER_THREAD, triangle=triangle,
                        multiple=multiple)
    queue = iter(list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)))
    take = threading.Lock()

    def work() -> None:
        before = get_num_threads()
        set_num_threads(1)
        try:
            while True:
                with take:
                    chunk = next(queue, None)
                if chunk is None:
                    return
                fn(*args, *chunk)
        finally:
            set_num_threads(before)

    _run([work] * threads)
