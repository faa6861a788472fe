"""solve_ridge: agrees with a dense solve, ridgeless interpolation, jitter policy,
clear error, namespaces kept."""

from __future__ import annotations

import numpy as np
import pytest

import agop
from agop.solvers import SingularSystemError, solve_kernel_ridge
from agop.testing import assert_close, to_numpy


def _system(seed=0, n=40, d=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    K = agop.kernel_matrix(agop.Laplace(2.0), X, X)
    return K, rng.normal(size=(n, 2))


@pytest.mark.parametrize("reg", [0.0, 1e-3, 10.0])
def test_matches_dense_solve(xp, reg):
    K, Y = _system()
    ref = np.linalg.solve(K + reg * np.eye(len(K)), Y)
    out = agop.solve_ridge(xp.asarray(K), xp.asarray(Y), reg)
    assert_close(out, ref, rtol=1e-8, xp=xp, dtype=xp.float64)
    out1 = agop.solve_ridge(xp.asarray(K), xp.asarray(Y[:, 0]), reg)
    assert_close(out1, ref[:, 0], rtol=1e-8, xp=xp, dtype=xp.float64)


def test_ridgeless_interpolates():
    K, Y = _system()
    np.testing.assert_allclose(K @ agop.solve_ridge(K, Y, 0.0), Y, atol=1e-9)


def test_singular_psd_system_is_rescued_by_jitter():
    X = np.random.default_rng(1).normal(size=(10, 2))
    X = np.concatenate([X, X[:3]])  # duplicate rows: K is singular
    K = agop.kernel_matrix(agop.Laplace(1.0), X, X)
    y = np.ones(len(X))
    coef = agop.solve_ridge(K, y, 0.0)
    assert np.all(np.isfinite(coef))
    np.testing.assert_allclose(K @ coef, y, atol=1e-5)


def test_float32_retries_add_a_jitter_that_changes_the_system(monkeypatch, caplog):
    """In float32 a failed factorization is retried with a jitter above round-off, so a
    retry succeeds early (a 1e-8 relative jitter would leave the diagonal as it is and
    the first two retries would repeat the failed factorization); the jitter is logged."""
    import agop.solvers as S

    rng = np.random.default_rng(0)
    B = rng.normal(size=(300, 3))
    K = (B @ B.T).astype(np.float32)  # rank 3: not positive definite in float32
    calls = []
    original = S._cholesky_solve
    monkeypatch.setattr(S, "_cholesky_solve", lambda A, Y, xp: calls.append(1) or
                        original(A, Y, xp))
    coef = agop.solve_ridge(K, np.ones(300, dtype=np.float32), 0.0)
    assert np.all(np.isfinite(coef)) and coef.dtype == np.float32
    assert len(calls) <= 3
    assert "diagonal jitter" in caplog.text


def test_indefinite_system_raises_a_clear_error(xp):
    K = xp.asarray(-np.eye(4))
    with pytest.raises(SingularSystemError, match="reg = 0.001"):
        agop.solve_ridge(K, xp.asarray(np.ones(4)), 1e-3)


def test_bad_arguments():
    K, Y = _system()
    with pytest.raises(ValueError, match="reg must lie in"):
        agop.solve_ridge(K, Y, -1.0)
    with pytest.raises(ValueError, match="square"):
        agop.solve_ridge(K[:, :5], Y)
    with pytest.raises(ValueError, match="rows"):
        agop.solve_ridge(K, Y[:5])
    K2 = K.copy()
    K2[0, 0] = np.nan
    with pytest.raises(ValueError, match="K contains"):
        agop.solve_ridge(K2, Y)


# ---------------------------------------------------------------- kernel ridge from data




def _ridge_problem(n=600, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    Xv = rng.normal(size=(200, d))
    Yv = np.stack([np.sin(Xv[:, 0]), Xv[:, 1] * Xv[:, 2]], axis=1)
    return X, Y, Xv, Yv


@pytest.mark.parametrize("dense", [True, False])
def test_pcg_agrees_with_the_direct_solve(dense):
    X, Y, Xv, Yv = _ridge_problem()
    k = agop.Laplace(3.0)
    a, ia = solve_kernel_ridge(k, X, Y, 1e-3, solver="direct")
    budget = 100.0 if dense else 1.0  # MiB: 1 MiB < 600 x 600 x 8 bytes forces blocked K v
    with agop.config_context(solver_memory_mb=budget, pcg_rank=100):
        b, ib = solve_kernel_ridge(k, X, Y, 1e-3, solver="pcg", tol=1e-8, random_state=0)
    assert ia.solver == "direct" and ib.solver == "pcg" and ib.converged and ib.dense == dense
    K = agop.kernel_matrix(k, X, X)
    res = np.linalg.norm(K @ b + 1e-3 * b - Y, axis=0) / np.linalg.norm(Y, axis=0)
    assert res.max() <= 1e-8
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
    err_a = np.mean((agop.kernel_mv(k, Xv, X, a) - Yv) ** 2)
    err_b = np.mean((agop.kernel_mv(k, Xv, X, b) - Yv) ** 2)
    assert err_b == pytest.approx(err_a, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [1, 3, 6])
def test_dense_operator_and_preconditioner_for_any_number_of_columns(dtype, c):
    """The matrix-vector products of PCG (the compiled symmetric product and gemv for a
    few columns, GEMM for more) equal the dense NumPy products, and PCG reaches the
    direct solution."""
    from agop.solvers import _dense_matvec, _nystrom_preconditioner

    rng = np.random.default_rng(c)
    X = rng.normal(size=(300, 4)).astype(dtype)
    k = agop.Laplace(2.0)
    K = agop.kernel_matrix(k, X, X)
    V = rng.normal(size=(300, c)).astype(dtype)
    # (float64: round-off of a sum of 300 terms, relative to their magnitudes, not to
    # an entry that happens to cancel)
    scale = float(np.abs(K).sum(axis=1).max() * np.abs(V).max())
    tol = ({"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32
           else {"rtol": 1e-12, "atol": 1e-14 * scale})
    np.testing.assert_allclose(_dense_matvec(K, 0.5, np)(V), K @ V + 0.5 * V, **tol)
    apply = _nystrom_preconditioner(k, X, 1e-3, 50, np.random.default_rng(0), np, K)
    # the same preconditioner (same landmarks) on the Array-API path, which applies it
    # as V + U (scale * U^T V) with plain matrix products
    xs = pytest.importorskip("array_api_strict")
    apply_generic = _nystrom_preconditioner(k, xs.asarray(X), 1e-3, 50,
                                            np.random.default_rng(0), xs, xs.asarray(K))
    PV = apply(V)
    assert PV.dtype == dtype
    # (the NumPy path forms C^T C with syrk, the generic one with a GEMM: round-off
    # differs relative to the largest entry, not to each one)
    ptol = tol if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-12 * np.abs(PV).max()}
    np.testing.assert_allclose(PV, np.asarray(apply_generic(xs.asarray(V))), **ptol)
    W = rng.normal(size=(300, c)).astype(dtype)
    np.testing.assert_allclose(np.sum(W * apply(V)), np.sum(apply(W) * V), rtol=1e-3)
    Y = rng.normal(size=(300, c)).astype(dtype)
    a, _ = solve_kernel_ridge(k, X, Y, 1e-2, solver="direct")
    b, info = solve_kernel_ridge(k, X, Y, 1e-2, solver="pcg", tol=1e-6 if dtype == np.float64
                                 else 1e-4, random_state=0)
    assert info.converged
    np.testing.assert_allclose(b, a, rtol=1e-2 if dtype == np.float32 else 1e-5,
                               atol=1e-3 * np.abs(a).max())


def test_pcg_default_tolerance_gives_the_same_validation_error():
    X, Y, Xv, Yv = _ridge_problem(n=900, seed=1)
    k, M = agop.Gaussian(2.0), np.diag([1.0, 0.5, 0.1, 0.0, 0.0])
    a, _ = solve_kernel_ridge(k, X, Y, 1e-3, M=M, solver="direct")
    b, info = solve_kernel_ridge(k, X, Y, 1e-3, M=M, solver="pcg", random_state=0)
    assert info.converged and 0 < info.iterations < 200
    err = [np.mean((agop.kernel_mv(k, Xv, X, c, M) - Yv) ** 2) for c in (a, b)]
    assert err[1] == pytest.approx(err[0], rel=1e-3)


def test_pcg_warm_start_and_preconditioner_help():
    X, Y, _, _ = _ridge_problem(n=800, seed=2)
    k = agop.Laplace(2.0)
    a, cold = solve_kernel_ridge(k, X, Y, 1e-3, solver="pcg", tol=1e-8, random_state=0)
    _, warm = solve_kernel_ridge(k, X, Y, 1e-3, solver="pcg", tol=1e-8, coef0=a)
    assert warm.iterations == 0 and warm.converged
    with agop.config_context(pcg_rank=1):  # (almost) no preconditioner
        _, plain = solve_kernel_ridge(k, X, Y, 1e-3, solver="pcg", tol=1e-8, random_state=0)
    assert plain.iterations > 2 * cold.iterations


def test_pcg_max_iter_reports_non_convergence(caplog):
    X, Y, _, _ = _ridge_problem(n=300)
    with agop.config_context(pcg_rank=2):
        _, info = solve_kernel_ridge(agop.Laplace(2.0), X, Y, 1e-6, solver="pcg", max_iter=2,
                                     tol=1e-12)
    assert not info.converged and info.iterations == 2 and info.residual > 1e-12
    assert "conjugate gradients stopped" in caplog.text


def test_auto_solver_choice():
    X, Y, _, _ = _ridge_problem(n=200)
    k = agop.Laplace(2.0)
    with agop.config_context(direct_solve_max_n=100):
        _, info = solve_kernel_ridge(k, X, Y, 1e-3)
        assert info.solver == "pcg"
        _, info0 = solve_kernel_ridge(k, X, Y, 0.0)  # ridgeless: direct
        assert info0.solver == "direct"
    _, info = solve_kernel_ridge(k, X, Y, 1e-3)
    assert info.solver == "direct"
    with agop.config_context(solver_memory_mb=0.01):
        with pytest.raises(ValueError, match="solver='direct' needs"):
            solve_kernel_ridge(k, X, Y, 1e-3, solver="direct")
        _, info = solve_kernel_ridge(k, X, Y, 1e-3)
        assert info.solver == "pcg" and not info.dense


def test_kernel_ridge_namespaces(xp):
    X, Y, _, _ = _ridge_problem(n=150)
    k = agop.Laplace(2.0)
    ref, _ = solve_kernel_ridge(k, X, Y, 1e-2, solver="direct")
    for solver in ("direct", "pcg"):
        c, _ = solve_kernel_ridge(k, xp.asarray(X), xp.asarray(Y), 1e-2, solver=solver,
                                  tol=1e-10, random_state=0)
        assert type(c) is type(xp.asarray(X))
        np.testing.assert_allclose(to_numpy(c), ref, rtol=1e-6, atol=1e-8)


def test_kernel_ridge_rejects_bad_input():
    X, Y, _, _ = _ridge_problem(n=50)
    k = agop.Laplace(2.0)
    with pytest.raises(ValueError, match="solver"):
        solve_kernel_ridge(k, X, Y, solver="cg")
    with pytest.raises(ValueError, match="rows"):
        solve_kernel_ridge(k, X, Y[:10])
    with pytest.raises(ValueError, match="coef0"):
        solve_kernel_ridge(k, X, Y, solver="pcg", coef0=np.zeros((50, 3)))
    with pytest.raises(ValueError, match="reg"):
        solve_kernel_ridge(k, X, Y, reg=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 17, 33, 301])
@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_symmetric_matvec_reads_the_lower_triangle(dtype, n, c):
    """The compiled symmetric product equals K @ V, for odd and even sizes, and only
    looks at the lower triangle (garbage above the diagonal changes nothing)."""
    from agop._backends.numba_cpu import symmetric_matvec

    rng = np.random.default_rng(n + 10 * c)
    A = rng.normal(size=(n, n))
    S = (A + A.T) / 2
    V = rng.normal(size=(n, c))
    expected = S @ V
    K = np.tril(S) + np.triu(rng.normal(size=(n, n)) * 1e3, 1)  # upper part is not used
    out = symmetric_matvec(np.ascontiguousarray(K, dtype=dtype), V.astype(dtype))
    assert out.dtype == dtype and out.shape == (n, c)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 2100])
