"""Hypothesis strategies: kernels, shapes, feature matrices and data with duplicates."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import agop

bandwidths = st.floats(0.3, 5.0)
exponents = st.floats(0.3, 2.0)


@st.composite
def lpq_kernels(draw):
    p = draw(st.floats(0.5, 2.0))
    q = draw(st.floats(0.3, 1.0)) * p
    return agop.LpqLaplace(draw(bandwidths), norm_p=p, exponent=q)


kernels = st.one_of(
    st.builds(agop.Laplace, bandwidths),
    st.builds(agop.Gaussian, bandwidths),
    st.builds(agop.GeneralizedExponential, bandwidths, exponents),
    st.builds(agop.ProductLaplace, bandwidths, st.sampled_from([1.0, 0.5, 1.5])),
    lpq_kernels(),
    st.just(agop.Quadratic()),
)

radial_kernels = st.one_of(
    st.builds(agop.Laplace, bandwidths),
    st.builds(agop.Gaussian, bandwidths),
    st.builds(agop.GeneralizedExponential, bandwidths, exponents),
)

metrics = st.sampled_from(["identity", "diag", "full", "lowrank"])


def make_M(kind, d, rng):
    if kind == "identity":
        return None
    if kind == "diag":
        m = rng.uniform(0.1, 2.0, size=d)
        m[rng.random(d) < 0.2] = 0.0  # some features switched off
        return m
    r = d if kind == "full" else max(1, d // 2)
    B = rng.normal(size=(d, r)) / np.sqrt(d)
    return B @ B.T + (0.05 * np.eye(d) if kind == "full" else 0.0)


@st.composite
def problems(draw, max_n=9, max_d=5, max_c=3):
    """A kernel-machine problem: eval points X, centers Z (sharing rows with X at
    random, duplicates included), coef and M."""
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    c = draw(st.integers(1, max_c))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if draw(st.booleans()):
        Z = X.copy() if m == n else rng.normal(size=(m, d))
    else:
        Z = rng.normal(size=(m, d))
    if draw(st.booleans()):  # duplicated points: a center equal to an eval point, repeats
        Z[rng.integers(m)] = X[rng.integers(n)]
        X[rng.integers(n)] = X[rng.integers(n)]
    coef = rng.normal(size=(m, c))
    M = make_M(draw(metrics), d, rng)
    return X, Z, coef, M


def min_distinct_gap(X, Z):
    """Smallest non-zero Euclidean distance between a row of X and a row of Z."""
    D = np.sqrt(((X[:, None, :] - Z[None, :, :]) ** 2).sum(-1))
    D = D[D > 1e-12]
    return float(D.min()) if D.size else np.inf
