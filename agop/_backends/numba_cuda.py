"""CUDA implementations of the ops (numba-cuda), for CuPy arrays and torch CUDA tensors.

The kernels are compiled from the same scalar functions as the CPU loops
(:mod:`agop._backends._scalar`, as ``cuda.jit(device=True)`` functions).  Arrays reach
them zero-copy through ``__cuda_array_interface__``; outputs are allocated by the
caller's library on the caller's device, so results come back as CuPy arrays or torch
tensors without a host round trip.

One thread handles one evaluation point (one row of ``X``) and loops over the centers,
computing each pair's squared distance (and ``||x - z||_p^p``) directly from the
coordinates, so no ``n x m`` temporary exists outside :func:`kernel_matrix`.  The AGOP
contracts blocks of gradients with the library's own matrix product.

Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` (set before ``numba.cuda`` is imported) runs
the same kernels in numba's simulator on NumPy arrays; the test suite does that with
tiny grids.
"""

from __future__ import annotations

import math
from typing import Any

from numba import cuda

from .._generic import AGOPAccumulator
from .._lib._blocking import plan_blocks
from .._lib._compat import array_device, dtype_name
from .._lib._selfpair import self_pair_params
from . import OPS, DispatchContext, _scalar, register

__all__ = ["KERNELS", "agop", "kernel_matrix", "kernel_mv", "predictor_grads"]

_device = cuda.jit(device=True)
_radial_exponent = _device(_scalar.radial_exponent)
_radial_weight = _device(_scalar.radial_weight)
_dot_value = _device(_scalar.dot_value)
_dot_weight = _device(_scalar.dot_weight)
_lp_power_sum = _device(_scalar.lp_power_sum)
_lp_t = _device(_scalar.lp_t)
_lp_scale = _device(_scalar.lp_scale)
_lp_coord = _device(_scalar.lp_coord)

RADIAL, LP, DOT = 0, 1, 2
_FAMILIES = {"radial": RADIAL, "lp": LP, "dot": DOT}
_THREADS = 128


@cuda.jit(device=True)
def _pair(X, Z, i, j, fam, p):  # pragma: no cover - compiled
    """``(|x - z|^2, ||x - z||_p^p, x . z)`` of one pair."""
    d2 = X[i, 0] - X[i, 0]
    s = d2
    t = d2
    for a in range(X.shape[1]):
        diff = X[i, a] - Z[j, a]
        d2 += diff * diff
        if fam == LP:
            s += _lp_power_sum(diff, p)
        elif fam == DOT:
            t += X[i, a] * Z[j, a]
    return d2, s, t


@cuda.jit(device=True)
def _value(fam, code, d2, s, t, near, L, q, p, logL, inv_Lq):  # pragma: no cover - compiled
    if fam == DOT:
        return _dot_value(t)
    if near:
        return 1.0
    if fam == LP:
        return math.exp(-_lp_t(s, p, q, logL, inv_Lq))
    return math.exp(_radial_exponent(code, d2, L, q))


@cuda.jit
def _kernel_matrix(X, Z, nx, nz, atol2, rho, fam, code, L, q, p, logL, inv_Lq, K):
    i, j = cuda.grid(2)
    if i < X.shape[0] and j < Z.shape[0]:
        d2, s, t = _pair(X, Z, i, j, fam, p)
        near = d2 <= rho * (nx[i] + nz[j]) + atol2
        K[i, j] = _value(fam, code, d2, s, t, near, L, q, p, logL, inv_Lq)


@cuda.jit
def _kernel_mv(X, Z, nx, nz, atol2, rho, fam, code, L, q, p, logL, inv_Lq, coef, out):
    i = cuda.grid(1)
    if i < X.shape[0]:
        for j in range(Z.shape[0]):
            d2, s, t = _pair(X, Z, i, j, fam, p)
            near = d2 <= rho * (nx[i] + nz[j]) + atol2
            k = _value(fam, code, d2, s, t, near, L, q, p, logL, inv_Lq)
            for l in range(coef.shape[1]):
                out[i, l] += k * coef[j, l]


