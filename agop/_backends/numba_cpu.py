"""Compiled CPU implementations of the ops (numba), for NumPy arrays and torch CPU tensors.

Euclidean M-norm kernels (``"radial"``) and the inner-product kernel (``"dot"``) are
matrix products plus one fused pass: BLAS forms ``x . z`` for a row block, one parallel
loop turns it in place into kernel values (or gradient weights ``kappa'(r)/r``) with the
self-pair rule applied, and BLAS again contracts the block with the coefficients.  L_p
kernels (``"lp"``: product Laplace, L_pq) have no matrix-product form; loops over tiles
of rows and centers compute ``||x - z||_p^p`` and the gradient sums directly, with the
centers innermost so that they vectorize, and never build an ``n x m x d`` temporary.

The kernel maths comes from :mod:`agop._backends._scalar`, the same plain functions the
CUDA backend compiles.  Loops are compiled lazily (first call per dtype), cached on disk
(``cache=True``; ``NUMBA_CACHE_DIR`` moves the cache), and use the fast-math flags in
:data:`FASTMATH`: no ``nnan``/``ninf``, so NaN and infinity behave as in IEEE arithmetic.

torch CPU tensors reach the loops as zero-copy NumPy views (``np.from_dlpack`` of the
detached tensor) and results come back as torch tensors.  Inputs that require autograd
are left to the generic path, which torch can differentiate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from .._generic import AGOPAccumulator
from .._lib._blocking import plan_blocks
from .._lib._compat import namespace_name
from .._lib._scratch import scratch
from .._lib._selfpair import self_pair_params
from .._lib._threads import matmul, row_chunks, run_rows, with_own_threads
from . import OPS, DispatchContext, _scalar, register

__all__ = [
    "FASTMATH",
    "agop",
    "agop_from_kernel_matrix",
    "kernel_matrix",
    "kernel_matrix_into",
    "kernel_rows_into",
    "kernel_mv",
    "lowrank_update_apply",
    "mirror_lower",
    "patches",
    "predictor_grads",
    "symmetric_matvec",
    "symmetric_rows_product",
    "weights_from_k",
]

#: Fast-math flags of every loop: contraction to FMA, reciprocal and approximate
#: functions, sign of zero and reassociation of sums (so that the L_p coordinate sums
#: vectorize).  ``nnan`` and ``ninf`` are left out on purpose: NaN and inf propagate.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

_scalar_jit = njit(fastmath=FASTMATH, cache=True)
_radial_exponent = _scalar_jit(_scalar.radial_exponent)
_radial_weight = _scalar_jit(_scalar.radial_weight)
_QUADRATIC = _scalar.QUADRATIC
_LAPLACE, _GAUSSIAN, _GENEXP = _scalar.LAPLACE, _scalar.GAUSSIAN, _scalar.GENEXP

_loop = njit(parallel=True, fastmath=FASTMATH, cache=True)


# ----------------------------------------------------------- float32 exp that vectorizes
# libm's expf is a call per element, which keeps the fused pass scalar; this one is
# arithmetic and bit casts only, so the loop around it vectorizes (about 3x faster on
# this kind of machine).  Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, the
# degree-7 polynomial of Cephes' expf, 2^k built in the exponent bits.  Relative error
# below 2e-7 for x >= -87.33 (results >= the smallest normal float32); below that 0.
# NaN propagates.  Used only for float32 data; float64 keeps libm's exp.


@intrinsic
def _bits_as_float(typingctx, bits):  # pragma: no cover - compile-time
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


@intrinsic
def _float_as_bits(typingctx, x):  # pragma: no cover - compile-time
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return types.int32(types.float32), codegen


_F = np.float32
_SHIFTER = _F(12582912.0)  # 1.5 * 2^23: adding it rounds to an integer in the low bits
_EXP_BIAS = np.int32(127 - int(np.float32(12582912.0).view(np.int32)))
_LOG2E, _LN2_HI, _LN2_LO = _F(1.4426950408889634), _F(0.693359375), _F(-2.12194440e-4)
_C0, _C1, _C2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_C3, _C4, _C5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_LOWEST, _ONE, _ZERO = _F(-87.33), _F(1.0), _F(0.0)
#: no reassoc: ``(y + shifter) - shifter`` would fold to ``y``.  Numba inlines _expf into
#: its callers, which are compiled with these flags too.
_EXP_FLAGS = {"nsz", "arcp", "contract", "afn"}


@njit(fastmath=_EXP_FLAGS, cache=True, inline="always")
def _expf(x):  # pragma: no cover - jitted
    xc = max(x, _LOWEST)
    u = xc * _LOG2E + _SHIFTER
    kf = u - _SHIFTER
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    poly = ((((_C0 * r + _C1) * r + _C2) * r + _C3) * r + _C4) * r + _C5
    poly = poly * r * r + r + _ONE
    res = poly * _bits_as_float(np.int32((_float_as_bits(u) + _EXP_BIAS) << 23))
    res = res if x >= _LOWEST else _ZERO
    return res if x == x else x




# float32 log that vectorizes, for the gradient weights read off a kernel matrix: x =
# m 2^e with m in [sqrt(1/2), sqrt(2)), log x = e ln2 + log m, the degree-9 polynomial
# of Cephes' logf for log(1 + u).  For normal x > 0 only (the callers select the rest);
# relative error below 3e-7 away from x = 1, absolute below 1e-7 near it.
_SQRTHF, _HALF = _F(0.70710678118654752), _F(0.5)
_LG = tuple(_F(v) for v in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1,
                             -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
                             2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1))
_LG0, _LG1, _LG2, _LG3, _LG4, _LG5, _LG6, _LG7, _LG8 = _LG
_TINY32 = _F(np.finfo(np.float32).tiny)


@njit(fastmath=_EXP_FLAGS, cache=True, inline="always")
def _logf(x):  # pragma: no cover - jitted
    bits = _float_as_bits(x)
    e = ((bits >> 23) & 0xFF) - 126
    m = _bits_as_float(np.int32((bits & 0x007FFFFF) | 0x3F000000))  # in [0.5, 1)
    small = m < _SQRTHF
    fe = _F(e - 1) if small else _F(e)
    u = (m + m - _ONE) if small else (m - _ONE)
    z = u * u
    y = ((((((((_LG0 * u + _LG1) * u + _LG2) * u + _LG3) * u + _LG4) * u + _LG5) * u
            + _LG6) * u + _LG7) * u + _LG8) * u * z
    y = y + fe * _LN2_LO - _HALF * z
    return (u + y) + fe * _LN2_HI


# The float32 passes below are bound by the latency of their polynomial chains, not by
# throughput: the in-place ones sweep each row as two interleaved halves (two
# independent chains per loop step for the out-of-order core to overlap), which made
# the Laplace kernel pass 1.7x and the weight pass 1.5x faster than one sweep on this
# kind of machine (four quarters: 2.0x for the kernel pass, at three times the compile
# time of the loops).  (Into another array, the halves' pointers may alias: LLVM then
# keeps the loop scalar.)


@njit(fastmath=_EXP_FLAGS, cache=True, inline="always")
def _weight_from_k32(k, code, inv_L2):  # pragma: no cover - jitted
    inside = (k > _TINY32) & (k < _ONE)  # k = 1: a coincident pair (or k rounds to 1)
    kk = k if inside else _HALF
    w = (kk * inv_L2) / _logf(kk) if code == _LAPLACE else -(kk * inv_L2)
    return w if inside else _ZERO


@njit(fastmath=_EXP_FLAGS, cache=True, inline="always")
def _weight_row_from_k32(K, W, i, code, inv_L2, jend, inplace):  # pragma: no cover
    if inplace:  # W is K
        h = jend // 2
        k0, k1 = K[i, :h], K[i, h:2 * h]
        for j in range(h):
            a = _weight_from_k32(k0[j], code, inv_L2)
            b = _weight_from_k32(k1[j], code, inv_L2)
            k0[j] = a
            k1[j] = b
        for j in range(2 * h, jend):
            K[i, j] = _weight_from_k32(K[i, j], code, inv_L2)
    else:
        for j in range(jend):
            W[i, j] = _weight_from_k32(K[i, j], code, inv_L2)


@njit(parallel=True, nogil=True, fastmath=_EXP_FLAGS, cache=True)
def _weight_rows32(K, W, code, inv_L2, lower, inplace, r0, r1):  # pragma: no cover
    """Rows ``r0:r1`` of ``W[i, j] = kappa'(r) / r`` from ``K[i, j] = kappa(r)`` for the
    Laplace kernel (``r = -L log k``, ``w = k / (L^2 log k)``) and the Gaussian
    (``w = -k / L^2``); ``w = 0`` where ``k = 1`` (coincident pairs) or ``k``
    underflowed.  ``lower``: columns ``j <= i`` only; ``inplace``: ``W`` is ``K``."""
    m = K.shape[1]
    for i in prange(r0, r1):
        jend = i + 1 if lower else m
        if code == _LAPLACE:  # one copy of the row loop per kernel: branches fold
            _weight_row_from_k32(K, W, i, _LAPLACE, inv_L2, jend, inplace)
        else:
            _weight_row_from_k32(K, W, i, _GAUSSIAN, inv_L2, jend, inplace)


@njit(parallel=True, nogil=True, fastmath=FASTMATH, cache=True)
def _weight_rows64(K, W, code, inv_L2, lower, r0, r1):  # pragma: no cover - jitted
    """:func:`_weight_rows32` with libm's log (float64)."""
    tiny = np.finfo(np.float64).tiny
    m = K.shape[1]
    for i in prange(r0, r1):
        for j in range(i + 1 if lower else m):
            k = K[i, j]
            if k > tiny and k < 1.0:
                W[i, j] = (k * inv_L2) / math.log(k) if code == _LAPLACE else -(k * inv_L2)
            else:
                W[i, j] = 0.0


