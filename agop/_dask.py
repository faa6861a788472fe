"""Dask arrays in the reductions: ``kernel_mv``, ``predictor_grads`` and ``agop``.

A dask array is recognized by the module of its type, so ``import agop`` never imports
dask; dask is imported here only once a dask array reaches an op.  Each op becomes a
graph over row chunks of the evaluation points ``X``:

- ``kernel_mv``: one task per (row chunk of ``X``, row chunk of the centers), summed
  over the centers' chunks: ``K(X_i, Z) coef = sum_j K(X_i, Z_j) coef_j``;
- ``predictor_grads``: one task per row chunk of ``X`` (each sees all centers);
- ``agop``: a map-reduce.  Each row chunk of ``X`` gives its partial statistic (the
  chunk's AGOP, and with centering its mean gradient), the partial statistics are merged
  pairwise (:class:`agop._generic.AGOPAccumulator`, the stable Chan-Golub-LeVeque update
  for centered sums) and divided once by the number of points.

Every task runs the ordinary NumPy op on its chunk (the numba loops where available).
Results are lazy dask arrays; ``.compute()`` (or a ``distributed.Client``) runs them.
Values of a chunk are validated when its task runs, so a non-finite entry raises at
compute time.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import threading
from typing import Any

import numpy as np

__all__ = ["agop_dask", "any_dask", "is_dask_array", "kernel_mv_dask", "predictor_grads_dask",
           "reject"]


def is_dask_array(a: Any) -> bool:
    """True for a ``dask.array.Array`` (checked without importing dask)."""
    return type(a).__module__.startswith("dask.array") and hasattr(a, "chunks")


def any_dask(*arrays: Any) -> bool:
    return any(is_dask_array(a) for a in arrays)


def reject(op: str, *arrays: Any) -> None:
    """A clear ``TypeError`` for a dask array passed to an op without a dask path."""
    if any_dask(*arrays):
        raise TypeError(
            f"agop.{op} does not take dask arrays (kernel_mv, predictor_grads and agop "
            "do); call .compute() on the inputs first"
        )


_NUMBA_LOCK = threading.Lock()


def _threadsafe() -> bool:
    """Whether tasks may run the numba loops from several threads at once.  Not with
    numba's workqueue threading layer (its fallback without TBB or OpenMP), which aborts
    the process on concurrent parallel calls, nor before the layer is chosen."""
    numba = sys.modules.get("numba")
    if numba is None:
        return importlib.util.find_spec("numba") is None
    try:
        return numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel loop has run yet: the layer is not chosen
        return False


def _task(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a task: one at a time unless the threading layer is
    thread-safe (the threaded scheduler is dask's default)."""
    if _threadsafe():
        return fn(*args, **kwargs)
    with _NUMBA_LOCK:
        return fn(*args, **kwargs)


def _as_dask_2d(da: Any, a: Any, name: str, *, ndim: tuple[int, ...] = (2,)) -> Any:
    """``a`` as a dask array whose only chunking is along rows (one chunk for an
    in-memory array), with a real numeric dtype."""
    if is_dask_array(a):
        arr = a
    else:
        from ._lib._compat import is_array

        if is_array(a) and not isinstance(a, np.ndarray):
            raise TypeError(
                f"{name} is a {type(a).__module__}.{type(a).__name__}; with dask arrays the "
                "other inputs must be NumPy or dask arrays"
            )
        a = np.asarray(a)
        if a.dtype.kind == "O":
            raise TypeError(f"{name} must be a NumPy or dask array of numbers")
        arr = da.from_array(a, chunks=a.shape or 1)
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must be {' or '.join(f'{k}-D' for k in ndim)}, got "
                         f"{arr.ndim}-D with shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if any(isinstance(s, float) and math.isnan(s) for s in arr.shape):
        raise ValueError(
            f"{name} has unknown chunk sizes (shape {arr.shape}); call "
            f"{name}.compute_chunk_sizes() first"
        )
    if any(s == 0 for s in arr.shape):
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); at least one row and "
                         "one column are required")
    if arr.ndim == 2 and len(arr.chunks[1]) > 1:
        arr = arr.rechunk({1: -1})  # columns in one chunk: a task sees whole rows
    return arr


def _inputs(X: Any, Z: Any, coef: Any, M: Any, names: tuple[str, str], backend: str):
    import dask.array as da

    from ._backends import check_backend

    check_backend(backend)
    if M is not None and is_dask_array(M):
        raise TypeError("M must be None or an in-memory NumPy array (d, d) or (d,); a dask "
                        "array is not accepted (call M.compute())")
    if M is not None and not isinstance(M, np.ndarray):
        raise TypeError(f"with dask arrays M must be None or a NumPy array, got "
                        f"{type(M).__module__}.{type(M).__name__}")
    Xd = _as_dask_2d(da, X, names[0])
    Zd = _as_dask_2d(da, Z, names[1])
    if Zd.shape[1] != Xd.shape[1]:
        raise ValueError(f"{names[0]} has {Xd.shape[1]} features but {names[1]} has "
                         f"{Zd.shape[1]}; they must have the same number of columns")
    if M is not None:  # in memory: check it now, as the in-memory op does, not in a task
        from ._lib._validation import validate_M

        validate_M(M, Xd.shape[1], np, _dtype(Xd, Zd))
    if coef is None:
        return da, Xd, Zd, None, False
    cd = _as_dask_2d(da, coef, "coef", ndim=(1, 2))
    coef_1d = cd.ndim == 1
    if coef_1d:
        cd = cd.reshape((cd.shape[0], 1))
    if cd.shape[0] != Zd.shape[0]:
        raise ValueError(f"coef has {cd.shape[0]} rows but {names[1]} has {Zd.shape[0]}; "
                         f"coef must have one row per row of {names[1]}")
    cd = cd.rechunk({0: Zd.chunks[0], 1: -1})
    return da, Xd, Zd, cd, coef_1d