@pytest.mark.parametrize("kernel", [agop.Laplace(2.0), agop.Gaussian(1.5),
                                    agop.GeneralizedExponential(2.0, 1.3), agop.Quadratic()],
                         ids=repr)
def test_kernel_matrix_into_equals_kernel_matrix(dtype, n, kernel):
    """PCG's kernel matrix (written into a reusable buffer) equals kernel_matrix
    (n = 2100 spans several row blocks and an uneven last strip), also when written into
    a given buffer; the radial kernels compute the lower triangle and mirror it, so the
    matrix is exactly symmetric, coincident points included."""
    from agop._backends.numba_cpu import kernel_matrix_into

    X = np.random.default_rng(n).normal(size=(n, 5)).astype(dtype)
    if n > 7:
        X[n - 1] = X[2]  # a coincident pair far apart: k = 1 in both triangles
    L = kernel_matrix_into(kernel, X)
    K = agop.kernel_matrix(kernel, X, X)
    assert L.dtype == dtype and L.shape == (n, n)
    if kernel.family == "radial":
        np.testing.assert_array_equal(L, L.T)
        assert np.all(np.diag(L) == 1)
        if n > 7:
            assert L[n - 1, 2] == 1 and L[2, n - 1] == 1
    # (equal up to the summation order of the BLAS products of different shapes)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(L, K, rtol=rtol, atol=rtol)
    buf = np.full((n, n), np.nan, dtype=dtype)
    assert kernel_matrix_into(kernel, X, buf) is buf
    np.testing.assert_allclose(buf, K, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pcg_workspace_reuses_the_kernel_matrix_buffer(dtype):
    """A workspace carries PCG's n x n buffer from one solve to the next (the RFM loop
    keeps one per fit); the coefficients equal those of a solve without it."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4)).astype(dtype)
    Y = rng.normal(size=(300, 2)).astype(dtype)
    ws = {}
    solve_kernel_ridge(agop.Laplace(2.0), X, Y, 1e-2, solver="pcg", random_state=0,
                       workspace=ws)
    buf = ws["K"]
    assert buf.shape == (300, 300) and buf.dtype == dtype
    k = agop.Laplace(3.0)
    b, _ = solve_kernel_ridge(k, X, Y, 1e-2, solver="pcg", random_state=0, workspace=ws)
    assert ws["K"] is buf  # written in place, not allocated anew
    ref, _ = solve_kernel_ridge(k, X, Y, 1e-2, solver="pcg", random_state=0)
    np.testing.assert_array_equal(b, ref)
    # a buffer of another size is not used
    ws2 = {"K": np.zeros((5, 5), dtype=dtype)}
    c, _ = solve_kernel_ridge(k, X, Y, 1e-2, solver="pcg", random_state=0, workspace=ws2)
    np.testing.assert_array_equal(c, ref)
    assert ws2["K"].shape == (300, 300)


def test_workspace_holds_the_kernel_matrix_of_the_last_solve():
    """After a PCG solve the workspace holds that solve's K(X, X) (what the RFM loop
    hands to the AGOP) as its lower triangle, flagged so; a direct solve leaves none, so
    no stale matrix survives it."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 3))
    Y = rng.normal(size=(200, 1))
    k = agop.Gaussian(1.5)
    ws = {}
    solve_kernel_ridge(k, X, Y, 1e-2, solver="pcg", random_state=0, workspace=ws)
    assert ws["K_lower"] is True
    np.testing.assert_allclose(np.tril(ws["K"]), np.tril(agop.kernel_matrix(k, X, X)),
                               rtol=1e-13, atol=1e-13)
    solve_kernel_ridge(k, X, Y, 1e-2, solver="direct", workspace=ws)
    assert "K" not in ws and "K_lower" not in ws


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, r, c", [(1, 1, 1), (7, 3, 2), (500, 40, 3), (301, 17, 4)])
def test_lowrank_update_apply_matches_numpy(dtype, n, r, c):
    """The preconditioner's ``V + U (s * U^T V)`` on numba's threads equals the NumPy
    expression, for odd sizes and 1-4 columns (non-contiguous V included)."""
    from agop._backends.numba_cpu import lowrank_update_apply

    rng = np.random.default_rng(n + r + c)
    U = rng.normal(size=(n, r)).astype(dtype)
    s = rng.normal(size=r)
    V = np.asfortranarray(rng.normal(size=(n, c)).astype(dtype))
    out = lowrank_update_apply(U, s, V)
    ref = V.astype(np.float64) + U.astype(np.float64) @ (s[:, None] * (U.T.astype(np.float64)
                                                                      @ V.astype(np.float64)))
    assert out.dtype == dtype and out.shape == (n, c)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_pcg_scaled_warm_start_is_never_worse_than_zero():
    """The rescaled start minimizes the (K + reg I)-norm error along each column of
    coef0 (against a grid of scales), keeps the residual consistent with its point, and
    a start far off in scale costs no more iterations than a cold start."""
    from agop.solvers import _scaled_start

    X, Y, _, _ = _ridge_problem(n=400, seed=3)
    k = agop.Laplace(2.0)
    A = agop.kernel_matrix(k, X, X) + 1e-3 * np.eye(len(X))
    exact = np.linalg.solve(A, Y)
    rng = np.random.default_rng(0)
    X0 = 50.0 * exact + rng.normal(size=exact.shape)  # right direction, far too large
    X0[:, 1] = -X0[:, 1]  # a column pointing the wrong way gets a negative scale
    S, R = _scaled_start(X0, Y, Y - A @ X0, np)
    np.testing.assert_allclose(R, Y - A @ S, rtol=1e-9, atol=1e-9 * np.abs(Y).max())

    def err(V):
        E = V - exact
        return np.sum(E * (A @ E), axis=0)

    for j in range(Y.shape[1]):
        grid = np.linspace(-0.1, 0.1, 2001)
        best = min(err(g * X0[:, [j]] @ np.ones((1, Y.shape[1])))[j] for g in grid)
        assert err(S)[j] <= best * (1 + 1e-9)
        assert err(S)[j] <= err(np.zeros_like(S))[j]
    S0, R0 = _scaled_start(np.zeros_like(Y), Y, Y, np)  # zero start stays zero
    assert not S0.any() and np.array_equal(R0, Y)
    _, cold = solve_kernel_ridge(k, X, Y, 1e-3, solver="pcg", tol=1e-8, random_state=0)
    _, far = solve_kernel_ridge(k, X, Y, 1e-3, solver="pcg", tol=1e-8, random_state=0,
                                coef0=X0)
    assert far.converged and far.iterations <= cold.iterations + 2


