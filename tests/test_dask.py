"""Dask arrays in agop.agop / kernel_mv / predictor_grads: a map-reduce over row chunks
that must equal the in-memory result, on the threaded, synchronous and distributed
schedulers."""

from __future__ import annotations

import numpy as np
import pytest

import agop

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

KERNELS = [agop.Laplace(2.0), agop.Gaussian(1.5), agop.ProductLaplace(2.0),
           agop.LpqLaplace(2.0, norm_p=1.5, exponent=1.0),
           agop.kernels.make_kernel("generalized_exponential", bandwidth=2.0, exponent=1.5),
           agop.kernels.make_kernel("quadratic")]


def _data(n=37, d=4, c=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Z = rng.normal(size=(n + 5, d))
    coef = rng.normal(size=(n + 5, c))
    B = rng.normal(size=(d, d))
    return X, Z, coef, {"none": None, "diag": np.abs(rng.normal(size=d)) + 0.1,
                        "full": B @ B.T / d}


def _close(a, b, tol=1e-12):
    scale = max(float(np.max(np.abs(b))), 1e-300)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert float(np.max(np.abs(a - b))) <= tol * scale


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: type(k).__name__)
@pytest.mark.parametrize("centering", [None, "per_output", "pooled"])
@pytest.mark.parametrize("metric", ["none", "diag", "full"])
@pytest.mark.parametrize("diag", [False, True])
def test_agop_dask_equals_numpy(kernel, centering, metric, diag):
    X, Z, coef, Ms = _data()
    M = Ms[metric]
    Xd = da.from_array(X, chunks=(8, 4))  # 5 chunks, the last a short one
    A = agop.agop(kernel, X, Z, coef, M, centering=centering, diag=diag)
    lazy = agop.agop(kernel, Xd, Z, coef, M, centering=centering, diag=diag)
    assert isinstance(lazy, da.Array) and lazy.shape == A.shape
    with dask.config.set(scheduler="threads"):
        _close(lazy.compute(), A)


def test_agop_dask_centers_and_coef_and_float32():
    X, Z, coef, _ = _data(seed=1)
    k = agop.Laplace(2.0)
    A = agop.agop(k, X, Z, coef, centering="per_output")
    lazy = agop.agop(k, da.from_array(X, chunks=(10, 2)), da.from_array(Z, chunks=(7, 4)),
                     da.from_array(coef, chunks=(11, 1)), centering="per_output")
    with dask.config.set(scheduler="synchronous"):
        _close(lazy.compute(), A)
    X32, Z32, c32 = (a.astype(np.float32) for a in (X, Z, coef))
    A32 = agop.agop(k, X32, Z32, c32)
    B32 = agop.agop(k, da.from_array(X32, chunks=(9, 4)), Z32, c32).compute()
    assert B32.dtype == np.float32
    _close(B32, A32, tol=1e-5)


def test_agop_dask_one_chunk_and_many_chunks_agree_with_naive_sum():
    """The centered merge against an explicit (1/m) sum over all gradients."""
    X, Z, coef, _ = _data(n=23, seed=2)
    k = agop.Gaussian(2.0)
    G = agop.predictor_grads(k, X, Z, coef)  # (m, c, d)
    mu = G.mean(axis=0)
    ref = np.einsum("icd,icD->dD", G - mu, G - mu) / X.shape[0]
    for chunks in (1, 5, 23):
        got = agop.agop(k, da.from_array(X, chunks=(chunks, 4)), Z, coef,
                        centering="per_output").compute(scheduler="synchronous")
        _close(got, ref, tol=1e-11)


@pytest.mark.parametrize("kernel", KERNELS[:3], ids=lambda k: type(k).__name__)
def test_kernel_mv_dask(kernel):
    X, Z, coef, Ms = _data(seed=3)
    for M in (None, Ms["full"]):
        ref = agop.kernel_mv(kernel, X, Z, coef, M)
        lazy = agop.kernel_mv(kernel, da.from_array(X, chunks=(6, 4)), Z, coef, M)
        assert isinstance(lazy, da.Array) and lazy.chunks[0] == (6,) * 6 + (1,)
        _close(lazy.compute(scheduler="threads"), ref)
        both = agop.kernel_mv(kernel, da.from_array(X, chunks=(6, 4)),
                              da.from_array(Z, chunks=(10, 4)),
                              da.from_array(coef[:, 0], chunks=(10,)), M)
        assert both.ndim == 1
        _close(both.compute(scheduler="threads"), ref[:, 0])


