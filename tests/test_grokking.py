"""Grokking modular arithmetic: the data, the preset against a naive reference run, and
the reproductions of SPEC §6.3, §6.5 and §6.6."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import agop
from agop.datasets import (
    OPERATIONS,
    ModularData,
    discrete_log_order,
    modular_arithmetic,
    primitive_root,
)
from agop.grokking import (
    GrokkingRecorder,
    cross_block,
    fit_grokking,
    grokking_kernel,
    grokking_update,
    random_circulant_M,
)
from agop.measures import circulant_deviation
from agop.rfm import fit_feature_machine

# --- data ------------------------------------------------------------------------------

_NAIVE_OPS = {
    "+": lambda a, b, p: (a + b) % p,
    "-": lambda a, b, p: (a - b) % p,
    "*": lambda a, b, p: (a * b) % p,
    "/": lambda a, b, p: next(x for x in range(p) if (x * b) % p == a),
    "x^2+y": lambda a, b, p: (a * a + b) % p,
    "x^2+y^2": lambda a, b, p: (a * a + b * b) % p,
    "x^2+xy+y^2": lambda a, b, p: (a * a + a * b + b * b) % p,
    "x^2+xy+y^2+x": lambda a, b, p: (a * a + a * b + b * b + a) % p,
    "x^3+xy": lambda a, b, p: (a**3 + a * b) % p,
    "x^3+xy^2+x": lambda a, b, p: (a**3 + a * b * b + a) % p,
}


@pytest.mark.parametrize("op", sorted(_NAIVE_OPS))
def test_every_operation_against_python_arithmetic(op):
    p = 7
    data = modular_arithmetic(p, op, train_fraction=0.5, seed=1)
    N = p * (p - 1) if op == "/" else p * p
    assert data.n_train == int(0.5 * N) and data.n_train + data.n_test == N
    for X, Y, pairs in ((data.X_train, data.Y_train, data.pairs_train),
                        (data.X_test, data.Y_test, data.pairs_test)):
        assert X.dtype == np.float64 and X.shape == (len(pairs), 2 * p)
        assert Y.shape == (len(pairs), p)
        for x, y, (a, b) in zip(X, Y, pairs, strict=True):
            want_x = np.zeros(2 * p)
            want_x[a] = want_x[p + b] = 1.0
            assert np.array_equal(x, want_x)
            assert np.array_equal(y, np.eye(p)[_NAIVE_OPS[op](int(a), int(b), p)])
    assert set(OPERATIONS) == set(_NAIVE_OPS)


def test_aliases_callables_and_unpacking():
    a = modular_arithmetic(5, "x+y", seed=3)
    b = modular_arithmetic(5, lambda x, y, p: x + y, seed=3)
    assert a.op == "+"
    for u, v in zip(a, b, strict=True):
        assert np.array_equal(u, v)
    X_tr, Y_tr, X_te, Y_te = a
    assert X_tr is a.X_train and Y_te is a.Y_test


def test_random_split_is_a_seeded_partition():
    d1 = modular_arithmetic(11, "+", train_fraction=0.3, seed=4)
    d2 = modular_arithmetic(11, "+", train_fraction=0.3, seed=4)
    d3 = modular_arithmetic(11, "+", train_fraction=0.3, seed=5)
    assert np.array_equal(d1.train_index, d2.train_index)
    assert not np.array_equal(d1.train_index, d3.train_index)
    assert d1.n_train == int(0.3 * 121)
    both = np.concatenate([d1.train_index, d1.test_index])
    assert np.array_equal(np.sort(both), np.arange(121))
    assert np.array_equal(modular_arithmetic(11, "+", 1.0).test_index, np.array([], int))


def test_symmetric_split_trains_off_the_diagonal():
    d = modular_arithmetic(7, "+", split="symmetric")
    assert (d.pairs_train[:, 0] != d.pairs_train[:, 1]).all()
    assert (d.pairs_test[:, 0] == d.pairs_test[:, 1]).all()
    assert d.n_train == 42 and d.n_test == 7 and d.split == "symmetric"
    # swap-invariant: (a, b) in Train <=> (b, a) in Train
    train = {tuple(ab) for ab in d.pairs_train.tolist()}
    assert all((b, a) in train for a, b in train)


def test_predicate_mask_and_index_splits_agree():
    p = 7
    by_pred = modular_arithmetic(p, "*", split=lambda a, b: (a + 2 * b) % 3 != 0)
    pairs = by_pred.pairs
    mask = (pairs[:, 0] + 2 * pairs[:, 1]) % 3 != 0
    by_mask = modular_arithmetic(p, "*", split=mask)
    by_index = modular_arithmetic(p, "*", split=np.flatnonzero(mask))
    for d in (by_mask, by_index):
        assert np.array_equal(d.train_index, by_pred.train_index)
        assert np.array_equal(d.X_test, by_pred.X_test)
    assert np.array_equal(pairs[:, 0] * p + pairs[:, 1], np.arange(p * p))  # row-major


@pytest.mark.parametrize("kwargs, err, match", [
    ({"p": 6, "op": "/"}, ValueError, "prime"),
    ({"p": 1}, ValueError, "p must be"),
    ({"p": 5, "op": "^"}, ValueError, "unknown operation"),
    ({"p": 5, "op": 3}, TypeError, "op must be"),
    ({"p": 5, "train_fraction": 0.0}, ValueError, "train_fraction"),
    ({"p": 5, "train_fraction": 1.5}, ValueError, "train_fraction"),
    ({"p": 5, "train_fraction": 0.01}, ValueError, "no training pair"),
    ({"p": 5, "split": "mirror"}, ValueError, "split must be"),
    ({"p": 5, "split": [1, 1]}, ValueError, "duplicates"),
    ({"p": 5, "split": [0, 25]}, ValueError, "lie in"),
    ({"p": 5, "split": np.ones(3, bool)}, ValueError, "shape"),
    ({"p": 5, "split": lambda a, b: a}, ValueError, "bool array"),
    ({"p": 5, "split": [0.5]}, TypeError, "index array"),
])
def test_bad_arguments_say_what_is_accepted(kwargs, err, match):
    with pytest.raises(err, match=match):
        modular_arithmetic(**kwargs)


@pytest.mark.parametrize("p", [2, 3, 5, 7, 11, 13, 31, 59, 61])
def test_discrete_log_order_against_brute_force(p):
    g = primitive_root(p)
    gens = [h for h in range(1, p) if len({pow(h, k, p) for k in range(p - 1)}) == p - 1]
    assert g == min(gens)
    order = discrete_log_order(p)
    assert order[0] == 0 and sorted(order.tolist()) == list(range(p))
    assert all(order[k + 1] == (g * order[k]) % p for k in range(1, p - 1))
    # in log coordinates multiplication is addition mod p - 1
    pos = np.argsort(order)
    for a in range(1, p):
        for b in range(1, p):
            assert (pos[a] - 1 + pos[b] - 1) % (p - 1) == pos[(a * b) % p] - 1
    with pytest.raises(ValueError, match="prime"):
        discrete_log_order(p * 4)


# --- the preset against a naive run of the reference algorithm ---------------------------


def naive_grokking(X, Y, X_test, iters, L=2.5):
    """The reference code of Mallinar et al. written out in NumPy (SPEC §6.2): Gaussian
    exp(-d_M^2 / (2 L^2)), np.linalg.solve ridgeless, per-output centered gradients,
    M = sqrtm(mean of G^T G)."""
    d = X.shape[1]
    M = np.eye(d)
    out = []
    for _ in range(iters + 1):
        def kern(A, B, M=M):
            d2 = (np.sum(A @ M * A, 1)[:, None] + np.sum(B @ M * B, 1)[None, :]
                  - 2 * A @ M @ B.T)
            return np.exp(-np.clip(d2, 0, None) / (2 * L**2))

        K = kern(X, X)
        sol = np.linalg.solve(K, Y)
        out.append((M, kern(X_test, X) @ sol))
        n, c = sol.shape
        step1 = (sol[:, :, None] * (X @ M)[:, None, :]).reshape(n, c * d)
        step2 = (K.T @ step1).reshape(n, c, d)
        step3 = (K.T @ sol)[:, :, None] * (X @ M)[:, None, :]
        G = (step2 - step3) * (-1 / L**2)
        G = G - G.mean(0)
        A = np.einsum("ncd,ncD->dD", G, G) / n
        M = np.real(scipy.linalg.sqrtm(A))
        M = (M + M.T) / 2
    return out


def test_preset_matches_the_naive_reference_run():
    data = modular_arithmetic(7, "+", train_fraction=0.6, seed=0)
    ref = naive_grokking(data.X_train, data.Y_train, data.X_test, iters=3)
    res = fit_grokking(data, iters=3)
    assert len(res.history) == 4
    for t, (M_ref, P_ref) in enumerate(ref):
        assert np.allclose(res.Ms[t], M_ref, rtol=1e-6, atol=1e-8), t
        rec = res.history[t]
        assert rec["test_mse"] == pytest.approx(np.mean((P_ref - data.Y_test) ** 2), rel=1e-6)
        assert rec["test_accuracy"] == np.mean(P_ref.argmax(1) == data.y_test)
        assert rec["train_accuracy"] == 1.0
    assert np.allclose(res.M, ref[-1][0], rtol=1e-6, atol=1e-8)


def test_preset_settings_and_the_recorder_on_the_loop():
    u = grokking_update()
    assert (u.power, u.normalize, u.centering, u.agop_max_points) == (
        0.5, "mean", "per_output", None)
    assert grokking_kernel() == agop.Gaussian(2.5)
    assert grokking_kernel("quadratic") == agop.Quadratic()
    with pytest.raises(ValueError, match="gaussian"):
        grokking_kernel("laplace")
    data = modular_arithmetic(11, "+", seed=0)
    # the recorder is an ordinary callback of the one loop
    rec = GrokkingRecorder(data)
    res = fit_feature_machine(data.X_train, data.Y_train, grokking_kernel(), u, iters=2,
                              reg=0.0, solver="direct", callbacks=[rec])
    rec.finish()
    assert [h["iteration"] for h in rec.history] == [0, 1, 2]
    assert rec.history[0] is res.history[0]
    assert np.isnan(rec.history[0]["circulant_deviation"])  # M_0 = I: zero block
    assert rec.history[-1]["alignment"] == pytest.approx(1.0)
    P = res.machine.predict(data.X_test)
    assert rec.history[-1]["test_mse"] == pytest.approx(np.mean((P - data.Y_test) ** 2))
    # a diagonal M_0 is recorded as the matrix it stands for
    rec_d = GrokkingRecorder(data)
    fit_feature_machine(data.X_train, data.Y_train, grokking_kernel(), u, iters=1, reg=0.0,
                        solver="direct", M0=np.ones(22), callbacks=[rec_d])
    np.testing.assert_array_equal(rec_d.Ms[0], np.eye(22))
    with pytest.raises(TypeError, match="ModularData"):
        fit_grokking((data.X_train, data.Y_train))
    with pytest.raises(ValueError, match="no measure"):
        fit_grokking(data, iters=0).curve("loss")


def test_cross_block_and_random_circulant_structure():
    p = 13
    for op, hank in (("+", False), ("-", True), ("*", False), ("/", True)):
        M = random_circulant_M(p, op, seed=2)
        assert M.shape == (2 * p, 2 * p) and np.allclose(M, M.T)
        assert np.linalg.eigvalsh(M).min() > -1e-10
        # M^2 is M* with its negative eigenvalues clipped: a spectral function of M*,
        # which keeps the (log-order) circulant / Hankel structure of its blocks
        assert circulant_deviation(cross_block(M, p, op), hankel=hank) < 1e-20
        assert circulant_deviation(cross_block(M, p, op), hankel=not hank) > 0.1
    assert cross_block(random_circulant_M(p, "*"), p, "*").shape == (p - 1, p - 1)
    with pytest.raises(ValueError, match="op must be"):
        random_circulant_M(p, "^")
    with pytest.raises(ValueError, match=r"\(26, 26\)"):
        cross_block(np.eye(5), p)


# --- reproductions ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def p61():
    """SPEC §6.5: p = 61, x + y, r = 0.5, seed 0, 25 updates (~1 s each on 2 cores)."""
    return fit_grokking(modular_arithmetic(61, "+", train_fraction=0.5, seed=0), iters=25)


@pytest.mark.slow
def test_p61_addition_groks_like_the_independent_run(p61):
    acc = p61.curve("test_accuracy")
    assert len(acc) == 26
    assert (p61.curve("train_accuracy") == 1.0).all()
    assert acc[:9].max() <= 0.05  # flat through iteration 8
    assert acc[18] >= 0.9 and acc[25] >= 0.99
    # SPEC §6.5 (an independent NumPy run): 0.075 at 11, 0.897 at 15, 0.991 at 18
    assert acc[11] == pytest.approx(0.075, abs=0.03)
    assert acc[15] == pytest.approx(0.897, abs=0.03)
    assert acc[18] == pytest.approx(0.991, abs=0.01)
    mse = p61.curve("test_mse")
    assert mse[0] == pytest.approx(0.01781, abs=2e-4)
    assert mse[20] == pytest.approx(0.01080, abs=3e-4)


@pytest.mark.slow
def test_p61_progress_measures_are_gradual(p61):
    rho = p61.curve("alignment")
    assert (np.diff(rho) > 0).all() and rho[-1] == pytest.approx(1.0)
    assert rho[0] == pytest.approx(0.754, abs=0.02)  # SPEC §6.5: 0.754 at 0, 0.856 at 8
    assert rho[8] == pytest.approx(0.856, abs=0.03)
    dev = p61.curve("circulant_deviation")
    assert np.isnan(dev[0]) and dev[-1] <= 0.05
    assert dev[8] == pytest.approx(0.143, abs=0.03)  # already falling before the jump
    # the hankel (right-shift) reading of the same block stays near 1 (SPEC §6.4)
    assert circulant_deviation(cross_block(p61.M, 61), hankel=True) > 0.9


@pytest.mark.slow
def test_symmetric_split_does_not_generalize_random_split_does():
    """SPEC §6.6: p = 31, train a != b: test accuracy stays <= 0.1 for 30 iterations,
    while the random split of the same p reaches >= 0.8."""
    sym = fit_grokking(modular_arithmetic(31, "+", split="symmetric"), iters=30)
    assert sym.curve("test_accuracy").max() <= 0.1
    assert sym.curve("test_mse")[-1] == pytest.approx(1 / 32, rel=0.01)
    # the cross block is a symmetric circulant: swap-equivariance forces C = C^T
    C = cross_block(sym.M, 31)
    assert circulant_deviation(C) < 1e-3
    assert np.allclose(C, C.T, atol=1e-8 * np.abs(C).max())
    rnd = fit_grokking(modular_arithmetic(31, "+", train_fraction=0.5, seed=0), iters=30)
    assert rnd.curve("test_accuracy").max() >= 0.8


def test_random_circulant_features_learn_without_iterating():
    """SPEC §6.3: a kernel machine with M = (M*)^{1/2} from a random circulant, no RFM
    update, generalizes (with M = I it does not: iteration 0 of the p = 61 run)."""
    data = modular_arithmetic(61, "+", train_fraction=0.5, seed=0)
    circ = fit_grokking(data, iters=0, M0=random_circulant_M(61, "+", seed=0))
    assert circ.curve("test_accuracy")[0] >= 0.9
    assert circ.curve("train_accuracy")[0] == 1.0


@pytest.mark.slow
def test_quadratic_kernel_groks_addition():
    res = fit_grokking(modular_arithmetic(61, "+", train_fraction=0.5, seed=0),
                       kernel="quadratic", iters=20)
    acc = res.curve("test_accuracy")
    assert (res.curve("train_accuracy") == 1.0).all()
    assert acc[:6].max() <= 0.05 and acc[-1] >= 0.99
    assert res.curve("circulant_deviation")[-1] <= 0.05


def test_modular_data_type_is_exported():
    assert isinstance(modular_arithmetic(3), ModularData)
