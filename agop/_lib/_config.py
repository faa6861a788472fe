"""All tunables of agop in one place, with a context manager to change them locally.

The values are read at call time, never at import time, so ``config_context`` works for
every op.  The configuration is held in a :class:`contextvars.ContextVar`: a change in one
thread (or asyncio task) does not leak into another.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

_DEFAULTS: dict[str, Any] = {
    # Memory, in MiB, that one block of a blocked reduction (kernel_mv, predictor_grads,
    # agop) may use for its temporaries.  The planner sizes row blocks from it.
    "working_memory_mb": 256.0,
    # Force a row-block size (an int >= 1) instead of planning it from working memory.
    "block_rows": None,
    # Self-pair (coincidence) rule, SPEC Part A #10: two points whose computed squared
    # distance in the transformed, centered space satisfies
    #     d2 <= atol**2 + rtol_factor * (sqrt(d) + 2) * eps_dtype * (|x|^2 + |z|^2)
    # are treated as the same point: k = kappa(0) and the pair contributes no gradient.
    # The second term is the round-off level of d2 = |x|^2 + |z|^2 - 2 x.z.
    "self_pair_atol_float64": 1e-10,
    "self_pair_atol_float32": 1e-5,
    "self_pair_rtol_factor": 8.0,
    # Relative tolerances for accepting a feature matrix M as symmetric and PSD:
    # |M - M^T| <= tol * max|M| and min eig(M) >= -tol * max|eig(M)|.
    "matrix_rtol_float64": 1e-8,
    "matrix_rtol_float32": 1e-4,
    # Check every input array for NaN / infinity (one extra pass over the data).
    "check_finite": True,
    # The compiled CPU ops run NumPy's OpenBLAS on one thread and split their matrix
    # products over agop's own threads, which block when idle; OpenBLAS's own workers
    # poll for about 0.1 s after each call and slow the compiled passes that follow
    # (see agop._lib._threads).  False leaves BLAS threading alone.
    "own_blas_threads": True,
    # Kernel ridge solves (agop.solvers.solve_kernel_ridge).  MiB an n x n kernel
    # matrix may take: the direct solve needs it (twice: K and its factor); the
    # iterative solver keeps K in memory below it and recomputes blocks of K above it.
    "solver_memory_mb": 6144.0,
    # solver="auto" uses the direct (Cholesky) solve up to this many points, preconditioned
    # conjugate gradients above (Cholesky costs n^3/3 flops, PCG a few dozen n^2 products).
    "direct_solve_max_n": 6000,
    # Nystrom preconditioner rank (landmark points) of the conjugate-gradient solver.
    "pcg_rank": 500,
    # How its landmarks are chosen: "rpcholesky" (randomized pivoted Cholesky: pivots
    # drawn in proportion to what the landmarks so far leave unexplained) or "uniform".
    "pcg_landmarks": "rpcholesky",
    # Conjugate gradients stop when every column has |residual| <= tol * |rhs|.
    "pcg_tol_float64": 1e-6,
    "pcg_tol_float32": 1e-3,
    "pcg_max_iter": 1000,
}

_INT_OPTIONS = ("direct_solve_max_n", "pcg_rank", "pcg_max_iter")
_LANDMARKS = ("rpcholesky", "uniform")

_config: contextvars.ContextVar[MappingProxyType] = contextvars.ContextVar(
    "agop_config", default=MappingProxyType(dict(_DEFAULTS))
)


def get_config() -> MappingProxyType:
    """Return the current configuration as a read-only mapping."""
    return _config.get()


def _validated(changes: dict[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - set(_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown agop config option(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}"
        )
    out = {}
    for key, value in changes.items():
        if key == "block_rows":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"block_rows must be None or an int >= 1, got {value!r}")
        elif key in _INT_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        elif key == "pcg_landmarks":
            if not isinstance(value, str) or value not in _LANDMARKS:
                raise ValueError(f"pcg_landmarks must be one of {list(_LANDMARKS)}, "
                                 f"got {value!r}")
        elif key in ("check_finite", "own_blas_threads"):
            if not isinstance(value, bool):
                raise TypeError(f"{key} must be a bool, got {value!r}")
        else:
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{key} must be a positive number, got {value!r}")
            value = float(value)
        out[key] = value
    return out


def set_config(**changes: Any) -> None:
    """Change configuration options for the current context (see ``config_context``)."""
    new = dict(_config.get())
    new.update(_validated(changes))
    _config.set(MappingProxyType(new))


@contextmanager
def config_context(**changes: Any) -> Iterator[MappingProxyType]:
    """Temporarily change configuration options.

    Examples
    --------
    >>> import agop
    >>> with agop.config_context(block_rows=7):
    ...     agop.get_config()["block_rows"]
    7
    >>> agop.get_config()["block_rows"] is None
    True
    """
    new = dict(_config.get())
    new.update(_validated(changes))
    token = _config.set(MappingProxyType(new))
    try:
        yield _config.get()
    finally:
        _config.reset(token)