def test_predictor_grads_dask():
    X, Z, coef, Ms = _data(seed=4)
    k = agop.Laplace(1.0)
    ref = agop.predictor_grads(k, X, Z, coef, Ms["diag"])
    lazy = agop.predictor_grads(k, da.from_array(X, chunks=(9, 4)), Z, coef, Ms["diag"])
    assert isinstance(lazy, da.Array) and lazy.shape == ref.shape
    _close(lazy.compute(scheduler="threads"), ref)
    one = agop.predictor_grads(k, da.from_array(X, chunks=(9, 4)), Z, coef[:, 1])
    _close(one.compute(), agop.predictor_grads(k, X, Z, coef[:, 1]))


def test_dask_wrong_combinations_raise():
    X, Z, coef, Ms = _data()
    k = agop.Laplace(1.0)
    Xd = da.from_array(X, chunks=(8, 4))
    with pytest.raises(TypeError, match="M must be None or an in-memory NumPy"):
        agop.agop(k, Xd, Z, coef, da.from_array(Ms["full"]))
    with pytest.raises(TypeError, match="M must be None or an in-memory NumPy"):
        agop.kernel_mv(k, X, Z, coef, da.from_array(Ms["diag"]))
    with pytest.raises(ValueError, match="features"):
        agop.agop(k, Xd, Z[:, :3], coef)
    with pytest.raises(ValueError, match="coef has"):
        agop.kernel_mv(k, Xd, Z, coef[:-1])
    with pytest.raises(TypeError, match="real numbers"):
        agop.agop(k, da.from_array(X.astype(complex), chunks=8), Z, coef)
    with pytest.raises(ValueError, match="centering"):
        agop.agop(k, Xd, Z, coef, centering="bad")
    with pytest.raises(TypeError, match="does not take dask arrays"):
        agop.kernel_matrix(k, Xd, Z)
    with pytest.raises(TypeError, match="does not take dask arrays"):
        agop.fact(k, Xd, X, coef[:37])
    Xu = Xd[Xd[:, 0] > 0]  # unknown chunk sizes
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        agop.agop(k, Xu, Z, coef)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="NumPy or dask"):
        agop.agop(k, Xd, torch.asarray(Z), coef)
    # a non-finite value inside a chunk raises when its task runs
    Xbad = X.copy()
    Xbad[3, 1] = np.nan
    lazy = agop.agop(k, da.from_array(Xbad, chunks=(8, 4)), Z, coef)
    with pytest.raises(ValueError, match="NaN|finite"):
        lazy.compute(scheduler="synchronous")


@pytest.mark.slow
def test_agop_dask_on_a_local_cluster_with_spawned_workers(tmp_path):
    """Two worker processes started by spawn (not fork: a forked child of a process that
    ran numba's OpenMP threading layer can be killed, ARCHITECTURE §6)."""
    distributed = pytest.importorskip("distributed")
    X, Z, coef, Ms = _data(n=30, seed=5)
    k = agop.Laplace(2.0)
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None,
                                      local_directory=str(tmp_path)) as cluster, \
                distributed.Client(cluster) as client:
            Xd = da.from_array(X, chunks=(8, 4))
            A = client.compute(agop.agop(k, Xd, Z, coef, Ms["full"],
                                         centering="pooled")).result()
            F = client.compute(agop.kernel_mv(k, Xd, Z, coef)).result()
            workers = client.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2
    _close(A, agop.agop(k, X, Z, coef, Ms["full"], centering="pooled"))
    _close(F, agop.kernel_mv(k, X, Z, coef))


@pytest.mark.parametrize("op", ["agop", "kernel_mv", "predictor_grads"])
def test_dask_dtype_follows_the_in_memory_op(op):
    """Integer inputs adopt the floating dtype of the others (float32 stays float32), and
    the lazy array's dtype is the dtype its computation returns."""
    rng = np.random.default_rng(6)
    Xi = rng.integers(0, 3, size=(20, 3))
    Z32 = rng.normal(size=(15, 3)).astype(np.float32)
    c32 = rng.normal(size=(15, 2)).astype(np.float32)
    f, k = getattr(agop, op), agop.Laplace(2.0)
    for X, Z, coef in ((Xi, Z32, c32), (Xi, Xi[:15], rng.integers(0, 3, size=(15, 2)))):
        ref = f(k, X, Z, coef)
        lazy = f(k, da.from_array(X, chunks=(6, 3)), Z, coef)
        assert lazy.dtype == ref.dtype
        _close(lazy.compute(scheduler="synchronous"), ref, tol=1e-6)


