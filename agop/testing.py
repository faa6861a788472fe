"""Reusable property suites for kernels and AGOP implementations.

Any kernel, on any backend and array namespace, must pass :func:`check_kernel` and
:func:`check_agop`.  They raise ``AssertionError`` with a message naming the identity
that failed.  A third-party backend or kernel can run them in its own test suite::

    import numpy, agop
    from agop.testing import check_kernel, check_agop
    check_kernel(agop.Laplace(2.0), xp=numpy)
    check_agop(agop.Laplace(2.0), xp=numpy, metric="diag", centering="pooled")

The checks compare against independent computations: central finite differences of
the kernel values, torch autograd (when torch is installed), the AGOP's definition from
per-point gradients, and algebraic identities (symmetry, PSD, factor equivalence,
permutation invariance, scaling, rank).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._lib._compat import array_namespace
from ._lib._config import config_context
from ._ops import agop, kernel_matrix, kernel_mv, pairwise_grads, predictor_grads
from .kernels import Kernel

__all__ = ["assert_close", "check_agop", "check_kernel", "to_numpy", "tolerances"]


def _fail(msg: str) -> None:
    raise AssertionError(msg)


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy copy of any array (torch tensors are detached and moved to the host)."""
    if hasattr(a, "detach"):
        a = a.detach()
        if hasattr(a, "cpu"):
            a = a.cpu()
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    try:
        return np.from_dlpack(a).copy()
    except (TypeError, AttributeError, BufferError, RuntimeError):
        return np.asarray(a)


def tolerances(dtype: str) -> dict[str, float]:
    """Default ``rtol``/``atol`` of these suites for a dtype name."""
    return {"rtol": 1e-9, "atol": 1e-11} if dtype == "float64" else {"rtol": 2e-4, "atol": 2e-5}


def assert_close(
    actual: Any,
    desired: Any,
    *,
    rtol: float = 1e-9,
    atol: float = 0.0,
    xp: Any = None,
    dtype: Any = None,
    err_msg: str = "",
) -> None:
    """Values close *and* namespace, dtype and shape as expected.

    ``desired`` may be a NumPy array (a reference); ``xp``/``dtype`` name the namespace
    and dtype ``actual`` must have (default: those of ``desired`` if it is not NumPy).
    Tolerances are relative to the largest magnitude of ``desired``.
    """
    if xp is not None and array_namespace(actual) is not array_namespace(xp.asarray(0.0)):
        _fail(f"{err_msg}: result is a {type(actual).__module__} array, expected {xp.__name__}")
    if dtype is not None and actual.dtype != dtype:
        _fail(f"{err_msg}: result dtype {actual.dtype}, expected {dtype}")
    a, b = to_numpy(actual).astype(float), to_numpy(desired).astype(float)
    if a.shape != b.shape:
        _fail(f"{err_msg}: shape {a.shape}, expected {b.shape}")
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    if not np.all(np.isfinite(a)):
        _fail(f"{err_msg}: result has non-finite values")
    if err > atol + rtol * scale:
        _fail(f"{err_msg}: max abs error {err:.3g} > atol {atol:g} + rtol {rtol:g} x {scale:.3g}")


def _data(seed: int, n: int, m: int, d: int, c: int, metric: str, kernel: Kernel) -> dict:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Z = rng.normal(size=(m, d))
    coef = rng.normal(size=(m, c))
    if metric == "identity":
        M = None
    elif metric == "diag":
        M = rng.uniform(0.2, 2.0, size=d)
    else:
        B = rng.normal(size=(d, d)) / np.sqrt(d)
        M = B @ B.T + 0.1 * np.eye(d)
    return {"X": X, "Z": Z, "coef": coef, "M": M}


def _convert(D: dict, xp: Any, dt: Any) -> tuple[Any, ...]:
    """``X, Z, coef, M`` of a ``_data`` dict as arrays of namespace ``xp``, dtype ``dt``."""
    keys = ("X", "Z", "coef", "M")
    return tuple(None if D[k] is None else xp.asarray(D[k], dtype=dt) for k in keys)


def _factor(kernel: Kernel, M: np.ndarray | None, d: int, seed: int) -> np.ndarray:
    """A factor S with S^T S = M: a random non-symmetric one for Euclidean kernels,
    the symmetric square root for L_p kernels (SPEC Part A #13)."""
    if M is None:
        return np.eye(d)
    if M.ndim == 1:
        return np.diag(np.sqrt(M))
    w, V = np.linalg.eigh(M)
    root = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
    if kernel.family == "lp":
        return root
    Q, _ = np.linalg.qr(np.random.default_rng(seed + 1).normal(size=(d, d)))
    return Q @ root  # (Q R)^T (Q R) = R^T R = M


