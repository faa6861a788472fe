"""The ops against slow naive loops (hypothesis-drawn problems with n = 1, d = 1,
duplicates, low-rank and diagonal M), the AGOP property suite for every kernel x
namespace x metric x centering, and identities that hold across calls."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import agop
from agop.testing import assert_close, check_agop, check_kernel

from . import naive
from .strategies import kernels, min_distinct_gap, problems, radial_kernels
from .test_kernels import ALL_KERNELS

F64 = {"rtol": 1e-9, "atol": 1e-12}


@given(kernel=kernels, prob=problems())
def test_kernel_matrix_equals_naive(kernel, prob):
    X, Z, _, M = prob
    assert_close(agop.kernel_matrix(kernel, X, Z, M), naive.kernel_matrix(kernel, X, Z, M), **F64)


@given(kernel=kernels, prob=problems(), rows=st.integers(1, 10))
def test_kernel_mv_equals_kernel_matrix_for_every_block_size(kernel, prob, rows):
    X, Z, coef, M = prob
    K = agop.kernel_matrix(kernel, X, Z, M)
    with agop.config_context(block_rows=rows):
        assert_close(agop.kernel_mv(kernel, X, Z, coef, M), K @ coef, **F64)
        assert_close(agop.kernel_mv(kernel, X, Z, coef[:, 0], M), K @ coef[:, 0], **F64)


@given(kernel=kernels, prob=problems())
def test_predictor_grads_equal_naive(kernel, prob):
    X, Z, coef, M = prob
    G = agop.predictor_grads(kernel, X, Z, coef, M)
    assert_close(G, naive.predictor_grads(kernel, X, Z, coef, M), **F64)
    assert_close(agop.predictor_grads(kernel, X, Z, coef[:, 0], M), G[:, 0, :], **F64)


@given(
    kernel=kernels,
    prob=problems(),
    centering=st.sampled_from([None, "per_output", "pooled"]),
    diag=st.booleans(),
    rows=st.integers(1, 10),
)
def test_agop_equals_naive(kernel, prob, centering, diag, rows):
    X, Z, coef, M = prob
    ref = naive.agop(kernel, X, Z, coef, M, centering=centering, diag=diag)
    with agop.config_context(block_rows=rows):
        A = agop.agop(kernel, X, Z, coef, M, centering=centering, diag=diag)
    assert_close(A, ref, **F64)


@given(kernel=kernels, prob=problems(max_n=6, max_d=4))
def test_float32_agrees_with_naive(kernel, prob):
    X, Z, coef, M = prob
    assume(min_distinct_gap(X, Z) > 0.2 and min_distinct_gap(X, X) > 0.2)
    if M is not None and M.ndim == 2:
        M = M + 0.1 * np.eye(len(M))  # keep distinct points distinct in the M-metric
    X32, Z32, c32 = (a.astype(np.float32) for a in (X, Z, coef))
    M32 = None if M is None else M.astype(np.float32)
    tol = {"rtol": 2e-3, "atol": 1e-5}
    K = agop.kernel_matrix(kernel, X32, Z32, M32)
    assert K.dtype == np.float32
    ref = naive.kernel_matrix(kernel, X32, Z32, M32)
    assert_close(K, ref, dtype=np.float32, **tol)
    A = agop.agop(kernel, X32, Z32, c32, M32)
    assert_close(A, naive.agop(kernel, X32, Z32, c32, M32), dtype=np.float32, **tol)


@given(kernel=radial_kernels, seed=st.integers(0, 2**32 - 1), d=st.integers(1, 5))
def test_agop_rotation_equivariance(kernel, seed, d):
    """Radial kernels see only ||x - z||: rotating the data rotates the AGOP."""
    rng = np.random.default_rng(seed)
    X, coef = rng.normal(size=(8, d)), rng.normal(size=(8, 2))
    R, _ = np.linalg.qr(rng.normal(size=(d, d)))
    A = agop.agop(kernel, X, X, coef)
    Ar = agop.agop(kernel, X @ R.T, X @ R.T, coef)
    assert_close(Ar, R @ A @ R.T, rtol=1e-9, atol=1e-12)


@given(prob=problems(max_n=6), kernel=kernels)
def test_diagonal_M_is_the_factor_diag_sqrt_m(kernel, prob):
    X, Z, coef, _ = prob
    m = np.random.default_rng(X.size).uniform(0.1, 2.0, size=X.shape[1])
    s = np.sqrt(m)
    K = agop.kernel_matrix(kernel, X, Z, m)
    assert_close(K, agop.kernel_matrix(kernel, X * s, Z * s), **F64)
    assert_close(K, agop.kernel_matrix(kernel, X, Z, np.diag(m)), **F64)
    # gradients: chain rule through x -> x * s
    G = agop.predictor_grads(kernel, X, Z, coef, m)
    Gs = agop.predictor_grads(kernel, X * s, Z * s, coef) * s
    assert_close(G, Gs, **F64)


@pytest.mark.parametrize("kernel", ALL_KERNELS, ids=repr)
@pytest.mark.parametrize("metric", ["identity", "diag", "full"])
@pytest.mark.parametrize("centering", [None, "per_output", "pooled"])
def test_check_agop(kernel, metric, centering, xp):
    for dtype in ("float64", "float32"):
        check_agop(kernel, xp=xp, dtype=dtype, metric=metric, centering=centering, seed=5)


def test_agop_rank_bound_low_rank_data():
    """rank AGOP <= min(d, m c): gradients of a predictor on a 2-D subspace stay in M V."""
    rng = np.random.default_rng(0)
    V = np.linalg.qr(rng.normal(size=(6, 2)))[0]
    X = rng.normal(size=(30, 2)) @ V.T  # data in a 2-D subspace of R^6
    A = agop.agop(agop.Laplace(2.0), X, X, rng.normal(size=(30, 3)))
    lam = np.linalg.eigvalsh(A)
    assert np.all(np.abs(lam[:4]) <= 1e-12 * lam[-1])
    assert lam[-2] > 1e-6 * lam[-1]


def test_duplicate_points_follow_the_self_pair_rule():
    """A center equal to the evaluation point contributes no gradient, also in float32,
    where the expanded distance of identical rows is round-off rather than zero."""
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(5, 7)) * 30.0  # large norms: big cancellation in |x|^2 + |z|^2 - 2 x.z
    coef = rng.normal(size=(5, 1))
    for dt in (np.float64, np.float32):
        Zd = Z.astype(dt)
        only_self = np.zeros((5, 1), dt)
        only_self[2] = 1.0
        G = agop.predictor_grads(agop.Laplace(1.0), Zd[2:3], Zd, only_self)
        assert np.all(G == 0)
        K = agop.kernel_matrix(agop.Laplace(1.0), Zd, Zd)
        np.testing.assert_array_equal(np.diag(K), np.ones(5, dt))
        # duplicated centers: f is the same function as with merged coefficients
        Zdup = np.concatenate([Zd, Zd[:1]])
        cdup = np.concatenate([coef.astype(dt), coef[:1].astype(dt)])
        merged = coef.astype(dt).copy()
        merged[0] *= 2
        lap = agop.Laplace(1.0)
        np.testing.assert_allclose(
            agop.agop(lap, Zd, Zdup, cdup), agop.agop(lap, Zd, Zd, merged),
            rtol=1e-5 if dt == np.float32 else 1e-12,
        )


def test_n_equals_one_and_d_equals_one():
    k = agop.Laplace(1.0)
    x = np.array([[0.5]])
    Z = np.array([[0.0], [2.0]])
    coef = np.array([1.0, -1.0])
    # f(x) = e^{-|x|} - e^{-|x - 2|}; f'(0.5) = -e^{-0.5} - e^{-1.5}
    g = agop.predictor_grads(k, x, Z, coef)
    assert g.shape == (1, 1)
    np.testing.assert_allclose(g[0, 0], -np.exp(-0.5) - np.exp(-1.5), rtol=1e-14)
    np.testing.assert_allclose(agop.agop(k, x, Z, coef), g**2, rtol=1e-14)
    # a single point AGOP with per-output centering is exactly zero
    assert np.all(agop.agop(k, x, Z, coef, centering="per_output") == 0)


def test_agop_of_matches_closed_form_with_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    X, Z, coef = rng.normal(size=(9, 4)), rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    B = rng.normal(size=(4, 4))
    M = B @ B.T
    Zt, ct, Mt = (torch.from_numpy(a) for a in (Z, coef, M))
    for kernel in ALL_KERNELS:
        def f(Xt, kernel=kernel):
            return agop.kernel_mv(kernel, Xt, Zt, ct, Mt)

        for centering in (None, "per_output", "pooled"):
            A_auto = agop.agop_of(f, torch.from_numpy(X), centering=centering)
            A = agop.agop(kernel, X, Z, coef, M, centering=centering)
            assert_close(A, A_auto, rtol=1e-9, atol=1e-12, err_msg=repr(kernel))
        d_auto = agop.agop_of(f, X, diag=True)  # NumPy in, NumPy out
        assert isinstance(d_auto, np.ndarray)
        assert_close(agop.agop(kernel, X, Z, coef, M, diag=True), d_auto, rtol=1e-9, atol=1e-12)


def test_agop_of_linear_map_and_errors():
    torch = pytest.importorskip("torch")
    W = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    A = agop.agop_of(lambda x: x @ W.T, torch.randn(5, 3, dtype=torch.float64))
    torch.testing.assert_close(A, W.T @ W)
    with pytest.raises(ValueError, match=r"\(m,\) or \(m, c\)"):
        agop.agop_of(lambda x: x.sum(), torch.ones(3, 2))
    with pytest.raises(ValueError, match="centering"):
        agop.agop_of(lambda x: x, torch.ones(3, 2), centering="yes")
    with pytest.raises(TypeError, match="torch tensor"):
        agop.agop_of(lambda x: x.detach().numpy(), torch.ones(3, 2))


@given(
    kernel=kernels,
    seed=st.integers(0, 2**31),
    metric=st.sampled_from(["identity", "diag", "full"]),
    centering=st.sampled_from([None, "per_output", "pooled"]),
    m=st.integers(1, 8),
    n=st.integers(1, 6),
    d=st.integers(1, 5),
    c=st.integers(1, 3),
)
def test_agop_suite_on_drawn_problems(kernel, seed, metric, centering, m, n, d, c):
    check_agop(kernel, metric=metric, centering=centering, seed=seed, m=m, n=n, d=d, c=c)


@given(
    kernel=kernels,
    seed=st.integers(0, 2**31),
    metric=st.sampled_from(["identity", "diag", "full"]),
    n=st.integers(1, 6),
    m=st.integers(1, 6),
    d=st.integers(1, 4),
)
def test_kernel_suite_on_drawn_problems(kernel, seed, metric, n, m, d):
    check_kernel(kernel, metric=metric, seed=seed, n=n, m=m, d=d)


def test_data_far_from_the_origin_keeps_its_distances():
    """Pixel-like float32 data and float64 data shifted by 1e7: the expansion
    |x|^2 + |z|^2 - 2 x.z runs on data centered at the centers' mean."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 255, size=(50, 10))
    X[1] = X[0] + 0.5
    k = agop.Laplace(10.0)
    K = agop.kernel_matrix(k, X.astype(np.float32), X.astype(np.float32))
    np.testing.assert_allclose(K[0, 1], np.exp(-np.sqrt(10 * 0.25) / 10), rtol=1e-4)
    e = np.zeros((50, 1))
    e[1] = 1.0
    g = agop.predictor_grads(k, X[:1].astype(np.float32), X.astype(np.float32), e)
    np.testing.assert_allclose(g[0, 0], naive.predictor_grads(k, X[:1], X, e)[0, 0], rtol=1e-3)
    Y, coef = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    A = agop.agop(agop.Gaussian(1.0), Y, Y, coef)
    A_shift = agop.agop(agop.Gaussian(1.0), Y + 1e7, Y + 1e7, coef)
    np.testing.assert_allclose(A_shift, A, rtol=1e-6, atol=1e-9 * np.abs(A).max())


