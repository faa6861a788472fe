"""The feature-learning loop: published numbers, equivariance, iterate selection."""

from __future__ import annotations

import numpy as np
import pytest

import agop
from agop.datasets import low_rank
from agop.rfm import fit_feature_machine, score
from agop.testing import to_numpy
from agop.updates import AGOPUpdate


def test_low_rank_target_of_the_rfm_paper():
    """SPEC §12: 0.0123-0.0134 at iteration 0 to <= 0.0025 after 5 updates; {0, 1, 5}."""
    X, y = low_rank(8000, 20, random_state=0)
    res = fit_feature_machine(
        X[:4000], y[:4000], agop.Laplace(10.0), AGOPUpdate(), iters=5, reg=1e-3,
        X_val=X[4000:], Y_val=y[4000:], early_stop_tol=None, return_best=False,
    )
    mse = [h["val_metric"] for h in res.history]
    assert len(mse) == 6
    assert 0.010 < mse[0] < 0.015
    assert mse[-1] <= 0.0025
    assert all(b < a for a, b in zip(mse, mse[1:], strict=False))  # improves every update
    top = np.argsort(-np.diag(res.M))[:3]
    assert sorted(top.tolist()) == [0, 1, 5]
    rest = np.sort(np.diag(res.M))[:-3]
    assert rest.max() < 0.05 * np.diag(res.M)[top].min()


def _rotation(d, seed):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return Q


@pytest.mark.parametrize("kernel", [agop.Laplace(3.0), agop.Gaussian(2.0),
                                    agop.GeneralizedExponential(2.5, exponent=1.3)])