def check_kernel(
    kernel: Kernel,
    *,
    xp: Any = np,
    dtype: str = "float64",
    backend: str = "auto",
    metric: str = "full",
    seed: int = 0,
    n: int = 6,
    m: int = 5,
    d: int = 3,
) -> None:
    """Check the kernel-level identities of ``kernel`` on one backend and namespace.

    Checks: K(X, X) symmetric and PSD; ``k(x, x) = kappa(0)``; ``K_M(x, z) = K_I(Sx, Sz)``
    for ``S^T S = M`` (and ``S = diag(sqrt(m))`` for a diagonal M); ``kernel_mv`` equals
    ``kernel_matrix @ coef`` for every block size; ``kernel.gradient`` and
    ``predictor_grads`` equal central finite differences (float64) and torch autograd
    (when torch is installed); coincident pairs have zero gradient; the results keep the
    namespace and dtype of the input.
    """
    tol, dt = tolerances(dtype), getattr(xp, dtype)
    D = _data(seed, n, m, d, 2, metric, kernel)
    X, Z, coef, M = _convert(D, xp, dt)
    name = f"{kernel!r} [{xp.__name__}, {dtype}, M={metric}, backend={backend}]"

    K = kernel_matrix(kernel, X, X, M, backend=backend)
    assert_close(K, to_numpy(K).T, xp=xp, dtype=dt, **tol, err_msg=f"{name}: K(X, X) symmetric")
    Kn = to_numpy(K).astype(float)
    lam = np.linalg.eigvalsh((Kn + Kn.T) / 2)
    if lam[0] < -(10 * n * tol["rtol"]) * max(abs(lam[-1]), 1.0):
        _fail(f"{name}: K(X, X) is not PSD (smallest eigenvalue {lam[0]:.3g})")
    k0 = kernel.value_at_zero()
    if k0 is not None:
        assert_close(np.diag(Kn), np.full(n, k0), **tol, err_msg=f"{name}: k(x, x) = kappa(0)")

    # K_M(x, z) = K_I(S x, S z)
    S = _factor(kernel, D["M"], d, seed)
    KM = kernel_matrix(kernel, X, Z, M, backend=backend)
    KI = kernel_matrix(
        kernel, xp.asarray(D["X"] @ S.T, dtype=dt), xp.asarray(D["Z"] @ S.T, dtype=dt),
        backend=backend,
    )
    assert_close(KM, to_numpy(KI), xp=xp, dtype=dt, **tol, err_msg=f"{name}: K_M = K_I(Sx, Sz)")

    # kernel_mv = kernel_matrix @ coef, for every block size
    ref = to_numpy(KM) @ to_numpy(coef)
    for rows in sorted({1, 2, n - 1, n} - {0}):
        with config_context(block_rows=rows):
            mv = kernel_mv(kernel, X, Z, coef, M, backend=backend)
        assert_close(mv, ref, xp=xp, dtype=dt, **tol, err_msg=f"{name}: kernel_mv, block {rows}")

    # coincident pairs contribute no gradient; gradient of k(., z) at distinct points
    Gself = to_numpy(pairwise_grads(kernel, X, X, M))
    if kernel.family != "dot" and np.any(Gself[np.arange(n), np.arange(n)] != 0):
        _fail(f"{name}: a self pair has a non-zero gradient")

    if dtype != "float64":
        return
    _check_gradients_fd(kernel, D, name)
    _check_gradients_autograd(kernel, D, name)


def _check_gradients_fd(kernel: Kernel, D: dict, name: str) -> None:
    X, Z, coef, M = D["X"], D["Z"], D["coef"], D["M"]
    n, d = X.shape
    h = 1e-6
    G = predictor_grads(kernel, X, Z, coef, M)
    P = pairwise_grads(kernel, X, Z, M)
    Gfd = np.zeros_like(G)
    Pfd = np.zeros_like(P)
    for a in range(d):
        E = np.zeros_like(X)
        E[:, a] = h
        up, down = kernel_mv(kernel, X + E, Z, coef, M), kernel_mv(kernel, X - E, Z, coef, M)
        Gfd[:, :, a] = (up - down) / (2 * h)
        up, down = kernel_matrix(kernel, X + E, Z, M), kernel_matrix(kernel, X - E, Z, M)
        Pfd[:, :, a] = (up - down) / (2 * h)
    fd = {"rtol": 1e-6, "atol": 1e-8}
    assert_close(G, Gfd, **fd, err_msg=f"{name}: predictor_grads vs finite differences")
    assert_close(P, Pfd, **fd, err_msg=f"{name}: kernel.gradient vs finite differences")


