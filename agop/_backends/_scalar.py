"""Kernel maths on scalars, written once as plain Python: both compiled backends use it.

``numba_cpu`` compiles these functions with ``numba.njit`` and ``numba_cuda`` with
``numba.cuda.jit(device=True)``; nothing here is decorated, and nothing here may use
more than the ``math`` module and arithmetic on floats (both targets support exactly
that).  Each function takes the kernel's code (:func:`kernel_code`) and its parameters as
plain floats, so one compiled loop serves every kernel of a family.

Conventions are those of :mod:`agop.kernels`: bandwidth powers are never formed as a
float (``(r / L)^q`` is computed on the ratio), ``t e^{-t}`` is taken as 0 once
``e^{-t}`` underflows, and the gradient weight is only asked for at non-coincident
pairs (the self-pair rule is applied by the caller's loop).
"""

from __future__ import annotations

import math
from typing import Any

#: radial profiles of the squared Euclidean distance (in the space mapped by S)
LAPLACE = 0
GAUSSIAN = 1
GENEXP = 2
#: the inner-product kernel (x . z)^2
QUADRATIC = 3


def kernel_code(kernel: Any) -> tuple[int, float, float]:
    """``(code, bandwidth, exponent)`` for a radial or inner-product agop kernel."""
    from ..kernels import Gaussian, Laplace, Quadratic

    if isinstance(kernel, Laplace):
        return LAPLACE, kernel.bandwidth, 1.0
    if isinstance(kernel, Gaussian):
        return GAUSSIAN, kernel.bandwidth, 2.0
    if isinstance(kernel, Quadratic):
        return QUADRATIC, 1.0, 2.0
    # GeneralizedExponential, and LpqLaplace / ProductLaplace with p = 2
    q = kernel.exponent
    return GENEXP, kernel.bandwidth, q


# No float literals in the arithmetic below: a literal is a float64 to both compilers and
# would promote float32 loops to float64 (and to the slower float64 exp).


def radial_exponent(code, d2, L, q):
    """``log k`` of a radial kernel at squared distance ``d2`` (always ``<= 0``); the
    loops apply ``exp`` themselves (the CPU loops with a vectorizable exp)."""
    if code == LAPLACE:
        return -(math.sqrt(d2) / L)
    if code == GAUSSIAN:
        return -((d2 / L) / (L + L))
    return -((math.sqrt(d2) / L) ** q)


def radial_weight(code, d2, k, L, q):
    """``w = kappa'(r) / r`` of a non-coincident pair, so that ``grad_x k = w (x - z)``.

    ``k = 0`` (underflow) gives ``w = 0`` outright: with reciprocal fast-math the
    divisions by ``L`` may be fused into a product with ``1 / L^2``, which overflows
    for tiny bandwidths and would turn ``0 * inf`` into NaN.
    """
    if k <= 0:
        return k
    if code == LAPLACE:
        return -((k / math.sqrt(d2)) / L)
    if code == GAUSSIAN:
        return -((k / L) / L)
    return -((q * ((math.sqrt(d2) / L) ** q) * k) / d2)


def dot_value(t):
    """The quadratic kernel ``k = t^2`` of ``t = x . z``."""
    return t * t


def dot_weight(t):
    """``w = 2 t`` so that ``grad_x k = w z``."""
    return t + t


def lp_power_sum(diff, p):
    """``|diff|^p``, one coordinate's share of ``||x - z||_p^p`` (``p > 0``)."""
    if p == 1.0:
        return abs(diff)
    return abs(diff) ** p


def lp_t(s, p, q, logL, inv_Lq):
    """``t = (||x - z||_p / L)^q`` from ``s = ||x - z||_p^p``.

    With ``p = q`` (product Laplace, L1) this is ``s / L^q = s * inv_Lq``; otherwise it
    goes through logarithms (no overflow of ``s^(1/p)`` for small ``p``), ``logL =
    log(L)``.  ``inv_Lq = L^-q`` may be 0 or inf for extreme bandwidths: ``t`` then
    saturates to 0 or inf (``s > 0`` here, so never ``0 * inf``).
    """
    if s > 0.0:
        if p == q:
            return s * inv_Lq
        return math.exp((q / p) * math.log(s) - q * logL)
    return 0.0 * s


def lp_scale(s, t, k, q):
    """``-q t k / s``: the gradient of ``k`` is this times ``|D_a|^(p-1) sign(D_a)``."""
    if k > 0.0:
        return (-q) * (t * k) / s
    return 0.0 * s


def lp_sign(diff):
    """``sign(diff)`` without branches (0 at ``diff = 0``)."""
    return (diff > 0.0) * 1.0 - (diff < 0.0) * 1.0


def lp_coord(diff, p):
    """``|diff|^(p-1) sign(diff)`` (0 at ``diff = 0``)."""
    if p == 1.0:
        return (diff > 0.0) * 1.0 - (diff < 0.0) * 1.0
    a = abs(diff)
    if a > 0.0:
        return math.copysign(a ** (p - 1.0), diff)
    return 0.0
