"""FACT and FACT-RFM: the op against naive loops and torch autograd of the ridge loss,
the update rules against their definitions, fixed points, the inner-product
simplification."""

from __future__ import annotations

import numpy as np
import pytest

import agop
from agop.testing import assert_close, to_numpy
from agop.updates import FACTUpdate, KernelMachine, subsample_index

from . import naive

KERNELS = [agop.Laplace(2.0), agop.Gaussian(1.5), agop.Quadratic(), agop.ProductLaplace(2.0)]


def _psd(d, rank, seed=0):
    B = np.random.default_rng(seed).normal(size=(d, rank))
    return B @ B.T


def _metric(kind, d):
    if kind == "identity":
        return None
    if kind == "diag":
        return np.linspace(0.5, 2.0, d)
    return _psd(d, d - 1, seed=4) + 0.05 * np.eye(d)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: type(k).__name__)
@pytest.mark.parametrize("metric", ["identity", "diag", "full"])
def test_fact_equals_naive_loop(kernel, metric):
    rng = np.random.default_rng(0)
    X, coef = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    M = _metric(metric, 3)
    ref = naive.fact(kernel, X, X, coef, M)
    for backend in ("generic", "auto"):
        F = agop.fact(kernel, X, X, coef, M, backend=backend)
        assert_close(F, ref, rtol=1e-9, err_msg=f"{backend}")
        assert_close(agop.fact(kernel, X, X, coef, M, diag=True, backend=backend),
                     np.diag(ref), rtol=1e-9, atol=1e-12)
    # a subset of the points with their own coefficients
    alpha = rng.normal(size=(5, 2))
    assert_close(agop.fact(kernel, X[:5], X, coef, M, alpha=alpha),
                 naive.fact(kernel, X[:5], X, coef, M, alpha=alpha), rtol=1e-9)


def test_fact_blocked_equals_unblocked_and_keeps_the_namespace(xp):
    rng = np.random.default_rng(1)
    X, coef, M = rng.normal(size=(40, 4)), rng.normal(size=(40, 3)), _psd(4, 3, seed=2)
    k = agop.Laplace(3.0)
    ref = agop.fact(k, X, X, coef, M)
    with agop.config_context(block_rows=7):
        assert_close(agop.fact(k, X, X, coef, M), ref, rtol=1e-12)
    Xx, cx, Mx = (xp.asarray(a) for a in (X, coef, M))
    assert_close(agop.fact(k, Xx, Xx, cx, Mx), ref, rtol=1e-9, xp=xp, dtype=xp.float64)
    X32, c32 = (xp.asarray(a.astype(np.float32)) for a in (X, coef))
    assert_close(agop.fact(k, X32, X32, c32), agop.fact(k, X, X, coef), rtol=2e-4, atol=1e-5,
                 xp=xp, dtype=xp.float32)