@cuda.jit
def _grads(X, Z, nx, nz, atol2, rho, fam, code, L, q, p, logL, inv_Lq, coef, G):  # pragma: no cover
    """``G[i, l, a] = sum_j coef[j, l] d k(x_i, z_j) / d x_a`` (coincident pairs: 0)."""
    i = cuda.grid(1)
    if i < X.shape[0]:
        for j in range(Z.shape[0]):
            d2, s, t = _pair(X, Z, i, j, fam, p)
            if fam == DOT:
                w = _dot_weight(t)
                for l in range(coef.shape[1]):
                    for a in range(X.shape[1]):
                        G[i, l, a] += coef[j, l] * w * Z[j, a]
                continue
            if d2 <= rho * (nx[i] + nz[j]) + atol2:
                continue
            if fam == LP:
                tt = _lp_t(s, p, q, logL, inv_Lq)
                w = _lp_scale(s, tt, math.exp(-tt), q)
                for l in range(coef.shape[1]):
                    for a in range(X.shape[1]):
                        G[i, l, a] += coef[j, l] * w * _lp_coord(X[i, a] - Z[j, a], p)
            else:
                k = math.exp(_radial_exponent(code, d2, L, q))
                w = _radial_weight(code, d2, k, L, q)
                for l in range(coef.shape[1]):
                    for a in range(X.shape[1]):
                        G[i, l, a] += coef[j, l] * w * (X[i, a] - Z[j, a])


#: the compiled kernels (``agop`` reuses ``_grads``), for ``cuda.compile_ptx`` checks
KERNELS = {"kernel_matrix": _kernel_matrix, "kernel_mv": _kernel_mv, "grads": _grads}


def signatures(dtype: str) -> dict[str, tuple]:
    """Argument types of every kernel for one dtype (``"float32"``/``"float64"``)."""
    from numba import types

    f, f64, i64 = getattr(types, dtype), types.float64, types.int64
    a1, a2, a3 = f[:], f[:, :], f[:, :, :]
    head = (a2, a2, a1, a1, f64, f64, i64, i64, f64, f64, f64, f64, f64)
    return {
        "kernel_matrix": (*head, a2),
        "kernel_mv": (*head, a2, a2),
        "grads": (*head, a2, a3),
    }


# --------------------------------------------------------------------------- wrappers


def _on_device(a: Any) -> Any:
    """The array as numba sees it: zero-copy through ``__cuda_array_interface__`` (CuPy,
    torch CUDA); host arrays pass as they are (the simulator runs on them)."""
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)
    return a


class _Problem:
    """Centered device data and the constants of one call (all in the caller's library)."""

    def __init__(self, kernel: Any, Xt: Any, Zt: Any, xp: Any, coef: Any = None) -> None:
        same = Zt is Xt
        self.xp, self.fam = xp, _FAMILIES[kernel.family]
        dt = dtype_name(xp, Xt.dtype)
        if self.fam != DOT:
            mu = xp.mean(Zt, axis=0)
            Xt = Xt - mu
            Zt = Xt if same else Zt - mu
        self.X, self.Z = Xt, Zt
        self.nx = xp.sum(Xt * Xt, axis=1)
        self.nz = self.nx if same else xp.sum(Zt * Zt, axis=1)
        atol2, rho = self_pair_params(dt, Zt.shape[1])
        if kernel.family == "lp":
            code, L, q = 0, 1.0, float(kernel.q)
            p, logL = float(kernel.p), math.log(kernel.bandwidth)
            inv_Lq = _inv_power(logL, q)
        elif kernel.family == "radial":
            code, L, q = _scalar.kernel_code(kernel)
            p, logL, inv_Lq = 2.0, 0.0, 1.0
        else:
            code, L, q, p, logL, inv_Lq = _scalar.QUADRATIC, 1.0, 2.0, 2.0, 0.0, 1.0
        self.consts = (
            float(atol2), float(rho), self.fam, code, float(L), float(q), p, logL, inv_Lq
        )
        self.coef = coef

    def head(self, i0: int, i1: int) -> tuple:
        return (_on_device(self.X[i0:i1, :]), _on_device(self.Z), _on_device(self.nx[i0:i1]),
                _on_device(self.nz), *self.consts)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.xp.zeros(shape, dtype=self.X.dtype, device=array_device(self.X))

    def grads(self, i0: int, i1: int) -> Any:
        b, d, c = i1 - i0, self.X.shape[1], self.coef.shape[1]
        G = self.zeros((b, c, d))
        _grads[_blocks(b), _THREADS](*self.head(i0, i1), _on_device(self.coef), _on_device(G))
        return G