def _check_gradients_autograd(kernel: Kernel, D: dict, name: str) -> None:
    try:
        import torch
    except ImportError:
        return
    from .autodiff import grads_of

    Z, coef = torch.from_numpy(D["Z"]), torch.from_numpy(D["coef"])
    M = None if D["M"] is None else torch.from_numpy(D["M"])
    G_auto = grads_of(lambda X: kernel_mv(kernel, X, Z, coef, M, backend="generic"), D["X"])
    G = predictor_grads(kernel, D["X"], D["Z"], D["coef"], D["M"])
    assert_close(G, G_auto, rtol=1e-9, atol=1e-12, err_msg=f"{name}: predictor_grads vs autograd")


def check_agop(
    kernel: Kernel,
    *,
    xp: Any = np,
    dtype: str = "float64",
    backend: str = "auto",
    metric: str = "full",
    centering: str | None = None,
    seed: int = 0,
    m: int = 7,
    n: int = 6,
    d: int = 4,
    c: int = 2,
) -> None:
    """Check the AGOP identities of ``kernel`` on one backend and namespace.

    Checks: the AGOP equals its definition ``(1/m) sum (g - mu)(g - mu)^T`` from
    ``predictor_grads`` (for each centering); symmetric and PSD; invariant to
    permuting the evaluation points; scales by ``s^2`` when ``coef`` scales by ``s``;
    rank at most ``min(d, m c)``; ``diag=True`` is its diagonal; blocked equals
    unblocked for every block size; namespace and dtype kept.
    """
    tol, dt = tolerances(dtype), getattr(xp, dtype)
    D = _data(seed, m, n, d, c, metric, kernel)
    X, Z, coef, M = _convert(D, xp, dt)
    name = (
        f"{kernel!r} [{xp.__name__}, {dtype}, M={metric}, centering={centering}, backend={backend}]"
    )

    def run(X=X, Z=Z, coef=coef, diag=False):
        return agop(kernel, X, Z, coef, M, centering=centering, diag=diag, backend=backend)

    A = run()
    An = to_numpy(A).astype(float)
    G = to_numpy(predictor_grads(kernel, X, Z, coef, M, backend=backend)).astype(float)
    if centering == "per_output":
        G = G - G.mean(axis=0, keepdims=True)
    elif centering == "pooled":
        G = G - G.reshape(-1, d).mean(axis=0)
    ref = np.einsum("icd,icD->dD", G, G) / m
    assert_close(A, ref, xp=xp, dtype=dt, **tol, err_msg=f"{name}: AGOP = its definition")
    if not np.array_equal(An, An.T):
        _fail(f"{name}: AGOP is not exactly symmetric")
    lam = np.linalg.eigvalsh(An)
    scale = max(abs(lam[-1]), 1e-300)
    if lam[0] < -10 * tol["rtol"] * scale:
        _fail(f"{name}: AGOP is not PSD (smallest eigenvalue {lam[0]:.3g} of max {scale:.3g})")
    # rank <= min(d, m c): the AGOP at a single point has rank <= c
    if c < d:
        lam1 = np.linalg.eigvalsh(to_numpy(agop(kernel, X[:1, :], Z, coef, M, backend=backend)))
        if np.any(np.abs(lam1[: d - c]) > 10 * tol["rtol"] * max(abs(lam1[-1]), 1e-300)):
            _fail(f"{name}: AGOP at one point has rank > c = {c}")

    perm = np.random.default_rng(seed + 2).permutation(m)
    Xp = xp.asarray(D["X"][perm], dtype=dt)
    assert_close(run(X=Xp), An, **tol, err_msg=f"{name}: AGOP invariant to permuting points")
    s = -2.5
    assert_close(run(coef=coef * s), An * s * s, **tol, err_msg=f"{name}: AGOP x s^2, coef x s")
    assert_close(run(diag=True), np.diag(An), xp=xp, dtype=dt, **tol, err_msg=f"{name}: diag=True")
    for rows in sorted({1, 3, m}):
        with config_context(block_rows=rows):
            assert_close(run(), An, **tol, err_msg=f"{name}: blocked AGOP, block {rows}")