def weights_from_k(K: np.ndarray, W: np.ndarray, code: int, inv_L2: Any, *,
                   lower: bool = False) -> None:
    """The gradient weights of :func:`_weight_rows32` (float32) or
    :func:`_weight_rows64` (float64) of all rows of ``K`` into ``W`` (which may be
    ``K``), on agop's threads; ``lower``: the lower triangle only."""
    if K.dtype == np.float32:  # (in place, the loop sweeps two halves of a row at once)
        run_rows(_weight_rows32, K.shape[0], K, W, code, inv_L2, lower, W is K,
                 triangle=lower)
    else:
        run_rows(_weight_rows64, K.shape[0], K, W, code, inv_L2, lower, triangle=lower)


_radial_exponent_inline = njit(fastmath=FASTMATH, cache=True, inline="always")(
    _scalar.radial_exponent
)
_radial_weight_inline = njit(fastmath=FASTMATH, cache=True, inline="always")(
    _scalar.radial_weight
)


@njit(fastmath=_EXP_FLAGS, cache=True, inline="always")
def _radial_value32(t, nxi, z, atol2, rho, code, L, q, want_weight,
                    at_zero):  # pragma: no cover - jitted
    """The float32 pass at one entry ``t = x_i . z_j`` for one (constant) kernel code:
    ``k`` and ``w`` both computed, the output picked by selects, the vectorizing exp: no
    branches or calls, so the loops around it vectorize."""
    nrm = nxi + z
    d2 = nrm - (t + t)
    near = d2 <= rho * nrm + atol2
    d2 = d2 if not near else nrm + atol2  # any positive value: replaced below
    k = _expf(_radial_exponent_inline(code, d2, L, q))
    w = _radial_weight_inline(code, d2, k, L, q)
    v = w if want_weight else k
    return v if not near else at_zero


@njit(fastmath=_EXP_FLAGS, cache=True, inline="always")
def _radial_row32(T, i, nxi, nz, atol2, rho, code, L, q, want_weight,
                  jend):  # pragma: no cover - jitted
    """Row ``i`` (columns ``:jend``) of the float32 pass, as two interleaved halves."""
    at_zero = _ZERO if want_weight else _ONE
    h = jend // 2
    t0, t1 = T[i, :h], T[i, h:2 * h]
    z0, z1 = nz[:h], nz[h:2 * h]
    for j in range(h):
        a = _radial_value32(t0[j], nxi, z0[j], atol2, rho, code, L, q, want_weight, at_zero)
        b = _radial_value32(t1[j], nxi, z1[j], atol2, rho, code, L, q, want_weight, at_zero)
        t0[j] = a
        t1[j] = b
    for j in range(2 * h, jend):
        T[i, j] = _radial_value32(T[i, j], nxi, nz[j], atol2, rho, code, L, q, want_weight,
                                  at_zero)


# (no reassoc: it would undo _expf)
@njit(parallel=True, nogil=True, fastmath=_EXP_FLAGS, cache=True)
def _pair_rows32(T, nx, nz, atol2, rho, code, L, q, want_weight, lower,
                 r0, r1):  # pragma: no cover - jitted
    """Rows ``r0:r1`` of the fused pass on float32 blocks for the Laplace and Gaussian
    kernels (``lower``: columns ``j <= i`` only)."""
    m = T.shape[1]
    for i in prange(r0, r1):
        jend = i + 1 if lower else m
        if code == _LAPLACE:  # one copy of the row loop per kernel: branches fold
            _radial_row32(T, i, nx[i], nz, atol2, rho, _LAPLACE, L, q, want_weight, jend)
        else:
            _radial_row32(T, i, nx[i], nz, atol2, rho, _GAUSSIAN, L, q, want_weight, jend)