def _clustered(n=600, d=2, seed=0, n_small=12, m=5):
    """A smooth bulk and a dozen tight clusters of five points far from it and from each
    other: each cluster is a direction of K of its own, which uniform landmarks mostly
    miss (they draw one point in ten from the clusters)."""
    rng = np.random.default_rng(seed)
    bulk = rng.normal(size=(n - n_small * m, d))
    small = [rng.normal(size=(m, d)) * 0.05 + 40.0 * rng.normal(size=d) for _ in range(n_small)]
    return np.concatenate([bulk, *small])


_SQRT_EPS64 = float(np.sqrt(np.finfo(np.float64).eps))


def _rpc(K, rank, seed, eps=_SQRT_EPS64):
    import array_api_compat

    from agop.solvers import _FactorRows, _rpcholesky_factor

    xp = array_api_compat.array_namespace(K)
    F = _FactorRows(rank, K.shape[0], xp, numpy_buffers=True)
    k = _rpcholesky_factor(lambda idx: K[idx].astype(np.float64), np.diag(K).astype(float),
                           rank, np.random.default_rng(seed), xp, F, eps)
    return F.head().T.copy(), k


def test_rpcholesky_factor_is_a_nystrom_approximation_closer_than_uniform():
    """F F^T is below K (the residual is PSD), equals the Nystrom approximation of the
    pivots, and its trace error is well below that of uniform landmarks at the same rank
    (both averaged over draws); a K of low rank is recovered exactly and stops early."""
    X = _clustered()
    K = agop.kernel_matrix(agop.Gaussian(3.0), X, X)
    n, rank = len(X), 80
    err_rpc, err_uni = [], []
    for seed in range(4):
        F, k = _rpc(K, rank, seed)
        assert k == rank and F.shape == (n, rank)
        R = K - F @ F.T
        assert np.linalg.eigvalsh(R).min() > -1e-12
        err_rpc.append(np.trace(R))
        idx = np.random.default_rng(seed).choice(n, size=rank, replace=False)
        C = K[:, idx]
        err_uni.append(np.trace(K - C @ np.linalg.pinv(K[np.ix_(idx, idx)]) @ C.T))
    assert np.mean(err_rpc) < 0.1 * np.mean(err_uni)
    # the quadratic kernel of 3-d data has rank 6: six columns, K recovered
    Xq = np.random.default_rng(1).normal(size=(200, 3))
    Kq = agop.kernel_matrix(agop.Quadratic(), Xq, Xq)
    Fq, kq = _rpc(Kq, 50, 0)
    assert kq == 6
    # (to the bias of the blocks' shift, b sqrt(eps64) max diag K, over their eigenvalues)
    np.testing.assert_allclose(Fq @ Fq.T, Kq, atol=1e-6 * np.abs(Kq).max())