def test_float32_data_with_a_float64_M_of_wide_spectrum():
    """Small real eigenvalues of M survive the factorization (no features lost)."""
    rng = np.random.default_rng(1)
    d = 100
    m = np.full(d, 1e-4)
    m[0] = 1.0
    X = rng.normal(size=(6, d)).astype(np.float32)
    k = agop.Laplace(1.0)
    np.testing.assert_allclose(
        agop.kernel_matrix(k, X, X, np.diag(m)), agop.kernel_matrix(k, X, X, m), atol=1e-5
    )
    a = rng.normal(size=(6, 1)).astype(np.float32)
    full, diag = agop.agop(k, X, X, a, np.diag(m), diag=True), agop.agop(k, X, X, a, m, diag=True)
    np.testing.assert_allclose(full, diag, rtol=1e-3, atol=1e-6 * diag.max())
    assert np.all(full[1:] > 0)


@pytest.mark.parametrize("centering", ["per_output", "pooled"])
def test_centering_is_stable_for_nearly_constant_gradients(centering):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(200, 3)) * 1e-3).astype(np.float32)
    Z, a = np.array([[5.0, 5.0, 5.0]], np.float32), np.array([1.0], np.float32)
    k = agop.Gaussian(10.0)
    ref = naive.agop(k, X, Z, a, centering=centering)
    with agop.config_context(block_rows=64):
        A = agop.agop(k, X, Z, a, centering=centering)
    np.testing.assert_allclose(A, ref, rtol=2e-3, atol=1e-3 * np.abs(ref).max())
    assert np.all(np.linalg.eigvalsh(A.astype(float)) > -1e-6 * np.abs(ref).max())


