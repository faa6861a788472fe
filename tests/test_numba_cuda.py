"""The CUDA backend: its kernels = generic = naive, run in numba's CUDA simulator on tiny
grids (``NUMBA_ENABLE_CUDASIM=1`` from conftest) or on a real GPU when there is one;
``cuda.compile_ptx`` checks that every kernel compiles for a real device."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import array_api_compat.numpy as np_xp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agop
from agop.testing import assert_close

from . import naive
from .strategies import kernels, make_M
from .test_kernels import ALL_KERNELS

numba_cuda = pytest.importorskip("agop._backends.numba_cuda", reason="numba-cuda is missing")

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
F64 = {"rtol": 1e-10, "atol": 1e-12}


def _mapped(X, Z, M):
    """Data mapped by the factor of M, as the delegation layer hands it to backends."""
    from agop._ops import _prepare

    inp = _prepare(X, Z, np.ones((Z.shape[0], 1)), M)
    return inp


def _run_cuda(op, kernel, X, Z, coef, M, **kw):
    inp = _mapped(X, Z, M)
    coef = np.asarray(coef, dtype=inp.Xt.dtype)
    if op == "kernel_matrix":
        return numba_cuda.kernel_matrix(kernel, inp.Xt, inp.Zt, xp=np_xp)
    if op == "kernel_mv":
        return numba_cuda.kernel_mv(kernel, inp.Xt, inp.Zt, coef, xp=np_xp)
    if op == "predictor_grads":
        return inp.grads_back(numba_cuda.predictor_grads(kernel, inp.Xt, inp.Zt, coef, xp=np_xp))
    kw = {"centering": None, "diag": False, **kw}
    A = numba_cuda.agop(kernel, inp.Xt, inp.Zt, coef, xp=np_xp, **kw)
    return inp.agop_back(A, kw["diag"])


def _reference(op, kernel, X, Z, coef, M, **kw):
    if op == "kernel_matrix":
        return naive.kernel_matrix(kernel, X, Z, M)
    if op == "kernel_mv":
        return naive.kernel_matrix(kernel, X, Z, M) @ coef
    if op == "predictor_grads":
        return naive.predictor_grads(kernel, X, Z, coef, M)
    return naive.agop(kernel, X, Z, coef, M, **kw)


def _tiny(seed, n=3, m=4, d=2, c=2, metric="full"):
    rng = np.random.default_rng(seed)
    X, Z = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    Z[0] = X[-1]  # a coincident pair
    return X, Z, rng.normal(size=(m, c)), make_M(metric, d, rng)


@pytest.mark.skipif(not SIMULATOR, reason="the simulator runs on NumPy arrays")
@pytest.mark.parametrize("kernel", ALL_KERNELS, ids=repr)
@pytest.mark.parametrize("op", ["kernel_matrix", "kernel_mv", "predictor_grads", "agop"])
def test_cuda_kernels_equal_naive_in_the_simulator(kernel, op):
    X, Z, coef, M = _tiny(0)
    out = _run_cuda(op, kernel, X, Z, coef, M)
    assert_close(out, _reference(op, kernel, X, Z, coef, M), err_msg=op, **F64)
    generic = {
        "kernel_matrix": lambda: agop.kernel_matrix(kernel, X, Z, M, backend="generic"),
        "kernel_mv": lambda: agop.kernel_mv(kernel, X, Z, coef, M, backend="generic"),
        "predictor_grads": lambda: agop.predictor_grads(kernel, X, Z, coef, M, backend="generic"),
        "agop": lambda: agop.agop(kernel, X, Z, coef, M, backend="generic"),
    }[op]()
    assert_close(out, generic, err_msg=op, **F64)


@pytest.mark.skipif(not SIMULATOR, reason="the simulator runs on NumPy arrays")
@settings(max_examples=8)
@given(kernel=kernels, seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3),
       m=st.integers(1, 3), d=st.integers(1, 2), c=st.integers(1, 2),
       metric=st.sampled_from(["identity", "diag", "full"]),
       centering=st.sampled_from([None, "per_output", "pooled"]), diag=st.booleans())
def test_cuda_agop_on_drawn_problems(kernel, seed, n, m, d, c, metric, centering, diag):
    X, Z, coef, M = _tiny(seed, n, max(m, 2), d, c, metric)
    if M is not None and M.ndim == 2 and diag:
        diag = False  # the delegation layer takes the diagonal after mapping back
    out = _run_cuda("agop", kernel, X, Z, coef, M, centering=centering, diag=diag)
    ref = _reference("agop", kernel, X, Z, coef, M, centering=centering, diag=diag)
    assert_close(out, ref, **F64)


@pytest.mark.skipif(not SIMULATOR, reason="the simulator runs on NumPy arrays")
def test_cuda_float32_and_duplicates_in_the_simulator():
    k = agop.Laplace(2.0)
    X, Z, coef, _ = _tiny(1, n=3, m=3, d=2, c=1)
    X32, Z32, c32 = (a.astype(np.float32) for a in (X, Z, coef))
    K = numba_cuda.kernel_matrix(k, X32, Z32, xp=np_xp)
    assert K.dtype == np.float32
    assert_close(K, naive.kernel_matrix(k, X32, Z32), rtol=1e-5, atol=1e-6, dtype=np.float32)
    G = numba_cuda.predictor_grads(k, X32, Z32, c32, xp=np_xp)
    assert np.all(np.isfinite(G))


def test_registry_routes_cuda_inputs_to_numba_cuda():
    from agop import _backends
    from agop._backends import DispatchContext

    ctx = DispatchContext(op="agop", namespace="cupy", device="cuda:0", dtype="float32",
                          kernel=agop.Laplace(1.0), metric="full")
    assert _backends.select("agop", ctx).backend == "numba_cuda"
    torch_ctx = DispatchContext(op="agop", namespace="torch", device="cuda:0",
                                dtype="float64", kernel=agop.ProductLaplace(1.0),
                                metric="diag")
    assert _backends.select("agop", torch_ctx).backend == "numba_cuda"
    with pytest.raises(ValueError, match="numba_cuda.*CuPy arrays or torch CUDA tensors"):
        cpu = DispatchContext(op="agop", namespace="numpy", device="cpu", dtype="float64",
                              kernel=agop.Laplace(1.0), metric="full")
        _backends.select("agop", cpu, "numba_cuda")


_COMPILE_PTX = textwrap.dedent(
    """
    import types
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher
    # device functions called from a kernel are compiled for "the current device";
    # without a GPU, name a compute capability instead of asking a driver
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(7, 0))
    from agop._backends import numba_cuda
    for dtype in ("float32", "float64"):
        sigs = numba_cuda.signatures(dtype)
        for name, kern in numba_cuda.KERNELS.items():
            ptx, _ = cuda.compile_ptx(kern.py_func, sigs[name], cc=(7, 0))
            assert ".entry" in ptx or ".visible .entry" in ptx, name
    print("compiled", len(numba_cuda.KERNELS) * 2)
    """
)


def test_every_cuda_kernel_compiles_to_ptx():
    """Outside the simulator, with NVVM from numba-cuda[cu12]: real PTX for every kernel."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", _COMPILE_PTX], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0 and ("NotFound" in out.stderr or "nvvm" in out.stderr.lower()
                                or "nvrtc" in out.stderr.lower()):
        pytest.skip("NVVM/NVRTC libraries are not installed (pip install 'numba-cuda[cu12]')")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("compiled 6")


