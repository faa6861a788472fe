"""Progress measures of grokking: circulant deviation and alignment (SPEC Part A #8, §6.4)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import circulant, hankel

from agop.measures import alignment, circulant_deviation


def naive_circulant_deviation(A, hankel=False):
    """SPEC §6.4 written out: roll row l by -l (left) or +l (right), sum of column
    variances (sums, not averages) over ||A||_F^2."""
    A = np.asarray(A, dtype=float)
    S = np.array([np.roll(A[l], l if hankel else -l) for l in range(A.shape[0])])
    var = sum(((S[:, j] - S[:, j].mean()) ** 2).sum() for j in range(A.shape[1]))
    return var / (A**2).sum()


def cyclic_hankel(c):
    c = np.asarray(c, dtype=float)
    p = c.shape[0]
    return np.array([[c[(i + j) % p] for j in range(p)] for i in range(p)])


@pytest.mark.parametrize("p", [1, 2, 5, 61])
def test_exact_circulant_scores_zero_and_its_transpose_too(p, rng):
    C = circulant(rng.normal(size=p))
    assert circulant_deviation(C) == pytest.approx(0.0, abs=1e-14)
    assert circulant_deviation(C.T) == pytest.approx(0.0, abs=1e-14)
    H = cyclic_hankel(rng.normal(size=p))
    assert circulant_deviation(H, hankel=True) == pytest.approx(0.0, abs=1e-14)
    # scipy's hankel(c, r) with r = roll(c, 1) is the same cyclic Hankel matrix
    c = rng.normal(size=p)
    assert np.allclose(hankel(c, np.roll(c, 1)), cyclic_hankel(c))


def test_the_wrong_shift_does_not_zero_a_generic_block(rng):
    c = rng.normal(size=31)
    assert circulant_deviation(circulant(c), hankel=True) > 0.5
    assert circulant_deviation(cyclic_hankel(c)) > 0.5


@pytest.mark.parametrize("hank", [False, True])
@pytest.mark.parametrize("p", [3, 8, 31])
def test_random_matrix_against_the_naive_formula(p, hank, rng):
    A = rng.normal(size=(p, p))
    assert circulant_deviation(A, hankel=hank) == pytest.approx(
        naive_circulant_deviation(A, hank), rel=1e-12)


def test_random_matrix_deviation_is_about_one_minus_one_over_p(rng):
    # iid entries: each column of S(A) is p iid draws, E[sum of squared deviations]
    # = (p - 1) sigma^2 per column, against E||A||^2 = p^2 sigma^2
    p = 61
    vals = [circulant_deviation(rng.normal(size=(p, p))) for _ in range(5)]
    assert np.mean(vals) == pytest.approx(1 - 1 / p, abs=0.02)


def test_deviation_is_scale_free_bounded_and_grows_with_noise(rng):
    C = circulant(rng.normal(size=21))
    N = rng.normal(size=C.shape)
    prev = 0.0
    for eps in (0.01, 0.1, 1.0):
        d = circulant_deviation(C + eps * N)
        assert prev < d <= 1.0
        assert circulant_deviation(-7.0 * (C + eps * N)) == pytest.approx(d, rel=1e-12)
        prev = d


def test_deviation_in_every_namespace(xp, rng):
    A = rng.normal(size=(9, 9))
    want = naive_circulant_deviation(A)
    got = circulant_deviation(xp.asarray(A))
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-12)
    got32 = circulant_deviation(xp.asarray(A.astype(np.float32)))
    assert got32 == pytest.approx(want, rel=1e-5)


def test_deviation_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        circulant_deviation(np.ones((3, 4)))
    with pytest.raises(ValueError, match="2-D"):
        circulant_deviation(np.ones(3))
    with pytest.raises(TypeError, match="hankel"):
        circulant_deviation(np.eye(3), hankel="yes")
    assert np.isnan(circulant_deviation(np.zeros((4, 4))))


def test_alignment_against_the_naive_cosine(rng):
    A, B = rng.normal(size=(2, 12, 12))
    want = np.sum(A * B) / np.sqrt(np.sum(A * A) * np.sum(B * B))
    assert alignment(A, B) == pytest.approx(want, rel=1e-12)
    assert alignment(A, B) == pytest.approx(alignment(B, A), rel=1e-15)
    assert alignment(A, 3.5 * A) == pytest.approx(1.0)
    assert alignment(A, -0.5 * A) == pytest.approx(-1.0)
    # uncentered: the entries are not shifted by their mean first
    J = np.ones((4, 4))
    assert alignment(np.eye(4), np.eye(4) + J) == pytest.approx(
        8 / (2 * np.sqrt(4 * 4 + 12)), rel=1e-12)


def test_alignment_in_every_namespace(xp, rng):
    A, B = rng.normal(size=(2, 6, 6))
    want = np.sum(A * B) / np.sqrt(np.sum(A * A) * np.sum(B * B))
    got = alignment(xp.asarray(A), xp.asarray(B))
    assert isinstance(got, float) and got == pytest.approx(want, rel=1e-12)


def test_alignment_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        alignment(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="zero matrix"):
        alignment(np.eye(3), np.zeros((3, 3)))
