"""Bad input gets a clear TypeError/ValueError naming the argument; edge cases work."""

from __future__ import annotations

import numpy as np
import pytest

import agop

K = agop.Laplace(1.0)


@pytest.fixture
def data(rng):
    X = rng.normal(size=(5, 3))
    return X, rng.normal(size=(4, 3)), rng.normal(size=(4, 2))


@pytest.mark.parametrize("arg", ["X", "Z", "coef", "M"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_the_argument(data, arg, bad):
    X, Z, coef = data
    args = {"X": X.copy(), "Z": Z.copy(), "coef": coef.copy(), "M": np.eye(3)}
    args[arg][0, 0] = bad
    name = "centers" if arg == "Z" else arg
    with pytest.raises(ValueError, match=rf"^{name} contains"):
        agop.agop(K, args["X"], args["Z"], args["coef"], args["M"])
    if arg != "coef":
        with pytest.raises(ValueError, match=rf"^{arg} contains"):
            agop.kernel_matrix(K, args["X"], args["Z"], args["M"])


def test_non_finite_diagonal_M(data):
    X, Z, coef = data
    with pytest.raises(ValueError, match="^M contains 1 NaN"):
        agop.kernel_mv(K, X, Z, coef, np.array([1.0, np.nan, 1.0]))


def test_mismatched_feature_dimensions(data):
    X, Z, coef = data
    with pytest.raises(ValueError, match="X has 3 features but centers has 2"):
        agop.agop(K, X, Z[:, :2], coef)
    with pytest.raises(ValueError, match="coef has 3 rows but Z has 4"):
        agop.kernel_mv(K, X, Z, coef[:3])


@pytest.mark.parametrize(
    "M,msg",
    [
        (np.eye(4), r"3 x 3 matrix"),
        (np.ones(4), "length d = 3"),
        (np.ones((3, 3, 1)), "1-D or 2-D"),
        (np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "symmetric"),
        (np.diag([1.0, -1.0, 1.0]), "positive semi-definite"),
        (np.array([1.0, -0.1, 1.0]), "non-negative"),
    ],
)
def test_bad_M(data, M, msg):
    X, Z, coef = data
    with pytest.raises(ValueError, match=msg):
        agop.agop(K, X, Z, coef, M)


def test_M_round_off_asymmetry_and_tiny_negative_eigenvalues_are_accepted(data):
    X, Z, coef = data
    B = np.random.default_rng(0).normal(size=(3, 2))
    M = B @ B.T  # rank 2: one eigenvalue is round-off around 0
    M[0, 1] += 1e-15
    agop.agop(K, X, Z, coef, M)


@pytest.mark.parametrize(
    "bad,exc,msg",
    [
        ("abc", TypeError, "string"),
        ([["a", "b", "c"]], TypeError, "strings are never converted"),
        (np.array([["1", "2", "3"]]), TypeError, "real numeric"),
        (np.ones((2, 3), dtype=object), TypeError, "real numeric"),
        (np.ones((2, 3), dtype=np.complex128), TypeError, "real numeric"),
        (np.ones((2, 3), dtype=np.float16), TypeError, "float32 or float64"),
        ({"a": 1}, TypeError, "must be an array"),
        (None, TypeError, "required"),
        (np.ones(3), ValueError, "reshape"),
        (np.ones((2, 3, 1)), ValueError, "2-D"),
        (np.ones((0, 3)), ValueError, "empty"),
        (np.ones((2, 0)), ValueError, "empty"),
        ([[1.0, 2.0], [3.0]], ValueError, "rectangular"),
    ],
)
def test_bad_X(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        agop.kernel_matrix(K, bad, np.ones((2, 3)))


def test_empty_coef_and_centers():
    with pytest.raises(ValueError, match="coef is empty"):
        agop.agop(K, np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 0)))
    with pytest.raises(ValueError, match="centers is empty"):
        agop.agop(K, np.ones((2, 3)), np.ones((0, 3)), np.ones((0, 1)))


def test_integer_and_bool_input_are_converted(data):
    X, Z, coef = data
    Xi = np.arange(15).reshape(5, 3)
    A = agop.agop(K, Xi, Xi, np.ones(5, dtype=np.int32))
    assert A.dtype == np.float64
    np.testing.assert_array_equal(A, agop.agop(K, Xi.astype(float), Xi.astype(float), np.ones(5)))
    assert agop.kernel_matrix(K, X > 0, Z > 0).dtype == np.float64
    # lists are read as NumPy arrays
    np.testing.assert_array_equal(agop.kernel_matrix(K, X.tolist(), Z), agop.kernel_matrix(K, X, Z))


def test_integer_torch_input_becomes_the_torch_default_float():
    torch = pytest.importorskip("torch")
    Xi = torch.arange(6).reshape(3, 2)
    assert agop.kernel_matrix(K, Xi, Xi).dtype == torch.get_default_dtype()


def test_dtypes_are_kept_and_promoted(data):
    X, Z, coef = data
    X32, Z32, c32 = X.astype(np.float32), Z.astype(np.float32), coef.astype(np.float32)
    assert agop.agop(K, X32, Z32, c32).dtype == np.float32
    assert agop.predictor_grads(K, X32, Z32, c32, np.ones(3)).dtype == np.float32
    assert agop.kernel_mv(K, X32, Z32, coef).dtype == np.float64  # float32 with float64 -> float64


def test_mixed_namespaces_raise_type_error(data):
    torch = pytest.importorskip("torch")
    X, Z, coef = data
    with pytest.raises(TypeError, match="same array library"):
        agop.kernel_mv(K, torch.from_numpy(X), Z, coef)
    with pytest.raises(TypeError, match="same array library"):
        agop.agop(K, X, Z, coef, torch.eye(3, dtype=torch.float64))


def test_bad_options(data):
    X, Z, coef = data
    with pytest.raises(ValueError, match="centering must be one of"):
        agop.agop(K, X, Z, coef, centering="mean")
    with pytest.raises(ValueError, match="centering must be one of"):
        agop.agop(K, X, Z, coef, centering=True)
    with pytest.raises(TypeError, match="diag must be a bool"):
        agop.agop(K, X, Z, coef, diag=1)
    with pytest.raises(TypeError, match="kernel must be an agop kernel"):
        agop.kernel_matrix("laplace", X, Z)
    with pytest.raises(ValueError, match="unknown backend 'numba'"):
        agop.kernel_matrix(K, X, Z, backend="numba")
    with pytest.raises(TypeError, match="backend must be a string"):
        agop.kernel_matrix(K, X, Z, backend=None)


def test_with_check_finite_off_nan_propagates_instead_of_being_masked(data):
    X, Z, coef = data
    X = X.copy()
    X[0, 0] = np.nan
    with agop.config_context(check_finite=False):
        K = agop.kernel_matrix(agop.Laplace(1.0), X, Z)  # caller's responsibility now
    assert np.isnan(K[0]).all()
