"""The dispatch registry and the array-namespace contract: outputs stay in the input's
namespace, dtype and device; NumPy = torch = array-api-strict; lazy optional imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import agop
from agop import _backends
from agop._backends import DispatchContext
from agop.testing import assert_close, to_numpy

from .test_kernels import ALL_KERNELS


def _problem(seed=0, n=9, m=7, d=4, c=3):
    rng = np.random.default_rng(seed)
    X, Z, coef = rng.normal(size=(n, d)), rng.normal(size=(m, d)), rng.normal(size=(m, c))
    Z[0] = X[0]  # a self pair
    B = rng.normal(size=(d, d))
    return X, Z, coef, B @ B.T


OPS = {
    "kernel_matrix": lambda k, X, Z, c, M, **kw: agop.kernel_matrix(k, X, Z, M, **kw),
    "kernel_mv": lambda k, X, Z, c, M, **kw: agop.kernel_mv(k, X, Z, c, M, **kw),
    "predictor_grads": lambda k, X, Z, c, M, **kw: agop.predictor_grads(k, X, Z, c, M, **kw),
    "agop": lambda k, X, Z, c, M, **kw: agop.agop(k, X, Z, c, M, centering="pooled", **kw),
    "agop_diag": lambda k, X, Z, c, M, **kw: agop.agop(k, X, Z, c, M, diag=True, **kw),
}


@pytest.mark.parametrize("kernel", ALL_KERNELS, ids=repr)
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("metric", ["identity", "diag", "full"])
def test_namespaces_agree_to_1e10_and_are_kept(xp, kernel, op, metric):
    X, Z, coef, M = _problem()
    M = {"identity": None, "diag": np.diag(M).copy(), "full": M}[metric]
    ref = OPS[op](kernel, X, Z, coef, M)
    conv = [None if a is None else xp.asarray(a) for a in (X, Z, coef, M)]
    out = OPS[op](kernel, *conv)
    assert_close(out, ref, rtol=1e-10, atol=1e-13, xp=xp, dtype=xp.float64, err_msg=op)
    if xp.__name__ == "torch":
        assert out.device == conv[0].device


def test_torch_float32_stays_float32():
    torch = pytest.importorskip("torch")
    X, Z, coef, M = (torch.from_numpy(a).float() for a in _problem())
    for op in OPS.values():
        assert op(agop.Laplace(2.0), X, Z, coef, M).dtype == torch.float32


def test_registry_truth_table():
    """Which implementation each kind of input gets; a silent fallback would show here."""
    ctx = {
        "namespace": "numpy", "device": "cpu", "dtype": "float64",
        "kernel": agop.Laplace(1.0), "metric": "identity",
    }
    for op in _backends.OPS:
        assert _backends.select(op, DispatchContext(op=op, **ctx)).backend == "numba_cpu"
        assert _backends.select(op, DispatchContext(op=op, **ctx), "generic").backend == "generic"
        strict = DispatchContext(op=op, **{**ctx, "namespace": "array_api_strict"})
        assert _backends.select(op, strict).backend == "generic"
    assert {"generic", "numba_cpu"} <= set(agop.available_backends())


def test_forced_generic_backend_runs(xp):
    X, Z, coef, M = (xp.asarray(a) for a in _problem())
    A = agop.agop(agop.Laplace(1.0), X, Z, coef, M, backend="generic")
    ref = to_numpy(agop.agop(agop.Laplace(1.0), X, Z, coef, M))  # the fast path, if any
    assert_close(A, ref, rtol=1e-12, atol=1e-14, xp=xp, dtype=xp.float64)


@pytest.fixture
def fake_backend(monkeypatch):
    """A registered backend usable only for float32 Laplace on NumPy, at high priority."""
    calls = []
    monkeypatch.setitem(_backends._BACKEND_MODULES, "fake", "agop._backends.generic")
    agop.available_backends()  # every backend module loaded before the registry is saved
    saved = {op: list(v) for op, v in _backends._REGISTRY.items()}

    def impl(kernel, Xt, Zt, *args, xp, **kw):
        calls.append(kernel)
        return agop._generic.kernel_matrix(kernel, Xt, Zt, xp=xp)

    _backends.register(
        "kernel_matrix", "fake", impl, priority=100,
        is_usable_for=lambda ctx: ctx.namespace == "numpy" and ctx.dtype == "float32"
        and isinstance(ctx.kernel, agop.Laplace),
        requirement="NumPy float32 input and a Laplace kernel",
    )
    yield calls
    _backends._REGISTRY.clear()
    _backends._REGISTRY.update(saved)


def test_registry_prefers_usable_high_priority_backend(fake_backend):
    X = np.random.default_rng(0).normal(size=(4, 2))
    agop.kernel_matrix(agop.Laplace(1.0), X.astype(np.float32), X.astype(np.float32))
    assert len(fake_backend) == 1
    agop.kernel_matrix(agop.Laplace(1.0), X, X)  # float64: not usable -> generic
    agop.kernel_matrix(agop.Gaussian(1.0), X.astype(np.float32), X.astype(np.float32))
    assert len(fake_backend) == 1
    with pytest.raises(ValueError, match="needs NumPy float32 input and a Laplace kernel"):
        agop.kernel_matrix(agop.Laplace(1.0), X, X, backend="fake")
    with pytest.raises(ValueError, match="not available"):
        agop.kernel_mv(agop.Laplace(1.0), X, X, X[:, 0], backend="fake")


def test_register_rejects_unknown_op():
    with pytest.raises(ValueError, match="unknown op"):
        _backends.register("solve", "x", print, is_usable_for=bool, priority=0)


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_import_agop_does_not_import_optional_backends():
    """``import agop`` imports no backend; a NumPy op imports numba (a core dependency,
    the CPU loops) but not numba.cuda, torch, CuPy or dask."""
    code = (
        "import sys, numpy as np, agop\n"
        "bad = [m for m in ('torch', 'cupy', 'dask', 'numba', 'scipy', 'matplotlib', "
        "'sklearn') if m in sys.modules]\n"
        "X = np.ones((3, 2)); agop.agop(agop.Laplace(1.0), X, X, np.ones(3))\n"
        "bad += [m for m in ('torch', 'cupy', 'dask', 'numba.cuda') if m in sys.modules]\n"
        "bad += [] if 'numba' in sys.modules else ['numba not used']\n"
        "print(','.join(bad))"
    )
    assert _run(code).stdout.strip() == ""