@pytest.mark.parametrize("kernel", [agop.Laplace(2.0), agop.Gaussian(3.0), agop.Quadratic()],
                         ids=repr)
def test_preconditioner_paths_and_landmark_rules(kernel):
    """The preconditioner of a NumPy K in memory (full or lower triangle), of the
    Array-API path with K and without it (rows recomputed) are one operator for the same
    seed; it is symmetric positive definite; both landmark rules make PCG converge to
    the direct solution, RPCholesky in fewer iterations on clustered data."""
    from agop._backends.numba_cpu import kernel_matrix_into
    from agop.solvers import _nystrom_preconditioner

    xs = pytest.importorskip("array_api_strict")
    X = _clustered(n=500, seed=2)
    if kernel.family == "dot":
        X = X / 10.0
    K = agop.kernel_matrix(kernel, X, X)
    KL = kernel_matrix_into(kernel, X, None, lower=True)
    rng = np.random.default_rng(0)
    V = rng.normal(size=(len(X), 3))

    def op(X_, xp_, K_, lower=False):
        return _nystrom_preconditioner(kernel, X_, 1e-3, 40, np.random.default_rng(5), xp_,
                                       K_, lower)

    ref = op(X, np, K)(V)
    np.testing.assert_allclose(op(X, np, KL, True)(V), ref, rtol=1e-7,
                               atol=1e-9 * np.abs(ref).max())
    for Kx in (xs.asarray(K), None):
        got = np.asarray(op(xs.asarray(X), xs, Kx)(xs.asarray(V)))
        np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    P = op(X, np, K)(np.eye(len(X)))
    np.testing.assert_allclose(P, P.T, atol=1e-10)
    assert np.linalg.eigvalsh((P + P.T) / 2).min() > 0
    Y = np.stack([np.sin(X[:, 0]), X[:, 0] * X[:, 1]], axis=1)
    a, _ = solve_kernel_ridge(kernel, X, Y, 1e-3, solver="direct")
    its = {}
    for rule in ("rpcholesky", "uniform"):
        with agop.config_context(pcg_landmarks=rule, pcg_rank=40):
            b, info = solve_kernel_ridge(kernel, X, Y, 1e-3, solver="pcg", tol=1e-8,
                                         random_state=0)
        assert info.converged
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())
        its[rule] = info.iterations
    if isinstance(kernel, agop.Gaussian):
        assert its["rpcholesky"] < its["uniform"]