def _real_gpu_namespaces():
    found = []
    if SIMULATOR:
        return found
    try:
        import torch

        if torch.cuda.is_available():
            found.append("torch")
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            found.append("cupy")
    except Exception:  # noqa: BLE001 - no CuPy, or no driver
        pass
    return found


@pytest.mark.parametrize("lib", _real_gpu_namespaces() or ["none"])
@pytest.mark.parametrize("kernel", ALL_KERNELS, ids=repr)
def test_real_gpu_ops_equal_numpy(lib, kernel):
    """On a machine with a GPU (run without NUMBA_ENABLE_CUDASIM): CuPy / torch CUDA
    inputs take numba_cuda, stay on the device and equal the NumPy results."""
    if lib == "none":
        pytest.skip("no CUDA device (or the simulator is on)")
    X, Z, coef, M = _tiny(2, n=300, m=200, d=5, c=2)
    if lib == "torch":
        import torch

        conv = [torch.as_tensor(a, device="cuda") for a in (X, Z, coef, M)]
    else:
        import cupy

        conv = [cupy.asarray(a) for a in (X, Z, coef, M)]
    for op in ("kernel_matrix", "kernel_mv", "predictor_grads", "agop"):
        args = conv if op != "kernel_matrix" else [conv[0], conv[1], conv[3]]
        ref_args = (X, Z, coef, M) if op != "kernel_matrix" else (X, Z, M)
        out = getattr(agop, op)(kernel, *args, backend="numba_cuda")
        ref = getattr(agop, op)(kernel, *ref_args)
        assert "cuda" in str(getattr(out, "device", "cuda")).lower()
        assert_close(out, ref, rtol=1e-9, atol=1e-11, err_msg=op)
