"""solve_ridge: agrees with a dense solve, ridgeless interpolation, jitter policy,
clear error, namespaces kept."""

from __future__ import annotations

import numpy as np
import pytest

import agop
from agop.solvers import SingularSystemError
from agop.testing import assert_close


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