def test_integer_coef_keeps_float32():
    X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    assert agop.agop(agop.Laplace(1.0), X, X, np.ones(5, dtype=int)).dtype == np.float32
    assert agop.kernel_mv(agop.Laplace(1.0), X, X, [1, 0, 1, 0, 1]).dtype == np.float32


def test_small_exponent_lp_kernels_do_not_overflow():
    X = np.random.default_rng(0).normal(size=(4, 3))
    k = agop.ProductLaplace(1.0, exponent=1e-3)
    np.testing.assert_allclose(agop.kernel_matrix(k, X, X), naive.kernel_matrix(k, X, X), rtol=1e-9)
    assert 0.01 < agop.kernel_matrix(k, X, X)[0, 1] < 0.2


def test_agop_of_takes_strided_and_integer_numpy_input():
    pytest.importorskip("torch")
    X = np.arange(12).reshape(6, 2)[::-1]
    A = agop.agop_of(lambda x: (x**2).sum(1), X)
    assert A.dtype == np.float64
    Xf = X.astype(float)
    np.testing.assert_allclose(A, 4 * Xf.T @ Xf / 6)
    np.testing.assert_array_equal(
        agop.agop(agop.Laplace(1.0), Xf, Xf, np.ones(6), diag=np.bool_(True)),
        agop.agop(agop.Laplace(1.0), Xf, Xf, np.ones(6), diag=True),
    )