def test_pcg_float32_system_iterates_in_float64():
    """A float32 NumPy system: the products see float64 directions (the recurrences run
    in float64), the solution comes back as float32, and its true residual, measured in
    float64, meets the tolerance asked for."""
    from agop.solvers import _dense_matvec, _pcg

    X, Y, _, _ = _ridge_problem(n=300, seed=5)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    K = np.asarray(agop.kernel_matrix(agop.Laplace(2.0), X, X), dtype=np.float32)
    seen = []
    inner = _dense_matvec(K, 1e-3, np)

    def matvec(V):
        seen.append(V.dtype)
        return inner(V)

    coef, iters, res, ok = _pcg(matvec, lambda V: V, Y, None, 1e-5, 2000, np)
    assert ok and iters > 0 and coef.dtype == np.float32
    assert set(seen) == {np.dtype(np.float64)}
    A = K.astype(np.float64) + 1e-3 * np.eye(len(X))
    true = np.linalg.norm(Y - A @ coef.astype(np.float64), axis=0) / np.linalg.norm(Y, axis=0)
    assert true.max() <= 3e-5  # the float32 rounding of the solution on top of tol


@pytest.mark.parametrize("rank", [50, 200])
def test_float32_nystrom_preconditioner_stays_positive_definite(rank):
    """A nearly constant kernel matrix (bandwidth 1e4) and a tiny ridge: (lam_r + mu) /
    (lam + mu) of the top Nystrom direction, the smallest eigenvalue of P^{-1}, is
    ~1e-8, below float32 round-off.  The float32 preconditioner's inverse stays positive
    definite, its smallest eigenvalue at least eps32 (the floor of its ratios; without
    it the rounding of U to float32 left it at round-off level, and negative with U from
    a float32 product)."""
    from agop.solvers import _nystrom_preconditioner

    X64 = np.random.default_rng(0).normal(size=(1000, 3))
    k = agop.Laplace(1e4)
    smallest = {}
    for dtype in (np.float64, np.float32):
        X = X64.astype(dtype)
        K = np.asarray(agop.kernel_matrix(k, X, X), dtype=dtype)
        P = _nystrom_preconditioner(k, X, 1e-7, rank, np.random.default_rng(0), np, K)
        A = P(np.eye(len(X), dtype=dtype)).astype(np.float64)
        w = np.linalg.eigvalsh((A + A.T) / 2)
        smallest[dtype] = w.min()
        assert w.max() <= 1.0 + 1e-5
    eps32 = float(np.finfo(np.float32).eps)
    assert 0 < smallest[np.float64] < eps32  # the regime this test is about
    assert smallest[np.float32] >= 0.7 * eps32