@njit(parallel=True, nogil=True, fastmath=FASTMATH, cache=True)
def _pair_rows64(T, nx, nz, atol2, rho, code, L, q, want_weight, lower,
                 r0, r1):  # pragma: no cover - jitted
    """The fused pass with libm's exp: float64 blocks, and the generalized exponential
    kernel in float32 (see :func:`_pair_pass`)."""
    m = T.shape[1]
    for i in prange(r0, r1):
        for j in range(i + 1 if lower else m):
            nrm = nx[i] + nz[j]
            d2 = nrm - (T[i, j] + T[i, j])
            if d2 <= rho * nrm + atol2:
                T[i, j] = 0.0 if want_weight else 1.0
            else:
                k = math.exp(_radial_exponent(code, d2, L, q))
                T[i, j] = _radial_weight(code, d2, k, L, q) if want_weight else k


def _pair_pass(T, nx, nz, atol2, rho, code, L, q, want_weight, lower=False):
    """In place: ``T[i, j] = x_i . z_j`` becomes ``k`` (or the gradient weight ``w``),
    on agop's threads (``lower``: the lower triangle of a square ``T`` only).

    Radial kernels use ``d2 = |x|^2 + |z|^2 - 2 x.z`` and the self-pair rule
    ``d2 <= rho (|x|^2 + |z|^2) + atol2`` (coincident: ``k = 1``, ``w = 0``)."""
    if code == _QUADRATIC:  # k = t^2, w = 2 t: one NumPy pass, nothing to compile
        T[...] = (_scalar.dot_weight if want_weight else _scalar.dot_value)(T)
        return
    fast = T.dtype == np.float32 and code in (_LAPLACE, _GAUSSIAN)
    run_rows(_pair_rows32 if fast else _pair_rows64, T.shape[0], T, nx, nz, atol2, rho,
             code, L, q, want_weight, lower, triangle=lower)


# ------------------------------------------------------ symmetric matrices: lower triangle
# The kernel matrix of the training points is symmetric, and what PCG and the AGOP do
# with it needs one triangle: its GEMM and its pass run on the lower triangle only (the
# strict upper one is left as it is), as does the AGOP's weight pass read off it
# (``lower=True`` of :func:`_pair_pass` and :func:`weights_from_k`).


@njit(parallel=True, nogil=True, cache=True)
def _mirror_rows(K, block, r0, r1):  # pragma: no cover - jitted
    """``K[j, r] = K[r, j]`` for the rows ``r0 <= r < r1`` and ``j < r``; with ``block >
    0`` only within the diagonal ``block x block`` blocks (``j >= r - r % block``).
    Each row writes its own column, so row ranges run in parallel."""
    for r in prange(r0, r1):
        for j in range(r - r % block if block > 0 else 0, r):
            K[j, r] = K[r, j]


def mirror_lower(K: np.ndarray, block: int = 0) -> None:
    """The upper triangle of a square ``K`` from its lower (``block > 0``: only inside
    the diagonal blocks of that size), on agop's threads."""
    run_rows(_mirror_rows, K.shape[0], K, block, triangle=block == 0)


# ------------------------------------------------------------------------ L_p loops
# L_p kernels k = exp(-(||x - z||_p / L)^q) have no matrix-product form.  Their loops run
# with the centers along the innermost loop (contiguous rows of Z^T), so that the
# coordinate sums and the gradient sums over centers vectorize, in the data's dtype.
# p = 1 (product Laplace, L_1q) has its own branches: |D| and sign(D) by selects and the
# one-output gradient as two masked sums; other p take the scalar functions of _scalar
# (a power per coordinate).  Each compiled function releases the GIL and works on a
# range of rows; _lp_loop runs the ranges on threads.  (One compilation per dtype: a
# parallel loop would also re-optimize every function it calls once per level of
# linking, which more than doubled the first-call time.  Four rows per distance sweep
# sharing each load of z were up to 1.4x faster for p = 1 but cost a quarter more
# first-call compile time.)

_inline = njit(fastmath=FASTMATH, cache=True, inline="always")
_lp_power_sum_inline = _inline(_scalar.lp_power_sum)
_lp_coord_inline = _inline(_scalar.lp_coord)


def _exp_any(x):  # pragma: no cover - replaced by the overload in compiled code
    return math.exp(x)


@overload(_exp_any, jit_options={"fastmath": _EXP_FLAGS, "cache": True})
def _exp_any_impl(x):  # pragma: no cover - compile-time
    """``exp`` that vectorizes for float32 (:func:`_expf`); libm's for float64."""
    if x == types.float32:
        return lambda x: _expf(x)
    return lambda x: math.exp(x)


#: L_p tiles: rows per sweep and centers per sweep (a sweep's
#: ``d x _LP_CENTERS`` block of Z^T stays in cache while the rows use it)
_LP_ROWS = 16
_LP_CENTERS = 256


@_inline
def _lp_dist(X, ZT, i, j0, w, s, zero, p):  # pragma: no cover - jitted
    """``s[jj] = ||X[i] - Z[j0 + jj]||_p^p`` (any ``p``)."""
    s = s[:w]
    for jj in range(w):
        s[jj] = zero
    for a in range(X.shape[1]):
        xa = X[i, a]
        z = ZT[a, j0:j0 + w]
        for jj in range(w):
            s[jj] += _lp_power_sum_inline(xa - z[jj], p)


@_inline
def _lp_grad_row(x, ZT, j0, w, W, sg, g_row, zero, one, p):  # pragma: no cover - jitted
    """``g_row[l, a] += sum_jj W[l, jj] |D|^(p-1) sign(D)``, ``D = x[a] - Z[j0 + jj, a]``:
    for p = 1 and one output two masked sums, otherwise the directions once per
    coordinate, then the reductions, four outputs per sweep."""
    sg = sg[:w]
    c = W.shape[0]
    w0 = W[0, :w]
    for a in range(ZT.shape[0]):
        xa = x[a]
        z = ZT[a, j0:j0 + w]
        if p == 1.0 and c == 1:  # the sums over z < x and z > x apart: masked additions
            gp = gm = zero
            for jj in range(w):
                gp += w0[jj] if xa > z[jj] else zero
                gm += w0[jj] if xa < z[jj] else zero
            g_row[0, a] += gp - gm
            continue
        if p == 1.0:
            for jj in range(w):
                sg[jj] = (one if xa > z[jj] else zero) - (one if xa < z[jj] else zero)
        else:
            for jj in range(w):
                sg[jj] = _lp_coord_inline(xa - z[jj], p)
        for l0 in range(0, c - 3, 4):  # one load of sg serves four outputs
            w0, w1, w2, w3 = W[l0, :w], W[l0 + 1, :w], W[l0 + 2, :w], W[l0 + 3, :w]
            g0 = g1 = g2 = g3 = zero
            for jj in range(w):
                s = sg[jj]
                g0 += w0[jj] * s
                g1 += w1[jj] * s
                g2 += w2[jj] * s
                g3 += w3[jj] * s
            g_row[l0, a] += g0
            g_row[l0 + 1, a] += g1
            g_row[l0 + 2, a] += g2
            g_row[l0 + 3, a] += g3
        for l in range(c - c % 4, c):
            wl = W[l, :w]
            acc = zero
            for jj in range(w):
                acc += wl[jj] * sg[jj]
            g_row[l, a] += acc