def test_dask_shapes_and_M_are_checked_when_the_graph_is_built():
    """What is known without computing (empty arrays, a bad M) raises at the call, with
    the in-memory op's message, not later inside a task."""
    X, Z, coef, _ = _data()
    k = agop.Laplace(1.0)
    Xd = da.from_array(X, chunks=(8, 4))
    empty = da.from_array(np.zeros((0, 4)), chunks=(5, 4))
    for op in (agop.agop, agop.kernel_mv, agop.predictor_grads):
        with pytest.raises(ValueError, match=r"X is empty \(shape \(0, 4\)\)"):
            op(k, empty, Z, coef)
        with pytest.raises(ValueError, match=r"is empty \(shape \(0, 4\)\)"):
            op(k, Xd, empty, coef[:0])
        with pytest.raises(ValueError, match="M must be a 4 x 4 matrix"):
            op(k, Xd, Z, coef, np.eye(5))
        with pytest.raises(ValueError, match="positive semi-definite"):
            op(k, Xd, Z, coef, -np.eye(4))
        with pytest.raises(ValueError, match="non-negative"):
            op(k, Xd, Z, coef, -np.ones(4))


def test_estimators_say_plainly_that_they_take_no_dask_arrays():
    X, _, _, _ = _data()
    y = X[:, 0]
    Xd = da.from_array(X, chunks=(8, 4))
    m = agop.RFMRegressor(iters=0).fit(X, y)
    codes = np.column_stack([X[:, 0], np.arange(X.shape[0]) % 3])
    for call in (lambda: agop.RFMRegressor(iters=0).fit(Xd, y),
                 lambda: m.predict(Xd),
                 lambda: agop.RFMClassifier(iters=0).fit(X, y > 0, X_val=Xd, y_val=y > 0),
                 lambda: agop.RFMRegressor(iters=0, categorical_features=[1]).fit(
                     da.from_array(codes, chunks=(8, 2)), y)):
        with pytest.raises(TypeError, match=r"X(_val)? is a dask array; .*\.compute\(\)"):
            call()


def test_dask_backend_name_is_checked_when_the_graph_is_built():
    X, Z, coef, _ = _data()
    Xd = da.from_array(X, chunks=(8, 4))
    for op in (agop.agop, agop.kernel_mv, agop.predictor_grads):
        with pytest.raises(ValueError, match="unknown backend 'nope'"):
            op(agop.Laplace(1.0), Xd, Z, coef, backend="nope")
        with pytest.raises(TypeError, match="backend must be a string"):
            op(agop.Laplace(1.0), Xd, Z, coef, backend=1)
        got = op(agop.Laplace(1.0), Xd, Z, coef, backend="generic").compute()
        _close(got, op(agop.Laplace(1.0), X, Z, coef, backend="generic"))


def test_threaded_scheduler_survives_numba_workqueue_layer(tmp_path):
    """numba's workqueue threading layer (what numba falls back to without TBB or OpenMP)
    aborts the whole process when two threads run parallel loops at once; the default
    (threaded) dask scheduler must not bring that about."""
    import os
    import subprocess
    import sys

    pytest.importorskip("numba")
    script = tmp_path / "wq.py"
    script.write_text(
        "import numpy as np, dask.array as da, agop\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.normal(size=(600, 5)); Z = rng.normal(size=(80, 5))\n"
        "c = rng.normal(size=(80, 2))\n"
        "Xd = da.from_array(X, chunks=(50, 5))\n"
        "k = agop.Laplace(2.0)\n"
        "for op in (agop.agop, agop.kernel_mv, agop.predictor_grads):\n"
        "    got = op(k, Xd, Z, c).compute(scheduler='threads', num_workers=4)\n"
        "    assert np.allclose(got, op(k, X, Z, c), rtol=1e-12, atol=0)\n"
        "import numba\n"
        "print(numba.threading_layer())\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(agop.__file__)))
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "workqueue"
