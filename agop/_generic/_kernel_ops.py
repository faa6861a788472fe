"""Array-API-only implementations of the kernel ops.

Every function takes the data already mapped by the factor of M (``Xt = X S^T``,
``Zt = Z S^T``; the delegation layer ``agop._ops`` does the mapping and maps gradients
and AGOPs back), and a required keyword ``xp``.  They use only Array-API functions, so
they run unchanged on NumPy, torch (CPU or CUDA), CuPy and array-api-strict arrays.

Reductions walk over row blocks of the evaluation points planned by
``agop._lib._blocking``; only :func:`kernel_matrix` returns an ``n x m`` array.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import is_writeable_array

from .._lib._blocking import BlockPlan, plan_blocks
from .._lib._compat import array_device, dtype_name
from .._lib._selfpair import self_pair_params

__all__ = [
    "AGOPAccumulator",
    "agop",
    "kernel_matrix",
    "kernel_mv",
    "pairwise_grads",
    "predictor_grads",
]


def _itemsize(xp: Any, dtype: Any) -> int:
    return 8 if dtype == xp.float64 else 4


def _plan(
    kernel: Any, Xt: Any, Zt: Any, c: int, xp: Any, *, grads: bool, extra_per_row: int = 0
) -> BlockPlan:
    """Row blocks of ``Xt`` so that one block's temporaries fit the working memory.

    The counts are numbers of array elements per row of a block (the kernel block, its
    masks and profile values; the ``(b, m, d)`` differences of L_p kernels; the block's
    gradients) plus ``extra_per_row``; ``fixed`` holds the weighted centers ``coef x Z``.
    """
    m, d = Zt.shape
    if kernel.family == "lp":
        per_row = (7 if grads else 4) * m * d + 4 * m
    elif kernel.family == "radial":
        per_row = (7 if grads else 6) * m
    else:
        per_row = 3 * m
    per_row += extra_per_row
    fixed = 0
    if grads:
        per_row += 3 * c * d + c
        fixed = m * c * d if kernel.family != "lp" else 0
    size = _itemsize(xp, Xt.dtype)
    return plan_blocks(Xt.shape[0], per_row * size, fixed * size)


class _Blocks:
    """Per-call constants of the block loop (norms, self-pair rule, weighted centers)."""

    def __init__(self, kernel: Any, Xt: Any, Zt: Any, xp: Any, coef: Any = None) -> None:
        if kernel.family != "dot":
            # distance kernels are translation invariant: centering at the mean of the
            # centers keeps |x|^2 + |z|^2 - 2 x.z accurate for data far from the origin
            same = Zt is Xt
            mu = xp.mean(Zt, axis=0)
            Xt = Xt - mu
            Zt = Xt if same else Zt - mu
            self.nx = xp.sum(Xt * Xt, axis=1)
            self.nz = self.nx if Zt is Xt else xp.sum(Zt * Zt, axis=1)
        self.kernel, self.Xt, self.Zt, self.xp = kernel, Xt, Zt, xp
        self.atol2, self.rho = self_pair_params(dtype_name(xp, Xt.dtype), Zt.shape[1])
        self.coef = coef
        self.cz = None
        if coef is not None and kernel.family != "lp":
            m, d = Zt.shape
            c = coef.shape[1]
            # cz[j, l*d + a] = coef[j, l] * Zt[j, a]: one matmul gives sum_j w_ij coef_jl z_j
            self.cz = xp.reshape(coef[:, :, None] * Zt[:, None, :], (m, c * d))

    def _near(self, d2: Any, norms: Any) -> Any:
        """Coincident pairs (the self-pair rule); ``norms[i, j] = |x_i|^2 + |z_j|^2``.

        A NaN distance is not near, so NaN propagates instead of being masked."""
        return d2 <= self.rho * norms + self.atol2

    def _radial(self, i0: int, i1: int, want_w: bool) -> tuple[Any, Any]:
        xp, k = self.xp, self.kernel
        norms = self.nx[i0:i1, None] + self.nz[None, :]
        d2 = norms + (self.Xt[i0:i1, :] * -2.0) @ self.Zt.T
        near = self._near(d2, norms)
        d2 = xp.where(near, 0.0, d2)
        K = k._k_from_sq(d2, xp)
        if not want_w:
            return K, None
        W = xp.where(near, 0.0, k._w_from_sq(xp.where(near, 1.0, d2), K, xp))
        return K, W

    def _lp(self, i0: int, i1: int, want_grad: bool) -> tuple[Any, Any]:
        xp, k = self.xp, self.kernel
        p, q, L = k.p, k.q, k.bandwidth
        D = self.Xt[i0:i1, None, :] - self.Zt[None, :, :]  # (b, m, d)
        near = self._near(xp.sum(D * D, axis=2), self.nx[i0:i1, None] + self.nz[None, :])
        A = xp.abs(D)
        s = xp.sum(A, axis=2) if p == 1.0 else xp.sum(A**p, axis=2)
        s = xp.where(near, 0.0, s)
        # t = (|D|_p / L)^q = exp((q/p) log s - q log L): s^(1/p) overflows for small p
        pos = s > 0
        logt = (q / p) * xp.log(xp.where(pos, s, 1.0)) - q * math.log(L)
        t = xp.where(pos, xp.exp(logt), 0.0)
        K = xp.exp(-t)
        if not want_grad:
            return K, None
        # -(q / L^q) k |D|_p^(q - p) = -q t k / |D|_p^p = -q t k / s
        tk = xp.where(K > 0, t * K, 0.0)  # t e^-t -> 0 as t -> inf, not inf * 0
        scale = xp.where(near, 0.0, (-q) * tk / xp.where(near, 1.0, s))
        if p == 1.0:
            coord = xp.sign(D)
        else:
            nz = A > 0
            coord = xp.where(nz, xp.where(nz, A, 1.0) ** (p - 1.0), 0.0) * xp.sign(D)
        return K, scale[:, :, None] * coord  # pairwise gradient wrt the transformed x

    def _dot(self, i0: int, i1: int, want_w: bool) -> tuple[Any, Any]:
        xp, k = self.xp, self.kernel
        T = self.Xt[i0:i1, :] @ self.Zt.T
        return k._k_from_dot(T, xp), (k._dk_from_dot(T, xp) if want_w else None)

    def values(self, i0: int, i1: int) -> Any:
        """Kernel block ``K[i0:i1, :]``."""
        fam = self.kernel.family
        if fam == "radial":
            return self._radial(i0, i1, False)[0]
        if fam == "lp":
            return self._lp(i0, i1, False)[0]
        return self._dot(i0, i1, False)[0]

    def grads(self, i0: int, i1: int) -> Any:
        """Transformed-space predictor gradients for rows ``i0:i1``: ``(b, c, d)``."""
        xp, fam = self.xp, self.kernel.family
        b, d, c = i1 - i0, self.Zt.shape[1], self.coef.shape[1]
        if fam == "lp":
            P = self._lp(i0, i1, True)[1]  # (b, m, d)
            return xp.permute_dims(xp.matmul(xp.permute_dims(P, (0, 2, 1)), self.coef), (0, 2, 1))
        if fam == "radial":
            W = self._radial(i0, i1, True)[1]
            # grad = sum_j w_ij coef_jl (x_i - z_j)
            first = (W @ self.coef)[:, :, None] * self.Xt[i0:i1, None, :]
            return first - xp.reshape(W @ self.cz, (b, c, d))
        W = self._dot(i0, i1, True)[1]  # grad = sum_j k'(x_i.z_j) coef_jl z_j
        return xp.reshape(W @ self.cz, (b, c, d))

    def pairwise(self, i0: int, i1: int) -> Any:
        """Pairwise transformed-space gradients ``grad_x k(x_i, z_j)``: ``(b, m, d)``."""
        fam = self.kernel.family
        if fam == "lp":
            return self._lp(i0, i1, True)[1]
        if fam == "radial":
            W = self._radial(i0, i1, True)[1]
            return W[:, :, None] * (self.Xt[i0:i1, None, :] - self.Zt[None, :, :])
        W = self._dot(i0, i1, True)[1]
        return W[:, :, None] * self.Zt[None, :, :]


def _stack_rows(parts: Any, plan: BlockPlan, shape: tuple[int, ...], like: Any, xp: Any) -> Any:
    """Row blocks into one array, written in place where the library allows it (so the
    output is not held twice), else concatenated."""
    it = iter(plan)
    first = next(parts)
    if plan.n_blocks == 1:
        return first
    if not is_writeable_array(like):
        return xp.concat([first, *parts], axis=0)
    out = xp.empty(shape, dtype=first.dtype, device=array_device(like))
    i0, i1 = next(it)
    out[i0:i1, ...] = first
    for (i0, i1), part in zip(it, parts, strict=True):
        out[i0:i1, ...] = part
    return out


def kernel_matrix(kernel: Any, Xt: Any, Zt: Any, *, xp: Any) -> Any:
    """``K[i, j] = k(Xt[i], Zt[j])`` (the one op that returns an ``n x m`` array)."""
    blocks = _Blocks(kernel, Xt, Zt, xp)
    plan = _plan(kernel, Xt, Zt, 0, xp, grads=False)
    parts = (blocks.values(i0, i1) for i0, i1 in plan)
    return _stack_rows(parts, plan, (Xt.shape[0], Zt.shape[0]), Xt, xp)


def kernel_mv(kernel: Any, Xt: Any, Zt: Any, coef: Any, *, xp: Any) -> Any:
    """``K(Xt, Zt) @ coef`` without materializing more than one planned block of K."""
    blocks = _Blocks(kernel, Xt, Zt, xp)
    plan = _plan(kernel, Xt, Zt, coef.shape[1], xp, grads=False)
    parts = (blocks.values(i0, i1) @ coef for i0, i1 in plan)
    return _stack_rows(parts, plan, (Xt.shape[0], coef.shape[1]), Xt, xp)


def predictor_grads(kernel: Any, Xt: Any, Zt: Any, coef: Any, *, xp: Any) -> Any:
    """Gradients of ``f(x) = sum_j coef_j k(x, z_j)`` at each row of ``Xt``: ``(n, c, d)``."""
    blocks = _Blocks(kernel, Xt, Zt, xp, coef)
    plan = _plan(kernel, Xt, Zt, coef.shape[1], xp, grads=True)
    parts = (blocks.grads(i0, i1) for i0, i1 in plan)
    return _stack_rows(parts, plan, (Xt.shape[0], coef.shape[1], Zt.shape[1]), Xt, xp)


def pairwise_grads(kernel: Any, Xt: Any, Zt: Any, *, xp: Any) -> Any:
    """``G[i, j] = grad_x k(x, z_j)`` at ``x = Xt[i]`` (``(n, m, d)``, transformed space)."""
    blocks = _Blocks(kernel, Xt, Zt, xp)
    m, d = Zt.shape
    plan = _plan(kernel, Xt, Zt, 0, xp, grads=False, extra_per_row=3 * m * d)
    parts = (blocks.pairwise(i0, i1) for i0, i1 in plan)
    return _stack_rows(parts, plan, (Xt.shape[0], *Zt.shape), Xt, xp)


class AGOPAccumulator:
    """Running sums that turn blocks of gradients ``(b, c, d)`` into the AGOP.

    ``finish()`` returns ``(1/m) sum_{i,l} (g_il - mu)(g_il - mu)^T`` over the ``m`` points
    seen: ``mu = 0`` without centering; ``mu = mu_l``, the mean gradient of output ``l``,
    for ``"per_output"``; ``mu`` the mean over all (point, output) rows for ``"pooled"``.
    Centered sums are merged block by block with the pairwise update of Chan, Golub and
    LeVeque (each block's centered scatter plus ``n_a n_b / n delta delta^T``), which is
    stable where "sum of squares minus squared mean" cancels catastrophically.  With
    ``diag=True`` only diagonals are accumulated.
    """

    def __init__(self, *, centering: str | None, diag: bool, xp: Any) -> None:
        self.centering, self.diag, self.xp = centering, diag, xp
        self.scatter = None  # sum of (centered) outer products
        self.mean = None  # (c, d) per output or (d,) pooled
        self.rows = 0  # rows behind self.mean
        self.m = 0

    def _outer(self, A: Any) -> Any:
        """sum over leading axes of a a^T for rows a of A (..., d), or its diagonal."""
        xp = self.xp
        if self.diag:
            return xp.sum(xp.reshape(A * A, (-1, A.shape[-1])), axis=0)
        Af = xp.reshape(A, (-1, A.shape[-1]))
        return Af.T @ Af

    def add(self, G: Any) -> None:
        xp = self.xp
        b, c, d = G.shape
        if self.centering is None:
            self.merge(self._outer(G), None, b, b)
            return
        if self.centering == "per_output":
            n_b, mu_b = b, xp.mean(G, axis=0)  # (c, d)
        else:
            n_b, mu_b = b * c, xp.mean(xp.reshape(G, (b * c, d)), axis=0)  # (d,)
        self.merge(self._outer(G - mu_b), mu_b, n_b, b)

    def merge(self, scatter: Any, mean: Any, rows: int, m: int) -> None:
        """Merge the sums of another set of ``m`` points: their (centered) ``scatter``,
        and with centering their mean gradient ``mean`` over ``rows`` rows (``m`` per
        output for ``"per_output"``, ``m c`` for ``"pooled"``)."""
        self.m += m
        if self.scatter is None:
            self.scatter, self.mean, self.rows = scatter, mean, rows
            return
        if self.centering is None:
            self.scatter = self.scatter + scatter
            return
        n = self.rows + rows
        delta = mean - self.mean
        self.scatter = self.scatter + scatter + (self.rows * rows / n) * self._outer(delta)
        self.mean = self.mean + delta * (rows / n)
        self.rows = n

    def finish(self) -> Any:
        A = self.scatter / float(self.m)
        if not self.diag:
            A = (A + A.T) / 2.0
        return A


def agop(
    kernel: Any, Xt: Any, Zt: Any, coef: Any, *, centering: str | None, diag: bool, xp: Any
) -> Any:
    """AGOP of ``f(x) = sum_j coef_j k(x, z_j)`` over the rows of ``Xt`` (transformed space)."""
    blocks = _Blocks(kernel, Xt, Zt, xp, coef)
    plan = _plan(kernel, Xt, Zt, coef.shape[1], xp, grads=True)
    acc = AGOPAccumulator(centering=centering, diag=diag, xp=xp)
    for i0, i1 in plan:
        acc.add(blocks.grads(i0, i1))
    return acc.finish()
