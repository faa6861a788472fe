"""Ridge solves for the coefficients of a kernel machine.

``solve_ridge`` solves ``(K + reg I) coef = Y`` by a Cholesky factorization with the
right library for the array: SciPy (LAPACK) for NumPy, ``torch.linalg`` for torch (CPU
or CUDA), the Array-API ``linalg`` extension otherwise.  Data never leave their library
or device.
"""

from __future__ import annotations

from typing import Any

from ._lib._compat import array_device, is_numpy_namespace, is_torch_namespace
from ._lib._validation import as_float_array, check_finite, check_real_scalar, namespace_of

__all__ = ["SingularSystemError", "solve_ridge"]

#: retries after a failed factorization; jitter = JITTER * trace(K)/n * 10**attempt
_MAX_RETRIES = 3
_JITTER = 1e-8


class SingularSystemError(ValueError):
    """``K + reg I`` could not be factorized, even after adding jitter."""


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
        adding a jitter of ``1e-8 * trace(K) / n`` (times 10 per retry) to the diagonal
        (SPEC Part A #11).

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
    eye = xp.eye(n, dtype=dtype, device=array_device(K))
    scale = float(xp.sum(xp.linalg.diagonal(K))) / n
    jitter = 0.0
    for attempt in range(_MAX_RETRIES + 1):
        coef = _cholesky_solve(K + (reg + jitter) * eye, Y, xp)
        if coef is not None and bool(xp.all(xp.isfinite(coef))):
            return coef[:, 0] if one_d else coef
        jitter = _JITTER * max(scale, 1e-300) * 10.0**attempt
    raise SingularSystemError(
        f"K + reg*I is not positive definite for reg = {reg:g} (n = {n}, {dtype}), even "
        f"with a diagonal jitter up to {jitter:.3g}; use a larger reg (reg = 0 needs "
        "float64 and distinct points)"
    )