@_inline
def _lp_dots(k, coefT, j0, w, out_row, zero):  # pragma: no cover - jitted
    """``out_row[l] += sum_jj k[jj] coefT[l, j0 + jj]``."""
    k = k[:w]
    for l in range(coefT.shape[0]):
        cl = coefT[l, j0:j0 + w]
        acc = zero
        for jj in range(w):
            acc += k[jj] * cl[jj]
        out_row[l] += acc


@njit(fastmath=_EXP_FLAGS, cache=True)  # no reassoc: it would undo _expf
def _lp_values(X, ZT, i, nx, nz, j0, w, s, atol2, rho, p, q, logL, inv_L, grad, zero, one,
               fd):  # pragma: no cover - jitted
    """Turn ``s[:w] = ||x_i - z_j||_p^p`` in place into kernel values, or with ``grad``
    into gradient scales ``-q t k / s`` (``t = (||x - z||_p / L)^q``); coincident pairs
    (the self-pair rule) get ``k = 1`` and scale 0."""
    s = s[:w]
    nzj = nz[j0:j0 + w]
    # |D|_2 >= d^(1/2 - 1/p) |D|_p (p <= 2) rules out most pairs at once: coincidence
    # needs s <= tau^(p/2) d^(1 - p/2); the others are checked exactly, marked by s = -1
    n_open = 0
    log_fd = (1.0 - 0.5 * p) * math.log(fd)
    if p == 1.0:  # s^2 <= d tau (fd = 1.01 d: rounding of s cannot hide a pair)
        for jj in range(w):
            n_open += s[jj] * s[jj] <= fd * (rho * (nx[i] + nzj[jj]) + atol2)
    else:
        for jj in range(w):
            tau = rho * (nx[i] + nzj[jj]) + atol2
            n_open += s[jj] <= 1.01 * math.exp(0.5 * p * math.log(tau) + log_fd)
    if n_open > 0:  # the exact check, for the pairs the bound leaves open only
        for jj in range(w):
            tau = rho * (nx[i] + nzj[jj]) + atol2
            if p == 1.0:
                if s[jj] * s[jj] > fd * tau:
                    continue
            elif s[jj] > 1.01 * math.exp(0.5 * p * math.log(tau) + log_fd):
                continue
            d2 = zero
            for a in range(X.shape[1]):
                diff = X[i, a] - ZT[a, j0 + jj]
                d2 += diff * diff
            if d2 <= tau:
                s[jj] = -one
    if p == 1.0 and q == 1.0 and grad:  # t = s / L, scale = -k / L
        for jj in range(w):
            sj = s[jj]
            k = _exp_any(-(sj * inv_L))
            v = -(k * inv_L)
            s[jj] = v if (sj > zero and k > zero) else zero
    elif p == 1.0 and q == 1.0:
        for jj in range(w):
            sj = s[jj]
            k = _exp_any(-(sj * inv_L))
            s[jj] = k if sj >= zero else one
    else:  # t = (s^(1/p) / L)^q through logarithms (no overflow of the powers), float64
        for jj in range(w):
            sj = s[jj]
            if sj > zero:
                t = math.exp((q / p) * math.log(sj) - q * logL)
                k = math.exp(-t)
                if grad:
                    s[jj] = (-q) * (t * k) / sj if k > 0.0 else 0.0
                else:
                    s[jj] = k
            else:  # a coincident pair
                s[jj] = zero if grad else one


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _lp_rows(X, ZT, nx, nz, atol2, rho, p, q, logL, inv_L, coefT, K, out, G, mode, zero,
             one, fd, i_start, i_stop):  # pragma: no cover - jitted
    """The L_p kernel loops on rows ``i_start:i_stop``, one compiled function for the
    three ops (``mode``):

    0: ``K[i, j] = k(x_i, z_j)``;
    1: ``out[i, l] += sum_j k(x_i, z_j) coef[j, l]``;
    2: ``G[i, l, a] += sum_j coef[j, l] d k(x_i, z_j) / d x_a`` (coincident pairs: 0).

    ``coefT`` is ``coef^T``; ``inv_L = 1 / L`` (used when ``p = q = 1``); ``zero``,
    ``one`` and ``fd = 1.01 d`` are constants of the data's dtype (a literal would promote
    float32 arithmetic to float64)."""
    m = ZT.shape[1]
    c = coefT.shape[0]
    S = np.empty((_LP_ROWS, _LP_CENTERS), dtype=X.dtype)
    W = np.empty((c, _LP_CENTERS), dtype=X.dtype)
    sg = np.empty(_LP_CENTERS, dtype=X.dtype)
    for i0 in range(i_start, i_stop, _LP_ROWS):
        i1 = min(i0 + _LP_ROWS, i_stop)
        for j0 in range(0, m, _LP_CENTERS):
            w = min(j0 + _LP_CENTERS, m) - j0
            for i in range(i0, i1):
                _lp_dist(X, ZT, i, j0, w, S[i - i0], zero, p)
            for i in range(i0, i1):
                si = S[i - i0]
                _lp_values(X, ZT, i, nx, nz, j0, w, si, atol2, rho, p, q, logL, inv_L,
                           mode == 2, zero, one, fd)
                if mode == 0:
                    for jj in range(w):
                        K[i, j0 + jj] = si[jj]
                elif mode == 1:
                    _lp_dots(si, coefT, j0, w, out[i], zero)
                else:
                    for l in range(c):
                        for jj in range(w):
                            W[l, jj] = si[jj] * coefT[l, j0 + jj]
                    _lp_grad_row(X[i], ZT, j0, w, W, sg, G[i], zero, one, p)


def _lp_loop(*args) -> None:
    """:func:`_lp_rows` over all rows of ``args[0]``, in ranges of whole tiles on as many
    threads as numba's thread count (a few ranges per thread, so that uneven ranges
    even out)."""
    run_rows(_lp_rows, args[0].shape[0], *args, multiple=_LP_ROWS, serial=True)