def test_float32_nystrom_basis_is_as_accurate_as_the_float64_one_rounded():
    """Uniform landmarks on a smooth kernel (Laplace L = 100, 3 features): the Nystrom
    eigenvalues span many decades.  The float32 preconditioner's smallest eigenvalue of
    P^{-1} matches the float64 one's (from the same landmarks); a basis made by a
    float32 product had it negative here (-1.8e-5 against 1.5e-6), and conjugate
    gradients diverged on the benchmark fit with such a basis."""
    from agop.solvers import _nystrom_preconditioner

    X64 = np.random.default_rng(0).normal(size=(1500, 3))
    X64[:, 0] *= 5
    k = agop.Laplace(100.0)
    smallest = {}
    for dtype in (np.float64, np.float32):
        X = X64.astype(dtype)
        K = np.asarray(agop.kernel_matrix(k, X, X), dtype=dtype)
        with agop.config_context(pcg_landmarks="uniform"):
            P = _nystrom_preconditioner(k, X, 1e-3, 300, np.random.default_rng(0), np, K)
        A = P(np.eye(len(X), dtype=dtype)).astype(np.float64)
        smallest[dtype] = np.linalg.eigvalsh((A + A.T) / 2).min()
    assert smallest[np.float64] > 0
    assert abs(smallest[np.float32] - smallest[np.float64]) <= 0.1 * smallest[np.float64]
