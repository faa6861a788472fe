"""Kernel objects: validation, immutability, profiles, and the kernel property suite
(agop.testing.check_kernel) for every kernel x namespace x metric x dtype."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import agop
from agop.kernels import kernel_names, make_kernel
from agop.testing import check_kernel

ALL_KERNELS = [
    agop.Laplace(2.0),
    agop.Gaussian(1.5),
    agop.GeneralizedExponential(1.5, exponent=0.7),
    agop.GeneralizedExponential(1.0, exponent=2.0),
    agop.LpqLaplace(2.0, norm_p=1.5, exponent=1.0),
    agop.LpqLaplace(2.0, norm_p=2.0, exponent=1.5),
    agop.ProductLaplace(2.0),
    agop.ProductLaplace(2.0, exponent=0.5),
    agop.Quadratic(),
]


@pytest.mark.parametrize("kernel", ALL_KERNELS, ids=repr)
@pytest.mark.parametrize("metric", ["identity", "diag", "full"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_kernel(kernel, metric, dtype, xp):
    check_kernel(kernel, xp=xp, dtype=dtype, metric=metric, seed=3)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (agop.Laplace, {"bandwidth": 0.0}),
        (agop.Laplace, {"bandwidth": -1.0}),
        (agop.Gaussian, {"bandwidth": float("nan")}),
        (agop.Gaussian, {"bandwidth": float("inf")}),
        (agop.GeneralizedExponential, {"exponent": 0.0}),
        (agop.GeneralizedExponential, {"exponent": 2.5}),
        (agop.LpqLaplace, {"norm_p": 1.0, "exponent": 1.5}),
        (agop.LpqLaplace, {"norm_p": 3.0, "exponent": 1.0}),
        (agop.ProductLaplace, {"exponent": -1.0}),
        (agop.Laplace, {"bandwidth": 1e-310}),
    ],
)
def test_invalid_hyperparameters_raise_value_error(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)


@pytest.mark.parametrize("bad", ["10", None, True, [1.0]])
def test_non_numeric_bandwidth_raises_type_error(bad):
    with pytest.raises(TypeError, match="bandwidth"):
        agop.Laplace(bad)


def test_kernels_are_immutable_and_hashable():
    k = agop.Laplace(2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.bandwidth = 3.0
    assert k == agop.Laplace(2) and hash(k) == hash(agop.Laplace(2.0))
    k2 = k.replace(bandwidth=5.0)
    assert k2.bandwidth == 5.0 and k.bandwidth == 2.0


def test_profiles_match_formulas():
    r = np.array([0.0, 0.5, 2.0])
    L = 1.7
    np.testing.assert_allclose(agop.Laplace(L).profile(r), np.exp(-r / L))
    np.testing.assert_allclose(agop.Gaussian(L).profile(r), np.exp(-(r**2) / (2 * L**2)))
    np.testing.assert_allclose(
        agop.GeneralizedExponential(L, 0.5).profile(r), np.exp(-((r / L) ** 0.5))
    )
    np.testing.assert_allclose(agop.ProductLaplace(L).profile(r), np.exp(-r / L))
    # GeneralizedExponential(q=1) is the Laplace kernel; LpqLaplace(p=2) is GenExp(q)
    X = np.random.default_rng(0).normal(size=(6, 3))
    np.testing.assert_allclose(
        agop.GeneralizedExponential(L, 1.0)(X), agop.Laplace(L)(X), rtol=1e-12
    )
    np.testing.assert_allclose(
        agop.LpqLaplace(L, 2.0, 1.3)(X), agop.GeneralizedExponential(L, 1.3)(X), rtol=1e-12
    )


def test_product_laplace_is_a_product_over_coordinates():
    X = np.random.default_rng(1).normal(size=(5, 3))
    L = 1.3
    K = agop.ProductLaplace(L)(X)
    ref = np.prod(np.exp(-np.abs(X[:, None, :] - X[None, :, :]) / L), axis=-1)
    np.testing.assert_allclose(K, ref, rtol=1e-12)


def test_quadratic_kernel_formula():
    rng = np.random.default_rng(2)
    X, Z = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    B = rng.normal(size=(3, 3))
    M = B @ B.T
    np.testing.assert_allclose(agop.Quadratic()(X, Z, M), (X @ M @ Z.T) ** 2, rtol=1e-12)
    assert agop.Quadratic().value_at_zero() is None


def test_gaussian_convention_of_the_reference_code():
    # exp(-r^2 / (2 L^2)) with L = 2.5 is exp(-r^2 / 12.5) (grokking code, SPEC §1.2)
    x, z = np.zeros((1, 2)), np.array([[3.0, 4.0]])
    assert math.isclose(float(agop.Gaussian(2.5)(x, z)[0, 0]), math.exp(-25.0 / 12.5))


@pytest.mark.parametrize("name", kernel_names())
def test_make_kernel_round_trip(name):
    k = make_kernel(name)
    assert make_kernel(**k.to_dict()) == k


def test_make_kernel_errors():
    with pytest.raises(ValueError, match="unknown kernel"):
        make_kernel("cosine")
    with pytest.raises(ValueError, match="unexpected"):
        make_kernel("laplace", exponent=2.0)
    with pytest.raises(TypeError):
        make_kernel(3)
    assert make_kernel(agop.Laplace(1.0), bandwidth=4.0) == agop.Laplace(4.0)


def test_kernel_call_defaults_to_X_against_itself():
    X = np.random.default_rng(3).normal(size=(4, 2))
    np.testing.assert_array_equal(agop.Laplace(1.0)(X), agop.kernel_matrix(agop.Laplace(1.0), X, X))


def test_check_kernel_detects_a_wrong_gradient(monkeypatch):
    """The suite must be able to fail: break the Laplace gradient weight by 1 %."""
    original = agop.Laplace._w_from_sq
    monkeypatch.setattr(
        agop.Laplace, "_w_from_sq", lambda self, d2, k, xp: 1.01 * original(self, d2, k, xp)
    )
    with pytest.raises(AssertionError, match="finite differences"):
        check_kernel(agop.Laplace(2.0))


def test_check_kernel_detects_a_wrong_metric(monkeypatch):
    """A kernel that ignores M fails the factor identity."""
    original = agop._ops._prepare

    def ignore_M(X, Z, coef=None, M=None, **kw):
        return original(X, Z, coef, None, **kw)

    monkeypatch.setattr(agop._ops, "_prepare", ignore_M)
    with pytest.raises(AssertionError):
        check_kernel(agop.Gaussian(1.0), metric="full")


@pytest.mark.parametrize("L", [1e-200, 1e-30, 1e30, 1e200])
@pytest.mark.parametrize(
    "make",
    [
        agop.Laplace,
        agop.Gaussian,
        lambda L: agop.GeneralizedExponential(L, 2.0),
        lambda L: agop.GeneralizedExponential(L, 0.5),
        agop.ProductLaplace,
        lambda L: agop.LpqLaplace(L, 1.5, 1.5),
        lambda L: agop.LpqLaplace(L, 2.0, 2.0),
    ],
)
def test_extreme_bandwidths_saturate_without_nan(make, L):
    """Tiny bandwidths: K -> I and zero gradients; huge: K -> 1 and zero gradients."""
    rng = np.random.default_rng(0)
    X, coef = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    kernel = make(L)
    with np.errstate(all="ignore"):  # under/overflow inside exp is the expected saturation
        K = agop.kernel_matrix(kernel, X, X)
        A = agop.agop(kernel, X, X, coef)
    np.testing.assert_allclose(K, np.eye(6) if L < 1 else np.ones((6, 6)), atol=1e-4)
    assert np.all(np.isfinite(A)) and np.all(np.abs(A) < 1e-3)
