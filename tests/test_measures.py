"""Matrix correlations on matrices whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agop.measures import cosine, pearson


def _np_pearson(A, B):
    return float(np.corrcoef(np.ravel(A), np.ravel(B))[0, 1])


def test_identity_and_scaling():
    I5 = np.eye(5)
    assert pearson(I5, I5) == pytest.approx(1.0, abs=1e-15)
    assert cosine(I5, I5) == pytest.approx(1.0, abs=1e-15)
    A = np.random.default_rng(0).normal(size=(4, 4))
    # Pearson ignores a shift and a positive scale; cosine only the scale
    assert pearson(A, 2.5 * A + 7.0) == pytest.approx(1.0, abs=1e-12)
    assert cosine(A, 2.5 * A) == pytest.approx(1.0, abs=1e-12)
    assert cosine(A, A + 7.0) < 0.99


def test_negated():
    A = np.random.default_rng(1).normal(size=(6, 6))
    assert pearson(A, -A) == pytest.approx(-1.0, abs=1e-12)
    assert cosine(A, -A) == pytest.approx(-1.0, abs=1e-12)


def test_rank_one():
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=5), rng.normal(size=5)
    A, B = np.outer(u, u), np.outer(v, v)
    # <uu^T, vv^T> = (u.v)^2, |uu^T|_F = |u|^2
    assert cosine(A, B) == pytest.approx((u @ v) ** 2 / ((u @ u) * (v @ v)), rel=1e-12)
    assert pearson(A, B) == pytest.approx(_np_pearson(A, B), rel=1e-12)
    # identity against the all-ones matrix: cosine d / (sqrt(d) d); Pearson of a constant
    assert cosine(np.eye(4), np.ones((4, 4))) == pytest.approx(0.5, abs=1e-15)
    assert math.isnan(pearson(np.eye(4), np.ones((4, 4))))
    assert math.isnan(cosine(np.zeros((3, 3)), np.eye(3)))
    # identity vs a rank-one projector e1 e1^T: entries (1,1) shared, centered by hand
    P = np.zeros((3, 3))
    P[0, 0] = 1.0
    a, b = np.eye(3).ravel() - 1 / 3, P.ravel() - 1 / 9
    assert pearson(np.eye(3), P) == pytest.approx(a @ b / np.sqrt((a @ a) * (b @ b)), rel=1e-12)


def test_permuted():
    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    perm = rng.permutation(5)
    # the same permutation of rows and columns of both matrices changes nothing
    for rho in (pearson, cosine):
        assert rho(A[perm][:, perm], B[perm][:, perm]) == pytest.approx(rho(A, B), rel=1e-12)
    # a permutation of one of them is a different matrix
    S = A + A.T
    Sp = S[perm][:, perm]
    assert pearson(S, Sp) == pytest.approx(_np_pearson(S, Sp), rel=1e-12)
    assert pearson(S, Sp) < 0.999


def test_array_libraries_and_errors(xp):
    rng = np.random.default_rng(4)
    A, B = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    assert pearson(xp.asarray(A), xp.asarray(B)) == pytest.approx(_np_pearson(A, B), rel=1e-10)
    c = float(np.sum(A * B) / np.linalg.norm(A) / np.linalg.norm(B))
    assert cosine(xp.asarray(A), xp.asarray(B)) == pytest.approx(c, rel=1e-10)
    assert isinstance(pearson(xp.asarray(A), xp.asarray(B)), float)
    with pytest.raises(ValueError, match="one shape"):
        pearson(xp.asarray(A), xp.asarray(B[:3]))
    with pytest.raises(ValueError, match="non-empty"):
        cosine(xp.asarray(A[:0]), xp.asarray(B[:0]))