def test_rotation_equivariance(kernel):
    """x -> R x maps every iterate M to R M R^T and leaves predictions unchanged."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 5))
    y = np.tanh(X[:, 0] - X[:, 1]) + 0.1 * X[:, 2] ** 2
    Xv = rng.normal(size=(40, 5))
    R = _rotation(5, 1)
    kw = dict(iters=3, update=AGOPUpdate(normalize="fro"), keep_M=True, solver="direct")
    a = fit_feature_machine(X, y, kernel, **kw)
    b = fit_feature_machine(X @ R.T, y, kernel, **kw)
    for ha, hb in zip(a.history[1:], b.history[1:], strict=True):
        np.testing.assert_allclose(hb["M"], R @ ha["M"] @ R.T, atol=1e-8)
    np.testing.assert_allclose(b.machine.predict(Xv @ R.T), a.machine.predict(Xv), atol=1e-8)
    # "max" normalization is not rotation invariant: the maps differ in scale
    c = fit_feature_machine(X, y, kernel, iters=1, update=AGOPUpdate(normalize="max"))
    d = fit_feature_machine(X @ R.T, y, kernel, iters=1, update=AGOPUpdate(normalize="max"))
    assert not np.allclose(d.M, R @ c.M @ R.T, atol=1e-6)


def test_best_iterate_and_early_stopping():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 8))
    y = rng.normal(size=200)  # pure noise: feature learning overfits
    Xv, yv = rng.normal(size=(100, 8)), rng.normal(size=100)
    res = fit_feature_machine(X, y, agop.Laplace(2.0), iters=8, X_val=Xv, Y_val=yv,
                              early_stop_tol=1.01)
    vals = [h["val_metric"] for h in res.history]
    assert res.best_iter == int(np.argmin(vals))
    assert res.history[res.best_iter]["val_metric"] == min(vals)
    if res.stopped_early:
        assert vals[-1] > 1.01 * min(vals[:-1]) and res.n_iter < 8
    # the returned machine is that iterate: its validation score is the best one
    np.testing.assert_allclose(score("mse", yv[:, None], res.machine.predict(Xv)), min(vals))
    # without validation data: the last iterate
    res2 = fit_feature_machine(X, y, agop.Laplace(2.0), iters=3)
    assert res2.best_iter == res2.n_iter == 3 and res2.history[-1]["val_metric"] is None
    # never stop early
    res3 = fit_feature_machine(X, y, agop.Laplace(2.0), iters=4, X_val=Xv, Y_val=yv,
                               early_stop_tol=None, return_best=False)
    assert res3.n_iter == 4 and res3.best_iter == 4


def test_callbacks_history_and_iters_zero():
    X, y = low_rank(300, 8, random_state=1)
    seen = []

    def cb(record, machine):
        seen.append((record["iteration"], machine.coef.shape))
        return record["iteration"] == 1  # stop after iteration 1

    res = fit_feature_machine(X, y, agop.Laplace(5.0), iters=5, callbacks=[cb])
    assert seen == [(0, (300, 1)), (1, (300, 1))]
    assert res.n_iter == 1 and res.stopped_early
    h = res.history[0]
    assert set(h) >= {"iteration", "metric", "train_metric", "val_metric", "seconds", "solver"}
    assert h["seconds"] > 0 and h["metric"] == "mse"
    r0 = fit_feature_machine(X, y, agop.Laplace(5.0), iters=0)
    assert r0.M is None and len(r0.history) == 1  # one plain kernel machine, M = I
    rd = fit_feature_machine(X, y, agop.Laplace(5.0), AGOPUpdate(diag=True), iters=2)
    assert rd.M.shape == (8,)


def test_train_metric_is_the_training_fit():
    X, y = low_rank(200, 8, random_state=2)
    res = fit_feature_machine(X, y, agop.Laplace(5.0), iters=1, reg=1e-2)
    pred = res.machine.predict(X)
    np.testing.assert_allclose(res.history[-1]["train_metric"],
                               np.mean((pred[:, 0] - y) ** 2), rtol=1e-6)


def test_accuracy_metric_and_multioutput():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    Y = np.eye(3)[(X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)]
    res = fit_feature_machine(X, Y, agop.Laplace(3.0), iters=2, metric="accuracy",
                              X_val=X, Y_val=Y)
    assert res.coef.shape == (120, 3)
    assert res.history[0]["val_metric"] == pytest.approx(1.0)


def test_loop_stays_in_the_namespace(xp):
    X, y = low_rank(120, 6, random_state=0)
    Xx, yx = xp.asarray(X), xp.asarray(y)
    kw = dict(iters=2, early_stop_tol=None, return_best=False)
    res = fit_feature_machine(Xx, yx, agop.Laplace(4.0), X_val=Xx, Y_val=yx, **kw)
    for a in (res.M, res.coef, res.machine.predict(Xx)):
        assert type(a) is type(Xx)
    ref = fit_feature_machine(X, y, agop.Laplace(4.0), X_val=X, Y_val=y, **kw)
    np.testing.assert_allclose(to_numpy(res.M), ref.M, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"iters": -1}, ValueError, "iters"),
        ({"solver": "lu"}, ValueError, "solver"),
        ({"metric": "r2"}, ValueError, "metric"),
        ({"early_stop_tol": 0.5}, ValueError, "early_stop_tol"),
        ({"reg": -1.0}, ValueError, "reg"),
        ({"X_val": np.zeros((3, 4))}, ValueError, "both"),
        ({"update": "agop"}, TypeError, "UpdateRule"),
    ],
)
def test_loop_rejects_bad_arguments(kwargs, err, match):
    X, y = low_rank(30, 6, random_state=0)
    with pytest.raises(err, match=match):
        fit_feature_machine(X, y, agop.Laplace(1.0), **kwargs)


def test_loop_rejects_mismatched_shapes():
    X, y = low_rank(30, 6, random_state=0)
    with pytest.raises(ValueError, match="rows"):
        fit_feature_machine(X, y[:20], agop.Laplace(1.0))
    with pytest.raises(ValueError, match="features"):
        fit_feature_machine(X, y, agop.Laplace(1.0), X_val=X[:, :3], Y_val=y)
    with pytest.raises(TypeError, match="kernel"):
        fit_feature_machine(X, y, "laplace")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pcg_loop_reads_the_agop_weights_off_the_solver_kernel_matrix(dtype, monkeypatch):
    """With PCG keeping K in memory, each update's AGOP reads its weights off that K; the
    next M equals the AGOP recomputed from scratch for the same machine, and no machine
    the loop returns holds the (reused) buffer."""
    import agop._backends.numba_cpu as nc

    calls = []
    real = nc.agop_from_kernel_matrix

    def counted(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(nc, "agop_from_kernel_matrix", counted)
    X, y = low_rank(400, random_state=1)
    X, y = X.astype(dtype), y.astype(dtype)
    machines = []
    res = fit_feature_machine(X, y, agop.Laplace(10.0), AGOPUpdate(normalize="fro"), iters=3,
                              solver="pcg", keep_M=True, random_state=0,
                              callbacks=[lambda rec, m: machines.append(m)])
    assert calls == [True, True, True]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for t in range(3):
        assert machines[t].train_kernel is None
        fresh = AGOPUpdate(normalize="fro")(machines[t], X, None)
        np.testing.assert_allclose(res.history[t + 1]["M"], fresh, rtol=tol, atol=tol)
    assert res.machine.train_kernel is None


def test_a_lent_kernel_matrix_serves_one_agop_only():
    """The loan is consumed by the first AGOP over the centers (which overwrites it); a
    second AGOP of the same machine recomputes and agrees."""
    from dataclasses import replace

    from agop._backends.numba_cpu import kernel_matrix_into
    from agop.updates import KernelMachine, KernelMatrixLoan

    rng = np.random.default_rng(2)
    X = rng.normal(size=(150, 3))
    coef = rng.normal(size=(150, 2))
    k = agop.Laplace(2.0)
    base = KernelMachine.build(k, X, coef)
    K = kernel_matrix_into(k, X)
    lent = replace(base, train_kernel=KernelMatrixLoan(K))
    first = lent.agop(X)
    assert lent.train_kernel.take() is None
    np.testing.assert_allclose(first, lent.agop(X), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(first, base.agop(X), rtol=1e-12, atol=1e-14)