def _dtype(*arrays: Any) -> np.dtype:
    """The dtype the in-memory op computes in: the promoted floating dtype of the inputs
    (integer and bool inputs adopt it, so float32 stays float32), float64 without one."""
    floats = [a.dtype for a in arrays if a is not None and a.dtype.kind == "f"]
    return np.result_type(*floats) if floats else np.dtype(np.float64)


def kernel_mv_dask(kernel: Any, X: Any, Z: Any, coef: Any, M: Any, backend: str) -> Any:
    """``K_M(X, Z) @ coef`` as a lazy dask array ``(n, c)`` (``(n,)`` for 1-D ``coef``)."""
    from ._ops import kernel_mv

    da, Xd, Zd, cd, coef_1d = _inputs(X, Z, coef, M, ("X", "Z"), backend)

    def pair(x, z, a):
        return _task(kernel_mv, kernel, x, z, a, M, backend=backend)[:, None, :]

    parts = da.blockwise(pair, "ijc", Xd, "id", Zd, "jd", cd, "jc", concatenate=True,
                         adjust_chunks={"j": 1}, dtype=_dtype(Xd, Zd, cd))
    out = parts.sum(axis=1)
    return out[:, 0] if coef_1d else out


def predictor_grads_dask(kernel: Any, X: Any, centers: Any, coef: Any, M: Any,
                         backend: str) -> Any:
    """Gradients ``(m, c, d)`` (``(m, d)`` for 1-D ``coef``) as a lazy dask array."""
    from ._ops import predictor_grads

    da, Xd, Zd, cd, coef_1d = _inputs(X, centers, coef, M, ("X", "centers"), backend)

    def grads(x, z, a):
        return _task(predictor_grads, kernel, x, z, a, M, backend=backend)

    out = da.blockwise(grads, "icd", Xd, "id", Zd, "jd", cd, "jc", concatenate=True,
                       dtype=_dtype(Xd, Zd, cd))
    return out[:, 0, :] if coef_1d else out


def agop_dask(kernel: Any, X: Any, centers: Any, coef: Any, M: Any, centering: str | None,
              diag: bool, backend: str) -> Any:
    """The AGOP ``(d, d)`` (or ``(d,)``) as a lazy one-chunk dask array: map over row
    chunks of ``X``, merge the partial statistics pairwise, divide once."""
    from dask import delayed

    from ._ops import agop, predictor_grads

    da, Xd, Zd, cd, _ = _inputs(X, centers, coef, M, ("X", "centers"), backend)
    d, c = Xd.shape[1], cd.shape[1]
    dtype = _dtype(Xd, Zd, cd)

    def part(x, z, a):
        """A chunk's sums: (centered) scatter, mean gradient, rows behind it, points."""
        b = x.shape[0]
        if b == 0:
            return None
        S = _task(agop, kernel, x, z, a, M, centering=centering, diag=diag,
                  backend=backend) * float(b)
        if centering is None:
            return S, None, b, b
        G = _task(predictor_grads, kernel, x, z, a, M, backend=backend)  # (b, c, d)
        if centering == "per_output":
            return S, np.mean(G, axis=0), b, b
        return S, np.mean(G.reshape(b * c, d), axis=0), b * c, b

    z_all = Zd.rechunk({0: -1}).to_delayed().ravel()[0]
    a_all = cd.rechunk({0: -1}).to_delayed().ravel()[0]
    parts = [delayed(part, pure=True)(x, z_all, a_all) for x in Xd.to_delayed().ravel()]
    # a tree of pairwise merges keeps each task small on a cluster
    while len(parts) > 1:
        parts = [delayed(_merge, pure=True)(parts[i:i + 2], centering, diag)
                 for i in range(0, len(parts), 2)]
    total = delayed(_finish, pure=True)(parts[0], centering, diag, dtype)
    return da.from_delayed(total, shape=(d,) if diag else (d, d), dtype=dtype)


def _accumulate(parts: list, centering: str | None, diag: bool) -> Any:
    from ._generic import AGOPAccumulator

    acc = AGOPAccumulator(centering=centering, diag=diag, xp=np)
    for p in parts:
        if p is not None:
            acc.merge(*p)
    return acc


def _merge(parts: list, centering: str | None, diag: bool) -> Any:
    """Merge the partial sums of chunks into one (``None`` marks an empty chunk)."""
    acc = _accumulate(parts, centering, diag)
    return None if acc.m == 0 else (acc.scatter, acc.mean, acc.rows, acc.m)


def _finish(part: Any, centering: str | None, diag: bool, dtype: Any) -> np.ndarray:
    acc = _accumulate([part], centering, diag)
    if acc.m == 0:
        raise ValueError("X has no rows: the AGOP needs at least one evaluation point")
    return acc.finish().astype(dtype, copy=False)