def test_float32_M_keeps_its_small_eigenvalues():
    """A learned float32 M has real eigenvalues far below float32 round-off of its
    largest one; the factor keeps them (a direction cut to zero would get zero AGOP and
    stay zero in every later RFM iteration)."""
    rng = np.random.default_rng(3)
    d, t = 40, 1000.0
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.full(d, 1e-6)
    lam[:2] = [1.0, 0.5]
    M32 = ((Q * lam) @ Q.T).astype(np.float32)
    X = np.stack([np.zeros(d), t * Q[:, 7]]).astype(np.float32)  # apart along a small one
    K = agop.kernel_matrix(agop.Laplace(1.0), X, X, M32)
    # ||x - z||_M = t sqrt(1e-6) = 1, up to M's float32 rounding
    np.testing.assert_allclose(K[0, 1], np.exp(-1.0), rtol=1e-2)


def test_float32_rfm_follows_the_float64_trajectory():
    """The float32 loop tracks the float64 one: no precision is lost in the factor of M."""
    from agop.rfm import fit_feature_machine

    rng = np.random.default_rng(0)
    n, d = 1500, 60
    X = rng.normal(size=(n + 500, d))
    Y = np.stack([X[:, 0] > 0, X[:, 1] < 0.5], axis=1).astype(float)
    curves = []
    for dt in (np.float32, np.float64):
        res = fit_feature_machine(
            X[:n].astype(dt), Y[:n].astype(dt), agop.Laplace(10.0), iters=5,
            X_val=X[n:].astype(dt), Y_val=Y[n:].astype(dt), early_stop_tol=None,
            solver="direct",
        )
        curves.append([r["val_metric"] for r in res.history])
    np.testing.assert_allclose(curves[0], curves[1], rtol=5e-4)