# ------------------------------------------------------- symmetric kernel matrix products
@_loop
def _symm_lower_pair(K, v0, v1, bounds, parts):  # pragma: no cover - jitted
    """``parts[t] = (K V)`` restricted to what rows ``bounds[t]:bounds[t+1]`` of the lower
    triangle of ``K`` contribute, for two columns ``v0, v1`` at once.

    Each element ``K[i, j]`` (``j <= i``) is read once and used twice (row ``i`` and,
    by symmetry, row ``j``); rows go in eights so that one pass over ``parts`` serves
    eight rows (with two rows per pass the loop ran at 70 % of the memory bandwidth, with
    four at 75 %, with eight at 95 %: 16 vector sums and the eight rows' loads still fit
    the registers).  Chunks write disjoint ``parts[t]``, summed by the caller.
    """
    for t in prange(bounds.shape[0] - 1):
        o0 = parts[t, 0]
        o1 = parts[t, 1]
        i = bounds[t]
        end = bounds[t + 1]
        while i + 7 < end:
            a0, a1, a2, a3 = v0[i], v0[i + 1], v0[i + 2], v0[i + 3]
            a4, a5, a6, a7 = v0[i + 4], v0[i + 5], v0[i + 6], v0[i + 7]
            b0, b1, b2, b3 = v1[i], v1[i + 1], v1[i + 2], v1[i + 3]
            b4, b5, b6, b7 = v1[i + 4], v1[i + 5], v1[i + 6], v1[i + 7]
            z = K[i, i] * np.float32(0)  # in K's dtype (times an int 0: float64)
            s00, s01, s10, s11, s20, s21, s30, s31 = z, z, z, z, z, z, z, z
            s40, s41, s50, s51, s60, s61, s70, s71 = z, z, z, z, z, z, z, z
            for j in range(i):
                k0 = K[i, j]
                k1 = K[i + 1, j]
                k2 = K[i + 2, j]
                k3 = K[i + 3, j]
                k4 = K[i + 4, j]
                k5 = K[i + 5, j]
                k6 = K[i + 6, j]
                k7 = K[i + 7, j]
                x0 = v0[j]
                x1 = v1[j]
                s00 += k0 * x0
                s01 += k0 * x1
                s10 += k1 * x0
                s11 += k1 * x1
                s20 += k2 * x0
                s21 += k2 * x1
                s30 += k3 * x0
                s31 += k3 * x1
                s40 += k4 * x0
                s41 += k4 * x1
                s50 += k5 * x0
                s51 += k5 * x1
                s60 += k6 * x0
                s61 += k6 * x1
                s70 += k7 * x0
                s71 += k7 * x1
                o0[j] += (((k0 * a0 + k1 * a1) + (k2 * a2 + k3 * a3))
                          + ((k4 * a4 + k5 * a5) + (k6 * a6 + k7 * a7)))
                o1[j] += (((k0 * b0 + k1 * b1) + (k2 * b2 + k3 * b3))
                          + ((k4 * b4 + k5 * b5) + (k6 * b6 + k7 * b7)))
            o0[i] += s00
            o1[i] += s01
            o0[i + 1] += s10
            o1[i + 1] += s11
            o0[i + 2] += s20
            o1[i + 2] += s21
            o0[i + 3] += s30
            o1[i + 3] += s31
            o0[i + 4] += s40
            o1[i + 4] += s41
            o0[i + 5] += s50
            o1[i + 5] += s51
            o0[i + 6] += s60
            o1[i + 6] += s61
            o0[i + 7] += s70
            o1[i + 7] += s71
            for r in range(8):  # the 8 x 8 block on the diagonal
                row = i + r
                for q in range(r):
                    col = i + q
                    kv = K[row, col]
                    o0[row] += kv * v0[col]
                    o1[row] += kv * v1[col]
                    o0[col] += kv * v0[row]
                    o1[col] += kv * v1[row]
                o0[row] += K[row, row] * v0[row]
                o1[row] += K[row, row] * v1[row]
            i += 8
        while i < end:  # the last rows of an uneven count, one by one
            a0, a1 = v0[i], v1[i]
            s00 = K[i, i] * np.float32(0)
            s01 = s00
            for j in range(i):
                k1 = K[i, j]
                s00 += k1 * v0[j]
                s01 += k1 * v1[j]
                o0[j] += k1 * a0
                o1[j] += k1 * a1
            o0[i] += s00 + K[i, i] * a0
            o1[i] += s01 + K[i, i] * a1
            i += 1


#: row chunks of the symmetric product (several per thread, for load balance)
_SYMM_CHUNKS = 16


