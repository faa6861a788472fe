"""The self-pair (coincidence) rule, SPEC Part A #10, in one place.

Two points x, z (already mapped by the factor S of M, and centered at the mean of the
centers) count as the same point when the computed squared distance ``d2`` satisfies

    d2 <= atol**2 + rho * (|x|^2 + |z|^2),    rho = rtol_factor * (sqrt(d) + 2) * eps,

where ``eps`` is the machine epsilon of the working dtype.  The first term is the absolute
floor of the convention (1e-10 in float64, 1e-5 in float32); the second is the round-off
level of ``d2 = |x|^2 + |z|^2 - 2 x.z``, so exact duplicates are recognized even though
the expansion rarely returns an exact zero.  Coincident pairs get ``k = kappa(0)`` and
contribute no gradient (the kernel's gradient is undefined there for Laplace-type
kernels; every reference implementation drops it).
"""

from __future__ import annotations

import math

from ._config import get_config

__all__ = ["self_pair_params"]


def self_pair_params(dtype_name: str, d: int) -> tuple[float, float]:
    """``(atol**2, rho)`` of the coincidence rule for a dtype name and dimension ``d``."""
    cfg = get_config()
    if dtype_name == "float64":
        atol, eps = cfg["self_pair_atol_float64"], 2.0**-52
    elif dtype_name == "float32":
        atol, eps = cfg["self_pair_atol_float32"], 2.0**-23
    else:  # pragma: no cover - validation admits only float32/float64
        raise ValueError(f"unsupported dtype {dtype_name}")
    rho = cfg["self_pair_rtol_factor"] * (math.sqrt(d) + 2.0) * eps
    return atol * atol, rho