def _spectrum_M(d, lam, seed=0):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return (Q * lam) @ Q.T, Q


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thin_factor_of_M_reproduces_it_on_fewer_columns(dtype):
    """For the kernels of x^T M z and ||x - z||_M the factor of a full M is (d, k): the
    eigen-directions whose weight is above the dtype's round-off of trace(M), with
    S S^T = M to that round-off; exact zeros always go, small real ones only in float32."""
    from agop._ops import feature_map, thin_factor

    d = 30
    lam = np.zeros(d)
    lam[:5] = [5.0, 2.0, 1.0, 0.5, 0.25]
    M, _ = _spectrum_M(d, lam)  # rank 5 (its round-off eigenvalues ~1e-16)
    S = feature_map(M, d, np, dtype, thin=True).S
    assert S.shape == (d, 5) and S.dtype == dtype
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(S.astype(float) @ S.T.astype(float), M, atol=20 * eps * lam.sum())
    lam[5:] = 1e-9 * lam.sum()  # real weight below float32's round-off of the trace only
    M, _ = _spectrum_M(d, lam)
    fm = feature_map(M, d, np, dtype, thin=True)
    assert fm.rank == (5 if dtype == np.float32 else d)
    assert np.abs(fm.S.astype(float) @ fm.S.T - M).max() <= 20 * eps * lam.sum()
    # the symmetric root when the kernel needs it (the L_p family) or no thin is asked
    for thin in (False, thin_factor(agop.LpqLaplace(1.0, norm_p=1.5, exponent=1.0))):
        S = feature_map(M, d, np, dtype, thin=thin).S
        assert S.shape == (d, d)
        np.testing.assert_array_equal(S, S.T)
    assert thin_factor(agop.Laplace(1.0)) and thin_factor(agop.Gaussian(1.0))
    assert thin_factor(agop.Quadratic()) and not thin_factor(agop.ProductLaplace(1.0))
    # M = 0 keeps one (zero) column: every distance is zero
    Z = feature_map(np.zeros((d, d)), d, np, dtype, thin=True)
    assert Z.rank == 1 and not Z.S.any()
    X = np.random.default_rng(1).normal(size=(4, d)).astype(dtype)
    np.testing.assert_array_equal(agop.kernel_matrix(agop.Laplace(1.0), X, X, np.zeros((d, d))),
                                  np.ones((4, 4), dtype))


@pytest.mark.parametrize("kernel", [agop.Laplace(3.0), agop.Gaussian(2.0), agop.Quadratic()],
                         ids=repr)
def test_thin_factor_ops_match_the_naive_float64_ones(kernel):
    """Kernel matrix, gradients and AGOP of float32 data through the thin factor of an M
    whose spectrum decays like a learned one (60 of 80 eigenvalues below float32's
    round-off of the trace) agree with float64 naive loops over the full M to float32
    accuracy, and the AGOP keeps the directions M dropped at zero only to that level."""
    rng = np.random.default_rng(2)
    d, n = 80, 60
    lam = np.concatenate([np.geomspace(1.0, 1e-6, 20), np.full(60, 1e-12)])
    M, Q = _spectrum_M(d, lam, seed=4)
    X = rng.normal(size=(n, d)) * 0.5
    Z = X[: n // 2]
    a = rng.normal(size=(n // 2, 2))
    X32, Z32, a32, M32 = (v.astype(np.float32) for v in (X, Z, a, M))
    K = agop.kernel_matrix(kernel, X32, Z32, M32)
    Kn = naive.kernel_matrix(kernel, X, Z, M)
    np.testing.assert_allclose(K, Kn, rtol=1e-4, atol=1e-5 * np.abs(Kn).max())
    G = agop.predictor_grads(kernel, X32, Z32, a32, M32)
    Gn = naive.predictor_grads(kernel, X, Z, a, M)
    np.testing.assert_allclose(G, Gn, rtol=1e-3, atol=1e-4 * np.abs(Gn).max())
    A = agop.agop(kernel, X32, Z32, a32, M32)
    An = naive.agop(kernel, X, Z, a, M)
    np.testing.assert_allclose(A, An, rtol=1e-3, atol=1e-4 * np.abs(An).max())
    Ad = agop.agop(kernel, X32, Z32, a32, M32, diag=True)
    np.testing.assert_allclose(Ad, np.diag(An), rtol=1e-3, atol=1e-4 * np.abs(An).max())
    tail = Q[:, 20:]
    assert np.abs(tail.T @ A.astype(float) @ tail).max() <= 1e-6 * np.abs(An).max()
    # in float64 every direction of weight above 1e-16 of the trace is kept: the AGOP
    # along the smallest learned ones (1e-6 of the largest) is exact to round-off
    A64 = agop.agop(kernel, X, Z, a, M)
    np.testing.assert_allclose(A64, An, rtol=1e-9, atol=1e-12 * np.abs(An).max())
    head = Q[:, :20]
    np.testing.assert_allclose(np.diag(head.T @ A64 @ head), np.diag(head.T @ An @ head),
                               rtol=1e-6, atol=1e-15 * np.abs(An).max())
