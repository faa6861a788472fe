"""Ridge solves for the coefficients of a kernel machine.

``solve_ridge`` solves ``(K + reg I) coef = Y`` for a given kernel matrix by a Cholesky
factorization with the right library for the array: SciPy (LAPACK) for NumPy,
``torch.linalg`` for torch (CPU or CUDA), the Array-API ``linalg`` extension otherwise.
``solve_kernel_ridge`` solves the same system from the data: directly, or by
preconditioned conjugate gradients (``pcg``) with a Nystrom preconditioner over kernel
products, so that memory stays ``O(n * block)`` when ``K`` does not fit.  Data never
leave their library or device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backends
from ._lib._compat import (
    array_device,
    dtype_name,
    finfo_eps,
    is_numpy_namespace,
    is_torch_namespace,
)
from ._lib._config import get_config
from ._lib._scratch import scratch
from ._lib._threads import gram, matmul, own_threads
from ._lib._validation import as_float_array, check_finite, check_real_scalar, namespace_of

__all__ = ["SOLVERS", "SingularSystemError", "SolveInfo", "solve_kernel_ridge", "solve_ridge"]

logger = logging.getLogger("agop")

SOLVERS = ("auto", "direct", "pcg")

#: retries after a failed factorization; jitter = max(JITTER, n * eps) * trace(K)/n *
#: 10**attempt: in float32 the round-off of a Cholesky factorization grows like n * eps,
#: and a jitter of 1e-8 * trace/n would not even change the diagonal
_MAX_RETRIES = 3
_JITTER = 1e-8


class SingularSystemError(ValueError):
    """``K + reg I`` could not be factorized, even after adding jitter."""


def _shifted(K: Any, shift: float, xp: Any) -> Any:
    """A new array ``K + shift * I`` (one n x n allocation)."""
    n = K.shape[0]
    if is_numpy_namespace(xp):
        A = K.copy()
        A.flat[:: n + 1] += shift
        return A
    if is_torch_namespace(xp):
        A = K.clone()
        A.diagonal().add_(shift)
        return A
    return K + shift * xp.eye(n, dtype=K.dtype, device=array_device(K))


def _cholesky_solve(A: Any, Y: Any, xp: Any) -> Any | None:
    """``A^{-1} Y`` via Cholesky, or ``None`` when ``A`` is not numerically PD."""
    if is_numpy_namespace(xp):
        import numpy as np
        import scipy.linalg

        try:
            cf = scipy.linalg.cho_factor(A, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        return scipy.linalg.cho_solve(cf, Y, check_finite=False)
    if is_torch_namespace(xp):
        import torch

        L, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:
            return None
        return torch.cholesky_solve(Y, L)
    try:
        L = xp.linalg.cholesky(A)
    except Exception:  # noqa: BLE001 - each library raises its own error type
        return None
    if not bool(xp.all(xp.isfinite(L))):
        return None
    return xp.linalg.solve(L.T, xp.linalg.solve(L, Y))


def solve_ridge(K: Any, Y: Any, reg: float = 1e-3) -> Any:
    """Solve ``(K + reg I) coef = Y`` for a symmetric PSD kernel matrix ``K``.

    Parameters
    ----------
    K : array, shape (n, n)
    Y : array, shape (n, c) or (n,)
    reg : float >= 0
        Ridge ``lambda``; 0 gives the ridgeless (interpolating) solution, which needs
        float64 and distinct points.

    Returns
    -------
    coef : array shaped like ``Y``, in the namespace, dtype and device of ``K``.

    Raises
    ------
    SingularSystemError
        When the Cholesky factorization fails at ``reg`` and after up to three retries
        adding a jitter of ``max(1e-8, sqrt(n) * eps) * trace(K) / n`` (times 10 per
        retry, logged as a warning when it succeeds) to the diagonal (SPEC Part A #11;
        ``eps`` of the dtype, so that a float32 retry changes the system).

    Examples
    --------
    >>> import numpy as np, agop
    >>> X = np.random.default_rng(0).normal(size=(30, 2))
    >>> K = agop.kernel_matrix(agop.Laplace(1.0), X, X)
    >>> y = np.sin(X[:, 0])
    >>> a = agop.solve_ridge(K, y, reg=0.0)
    >>> bool(np.allclose(K @ a, y))
    True
    """
    xp = namespace_of(K, Y)
    K = as_float_array(K, "K", xp)
    Y = as_float_array(Y, "Y", xp, ndim=(1, 2))
    n = K.shape[0]
    if K.shape[1] != n:
        raise ValueError(f"K must be square, got shape {tuple(K.shape)}")
    if Y.shape[0] != n:
        raise ValueError(f"Y has {Y.shape[0]} rows but K is {n} x {n}")
    if array_device(Y) != array_device(K):
        raise ValueError("K and Y must be on the same device")
    reg = check_real_scalar(reg, "reg", low=0.0, low_open=False)
    check_finite(K, "K", xp)
    check_finite(Y, "Y", xp)
    dtype = xp.result_type(K, Y)
    K = xp.astype(K, dtype, copy=False)
    one_d = Y.ndim == 1
    Y = xp.astype(xp.reshape(Y, (n, 1)) if one_d else Y, dtype, copy=False)
    scale = float(xp.sum(xp.linalg.diagonal(K))) / n
    base = max(_JITTER, math.sqrt(n) * finfo_eps(xp, dtype)) * max(scale, 1e-300)
    for attempt in range(_MAX_RETRIES + 1):
        jitter = 0.0 if attempt == 0 else base * 10.0 ** (attempt - 1)
        coef = _cholesky_solve(_shifted(K, reg + jitter, xp), Y, xp)
        if coef is not None and bool(xp.all(xp.isfinite(coef))):
            if jitter:
                logger.warning("K + reg*I was not positive definite at reg = %g; solved "
                               "with a diagonal jitter of %.3g added", reg, jitter)
            return coef[:, 0] if one_d else coef
    raise SingularSystemError(
        f"K + reg*I is not positive definite for reg = {reg:g} (n = {n}, {dtype}), even "
        f"with a diagonal jitter up to {jitter:.3g}; use a larger reg (reg = 0 needs "
        "float64 and distinct points)"
    )


@dataclass(frozen=True)
class SolveInfo:
    """How a kernel ridge system was solved."""

    solver: str  # "direct" or "pcg"
    iterations: int  # conjugate-gradient iterations (0 for direct)
    residual: float  # largest relative residual |(K + reg I) coef - Y| / |Y| over columns
    converged: bool
    dense: bool  # whether K was held in memory


def _resolve_solver(solver: str, n: int, itemsize: int, reg: float) -> tuple[str, bool]:
    cfg = get_config()
    fits = n * n * itemsize <= cfg["solver_memory_mb"] * 2**20
    if solver == "auto":
        solver = "direct" if (n <= cfg["direct_solve_max_n"] or reg == 0.0) and fits else "pcg"
    if solver == "direct" and not fits:
        raise ValueError(
            f"solver='direct' needs the {n} x {n} kernel matrix "
            f"({n * n * itemsize / 2**20:.0f} MiB) but agop.config_context(solver_memory_mb="
            f"{cfg['solver_memory_mb']:g}) allows less; use solver='pcg' or raise the budget"
        )
    return solver, fits


def _gram(C: Any, xp: Any) -> Any:
    """``C^T C`` of a tall matrix.

    NumPy arrays through NumPy's BLAS (inside the compiled ops' thread handling, split
    over agop's threads: see ``agop._lib._threads``), not SciPy's: NumPy and SciPy each
    bundle an OpenBLAS with its own worker threads, and each pool keeps polling for a
    while after a call; with the rest of the preconditioner on NumPy's BLAS, SciPy's
    ``syrk`` ran 3x slower here than alone on 2 cores."""
    if is_numpy_namespace(xp):
        return gram(C)
    G = C.T @ C
    return (G + G.T) / 2.0


#: a float32 Nystrom basis floors (lam_r + mu) / (lam + mu) at this, eps32 (see
#: :func:`_nystrom_preconditioner`)
_RATIO_FLOOR_32 = float(np.finfo(np.float32).eps)

#: pivots drawn per block of randomized pivoted Cholesky (:func:`_rpcholesky_factor`)
_RPC_BLOCK = 100


class _FactorRows:
    """The rows of ``F^T`` (``(k, n)``, float64) that :func:`_rpcholesky_factor` builds:
    in a scratch buffer for NumPy (products on agop's threads, written in place), else
    a list of blocks."""

    def __init__(self, rank: int, n: int, xp: Any, numpy_buffers: bool) -> None:
        self.xp, self.k, self.blocks = xp, 0, []
        self.buf = scratch("nystrom_C", (rank, n), np.float64) if numpy_buffers else None
        self.tmp = scratch("nystrom_G2", (min(_RPC_BLOCK, rank), n), np.float64) \
            if numpy_buffers else None

    def head(self) -> Any:
        """The rows so far, ``(k, n)``."""
        if self.buf is not None:
            return self.buf[: self.k]
        if len(self.blocks) > 1:
            self.blocks[:] = [self.xp.concat(self.blocks, axis=0)]
        return self.blocks[0]

    def subtract_explained(self, G: Any, cols: Any) -> Any:
        """``G - F[cols] F^T``: rows ``cols`` of ``K`` less what ``F`` explains."""
        Fk = self.head()
        A = self.xp.take(Fk, cols, axis=1).T
        if self.buf is None:
            return G - A @ Fk
        np.subtract(G, matmul(np.ascontiguousarray(A), Fk, out=self.tmp[: G.shape[0]]),
                    out=G)
        return G

    def append(self, A: Any, B: Any) -> Any:
        """Append the rows ``A @ B`` and return them."""
        m = A.shape[0]
        if self.buf is None:
            out = A @ B
            self.blocks.append(out)
        else:
            out = matmul(np.ascontiguousarray(A), B, out=self.buf[self.k: self.k + m])
        self.k += m
        return out


def _kernel_diagonal(kernel: Any, X: Any, xp: Any, K: Any) -> np.ndarray:
    """``k(x_i, x_i)`` for the mapped rows ``X``, as a float64 NumPy vector."""
    from .testing import to_numpy

    if K is not None:
        return to_numpy(xp.linalg.diagonal(K)).astype(np.float64)
    v0 = kernel.value_at_zero()
    if v0 is not None:
        return np.full(X.shape[0], float(v0))
    sq = xp.sum(X * X, axis=1)  # inner-product kernels: k(x, x) = kappa(|x|^2)
    return to_numpy(kernel._k_from_dot(sq, xp)).astype(np.float64)


def _rpcholesky_factor(rows_of, diag: np.ndarray, rank: int, rng: Any, xp: Any,
                       F: _FactorRows, eps: float) -> int:
    """Randomized pivoted Cholesky (Chen, Epperly, Tropp & Webber, "Randomly pivoted
    Cholesky", 2024), blocked: ``F`` with ``K ~ F F^T``, up to ``rank`` columns.

    Each block draws ``_RPC_BLOCK`` pivots without replacement with probabilities
    proportional to the diagonal of the residual ``K - F F^T``, takes their rows of
    ``K`` (``rows_of(idx)``, float64 ``(b, n)``), subtracts the part ``F`` explains and
    adds the factor of the residual block ``H`` shifted by ``b * eps * max diag(K)``
    (``eps``: the relative precision of ``G``; through its eigendecomposition, without
    the eigenvalues below the shift: unshifted, directions of round-off size would be
    scaled up from noise, and ``F F^T`` would not stay below ``K``).  Points the factor
    already explains are not drawn again, so the landmarks spread over the data's
    clusters and scales instead of piling up where the data is dense, as uniform
    landmarks do; the Nystrom approximation of the pivots is then far closer to ``K`` at
    the same rank (fewer conjugate-gradient iterations).  The columns of ``F`` go to
    ``F`` (its rows); returns their number.
    """
    from .testing import to_numpy

    n = diag.shape[0]
    resid = diag.copy()
    top = float(diag.max()) if n else 0.0
    k = 0
    while k < rank:
        p = np.clip(resid, 0.0, None)
        total = float(p.sum())
        nnz = int(np.count_nonzero(p))
        b = min(_RPC_BLOCK, rank - k, nnz)
        if b == 0 or total <= n * eps * top:  # K is explained to round-off
            break
        idx = rng.choice(n, size=b, replace=False, p=p / total)
        G = rows_of(idx)
        dev_idx = xp.asarray(idx, device=array_device(G))
        if k:
            G = F.subtract_explained(G, dev_idx)
        H = xp.take(G, dev_idx, axis=1)
        w, V = xp.linalg.eigh((H + H.T) / 2.0)
        shift = b * eps * top
        keep = w > shift
        m = int(xp.sum(xp.astype(keep, xp.int64)))
        if m == 0:
            break
        # eigh's eigenvalues ascend; the factor of H + shift I (Chen et al.'s stable
        # block step): F F^T stays below K, round-off directions are not scaled up
        T = V[:, -m:] / xp.sqrt(w[-m:] + shift)[None, :]
        Fn = F.append(T.T, G)
        resid -= to_numpy(xp.sum(Fn * Fn, axis=0))
        resid[idx] = 0.0
        k += m
    return k


def _nystrom_preconditioner(
    kernel: Any, X: Any, reg: float, rank: int, rng: Any, xp: Any, K: Any = None,
    K_lower: bool = False, landmarks: str | None = None,
):
    """``v -> P^{-1} v`` for the randomized Nystrom preconditioner of ``K + reg I``.

    ``K``: the kernel matrix at hand, whose landmark rows are taken (a NumPy ``K`` that
    holds its lower triangle only, ``K_lower=True``, has them recomputed instead: an
    ``r x n`` GEMM and pass, cheaper than gathering them from both triangles).

    ``K ~ F F^T = U diag(lam) U^T`` of rank up to ``rank``: ``landmarks="rpcholesky"``
    (the default of the ``pcg_landmarks`` option) by randomized pivoted Cholesky
    (:func:`_rpcholesky_factor`), ``"uniform"`` the Nystrom approximation of uniformly
    drawn landmark columns ``C``, ``F = C K_rr^{-1/2}``;
    ``P^{-1} = (lam_r + mu) U diag(1 / (lam + mu)) U^T + (I - U U^T)`` with ``mu = reg``
    (Frangella, Tropp & Udell, "Randomized Nystrom preconditioning", 2023).
    """
    from ._ops import kernel_matrix

    if landmarks is None:
        landmarks = get_config()["pcg_landmarks"]
    n = X.shape[0]
    dev = array_device(X)
    # the factorization runs in float64 whatever the data's dtype: the eigenvalues it
    # keeps must reach far below float32 round-off of K (about 1e-7 |K|), otherwise the
    # smallest kept one, lam_r, stays large and the preconditioned system ill-conditioned
    numpy_K = is_numpy_namespace(xp) and isinstance(K, np.ndarray)
    eps64 = finfo_eps(xp, xp.float64)
    if landmarks == "rpcholesky":
        block = min(_RPC_BLOCK, rank)
        if numpy_K:  # rows of K into a scratch buffer (kept for the length of an RFM
            # fit: see agop._lib._scratch), F as the rows of a C-ordered (r, n) buffer
            rows = scratch("nystrom_rows", (block, n), K.dtype)
            G64 = scratch("nystrom_G", (block, n), np.float64)
            if K_lower:
                from ._backends.numba_cpu import kernel_rows_into

            def rows_of(idx):
                r = rows[: len(idx)]
                if K_lower:
                    kernel_rows_into(kernel, X, idx, r)
                else:  # (mode "clip": with the default, NumPy buffers the output)
                    np.take(K, idx, axis=0, out=r, mode="clip")
                G = G64[: len(idx)]
                np.copyto(G, r)
                return G
        else:
            def rows_of(idx):
                ii = xp.asarray(idx, device=dev)
                R = (xp.take(K, ii, axis=0) if K is not None
                     else kernel_matrix(kernel, xp.take(X, ii, axis=0), X))
                return xp.astype(R, xp.float64)

        F = _FactorRows(rank, n, xp, numpy_K)
        # (the shift of each block: float32 round-off of K's entries, or the square root
        # of float64's, the cancellation in G = rows - F F^T of a small residual; with
        # eps64 itself the residual K - F F^T lost positivity at -1e-7)
        eps_shift = max(finfo_eps(xp, X.dtype), math.sqrt(eps64))
        k = _rpcholesky_factor(rows_of, _kernel_diagonal(kernel, X, xp, K), rank, rng, xp, F,
                               eps_shift)
        if k == 0:  # K = 0: no preconditioning
            return lambda V: V
        C, T = F.head().T, None  # F (n, k): K ~ C C^T
    elif landmarks == "uniform":
        idx = np.sort(rng.choice(n, size=rank, replace=False))
        if numpy_K:  # the landmark columns of K as rows, cast into scratch buffers
            # (kept for the length of an RFM fit: see agop._lib._scratch); column-major
            rows = scratch("nystrom_rows", (rank, n), K.dtype)
            if K_lower:
                from ._backends.numba_cpu import kernel_rows_into

                kernel_rows_into(kernel, X, idx, rows)
            else:  # (mode "clip": with the default, NumPy buffers the output in a new array)
                np.take(K, idx, axis=0, out=rows, mode="clip")
            C64 = scratch("nystrom_C", (rank, n), np.float64)
            np.copyto(C64, rows)
            C = C64.T
        else:
            if K is not None:  # the landmark columns of the symmetric matrix at hand
                C = xp.take(K, xp.asarray(idx, device=dev), axis=0).T
            else:
                landmarks_X = xp.take(X, xp.asarray(idx, device=dev), axis=0)
                C = kernel_matrix(kernel, X, landmarks_X)  # (n, r)
            C = (np.asfortranarray(C, dtype=np.float64) if is_numpy_namespace(xp)
                 else xp.astype(C, xp.float64))
        if numpy_K:  # from the C-ordered rows: np.take would first copy all of C.T
            Krr = C64[:, idx].T
        else:
            Krr = xp.take(C, xp.asarray(idx, device=dev), axis=0)
        evals, evecs = xp.linalg.eigh((Krr + Krr.T) / 2.0)
        keep = evals > rank * eps64 * float(xp.max(xp.abs(evals)))
        inv_root = xp.where(keep, 1.0 / xp.sqrt(xp.where(keep, evals, 1.0)), 0.0)
        T = evecs * inv_root[None, :]  # K_nys = F F^T with F = C T (dropped directions: 0)
    else:
        raise ValueError(f"landmarks must be 'rpcholesky' or 'uniform', got {landmarks!r}")
    rank = C.shape[1]
    # eigenvectors of K_nys from the small Gram matrix F^T F = T^T (C^T C) T (r x r),
    # without forming F: one n x r x r product for C^T C (a symmetric rank-k update)
    # and one for the basis U = C (T W / sqrt(lam)), where an SVD of F would need more
    CtC = _gram(C, xp)
    lam, W = xp.linalg.eigh(CtC if T is None else T.T @ CtC @ T)
    top = float(xp.max(lam))
    positive = lam > top * eps64 * rank
    lam = xp.where(positive, lam, 0.0)
    dtype = X.dtype
    R = (W if T is None else T @ W) / xp.sqrt(xp.where(positive, lam, 1.0))[None, :]
    if numpy_K:
        U64 = matmul(C, R, out=scratch("nystrom_U64", (n, rank), np.float64))
        U = scratch("nystrom_U", (n, rank), dtype)
        np.copyto(U, U64)
        del U64
    else:
        U = xp.astype(C @ R, dtype)
    del C
    mu = reg if reg > 0 else top * finfo_eps(xp, dtype) * n
    lam_r = float(xp.min(xp.where(positive, lam, top)))
    # P^{-1} v = v + U (scale * U^T v); directions of zero Nystrom eigenvalue are left alone
    ratio = (lam_r + mu) / (lam + mu)
    if dtype == xp.float32:
        # not below float32 round-off: the float32 basis (the float64 one rounded) is
        # orthonormal to about 0.3 eps32 (measured), which 1 + scale of its top
        # columns, P^{-1}'s smallest eigenvalues, must exceed for P^{-1} to stay
        # positive definite (under the floor their preconditioned eigenvalues grow
        # instead, by floor / ratio).  (A float32 product for U, half the time, kept it
        # orthonormal to only 6e-7 with RPCholesky landmarks, and to far less with
        # uniform ones: conjugate gradients diverged.)
        ratio = xp.where(ratio < _RATIO_FLOOR_32, _RATIO_FLOOR_32, ratio)
    scale = xp.astype(xp.where(positive, ratio - 1.0, 0.0), dtype)

    if is_numpy_namespace(xp) and U.dtype in (np.float32, np.float64):
        from ._backends.numba_cpu import lowrank_update_apply

        UC = np.ascontiguousarray(U)

        def apply(V: Any) -> Any:
            # no BLAS between the compiled products of conjugate gradients (see
            # lowrank_update_apply: OpenBLAS's spinning threads would slow them down)
            return lowrank_update_apply(UC, scale, V)

        return apply

    def apply(V: Any) -> Any:
        return V + U @ (scale[:, None] * (U.T @ V))

    return apply


#: up to this many right-hand sides, a NumPy kernel matrix is applied by a compiled loop
#: that reads one triangle of ``K`` once per two columns (the product is memory bound:
#: about 2x faster than BLAS ``symv`` per column pair and 4x faster than ``K @ V`` for
#: 1-4 columns on this kind of machine).  (The preconditioner's ``n x r`` basis is
#: applied by compiled loops for any number of columns: two passes over it for all.)
_SYMV_MAX_COLUMNS = 4


def _dense_matvec(K: Any, reg: float, xp: Any):
    """``V -> (K + reg I) V`` for a symmetric kernel matrix ``K`` held in memory (the
    NumPy products read its lower triangle only)."""
    if is_numpy_namespace(xp) and K.dtype in (np.float32, np.float64):
        from scipy.linalg import blas

        from ._backends.numba_cpu import symmetric_matvec

        KC = np.ascontiguousarray(K)  # no copy for kernel_matrix's C-ordered output
        symm = blas.ssymm if K.dtype == np.float32 else blas.dsymm

        def matvec(V):
            if V.shape[1] > _SYMV_MAX_COLUMNS:  # the lower triangle of K as upper of K^T
                return symm(1.0, KC.T, V, lower=0) + reg * V
            return symmetric_matvec(KC, V) + reg * V

        return matvec

    def matvec(V):
        return K @ V + reg * V

    return matvec


def _scaled_start(X0: Any, Y: Any, R0: Any, xp: Any) -> tuple[Any, Any]:
    """``(g X0, Y - A (g X0))`` for the column scales ``g = x0^T y / x0^T A x0`` (from
    the residual ``R0 = Y - A X0``: ``x0^T A x0 = x0^T (Y - R0)``), which minimize the
    ``A``-norm error ``|g x0 - A^{-1} y|_A`` of each column: a start never worse than
    zero in that norm.  The coefficients of the previous RFM iterate are the warm start
    of the next solve, but the kernel matrix changed with M; with a small ridge they
    are large, and unscaled they left a residual above |Y| (more iterations than a cold
    start on the benchmark problem).  A column with ``x0^T A x0 <= 0`` (zero) starts at
    zero."""
    num = xp.sum(X0 * Y, axis=0)
    den = num - xp.sum(X0 * R0, axis=0)
    ok = den > 0
    g = xp.where(ok, num / xp.where(ok, den, 1.0), 0.0)
    g = xp.astype(g, Y.dtype)
    return X0 * g[None, :], Y - g[None, :] * (Y - R0)


def _pcg(matvec, precond, Y: Any, X0: Any, tol: float, max_iter: int, xp: Any):
    """Conjugate gradients on each column of ``Y`` at once (vectorized over columns).

    A warm start ``X0`` is first rescaled column by column (:func:`_scaled_start`).
    With NumPy, float32 systems keep their iterates, residuals and directions in float64
    (the products stay in float32; the vectors are ``n x c``, a negligible cost): with
    float32 recurrences the benchmark fit needed 8 % more iterations, their round-off
    slowing convergence; the solution comes back in ``Y``'s dtype."""
    out_dtype = Y.dtype
    if is_numpy_namespace(xp) and Y.dtype == np.float32:
        Y = Y.astype(np.float64)
        X0 = None if X0 is None else X0.astype(np.float64)
    X, it, res, ok = _pcg_iterate(matvec, precond, Y, X0, tol, max_iter, xp)
    return xp.astype(X, out_dtype), it, res, ok


def _pcg_iterate(matvec, precond, Y: Any, X0: Any, tol: float, max_iter: int, xp: Any):
    """The iterations of :func:`_pcg`."""
    if X0 is not None:
        X, R = _scaled_start(X0, Y, Y - matvec(X0), xp)
    else:
        X, R = xp.zeros_like(Y), Y
    ynorm = xp.sqrt(xp.sum(Y * Y, axis=0))
    ynorm = xp.where(ynorm > 0, ynorm, 1.0)
    rel = xp.sqrt(xp.sum(R * R, axis=0)) / ynorm
    if bool(xp.all(rel <= tol)):
        return X, 0, float(xp.max(rel)), True
    Zp = precond(R)
    P = Zp
    rz = xp.sum(R * Zp, axis=0)
    it = 0
    for it in range(1, max_iter + 1):
        AP = matvec(P)
        active = rel > tol
        pap = xp.sum(P * AP, axis=0)
        alpha = xp.where(active & (pap > 0), rz / xp.where(pap > 0, pap, 1.0), 0.0)
        X = X + alpha[None, :] * P
        R = R - alpha[None, :] * AP
        rel = xp.sqrt(xp.sum(R * R, axis=0)) / ynorm
        if bool(xp.all(rel <= tol)):
            return X, it, float(xp.max(rel)), True
        Zp = precond(R)
        rz_new = xp.sum(R * Zp, axis=0)
        beta = xp.where(rz != 0, rz_new / xp.where(rz != 0, rz, 1.0), 0.0)
        P = Zp + beta[None, :] * P
        rz = rz_new
    return X, it, float(xp.max(rel)), False


def solve_kernel_ridge(
    kernel: Any,
    X: Any,
    Y: Any,
    reg: float = 1e-3,
    *,
    M: Any = None,
    solver: str = "auto",
    coef0: Any = None,
    tol: float | None = None,
    max_iter: int | None = None,
    random_state: Any = None,
    workspace: dict | None = None,
) -> tuple[Any, SolveInfo]:
    """Coefficients of kernel ridge regression: ``(K_M(X, X) + reg I) coef = Y``.

    Parameters
    ----------
    kernel : agop.kernels.Kernel
    X : array, shape (n, d)
    Y : array, shape (n, c) or (n,)
    reg : float >= 0
    M : None, array (d, d) or (d,)
        Feature matrix of the kernel.
    solver : {"auto", "direct", "pcg"}
        ``"direct"``: Cholesky of the ``n x n`` matrix (:func:`solve_ridge`).
        ``"pcg"``: conjugate gradients preconditioned by a rank-``pcg_rank`` Nystrom
        approximation; ``K`` is kept in memory when it fits in ``solver_memory_mb`` and
        otherwise recomputed block by block in every product (memory ``O(n * block)``).
        ``"auto"``: direct up to ``direct_solve_max_n`` points (and for ``reg = 0``),
        PCG above (see :func:`agop.get_config`).
    coef0 : array shaped like ``Y``, optional
        Starting point of PCG (the previous RFM iterate's coefficients), each column
        first scaled by the factor that minimizes its error in the ``K + reg I`` norm.
    tol, max_iter : optional
        PCG stopping rule: every column's relative residual ``<= tol`` (default
        ``pcg_tol_float64`` / ``pcg_tol_float32``), at most ``max_iter`` iterations.
    random_state : None, int or numpy Generator
        Draws the Nystrom landmarks.
    workspace : dict, optional
        Kept by the caller between solves of one size (the RFM loop keeps one per fit):
        PCG writes its in-memory kernel matrix into the buffer left there by the previous
        solve instead of allocating ``n x n`` anew.  Fresh memory is costly on some
        machines (on virtual machines that hand freed memory back to their host, faulting
        it in again runs at a few hundred MB/s), and an RFM fit solves once per iteration.

    Returns
    -------
    coef : array shaped like ``Y``
    info : SolveInfo

    Examples
    --------
    >>> import numpy as np, agop
    >>> from agop.solvers import solve_kernel_ridge
    >>> X = np.random.default_rng(0).normal(size=(300, 3)); y = np.sin(X[:, 0])
    >>> k = agop.Laplace(2.0)
    >>> a, _ = solve_kernel_ridge(k, X, y, 1e-2, solver="direct")
    >>> b, info = solve_kernel_ridge(k, X, y, 1e-2, solver="pcg", tol=1e-10)
    >>> bool(np.allclose(a, b)) and info.converged
    True
    """
    from ._ops import _prepare, kernel_matrix, kernel_mv

    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    reg = check_real_scalar(reg, "reg", low=0.0, low_open=False)
    if hasattr(X, "shape") and hasattr(Y, "shape") and len(X.shape) and len(Y.shape):
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; they must match")
    inp = _prepare(X, X, Y, M, names=("X", "X"), kernel=kernel)
    xp, Xt, Yc = inp.xp, inp.Xt, inp.coef
    # the buffer of the last solve; after this one, workspace["K"] is this solve's matrix
    # (or absent)
    K_buffer = None if workspace is None else workspace.pop("K", None)
    if workspace is not None:
        workspace.pop("K_lower", None)
    n = Xt.shape[0]
    itemsize = 8 if dtype_name(xp, inp.dtype) == "float64" else 4
    solver, fits = _resolve_solver(solver, n, itemsize, reg)
    if solver == "direct":
        K = kernel_matrix(kernel, Xt, Xt)
        coef = solve_ridge(K, Yc, reg)
        del K
        info = SolveInfo("direct", 0, 0.0, True, True)
    else:
        cfg = get_config()
        if tol is None:
            tol = cfg["pcg_tol_" + dtype_name(xp, inp.dtype)]
        tol = check_real_scalar(tol, "tol", low=0.0, low_open=True)
        max_iter = cfg["pcg_max_iter"] if max_iter is None else int(max_iter)
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if fits:
            if is_numpy_namespace(xp) and _backends.select(
                "kernel_matrix", inp.context("kernel_matrix", kernel)
            ).backend == "numba_cpu":
                # the matrix goes into the buffer the workspace holds from the last solve
                from ._backends.numba_cpu import kernel_matrix_into

                # (its lower triangle: all that the products and the AGOP read)
                K = kernel_matrix_into(kernel, Xt, K_buffer, lower=True)
                buffered = lower = True
            else:
                K, buffered, lower = kernel_matrix(kernel, Xt, Xt), False, False
            matvec = _dense_matvec(K, reg, xp)
        else:
            K, buffered, lower = None, False, False

            def matvec(V):  # (float64 directions of a float32 system: see _pcg)
                return kernel_mv(kernel, Xt, Xt, xp.astype(V, Xt.dtype)) + reg * V

        rng = np.random.default_rng(random_state)
        rank = min(n, int(cfg["pcg_rank"]))
        if is_numpy_namespace(xp):  # NumPy's BLAS on agop's threads (see _gram)
            with own_threads():
                precond = _nystrom_preconditioner(kernel, Xt, reg, rank, rng, xp, K, lower)
        else:
            precond = _nystrom_preconditioner(kernel, Xt, reg, rank, rng, xp, K)
        X0 = None
        if coef0 is not None:
            X0 = as_float_array(coef0, "coef0", xp, ndim=(1, 2), device=inp.device)
            X0 = xp.astype(xp.reshape(X0, (n, -1)), inp.dtype)
            if X0.shape != Yc.shape:
                raise ValueError(f"coef0 must have the shape of Y, {tuple(Yc.shape)}")
        coef, iters, res, ok = _pcg(matvec, precond, Yc, X0, tol, max_iter, xp)
        if not ok:
            logger.warning(
                "conjugate gradients stopped after %d iterations at relative residual "
                "%.2e > tol %.1e; raise max_iter or reg, or use solver='direct'",
                iters, res, tol,
            )
        if workspace is not None and buffered:
            workspace["K"] = K  # the next solve of this size writes into it
            workspace["K_lower"] = lower
        del K
        info = SolveInfo("pcg", iters, res, ok, fits)
    if not bool(xp.all(xp.isfinite(coef))):  # pragma: no cover - guarded by the solvers
        raise SingularSystemError(
            f"the kernel ridge solve gave non-finite coefficients (reg={reg:g})"
        )
    return (coef[:, 0] if inp.coef_1d else coef), info
