"""Update rules: post-processing against naive references, AGOPUpdate against the op."""

from __future__ import annotations

import numpy as np
import pytest

import agop
from agop.updates import AGOPUpdate, KernelMachine, finish_matrix, subsample_rows


def _psd(d, rank, seed=0):
    B = np.random.default_rng(seed).normal(size=(d, rank))
    return B @ B.T


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0, 1.7])
def test_power_equals_naive_eigen_power(power):
    A = _psd(6, 3)
    w, V = np.linalg.eigh(A)
    ref = (V * np.clip(w, 0, None) ** power) @ V.T
    got = finish_matrix(A, power=power, normalize="mean")
    np.testing.assert_allclose(got, ref, atol=1e-10 * np.abs(ref).max())
    # negative round-off eigenvalues are clipped, not turned into NaN
    A2 = A - 1e-12 * np.eye(6)
    assert np.isfinite(finish_matrix(A2, power=0.5)).all()


def test_normalizations():
    A = _psd(5, 5, seed=1)
    np.testing.assert_allclose(finish_matrix(A, normalize="max"), A / A.max())
    np.testing.assert_allclose(finish_matrix(A, normalize="fro"), A / np.linalg.norm(A))
    np.testing.assert_allclose(finish_matrix(A, normalize="trace"), A / np.trace(A))
    np.testing.assert_allclose(finish_matrix(A, normalize="mean"), A)
    np.testing.assert_allclose(finish_matrix(A, normalize=None, n_points=7), 7 * A)
    # "mean" before the power (grokking: [(1/n) G^T G]^(1/2)); None powers the sum
    s = finish_matrix(A, power=0.5, normalize=None, n_points=4)
    np.testing.assert_allclose(s @ s, 4 * A, rtol=1e-8, atol=1e-10)
    v = np.array([4.0, 1.0, 0.0, -1e-18])
    np.testing.assert_allclose(finish_matrix(v, power=0.5), [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(finish_matrix(v, normalize="trace"), v.clip(0) / 5)
    assert not finish_matrix(np.zeros((3, 3))).any()  # a zero AGOP stays zero, no NaN
    with pytest.raises(ValueError, match="normalize"):
        finish_matrix(A, normalize="l2")
    with pytest.raises(ValueError, match="power"):
        finish_matrix(A, power=0)


def test_agop_update_is_the_normalized_agop_of_the_machine():
    rng = np.random.default_rng(0)
    X, coef = rng.normal(size=(60, 4)), rng.normal(size=(60, 2))
    M = _psd(4, 2, seed=3) + 0.1 * np.eye(4)
    k = agop.Laplace(3.0)
    f = KernelMachine.build(k, X, coef, M)
    A = agop.agop(k, X, X, coef, M, centering="pooled")
    got = AGOPUpdate(centering="pooled", normalize="max")(f, X, None)
    np.testing.assert_allclose(got, A / A.max(), rtol=1e-10)
    A0 = agop.agop(k, X, X, coef, M)
    gd = AGOPUpdate(diag=True, normalize="trace")(f, X, None)
    np.testing.assert_allclose(gd, np.diag(A0) / np.trace(A0), rtol=1e-10)
    # the machine predicts and differentiates like the ops with M
    np.testing.assert_allclose(f.predict(X[:5]), agop.kernel_mv(k, X[:5], X, coef, M), rtol=1e-12)
    np.testing.assert_allclose(f.grads(X[:5]), agop.predictor_grads(k, X[:5], X, coef, M),
                               rtol=1e-9, atol=1e-12)


def test_subsample_is_uniform_without_replacement_and_seeded():
    X = np.arange(100.0)[:, None]
    a = subsample_rows(X, 30, 7, iteration=0)
    b = subsample_rows(X, 30, 7, iteration=0)
    c = subsample_rows(X, 30, 7, iteration=1)
    assert a.shape == (30, 1) and len(np.unique(a)) == 30
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # a fresh subset each iteration
    assert a.max() > 50  # not the first rows in data order (the xRFM pitfall)
    assert subsample_rows(X, None, 0, 0) is X
    rng = np.random.default_rng(0)
    counts = np.zeros(100)
    for t in range(200):
        counts[subsample_rows(X, 10, rng, t)[:, 0].astype(int)] += 1
    assert counts.min() > 0  # every row gets drawn


def test_agop_update_uses_the_subsample():
    rng = np.random.default_rng(1)
    X, coef = rng.normal(size=(80, 3)), rng.normal(size=(80, 1))
    k = agop.Gaussian(2.0)
    f = KernelMachine.build(k, X, coef)
    up = AGOPUpdate(agop_max_points=20, random_state=3, normalize="mean")
    pts = up.points(X, 2)
    np.testing.assert_allclose(up(f, X, None, iteration=2), agop.agop(k, pts, X, coef),
                               rtol=1e-12)
    explicit = AGOPUpdate(agop_points=X[:5], normalize="mean")
    np.testing.assert_allclose(explicit(f, X, None), agop.agop(k, X[:5], X, coef), rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"power": -1}, ValueError),
        ({"normalize": "sum"}, ValueError),
        ({"centering": "yes"}, ValueError),
        ({"diag": "no"}, TypeError),
        ({"agop_max_points": 0}, ValueError),
        ({"agop_points": [[1.0]]}, TypeError),
    ],
)
def test_agop_update_rejects_bad_settings(kwargs, err):
    with pytest.raises(err):
        AGOPUpdate(**kwargs)
