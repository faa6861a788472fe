"""The public ops: kernel matrices, kernel-vector products, predictor gradients, AGOP.

This is the delegation layer.  Each op validates its inputs, finds their array
namespace, maps the data by the factor ``S`` of ``M`` (``S^T S = M``), asks the backend
registry for an implementation and maps the result back.  Results come back in the
namespace, dtype and device of the input.

Notation: evaluation points ``X`` (``m x d`` for gradients, ``n x d`` for kernels),
centers ``Z``/``centers`` (``n x d``), coefficients ``coef`` (``n x c``), the predictor
``f(x) = sum_j coef_j k_M(x, z_j)`` in ``R^c``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backends, _dask
from ._backends import DispatchContext
from ._lib._compat import (
    array_device,
    dtype_name,
    finfo_eps,
    is_array,
    is_numpy_namespace,
    namespace_name,
)
from ._lib._validation import (
    as_float_array,
    check_finite,
    floating_dtype,
    namespace_of,
    validate_M,
)
from .kernels import Kernel

__all__ = ["agop", "fact", "kernel_matrix", "kernel_mv", "pairwise_grads", "predictor_grads"]

_CENTERINGS = (None, "per_output", "pooled")


def _product(A: Any, B: Any) -> Any:
    """``A @ B``; NumPy matrices on agop's threads (see ``agop._lib._threads``: a product
    by NumPy's own multi-threaded BLAS leaves its threads polling for about 0.1 s, which
    slowed the compiled kernel pass that follows it 1.5-2.5x)."""
    if isinstance(A, np.ndarray) and isinstance(B, np.ndarray):
        from ._lib._threads import matmul, own_threads

        with own_threads():
            return matmul(A, B) if A.ndim == 2 and B.ndim == 2 else A @ B
    return A @ B


@dataclass(frozen=True)
class FeatureMap:
    """The map ``x -> S^T x`` by a factor ``S`` of ``M`` (``S S^T = M``).

    ``metric`` is ``"identity"`` (``S = I``), ``"diag"`` (``S = diag(sqrt(m))``, stored
    as the vector) or ``"full"``: ``S = M^{1/2}``, symmetric ``(d, d)``, or for kernels
    that see the data only through ``x^T M z`` and ``||x - z||_M`` (every family but
    ``"lp"``) the thin factor ``V_k diag(sqrt(lam_k))`` of the eigen-directions of M
    that carry weight, ``(d, k)`` (see :func:`feature_map`).  Kernels of ``M`` are
    kernels of the identity on mapped data; gradients and AGOPs map back by ``S``.
    """

    metric: str
    S: Any
    xp: Any

    @property
    def rank(self) -> int | None:
        """Columns of the mapped data (``None`` for the identity: those of the data)."""
        if self.metric == "identity":
            return None
        return int(self.S.shape[-1])

    def apply(self, X: Any) -> Any:
        """Rows mapped: ``X S`` (``X`` already validated, in the map's dtype)."""
        if self.metric == "identity":
            return X
        if self.metric == "diag":
            return X * self.S
        return _product(X, self.S)

    def grads_back(self, G: Any) -> Any:
        """Map transformed-space gradients back: ``g = S g~`` (row form ``g~ S^T``)."""
        if self.metric == "identity":
            return G
        if self.metric == "diag":
            return G * self.S
        return _product(G, self.S.T)

    def agop_back(self, A: Any, diag: bool) -> Any:
        """Map a transformed-space AGOP back: ``S A S^T`` (or its diagonal)."""
        xp, S = self.xp, self.S
        if self.metric == "identity":
            return A
        if self.metric == "diag":
            return A * (S * S) if diag else A * (S[:, None] * S[None, :])
        SA = _product(S, A)
        if diag:  # diag(S A S^T), A symmetric
            return xp.sum(SA * S, axis=1)
        B = _product(SA, S.T)
        return (B + B.T) / 2.0

    def fact_back(self, F: Any, diag: bool) -> Any:
        """Map ``(1/m) sum_i g~_i x_i^T`` (transformed-space gradients ``g~``, raw points
        ``x``) to the raw-space FACT ``S F`` (``g = S g~``), or its diagonal."""
        if self.metric == "identity":
            return F
        if self.metric == "diag":
            return F * self.S if diag else self.S[:, None] * F
        B = _product(self.S, F)
        return self.xp.linalg.diagonal(B) if diag else B


#: up to this many features, the eigendecomposition of a NumPy M runs with BLAS on one
#: thread
_OWN_THREADS_EIGH_MAX_D = 1024


def feature_map(M: Any, d: int, xp: Any, dtype: Any, *, thin: bool = False) -> FeatureMap:
    """Validate ``M`` (``None``, ``(d,)`` or ``(d, d)``) and factor it once.

    ``thin`` (for kernels that are functions of ``x^T M z`` or ``||x - z||_M`` only,
    which any factor ``S S^T = M`` reproduces): a full ``M`` gets the ``(d, k)`` factor
    ``V_k diag(sqrt(lam_k))`` of its eigenpairs instead of the symmetric square root,
    without the smallest eigenvalues whose sum is at most ``eps(dtype) * trace(M)``.
    Those directions change a squared distance ``||x - z||_M^2`` (or ``x^T M z``) by at
    most ``eps * trace(M)`` times the largest squared coordinate of ``x - z`` along
    them: the round-off of computing it in ``dtype`` from mapped rows of norm
    ``~ trace(M)``.  A learned M concentrates on a few directions (on the RFM benchmark,
    float32 and d = 100, the factors of iterations 3-5 keep 62, 20 and 13 columns), so
    every kernel product, kernel matrix and AGOP over the mapped rows works on ``k``
    columns instead of ``d``.
    """
    if is_numpy_namespace(xp) and d <= _OWN_THREADS_EIGH_MAX_D:
        # (BLAS on one thread: see _product; a small eigh gains little from threads)
        from ._lib._threads import own_threads

        with own_threads():
            metric, Mv, eig = validate_M(M, d, xp, dtype)
    else:
        metric, Mv, eig = validate_M(M, d, xp, dtype)
    if metric == "identity":
        return FeatureMap(metric, None, xp)
    if metric == "diag":
        return FeatureMap(metric, xp.sqrt(Mv), xp)
    evals, evecs = eig
    # eigenvalues below the numerical rank threshold d * eps * max|lambda| are
    # round-off of zero: the square root would amplify them (sqrt(1e-17) = 3e-9)
    cut = d * finfo_eps(xp, evals.dtype) * float(xp.max(xp.abs(evals)))
    lam = xp.where(evals > cut, evals, 0.0)
    root = xp.sqrt(lam)
    if thin:
        # eigh's eigenvalues ascend: drop the leading ones whose running sum stays
        # within eps(dtype) of the trace (at least one column stays, for M = 0)
        running = xp.cumulative_sum(lam)
        n_drop = int(xp.sum(xp.astype(running <= finfo_eps(xp, dtype) * running[-1],
                                      xp.int64)))
        n_drop = min(n_drop, d - 1)
        S = evecs[:, n_drop:] * root[None, n_drop:]
        return FeatureMap(metric, xp.astype(S, dtype), xp)
    S = (evecs * root[None, :]) @ evecs.T
    return FeatureMap(metric, xp.astype((S + S.T) / 2.0, dtype), xp)


@dataclass
class _Inputs:
    """Validated inputs of one op call, with the data mapped by the factor of M."""

    xp: Any
    device: Any
    dtype: Any
    fmap: FeatureMap
    Xt: Any
    Zt: Any
    coef: Any
    coef_1d: bool
    requires_grad: bool = False
    X: Any = None  # the validated evaluation points before the map

    @property
    def metric(self) -> str:
        return self.fmap.metric

    def context(self, op: str, kernel: Kernel) -> DispatchContext:
        return DispatchContext(
            op=op,
            namespace=namespace_name(self.xp),
            device=self.device,
            dtype=dtype_name(self.xp, self.dtype),
            kernel=kernel,
            metric=self.metric,
            xp=self.xp,
            requires_grad=self.requires_grad,
        )

    def grads_back(self, G: Any) -> Any:
        return self.fmap.grads_back(G)

    def agop_back(self, A: Any, diag: bool) -> Any:
        return self.fmap.agop_back(A, diag)


def _check_kernel(kernel: Any) -> Kernel:
    if not isinstance(kernel, Kernel):
        raise TypeError(
            "kernel must be an agop kernel object such as agop.Laplace(bandwidth=10.0) "
            f"(see agop.kernels.make_kernel for names), got {type(kernel).__name__}"
        )
    return kernel


def thin_factor(kernel: Any) -> bool:
    """Whether ``kernel`` may take the thin factor of M (see :func:`feature_map`): all
    but the ``"lp"`` family, whose ``p``-norms need the symmetric ``M^{1/2}``."""
    return getattr(kernel, "family", "lp") != "lp"


def _prepare(
    X: Any, Z: Any, coef: Any = None, M: Any = None, *, names: tuple[str, str] = ("X", "Z"),
    kernel: Any = None,
) -> _Inputs:
    xp = namespace_of(X, Z, coef, M)
    same = Z is X
    device = next((array_device(a) for a in (X, Z, coef, M) if is_array(a)), None)
    ftype = floating_dtype(xp, X, Z, coef)  # integer or list inputs adopt it
    X = as_float_array(X, names[0], xp, device=device, int_dtype=ftype)
    device = array_device(X)
    Z = X if same else as_float_array(Z, names[1], xp, device=device, int_dtype=ftype)
    coef_1d = False
    if coef is not None:
        coef = as_float_array(coef, "coef", xp, ndim=(1, 2), device=device, int_dtype=ftype)
        coef_1d = coef.ndim == 1
        if coef_1d:
            coef = xp.reshape(coef, (coef.shape[0], 1))
    if M is not None and not is_array(M):
        M = as_float_array(M, "M", xp, ndim=(1, 2), device=device)
    for name, a in ((names[1], Z), ("coef", coef), ("M", M)):
        if a is not None and array_device(a) != device:
            raise ValueError(
                f"{name} is on device {array_device(a)} but {names[0]} is on {device}; "
                "move them to one device first"
            )
    if Z.shape[1] != X.shape[1]:
        raise ValueError(
            f"{names[0]} has {X.shape[1]} features but {names[1]} has {Z.shape[1]}; "
            "they must have the same number of columns"
        )
    if coef is not None and coef.shape[0] != Z.shape[0]:
        raise ValueError(
            f"coef has {coef.shape[0]} rows but {names[1]} has {Z.shape[0]}; coef must have "
            f"one row per row of {names[1]}"
        )
    dtype = xp.result_type(*(a for a in (X, Z, coef) if a is not None))
    X = xp.astype(X, dtype, copy=False)
    Z = X if same else xp.astype(Z, dtype, copy=False)
    check_finite(X, names[0], xp)
    if not same:
        check_finite(Z, names[1], xp)
    if coef is not None:
        coef = xp.astype(coef, dtype, copy=False)
        check_finite(coef, "coef", xp)
    fmap = feature_map(M, X.shape[1], xp, dtype, thin=thin_factor(kernel))
    Xt = fmap.apply(X)
    Zt = Xt if same else fmap.apply(Z)
    grad = any(getattr(a, "requires_grad", False) for a in (Xt, Zt, coef))
    return _Inputs(xp, device, dtype, fmap, Xt, Zt, coef, coef_1d, bool(grad), X)


def _run(op: str, kernel: Kernel, inp: _Inputs, backend: str, *args: Any, **kwargs: Any) -> Any:
    impl = _backends.select(op, inp.context(op, kernel), backend)
    return impl.func(kernel, inp.Xt, inp.Zt, *args, xp=inp.xp, **kwargs)


def kernel_matrix(kernel: Kernel, X: Any, Z: Any, M: Any = None, *, backend: str = "auto") -> Any:
    """Kernel matrix ``K[i, j] = k_M(X[i], Z[j])``.

    Parameters
    ----------
    kernel : agop.kernels.Kernel
        The kernel, e.g. ``agop.Laplace(bandwidth=10.0)``.
    X : array, shape (n, d)
    Z : array, shape (m, d)
    M : None, array of shape (d, d) or (d,)
        Feature matrix: ``None`` for the identity, a symmetric PSD matrix, or a
        non-negative vector meaning ``diag(M)``.
    backend : {"auto", "generic", ...}
        Force an implementation (see ``agop.available_backends()``).

    Returns
    -------
    K : array, shape (n, m)
        In the namespace, dtype and device of ``X``.  This is the one op that
        materializes an ``n x m`` array; use :func:`kernel_mv` for products.

    Notes
    -----
    ``k_M(x, z) = k_I(S x, S z)`` for ``S^T S = M`` (SPEC Part A identities); pairs
    closer than round-off count as coincident and get ``k = kappa(0)``.

    Examples
    --------
    >>> import numpy as np, agop
    >>> X = np.random.default_rng(0).normal(size=(5, 3))
    >>> K = agop.kernel_matrix(agop.Gaussian(2.0), X, X)
    >>> bool(np.allclose(K, K.T)) and bool(np.allclose(np.diag(K), 1.0))
    True
    """
    kernel = _check_kernel(kernel)
    _dask.reject("kernel_matrix", X, Z, M)
    inp = _prepare(X, Z, M=M, kernel=kernel)
    return _run("kernel_matrix", kernel, inp, backend)


def kernel_mv(
    kernel: Kernel, X: Any, Z: Any, coef: Any, M: Any = None, *, backend: str = "auto"
) -> Any:
    """Kernel-matrix product ``K_M(X, Z) @ coef``, computed in row blocks.

    Parameters
    ----------
    kernel : agop.kernels.Kernel
    X : array, shape (n, d)
        Evaluation points.
    Z : array, shape (m, d)
        Centers.
    coef : array, shape (m, c) or (m,)
    M : None, array of shape (d, d) or (d,)
    backend : str

    Returns
    -------
    array, shape (n, c), or (n,) when ``coef`` is 1-D
        The predictions ``f(X[i]) = sum_j coef_j k_M(X[i], Z[j])``.  No more than one
        planned block of K (``agop.config_context(working_memory_mb=...)``) exists at a
        time.  When ``X``, ``Z`` or ``coef`` is a dask array (the others NumPy or dask,
        ``M`` NumPy), a lazy dask array: one task per pair of row chunks of ``X`` and
        ``Z``, summed over the chunks of ``Z`` (``docs/dask.md``).

    Examples
    --------
    >>> import numpy as np, agop
    >>> rng = np.random.default_rng(0)
    >>> X, Z, a = rng.normal(size=(6, 2)), rng.normal(size=(4, 2)), rng.normal(size=4)
    >>> k = agop.Laplace(1.5)
    >>> bool(np.allclose(agop.kernel_mv(k, X, Z, a), agop.kernel_matrix(k, X, Z) @ a))
    True
    """
    kernel = _check_kernel(kernel)
    if _dask.any_dask(X, Z, coef, M):
        return _dask.kernel_mv_dask(kernel, X, Z, coef, M, backend)
    inp = _prepare(X, Z, coef, M, kernel=kernel)
    out = _run("kernel_mv", kernel, inp, backend, inp.coef)
    return out[:, 0] if inp.coef_1d else out


def predictor_grads(
    kernel: Kernel, X: Any, centers: Any, coef: Any, M: Any = None, *, backend: str = "auto"
) -> Any:
    """Input gradients of the kernel machine ``f(x) = sum_j coef_j k_M(x, centers_j)``.

    Parameters
    ----------
    kernel : agop.kernels.Kernel
    X : array, shape (m, d)
        Points where the gradient is taken.
    centers : array, shape (n, d)
    coef : array, shape (n, c) or (n,)
    M : None, array of shape (d, d) or (d,)
    backend : str

    Returns
    -------
    G : array, shape (m, c, d), or (m, d) when ``coef`` is 1-D
        ``G[i, l] = grad f_l(X[i])``.  A center coinciding with ``X[i]`` (the self-pair
        rule, SPEC Part A #10) contributes nothing.
        A lazy dask array, chunked like ``X``, when an input is a dask array.

    Notes
    -----
    For radial kernels ``grad_x k_M(x, z) = (kappa'(r) / r) M (x - z)``, so
    ``grad f_l(x) = M sum_j coef_jl w(x, z_j) (x - z_j)`` (SPEC §2.2).
    """
    kernel = _check_kernel(kernel)
    if _dask.any_dask(X, centers, coef, M):
        return _dask.predictor_grads_dask(kernel, X, centers, coef, M, backend)
    inp = _prepare(X, centers, coef, M, names=("X", "centers"), kernel=kernel)
    G = inp.grads_back(_run("predictor_grads", kernel, inp, backend, inp.coef))
    return G[:, 0, :] if inp.coef_1d else G


def agop(
    kernel: Kernel,
    X: Any,
    centers: Any,
    coef: Any,
    M: Any = None,
    *,
    centering: str | None = None,
    diag: bool = False,
    backend: str = "auto",
) -> Any:
    """Average gradient outer product of a kernel machine.

    ``AGOP = (1/m) sum_i sum_l grad f_l(X[i]) grad f_l(X[i])^T`` for
    ``f(x) = sum_j coef_j k_M(x, centers_j)``.

    Parameters
    ----------
    kernel : agop.kernels.Kernel
    X : array, shape (m, d)
        Evaluation points (usually the training inputs).
    centers : array, shape (n, d)
    coef : array, shape (n, c) or (n,)
    M : None, array of shape (d, d) or (d,)
    centering : {None, "per_output", "pooled"}
        Subtract the mean gradient before the outer product (SPEC Part A #4):
        per output ``l`` (the rfm/grokking convention) or over all (point, output)
        rows (xRFM's ``center_grads``).  The result is then
        ``(1/m) sum_{i,l} (g_il - mu)(g_il - mu)^T``.
    diag : bool
        Return only the diagonal (``(d,)``), the update of diagonal RFM.
    backend : str

    Returns
    -------
    array, shape (d, d), or (d,) with ``diag=True``
        Symmetric PSD (up to round-off), in the namespace, dtype and device of ``X``.
        Computed in row blocks of ``X``; the ``(m, c, d)`` gradient tensor is never
        held whole.
        With ``X`` (or ``centers``, ``coef``) a dask array: a lazy one-chunk dask array,
        the map-reduce over row chunks of ``X`` described in ``docs/dask.md``
        (``M`` must then be ``None`` or a NumPy array).

    Examples
    --------
    >>> import numpy as np, agop
    >>> rng = np.random.default_rng(0)
    >>> X, a = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    >>> k = agop.Laplace(2.0)
    >>> G = agop.predictor_grads(k, X, X, a)
    >>> A = agop.agop(k, X, X, a)
    >>> bool(np.allclose(A, np.einsum("icd,icD->dD", G, G) / 20))
    True
    """
    kernel = _check_kernel(kernel)
    if centering not in _CENTERINGS:
        raise ValueError(f"centering must be one of {_CENTERINGS}, got {centering!r}")
    if not isinstance(diag, bool | np.bool_):
        raise TypeError(f"diag must be a bool, got {type(diag).__name__}")
    diag = bool(diag)
    if _dask.any_dask(X, centers, coef, M):
        return _dask.agop_dask(kernel, X, centers, coef, M, centering, diag, backend)
    inp = _prepare(X, centers, coef, M, names=("X", "centers"), kernel=kernel)
    diag_inside = diag and inp.metric != "full"
    A = _run("agop", kernel, inp, backend, inp.coef, centering=centering, diag=diag_inside)
    return inp.agop_back(A, diag)


def _check_alpha(alpha: Any, inp: _Inputs, m: int) -> Any:
    """The dual coefficients at the evaluation points, ``(m, c)`` in the inputs' dtype."""
    xp, c = inp.xp, inp.coef.shape[1]
    if alpha is None:
        if m != inp.Zt.shape[0]:
            raise ValueError(
                f"X has {m} rows but centers has {inp.Zt.shape[0]}: without alpha the FACT is "
                "taken at the centers themselves (X = centers, alpha = coef); pass alpha, the "
                "coefficients of the rows of X, to evaluate it elsewhere"
            )
        return inp.coef
    alpha = as_float_array(alpha, "alpha", xp, ndim=(1, 2), device=inp.device,
                           int_dtype=inp.dtype)
    if alpha.ndim == 1:
        alpha = xp.reshape(alpha, (alpha.shape[0], 1))
    if alpha.shape != (m, c):
        raise ValueError(
            f"alpha must have shape (m, c) = ({m}, {c}) (one row per row of X, one column "
            f"per output), got {tuple(alpha.shape)}"
        )
    alpha = xp.astype(alpha, inp.dtype, copy=False)
    check_finite(alpha, "alpha", xp)
    return alpha


def _fact_sum(kernel: Kernel, inp: _Inputs, X: Any, alpha: Any, diag: bool,
              backend: str) -> Any:
    """``(1/m) sum_i (sum_l alpha_il g~_il) x_i^T`` in row blocks of the evaluation points,
    with the transformed-space gradients ``g~`` of the ``predictor_grads`` implementation
    that the registry picks (so the numba loops serve the FACT too)."""
    from ._generic._kernel_ops import _plan

    xp = inp.xp
    impl = _backends.select("predictor_grads", inp.context("predictor_grads", kernel), backend)
    m, d = X.shape
    c = inp.coef.shape[1]
    plan = _plan(kernel, inp.Xt, inp.Zt, c, xp, grads=True, extra_per_row=2 * d)
    F = None
    for i0, i1 in plan:
        G = impl.func(kernel, inp.Xt[i0:i1, :], inp.Zt, inp.coef, xp=xp)  # (b, c, d)
        g = xp.sum(G * alpha[i0:i1, :, None], axis=1)  # J_f(x_i)^T alpha_i, (b, d)
        part = xp.sum(g * X[i0:i1, :], axis=0) if diag else g.T @ X[i0:i1, :]
        F = part if F is None else F + part
    return F / float(m)


def fact(
    kernel: Kernel,
    X: Any,
    centers: Any,
    coef: Any,
    M: Any = None,
    *,
    alpha: Any = None,
    diag: bool = False,
    backend: str = "auto",
) -> Any:
    """FACT of a kernel machine: ``(1/m) sum_i (J_f(x_i)^T alpha_i) x_i^T``.

    The Features At Convergence Theorem statistic (Boix-Adsera, Mallinar, Simon and
    Belkin, arXiv 2507.05644) of ``f(x) = sum_j coef_j k_M(x, centers_j)``, the update
    of FACT-RFM (:class:`agop.updates.FACTUpdate`).

    Parameters
    ----------
    kernel : agop.kernels.Kernel
    X : array, shape (m, d)
        Evaluation points: the training inputs (the centers, by default) or a subset.
    centers : array, shape (n, d)
    coef : array, shape (n, c) or (n,)
    M : None, array of shape (d, d) or (d,)
    alpha : array, shape (m, c) or (m,), optional
        The dual coefficients of the rows of ``X``.  By default ``X`` are the centers
        and ``alpha = coef``.
    diag : bool
        Return only the diagonal (``(d,)``).
    backend : str
        Backend of the gradients (``predictor_grads``).

    Returns
    -------
    array, shape (d, d), or (d,) with ``diag=True``
        Not symmetric in general.  Gradients are taken with respect to the raw input
        ``x`` (through the factor of ``M``), and computed one row block of ``X`` at a
        time: the ``(m, c, d)`` gradient tensor is never held whole.

    Notes
    -----
    For kernel ridge regression, ``(K + lambda I) alpha = Y`` gives the residuals
    ``f(x_i) - y_i = -lambda alpha_i``, so with ``l_i(x) = 1/2 |f(x) - y_i|^2``
    (the centers held fixed) ``grad_x l_i(x_i) = -lambda J_f(x_i)^T alpha_i`` and

    ``FACT = -(1/(n lambda)) sum_i grad_x l_i(x_i) x_i^T = (1/n) sum_i (J_f(x_i)^T alpha_i) x_i^T``,

    the right-hand side of the theorem ``W^T W = FACT`` at a critical point of the
    weight-decayed loss, for the kernel ``k(W x, W x')`` with ``M = W^T W``
    (``docs/fact.md`` has the derivation).  With ``J_f(x_i)^T alpha_i =
    sum_l alpha_il grad f_l(x_i)``, it reuses the gradients of :func:`predictor_grads`.

    Examples
    --------
    >>> import numpy as np, agop
    >>> rng = np.random.default_rng(0)
    >>> X, a = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    >>> k = agop.Gaussian(2.0)
    >>> G = agop.predictor_grads(k, X, X, a)
    >>> F = agop.fact(k, X, X, a)
    >>> bool(np.allclose(F, np.einsum("icd,ic,iD->dD", G, a, X) / 30))
    True
    """
    kernel = _check_kernel(kernel)
    if not isinstance(diag, bool | np.bool_):
        raise TypeError(f"diag must be a bool, got {type(diag).__name__}")
    diag = bool(diag)
    _dask.reject("fact", X, centers, coef, M, alpha)
    inp = _prepare(X, centers, coef, M, names=("X", "centers"), kernel=kernel)
    alpha = _check_alpha(alpha, inp, inp.X.shape[0])
    inside = diag and inp.metric != "full"
    return inp.fmap.fact_back(_fact_sum(kernel, inp, inp.X, alpha, inside, backend), diag)


def fact_mapped(kernel: Kernel, X: Any, fmap: FeatureMap, centers_mapped: Any, coef: Any,
                alpha: Any = None, *, diag: bool = False, backend: str = "auto") -> Any:
    """:func:`fact` for data already mapped by ``fmap`` (what a fitted
    :class:`agop.updates.KernelMachine` holds): ``M`` is not factored again."""
    xp = namespace_of(X, centers_mapped)
    X = as_float_array(X, "X", xp, ndim=(2,), device=array_device(centers_mapped),
                       int_dtype=centers_mapped.dtype)
    d = centers_mapped.shape[1] if fmap.metric == "identity" else fmap.S.shape[0]
    if X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} features but the machine has {d}")
    inp = _prepare(fmap.apply(X), centers_mapped, coef, names=("X", "centers"))
    alpha = _check_alpha(alpha, inp, X.shape[0])
    inside = diag and fmap.metric != "full"
    return fmap.fact_back(_fact_sum(kernel, inp, X, alpha, inside, backend), diag)


def pairwise_grads(kernel: Kernel, X: Any, Z: Any, M: Any = None) -> Any:
    """``G[i, j] = grad_x k_M(x, Z[j])`` at ``x = X[i]``, shape ``(n, m, d)``.

    Materializes ``n * m * d`` numbers; meant for checks and small problems (it is
    :meth:`agop.kernels.Kernel.gradient`).
    """
    from . import _generic

    kernel = _check_kernel(kernel)
    inp = _prepare(X, Z, M=M, kernel=kernel)
    return inp.grads_back(_generic.pairwise_grads(kernel, inp.Xt, inp.Zt, xp=inp.xp))