def _inv_power(logL: float, q: float) -> float:
    """``L^-q`` from ``log L``, saturating to 0 or inf instead of raising."""
    try:
        return math.exp(-q * logL)
    except OverflowError:
        return math.inf


def _blocks(n: int) -> int:
    return max(1, -(-n // _THREADS))


def kernel_matrix(kernel: Any, Xt: Any, Zt: Any, *, xp: Any) -> Any:
    """``K[i, j] = k(Xt[i], Zt[j])``, one thread per entry."""
    prob = _Problem(kernel, Xt, Zt, xp)
    n, m = Xt.shape[0], Zt.shape[0]
    K = prob.zeros((n, m))
    grid = (max(1, -(-n // 16)), max(1, -(-m // 16)))
    _kernel_matrix[grid, (16, 16)](*prob.head(0, n), _on_device(K))
    return K


def kernel_mv(kernel: Any, Xt: Any, Zt: Any, coef: Any, *, xp: Any) -> Any:
    """``K(Xt, Zt) @ coef``, one thread per evaluation point."""
    prob = _Problem(kernel, Xt, Zt, xp, coef)
    n = Xt.shape[0]
    out = prob.zeros((n, coef.shape[1]))
    _kernel_mv[_blocks(n), _THREADS](*prob.head(0, n), _on_device(coef), _on_device(out))
    return out


def predictor_grads(kernel: Any, Xt: Any, Zt: Any, coef: Any, *, xp: Any) -> Any:
    """Gradients of ``f(x) = sum_j coef_j k(x, z_j)`` at the rows of ``Xt``: ``(n, c, d)``."""
    return _Problem(kernel, Xt, Zt, xp, coef).grads(0, Xt.shape[0])


def agop(
    kernel: Any, Xt: Any, Zt: Any, coef: Any, *, centering: str | None, diag: bool, xp: Any
) -> Any:
    """AGOP over the rows of ``Xt``: gradients in planned row blocks, contracted on the
    device by the caller's library."""
    prob = _Problem(kernel, Xt, Zt, xp, coef)
    c, d = coef.shape[1], Xt.shape[1]
    itemsize = 8 if dtype_name(xp, Xt.dtype) == "float64" else 4
    plan = plan_blocks(Xt.shape[0], 3 * c * d * itemsize)
    acc = AGOPAccumulator(centering=centering, diag=diag, xp=xp)
    for i0, i1 in plan:
        acc.add(prob.grads(i0, i1))
    return acc.finish()


# --------------------------------------------------------------------------- registry

_KERNEL_NAMES = frozenset(
    {"laplace", "gaussian", "generalized_exponential", "lpq_laplace", "product_laplace",
     "quadratic"}
)


def is_usable_for(ctx: DispatchContext) -> bool:
    """CuPy arrays or torch CUDA tensors (not requiring grad), float32/float64, one of
    agop's kernels."""
    return (
        ctx.namespace in ("cupy", "torch")
        and "cuda" in str(ctx.device).lower()
        and ctx.dtype in ("float32", "float64")
        and not ctx.requires_grad
        and getattr(ctx.kernel, "name", None) in _KERNEL_NAMES
        and type(ctx.kernel).__module__ == "agop.kernels"
    )


for _op in OPS:
    register(
        _op, "numba_cuda", globals()[_op], is_usable_for=is_usable_for, priority=20,
        requirement="CuPy arrays or torch CUDA tensors that do not require grad, float32 "
        "or float64, one of agop's kernels, and numba-cuda",
    )