def test_fact_rejects_bad_input():
    rng = np.random.default_rng(0)
    X, coef = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    k = agop.Gaussian(1.0)
    with pytest.raises(ValueError, match="without alpha"):
        agop.fact(k, X[:4], X, coef)
    with pytest.raises(ValueError, match="alpha must have shape"):
        agop.fact(k, X[:4], X, coef, alpha=np.ones((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        agop.fact(k, X[:2], X, coef, alpha=np.array([[np.nan, 0.0], [0.0, 0.0]]))
    with pytest.raises(TypeError, match="diag"):
        agop.fact(k, X, X, coef, diag="yes")
    with pytest.raises(TypeError, match="kernel"):
        agop.fact("laplace", X, X, coef)
    # a fitted machine checks the rows it is given
    from agop.updates import KernelMachine

    m = KernelMachine.build(k, X, coef)
    with pytest.raises(ValueError, match="2 features but the machine has 3"):
        m.fact(X[:, :2], coef)
    with pytest.raises(TypeError, match="array of numbers"):
        m.fact("abc", coef)
    np.testing.assert_allclose(m.fact(X.tolist(), coef), m.fact(), rtol=1e-12)


# --------------------------------------------------------------------------- derivation


def _torch_kernel(torch, kernel, A, B):
    """k(a, b) of rows (already mapped by the factor of M), differentiable in A."""
    d2 = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)
    L = kernel.bandwidth
    if isinstance(kernel, agop.Gaussian):
        return torch.exp(-d2 / (2 * L**2))
    pos = d2 > 1e-20  # Laplace: a self-pair contributes no gradient (SPEC Part A #10)
    r = torch.where(pos, torch.sqrt(torch.where(pos, d2, torch.ones_like(d2))), 0.0 * d2)
    return torch.exp(-r / L)


@pytest.mark.parametrize("kernel", [agop.Gaussian(2.0), agop.Laplace(3.0)],
                         ids=lambda k: type(k).__name__)
def test_fact_is_minus_the_ridge_loss_gradient_over_n_lambda(kernel):
    """For a fitted ridge predictor, FACT = -(1/(n lam)) sum_i grad_x l_i(x_i) x_i^T with
    l_i(x) = 1/2 |f(x) - y_i|^2 (torch autograd); and, in the kernel k(W x, W x') with
    W = M^(1/2), FACT = -(1/lam) W^T grad_W (1/n) sum_i l_i: the theorem's right side."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    n, d, lam = 60, 4, 1e-2
    X = rng.normal(size=(n, d))
    Y = np.stack([np.sin(X[:, 0] + X[:, 1]), X[:, 2] * X[:, 3]], axis=1)
    M = _psd(d, d, seed=3) / 4 + 0.1 * np.eye(d)
    w, V = np.linalg.eigh(M)
    W = (V * np.sqrt(w)) @ V.T
    coef, _ = agop.solve_kernel_ridge(kernel, X @ W, Y, lam, solver="direct")
    F = agop.fact(kernel, X, X, coef, M)

    Xt, Yt, Wt, at = (torch.from_numpy(a) for a in (X, Y, W, coef))
    centers = Xt @ Wt  # the fitted function: its centers stay fixed
    # (1) gradient of the per-point losses with respect to the evaluation points
    Xe = Xt.clone().requires_grad_(True)
    res = _torch_kernel(torch, kernel, Xe @ Wt, centers) @ at - Yt
    # the ridge residual is -lam alpha
    np.testing.assert_allclose(res.detach().numpy(), -lam * coef, atol=1e-9)
    (0.5 * (res**2).sum()).backward()
    ref = -(Xe.grad.T @ Xt).numpy() / (n * lam)
    assert_close(F, ref, rtol=1e-8)
    # (2) gradient of the mean loss with respect to the weight W of the first layer
    Wv = Wt.clone().requires_grad_(True)
    res = _torch_kernel(torch, kernel, Xt @ Wv.T, centers) @ at - Yt
    (0.5 * (res**2).sum(1).mean()).backward()
    assert_close(F, -(Wt.T @ Wv.grad).numpy() / lam, rtol=1e-8)
    # and not the transpose: the FACT of a kernel machine is not symmetric
    assert np.linalg.norm(F - F.T) > 1e-3 * np.linalg.norm(F)


def _rules(normalize="fro", diag=False):
    return [FACTUpdate(variant=v, normalize=normalize, diag=diag)
            for v in ("fact", "geometric", "inner_product")]


@pytest.mark.parametrize("rank", [4, 2])
def test_fixed_points_satisfy_M_equals_FACT(rank):
    """If FACT = M (symmetric PSD), M is a fixed point of all three updates:
    (M M^T)^(1/2) = M, (M M^2 M)^(1/4) = M, (M M)^(1/2) = M."""
    M = _psd(4, rank, seed=rank)
    M = M / np.linalg.norm(M)
    for rule in _rules():
        assert_close(rule.from_statistic(M, M), M, rtol=1e-7, atol=1e-9, err_msg=rule.variant)
    m = np.array([0.5, 0.0, 0.25, 1.0])
    for rule in _rules("fro", diag=True):
        assert_close(rule.from_statistic(m, m), m / np.linalg.norm(m), rtol=1e-12)
    # a FACT that is not M moves M
    F = M + 0.3 * _psd(4, 1, seed=9)
    for rule in _rules():
        assert not np.allclose(rule.from_statistic(F, M), M, atol=1e-3)


def test_update_rules_equal_their_definitions():
    rng = np.random.default_rng(5)
    F = rng.normal(size=(5, 5))
    M = _psd(5, 5, seed=6)

    def root(A, s):  # A^s of a symmetric PSD matrix by eigh
        w, V = np.linalg.eigh((A + A.T) / 2)
        return (V * np.clip(w, 0, None) ** s) @ V.T

    cases = {
        ("fact", 1.0): root(F @ F.T, 0.5),
        ("geometric", 1.0): root(F @ M @ M @ F.T, 0.25),
        ("inner_product", 1.0): root(F @ M, 0.5),
        ("fact", 0.5): root(F @ F.T, 0.25),
        ("geometric", 2.0): root(F @ M @ M @ F.T, 0.5),
        # power 2: (F M)^1, still with its negative eigenvalues clipped (F M is not PSD)
        ("inner_product", 2.0): root(F @ M, 1.0),
    }
    for (variant, power), ref in cases.items():
        got = FACTUpdate(variant=variant, power=power, normalize="mean").from_statistic(F, M)
        assert_close(got, ref, rtol=1e-9, err_msg=f"{variant} {power}")
    # identity M for geometric equals the plain rule; normalizations as for the AGOP
    plain = FACTUpdate(normalize="max").from_statistic(F)
    np.testing.assert_allclose(FACTUpdate(variant="geometric", normalize="max", power=2.0)
                               .from_statistic(F), plain, atol=1e-10)
    np.testing.assert_allclose(plain, cases[("fact", 1.0)] / cases[("fact", 1.0)].max(),
                               rtol=1e-10)
    f = np.array([-2.0, 1.0, 0.0])
    m = np.array([1.0, 4.0, 2.0])
    up = FACTUpdate(diag=True, normalize="mean")
    np.testing.assert_allclose(up.from_statistic(f, m), [2.0, 1.0, 0.0])
    np.testing.assert_allclose(FACTUpdate(variant="geometric", diag=True, normalize="mean")
                               .from_statistic(f, m), [np.sqrt(2.0), 2.0, 0.0])
    np.testing.assert_allclose(FACTUpdate(variant="inner_product", diag=True, normalize="mean")
                               .from_statistic(f, m), [0.0, 2.0, 0.0])


def test_inner_product_kernel_simplification_on_the_quadratic_kernel():
    """k(x, z) = (x^T M z)^2: FACT = M B with B = (1/n) sum_ij 2 x_i^T M x_j alpha_i.alpha_j
    x_j x_i^T symmetric PSD, so FACT M is symmetric PSD and the geometric update
    (FACT M^2 FACT^T)^(1/4) equals (FACT M)^(1/2)."""
    rng = np.random.default_rng(7)
    n, d = 30, 4
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, 2))
    M = _psd(d, d, seed=8) + 0.1 * np.eye(d)
    k = agop.Quadratic()
    f = KernelMachine.build(k, X, None, M)
    coef, _ = agop.solve_kernel_ridge(k, f.centers_mapped, Y, 1e-1, solver="direct")
    f = KernelMachine.build(k, X, coef, M)
    F = f.fact()
    C = 2.0 * (X @ M @ X.T) * (coef @ coef.T)  # k'(x_i^T M x_j) alpha_i . alpha_j
    B = X.T @ C @ X / n
    assert_close(F, M @ B, rtol=1e-9)
    FM = F @ M
    assert np.linalg.norm(FM - FM.T) < 1e-8 * np.linalg.norm(FM)
    assert np.linalg.eigvalsh((FM + FM.T) / 2).min() > -1e-10 * np.abs(FM).max()
    plain, geo, inner = _rules("max")
    assert_close(geo(f, X, None), inner(f, X, None), rtol=1e-8)
    assert not np.allclose(plain(f, X, None), inner(f, X, None), atol=1e-3)
    # an L_p metric breaks the structure: FACT M is not symmetric there
    g = KernelMachine.build(agop.ProductLaplace(2.0), X, coef, M)
    GM = g.fact() @ M
    assert np.linalg.norm(GM - GM.T) > 1e-3 * np.linalg.norm(GM)


def test_radial_kernel_fact_is_M_times_a_graph_laplacian_form():
    """k(|x - z|_M): grad f(x_i) = M sum_j w_ij alpha_j (x_i - x_j) with w = kappa'(r)/r,
    so FACT = M B, B = (1/n) X^T (D - C) X, C_ij = w_ij alpha_i . alpha_j, D = diag(C 1):
    FACT M = M B M is symmetric (derived in docs/fact.md)."""
    rng = np.random.default_rng(3)
    n, d = 25, 3
    X, coef = rng.normal(size=(n, d)), rng.normal(size=(n, 2))
    M = _psd(d, d, seed=1) + 0.1 * np.eye(d)
    k = agop.Gaussian(1.5)
    d2 = np.array([[(x - z) @ M @ (x - z) for z in X] for x in X])
    w = -np.exp(-d2 / (2 * 1.5**2)) / 1.5**2  # kappa'(r)/r of the Gaussian
    C = w * (coef @ coef.T)
    B = X.T @ (np.diag(C.sum(1)) - C) @ X / n
    F = agop.fact(k, X, X, coef, M)
    assert_close(F, M @ B, rtol=1e-9)
    FM = F @ M
    assert np.linalg.norm(FM - FM.T) < 1e-10 * np.linalg.norm(FM)


# --------------------------------------------------------------------------- the rule


def test_fact_update_on_the_machine_uses_the_subsample_and_the_coefficients():
    rng = np.random.default_rng(2)
    X, coef = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    k = agop.Gaussian(2.0)
    f = KernelMachine.build(k, X, coef)
    up = FACTUpdate(max_points=20, random_state=4, normalize="mean")
    idx = subsample_index(50, 20, 4, 3)
    F = agop.fact(k, X[idx], X, coef, alpha=coef[idx])
    assert_close(up.statistic(f, 3), F, rtol=1e-12)
    assert_close(up(f, X, None, iteration=3), up.from_statistic(F), rtol=1e-12)
    total = FACTUpdate(normalize=None).statistic(f)
    assert_close(total, 50 * agop.fact(k, X, X, coef), rtol=1e-12)  # the sum over points


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"variant": "nfa"}, ValueError),
        ({"power": 0}, ValueError),
        ({"normalize": "sum"}, ValueError),
        ({"diag": 1}, TypeError),
        ({"max_points": 0}, ValueError),
    ],
)
def test_fact_update_rejects_bad_settings(kwargs, err):
    with pytest.raises(err):
        FACTUpdate(**kwargs)


def test_fact_update_in_the_loop_and_the_estimators(tmp_path):
    from agop.rfm import fit_feature_machine

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = np.tanh(X[:, 0] - 2 * X[:, 3])
    res = fit_feature_machine(X, y, agop.Laplace(5.0), FACTUpdate(), iters=2)
    model = agop.RFMRegressor(update="fact", bandwidth=5.0, iters=2).fit(X, y)
    np.testing.assert_allclose(model.M_, res.M, rtol=1e-10)
    assert sorted(np.argsort(-model.feature_importances_)[:2].tolist()) == [0, 3]
    geo = agop.RFMRegressor(update="fact_geometric", bandwidth=5.0, iters=2).fit(X, y)
    ref = fit_feature_machine(X, y, agop.Laplace(5.0), FACTUpdate(variant="geometric"), iters=2)
    np.testing.assert_allclose(geo.M_, ref.M, rtol=1e-10)
    clf = agop.RFMClassifier(update="fact", diag=True, iters=2).fit(X, X[:, 1] > 0)
    assert clf.M_.shape == (5,) and int(np.argmax(clf.M_)) == 1
    path = agop.save(model, tmp_path / "fact")
    loaded = agop.load(path)
    assert loaded.update == "fact"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    with pytest.raises(ValueError, match="update must be one of"):
        agop.RFMRegressor(update="nfa").fit(X, y)
    with pytest.raises(ValueError, match="centering"):
        agop.RFMRegressor(update="fact", centering="per_output").fit(X, y)


def test_fact_rfm_torch_input_stays_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = X[:, 0] * X[:, 1]
    a = agop.RFMRegressor(update="fact", iters=2).fit(X, y)
    b = agop.RFMRegressor(update="fact", iters=2).fit(torch.from_numpy(X), torch.from_numpy(y))
    assert isinstance(b.M_, torch.Tensor)
    np.testing.assert_allclose(to_numpy(b.M_), a.M_, rtol=1e-8, atol=1e-12)