def symmetric_matvec(K: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``K @ V`` for a symmetric C-ordered NumPy matrix ``K`` (float32 or float64),
    reading only its lower triangle, once per two columns of ``V`` (n, c).

    The product of an ``n x n`` matrix with a few vectors is memory bound: this reads
    ``n^2 / 2`` entries per pair of columns, where BLAS ``symv`` reads as many per column
    and a narrow GEMM the whole matrix.
    """
    n = K.shape[0]
    c = V.shape[1]
    # chunk boundaries of equal triangle area (row i costs i), multiples of 8 so that
    # rows go in eights
    bounds = row_chunks(n, _SYMM_CHUNKS, triangle=True, multiple=8)
    out = np.empty((n, c), dtype=K.dtype)
    parts = np.empty((bounds.shape[0] - 1, 2, n), dtype=K.dtype)
    for j in range(0, c, 2):
        v0 = np.ascontiguousarray(V[:, j], dtype=K.dtype)
        v1 = (np.ascontiguousarray(V[:, j + 1], dtype=K.dtype) if j + 1 < c
              else np.zeros(n, dtype=K.dtype))
        parts.fill(0)
        _symm_lower_pair(K, v0, v1, bounds, parts)
        summed = parts.sum(axis=0)
        out[:, j] = summed[0]
        if j + 1 < c:
            out[:, j + 1] = summed[1]
    return out


# ------------------------------------------------------------- low-rank update products
@_loop
def _lowrank_project(U, V, bounds, parts):  # pragma: no cover - jitted
    """``parts[t] = (U^T V)^T`` restricted to rows ``bounds[t]:bounds[t+1]`` (``(c, r)``
    each; the caller sums them): rows of ``U`` are read once, contiguously."""
    r = U.shape[1]
    c = V.shape[1]
    for t in prange(bounds.shape[0] - 1):
        P = parts[t]
        for i in range(bounds[t], bounds[t + 1]):
            for l in range(c):
                v = V[i, l]
                for k in range(r):
                    P[l, k] += U[i, k] * v


@_loop
def _lowrank_expand(U, W, V, out):  # pragma: no cover - jitted
    """``out = V + U W^T`` for ``W`` of shape ``(c, r)``, row by row."""
    n, r = U.shape
    c = V.shape[1]
    for i in prange(n):
        for l in range(c):
            s = U[i, 0] * np.float32(0)  # in U's dtype (times an int 0: float64)
            for k in range(r):
                s += U[i, k] * W[l, k]
            out[i, l] = V[i, l] + s


def lowrank_update_apply(U: np.ndarray, scale: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``V + U (scale[:, None] * (U^T V))`` for a C-ordered ``U`` (n, r) and columns
    ``V`` (n, c), in ``U``'s dtype: two passes over ``U`` on numba's threads.

    A preconditioner applied between kernel-matrix products inside conjugate gradients
    runs here rather than in BLAS: after each call OpenBLAS's own worker threads keep
    spinning for a while (about 0.1 s by default), and on a machine with few cores they
    take CPU time from the next compiled loop (measured: the symmetric product ran twice
    as slowly after a BLAS ``gemv`` on 2 cores).
    """
    n, r = U.shape
    V = np.ascontiguousarray(V, dtype=U.dtype)
    c = V.shape[1]
    bounds = row_chunks(n, _SYMM_CHUNKS)
    parts = np.zeros((bounds.shape[0] - 1, c, r), dtype=U.dtype)
    _lowrank_project(U, V, bounds, parts)
    W = np.ascontiguousarray(parts.sum(axis=0) * scale[None, :].astype(U.dtype))
    out = np.empty_like(V)
    _lowrank_expand(U, W, V, out)
    return out


# --------------------------------------------------------------------------- wrappers

#: rows per GEMM of the kernel matrix (OpenBLAS is several times slower on one huge call)
_GEMM_ROWS = 2048
#: rows per GEMM of a lower triangle (each also computes the upper half of its diagonal
#: block: 4 % extra work at n = 12 800)
_GEMM_ROWS_LOWER = 512


def _to_numpy(a: Any) -> np.ndarray:
    """A C-contiguous NumPy view of a NumPy array or a torch CPU tensor (zero-copy when
    it already is contiguous)."""
    if not isinstance(a, np.ndarray):
        a = np.from_dlpack(a.detach())
    return np.ascontiguousarray(a)


def _from_numpy(a: np.ndarray, xp: Any) -> Any:
    if namespace_name(xp) == "torch":
        import torch

        return torch.from_numpy(a)
    return a


class _Problem:
    """Centered NumPy data and the constants of the self-pair rule for one call."""

    def __init__(self, kernel: Any, Xt: Any, Zt: Any, coef: Any = None) -> None:
        same = Zt is Xt
        X, Z = _to_numpy(Xt), None
        Z = X if same else _to_numpy(Zt)
        self.dtype = X.dtype.type
        self.family = kernel.family
        if self.family != "dot":
            # distance kernels are translation invariant: center at the mean of the
            # centers so that |x|^2 + |z|^2 - 2 x.z stays accurate far from the origin
            mu = Z.mean(axis=0)
            X = X - mu
            Z = X if same else Z - mu
            self.nx = np.einsum("ij,ij->i", X, X)
            self.nz = self.nx if same else np.einsum("ij,ij->i", Z, Z)
        else:
            self.nx = self.nz = np.zeros(1, dtype=X.dtype)
        self.X, self.Z = X, Z
        # a contiguous copy of Z^T: OpenBLAS takes a slow path for X @ X.T on one buffer
        self.ZT = None if self.family == "lp" else np.ascontiguousarray(Z.T)
        atol2, rho = self_pair_params(np.dtype(self.dtype).name, Z.shape[1])
        self.atol2, self.rho = self.dtype(atol2), self.dtype(rho)
        if self.family == "lp":
            self.p, self.q = float(kernel.p), float(kernel.q)
            self.logL = math.log(kernel.bandwidth)
            # the L_p loops run in the data's dtype, on Z^T
            self.X = np.ascontiguousarray(X)
            self.ZT = np.ascontiguousarray(Z.T)
            with np.errstate(over="ignore", divide="ignore"):
                self.inv_L = self.dtype(1.0 / kernel.bandwidth)
        else:
            self.code, L, q = _scalar.kernel_code(kernel)
            self.L, self.q = self.dtype(L), self.dtype(q)
        self.coef = None if coef is None else _to_numpy(coef)

    def lp(self, mode: int, i0: int = 0, i1: int | None = None) -> np.ndarray:
        """Run the L_p loop on rows ``i0:i1``: the kernel block (``mode`` 0), its product
        with ``coef`` (1) or the predictor gradients (2), in the data's dtype."""
        i1 = self.X.shape[0] if i1 is None else i1
        b, m, d = i1 - i0, self.Z.shape[0], self.Z.shape[1]
        dt = self.dtype
        coef = np.zeros((1, 1), dt) if self.coef is None else self.coef
        c = coef.shape[1]
        shapes = {0: ((b, m), (1, 1), (1, 1, 1)), 1: ((1, 1), (b, c), (1, 1, 1)),
                  2: ((1, 1), (1, 1), (b, c, d))}[mode]
        # the kernel block is written straight in the data's dtype (an n x m float64
        # block would double the memory of a float32 kernel matrix, and need a cast)
        outs = [np.empty(shapes[0], dt)] + [np.zeros(shape) for shape in shapes[1:]]
        _lp_loop(
            self.X[i0:i1], self.ZT, self.nx[i0:i1], self.nz, self.atol2, self.rho, self.p,
            self.q, self.logL, self.inv_L, np.ascontiguousarray(coef.T, dtype=dt), *outs,
            mode, dt(0), dt(1), dt(1.01 * self.X.shape[1]),
        )
        return outs[mode].astype(dt, copy=False)

    def block(self, i0: int, i1: int, out: np.ndarray, *, weight: bool) -> np.ndarray:
        """Kernel values (or gradient weights) of rows ``i0:i1``, written into ``out``."""
        T = matmul(self.X[i0:i1], self.ZT, out=out[: i1 - i0])
        _pair_pass(
            T, self.nx[i0:i1], self.nz, self.atol2, self.rho, self.code, self.L, self.q, weight
        )
        return T

    def block_grads(self, i0: int, i1: int, buf: np.ndarray, cz: np.ndarray) -> np.ndarray:
        """Transformed-space predictor gradients of rows ``i0:i1``: ``(b, c, d)``."""
        if self.family == "lp":
            return self.lp(2, i0, i1)
        return self.grads_from_weights(self.block(i0, i1, buf, weight=True), i0, i1, cz)

    def grads_from_weights(self, W: np.ndarray, i0: int, i1: int, cz: np.ndarray) -> np.ndarray:
        """Gradients of rows ``i0:i1`` from their block of gradient weights ``W``."""
        return self.grads_from_products(matmul(W, cz), i0, i1)

    def grads_from_products(self, WB: np.ndarray, i0: int, i1: int) -> np.ndarray:
        """Gradients of rows ``i0:i1`` from ``W @ cz`` of their weights ``W`` (see
        :meth:`weighted_centers`)."""
        b, d, c = i1 - i0, self.Z.shape[1], self.coef.shape[1]
        G = WB[:, : c * d].reshape(b, c, d)
        if self.family == "radial":  # sum_j w_ij coef_jl (x_i - z_j)
            G = np.subtract(WB[:, c * d:, None] * self.X[i0:i1, None, :], G)
        return G

    def weighted_centers(self) -> np.ndarray:
        """``cz[j, l*d + a] = coef[j, l] * z_j[a]``, and for radial kernels ``coef`` in
        the last ``c`` columns: one GEMM gives both gradient sums."""
        m, d = self.Z.shape
        cz = (self.coef[:, :, None] * self.Z[:, None, :]).reshape(m, -1)
        if self.family == "radial":
            return np.concatenate([cz, self.coef], axis=1)
        return cz


def _grad_plan(prob: _Problem):
    """Row blocks of the gradient loop: a block of weights plus its gradients."""
    (m, d), c = prob.Z.shape, prob.coef.shape[1]
    size = np.dtype(prob.dtype).itemsize
    if prob.family == "lp":  # float64 gradients of the block and their cast
        return plan_blocks(prob.X.shape[0], (8 + size) * c * d)
    return plan_blocks(prob.X.shape[0], (m + 3 * c * d + c) * size, m * (c * d + c) * size)


@with_own_threads
def kernel_matrix(kernel: Any, Xt: Any, Zt: Any, *, xp: Any) -> Any:
    """``K[i, j] = k(Xt[i], Zt[j])``: one GEMM into the output, then one fused pass."""
    prob = _Problem(kernel, Xt, Zt)
    if prob.family == "lp":
        return _from_numpy(prob.lp(0), xp)
    return _from_numpy(_radial_matrix(prob), xp)


@with_own_threads
def kernel_matrix_into(kernel: Any, Xt: Any, out: np.ndarray | None = None, *,
                       lower: bool = False) -> np.ndarray:
    """``K(Xt, Xt)`` as a NumPy array, written into ``out`` when that is an ``n x n``
    C-ordered array of the data's dtype (a buffer kept between solves; anything else is
    ignored and a new array is made).

    Radial kernels compute the lower triangle only (GEMM row blocks, one pass) and, unless
    ``lower=True``, copy it into the upper one (exactly symmetric then); with
    ``lower=True`` the strict upper triangle holds garbage, for consumers that read the
    lower triangle only (:func:`symmetric_matvec`, :func:`symmetric_rows_product`)."""
    prob = _Problem(kernel, Xt, Xt)
    if prob.family == "lp":
        return prob.lp(0)
    n = prob.X.shape[0]
    usable = (isinstance(out, np.ndarray) and out.shape == (n, n)
              and out.dtype == prob.dtype and out.flags.c_contiguous)
    out = out if usable else None
    if prob.family != "radial":
        return _radial_matrix(prob, out)
    K = np.empty((n, n), dtype=prob.dtype) if out is None else out
    for i0 in range(0, n, _GEMM_ROWS_LOWER):
        i1 = min(i0 + _GEMM_ROWS_LOWER, n)
        matmul(prob.X[i0:i1], prob.ZT[:, :i1], out=K[i0:i1, :i1])
    _pair_pass(K, prob.nx, prob.nx, prob.atol2, prob.rho, prob.code, prob.L, prob.q, False,
               lower=True)
    if not lower:
        mirror_lower(K)
    return K


@with_own_threads
def kernel_rows_into(kernel: Any, Xt: Any, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of ``K(Xt, Xt)``, ``(len(idx), n)``, written into ``out`` (C-ordered,
    the data's dtype): the rows a Nystrom preconditioner needs of a matrix kept as its
    lower triangle.  Centered like :func:`kernel_matrix_into` (at the mean of ``Xt``)."""
    X = _to_numpy(Xt)
    prob = _Problem(kernel, X[idx], X)
    if prob.family == "lp":
        out[...] = prob.lp(0)
        return out
    return _radial_matrix(prob, out)


def symmetric_rows_product(K: np.ndarray, i0: int, i1: int, B: np.ndarray) -> np.ndarray:
    """Rows ``i0:i1`` of ``S @ B``, ``S`` the symmetric matrix whose lower triangle the
    C-ordered ``K`` holds, its diagonal ``_GEMM_ROWS_LOWER``-blocks whole (the rest of
    the strict upper triangle is not read; see :func:`mirror_lower`).

    In sub-blocks of rows ``a:b``: the rows up to their diagonal block's end, and the
    part below that block transposed, by two products (the multiply-adds of one GEMM
    over full rows)."""
    n = K.shape[0]
    out = np.empty((i1 - i0, B.shape[1]), dtype=np.result_type(K, B))
    blk = _GEMM_ROWS_LOWER
    a = i0
    while a < i1:
        end = min(a - a % blk + blk, n)  # the end of the diagonal block of row a
        b = min(end, i1)
        part = matmul(K[a:b, :end], B[:end], out=out[a - i0:b - i0])
        if end < n:
            part += matmul(K[end:, a:b].T, B[end:])
        a = b
    return out


def _radial_matrix(prob: _Problem, out: np.ndarray | None = None) -> np.ndarray:
    """The kernel matrix of a non-L_p problem: GEMM row blocks, each passed in place."""
    K = np.empty((prob.X.shape[0], prob.Z.shape[0]), dtype=prob.dtype) if out is None else out
    for i0 in range(0, K.shape[0], _GEMM_ROWS):
        i1 = min(i0 + _GEMM_ROWS, K.shape[0])
        prob.block(i0, i1, K[i0:], weight=False)
    return K


@with_own_threads
def kernel_mv(kernel: Any, Xt: Any, Zt: Any, coef: Any, *, xp: Any) -> Any:
    """``K(Xt, Zt) @ coef`` in row blocks of the planned size."""
    prob = _Problem(kernel, Xt, Zt, coef)
    n, (m, c) = prob.X.shape[0], prob.coef.shape
    if prob.family == "lp":
        return _from_numpy(prob.lp(1), xp)
    out = np.empty((n, c), dtype=prob.dtype)
    plan = plan_blocks(n, (m + c) * np.dtype(prob.dtype).itemsize)
    buf = scratch("kernel_mv", (plan.block_rows, m), prob.dtype)
    for i0, i1 in plan:
        matmul(prob.block(i0, i1, buf, weight=False), prob.coef, out=out[i0:i1])
    return _from_numpy(out, xp)


@with_own_threads
def predictor_grads(kernel: Any, Xt: Any, Zt: Any, coef: Any, *, xp: Any) -> Any:
    """Gradients of ``f(x) = sum_j coef_j k(x, z_j)`` at the rows of ``Xt``: ``(n, c, d)``."""
    prob = _Problem(kernel, Xt, Zt, coef)
    n, (m, d), c = prob.X.shape[0], prob.Z.shape, prob.coef.shape[1]
    if prob.family == "lp":
        return _from_numpy(prob.lp(2), xp)
    plan = _grad_plan(prob)
    buf = scratch("grads", (plan.block_rows, m), prob.dtype)
    cz = prob.weighted_centers()
    G = np.empty((n, c, d), dtype=prob.dtype)
    for i0, i1 in plan:
        G[i0:i1] = prob.block_grads(i0, i1, buf, cz)
    return _from_numpy(G, xp)


@with_own_threads
def agop(
    kernel: Any, Xt: Any, Zt: Any, coef: Any, *, centering: str | None, diag: bool, xp: Any
) -> Any:
    """AGOP over the rows of ``Xt`` (transformed space): gradients of one row block at a
    time, each block's outer products by one BLAS call."""
    prob = _Problem(kernel, Xt, Zt, coef)
    plan = _grad_plan(prob)
    buf = None if prob.family == "lp" else scratch("grads", (plan.block_rows, prob.Z.shape[0]),
                                                   prob.dtype)
    cz = None if prob.family == "lp" else prob.weighted_centers()
    acc = AGOPAccumulator(centering=centering, diag=diag, xp=np)
    for i0, i1 in plan:
        acc.add(prob.block_grads(i0, i1, buf, cz))
    return _from_numpy(np.ascontiguousarray(acc.finish()), xp)


@with_own_threads
def agop_from_kernel_matrix(
    kernel: Any, K: np.ndarray, Xt: Any, coef: Any, *, centering: str | None, diag: bool,
    overwrite: bool = False, lower: bool = False,
) -> np.ndarray | None:
    """AGOP of ``f = sum_j coef_j k(., x_j)`` over its own centers ``Xt`` (transformed
    space), with the gradient weights read off the kernel matrix ``K = K(Xt, Xt)`` at
    hand instead of recomputed: this saves the distance GEMM, a third of the work.

    For the Laplace and Gaussian kernels, whose weight ``kappa'(r) / r`` is a function
    of ``kappa(r)`` (``r = -L log k`` for Laplace); ``None`` for any other kernel or a
    ``K`` of another shape, dtype or layout.  Coincident pairs have ``k = 1`` in ``K``
    (the self-pair rule of :func:`kernel_matrix`) and get weight 0, as in :func:`agop`;
    so do pairs whose ``k`` rounds to 1, which lie far inside that rule's tolerance.

    ``overwrite=True`` turns ``K`` into the weights in place, in one pass before all
    products (no ``block x n`` buffer); ``K`` is garbage afterwards.  ``lower=True``
    (which needs ``overwrite=True``): ``K`` holds only its lower triangle
    (:func:`kernel_matrix_into` with ``lower=True``); the pass and the products read that
    triangle alone.
    """
    if lower and not overwrite:
        raise ValueError("lower=True reads the weights in place: it needs overwrite=True")
    if kernel.family != "radial":
        return None
    code, L, _ = _scalar.kernel_code(kernel)
    if code not in (_LAPLACE, _GAUSSIAN):
        return None
    prob = _Problem(kernel, Xt, Xt, coef)
    n = prob.X.shape[0]
    if not (isinstance(K, np.ndarray) and K.shape == (n, n) and K.dtype == prob.dtype
            and K.flags.c_contiguous):
        return None
    with np.errstate(over="ignore"):
        inv_L2 = prob.dtype(1.0 / (float(L) * float(L)))
    plan = _grad_plan(prob)
    cz = prob.weighted_centers()
    acc = AGOPAccumulator(centering=centering, diag=diag, xp=np)
    if lower:  # the weights of the lower triangle, made whole in the diagonal blocks
        weights_from_k(K, K, code, inv_L2, lower=True)
        mirror_lower(K, _GEMM_ROWS_LOWER)
        for i0, i1 in plan:
            acc.add(prob.grads_from_products(symmetric_rows_product(K, i0, i1, cz), i0, i1))
        return np.ascontiguousarray(acc.finish())
    buf = None
    if overwrite:
        weights_from_k(K, K, code, inv_L2)
    else:
        buf = scratch("grads", (plan.block_rows, n), prob.dtype)
    for i0, i1 in plan:
        if overwrite:
            W = K[i0:i1]
        else:
            W = buf[: i1 - i0]
            weights_from_k(K[i0:i1], W, code, inv_L2)
        acc.add(prob.grads_from_weights(W, i0, i1, cz))
    return np.ascontiguousarray(acc.finish())


# --------------------------------------------------------------------------- patches


@njit(parallel=True, cache=True)
def _patch_loop(X, index, out):  # pragma: no cover - jitted
    """``out[i, p, c*k + o] = X[i, c, index[p, o]]`` (0 where the index is ``H*W``)."""
    n, C, hw = X.shape
    P, k = index.shape
    for i in prange(n):
        for p in range(P):
            for c in range(C):
                for o in range(k):
                    src = index[p, o]
                    out[i, p, c * k + o] = X[i, c, src] if src < hw else 0.0


def patches(X: Any, index: Any, *, xp: Any) -> Any:
    """Patches ``(n, P, C*k)`` of images ``(n, C, H*W)`` (see ``agop._generic.patches``)."""
    Xn = _to_numpy(X)
    idx = np.ascontiguousarray(np.asarray(index), dtype=np.int64)
    out = np.empty((Xn.shape[0], idx.shape[0], Xn.shape[1] * idx.shape[1]), dtype=Xn.dtype)
    _patch_loop(Xn, idx, out)
    return _from_numpy(out, xp)


# --------------------------------------------------------------------------- registry

_KERNEL_NAMES = frozenset(
    {"laplace", "gaussian", "generalized_exponential", "lpq_laplace", "product_laplace",
     "quadratic"}
)


def is_usable_for(ctx: DispatchContext) -> bool:
    """NumPy arrays or torch CPU tensors (not requiring grad), float32/float64, and one of
    agop's own kernels."""
    return (
        ctx.namespace in ("numpy", "torch")
        and str(ctx.device) == "cpu"
        and ctx.dtype in ("float32", "float64")
        and not ctx.requires_grad
        and getattr(ctx.kernel, "name", None) in _KERNEL_NAMES
        and type(ctx.kernel).__module__ == "agop.kernels"
    )


_REQUIREMENT = (
    "NumPy arrays or torch CPU tensors that do not require grad, float32 or float64, and "
    "one of agop's kernels"
)

for _op in OPS:
    register(
        _op, "numba_cpu", globals()[_op], is_usable_for=is_usable_for, priority=10,
        requirement=_REQUIREMENT,
    )


def _data_usable_for(ctx: DispatchContext) -> bool:
    """NumPy arrays or torch CPU tensors (not requiring grad), float32/float64."""
    return (
        ctx.namespace in ("numpy", "torch")
        and str(ctx.device) == "cpu"
        and ctx.dtype in ("float32", "float64")
        and not ctx.requires_grad
    )


register(
    "patches", "numba_cpu", patches, is_usable_for=_data_usable_for, priority=10,
    requirement="NumPy arrays or torch CPU tensors that do not require grad, float32 or "
    "float64",
)
