"""Measures of learned features: matrix correlations (SPEC Part A #7) and more.

Every function takes arrays of any Array-API library (NumPy, torch, ...) and returns a
Python float.
"""

from __future__ import annotations

import math
from typing import Any

from ._lib._validation import namespace_of

__all__ = ["cosine", "pearson"]


def _flat_pair(A: Any, B: Any, name: str) -> tuple[Any, Any, Any]:
    # a measurement, not part of a graph: torch tensors that require grad are detached
    A, B = (a.detach() if callable(getattr(a, "detach", None)) else a for a in (A, B))
    xp = namespace_of(A, B)
    if tuple(A.shape) != tuple(B.shape):
        raise ValueError(f"{name} compares arrays of one shape, got {tuple(A.shape)} and "
                         f"{tuple(B.shape)}")
    if math.prod(A.shape) == 0:
        raise ValueError(f"{name} needs non-empty arrays, got shape {tuple(A.shape)}")
    a = xp.reshape(A, (-1,))
    b = xp.reshape(B, (-1,))
    dtype = xp.result_type(a.dtype, b.dtype)
    if not xp.isdtype(dtype, "real floating"):
        dtype = xp.float64 if hasattr(xp, "float64") else xp.float32
    return xp, xp.astype(a, dtype), xp.astype(b, dtype)


def _ratio(num: Any, den2: Any) -> float:
    den = math.sqrt(float(den2))
    return float(num) / den if den > 0 else math.nan


def cosine(A: Any, B: Any) -> float:
    """Uncentered cosine similarity of two matrices (or arrays) over their entries.

    Parameters
    ----------
    A, B : arrays of one shape

    Returns
    -------
    float
        In ``[-1, 1]``; NaN when either array is zero.

    Notes
    -----
    ``cos(A, B) = <vec A, vec B> / (|A|_F |B|_F)``: the "AGOP alignment" of the grokking
    paper and the correlation of the ConvRFM CNFA code (SPEC §8.2).  Every report in
    agop names which of :func:`cosine` and :func:`pearson` it uses.

    Examples
    --------
    >>> import numpy as np
    >>> from agop.measures import cosine
    >>> cosine(np.eye(4), np.ones((4, 4)))  # 4 / (2 * 4)
    0.5
    """
    xp, a, b = _flat_pair(A, B, "cosine")
    return _ratio(xp.sum(a * b), xp.sum(a * a) * xp.sum(b * b))


def pearson(A: Any, B: Any) -> float:
    """Pearson correlation of two matrices (or arrays) over their entries.

    Parameters
    ----------
    A, B : arrays of one shape

    Returns
    -------
    float
        In ``[-1, 1]``; NaN when either array is constant (zero variance).

    Notes
    -----
    ``rho(A, B) = <A - mean A, B - mean B> / (|A - mean A|_F |B - mean B|_F)``, the means
    over all entries (``mat_cov`` of the NFA reference code, SPEC §8.2): the cosine of
    the centered arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from agop.measures import pearson
    >>> A = np.array([[2.0, 1.0], [1.0, 3.0]])
    >>> pearson(A, 3 * A + 1), pearson(A, -A)
    (1.0, -1.0)
    """
    xp, a, b = _flat_pair(A, B, "pearson")
    a = a - xp.mean(a)
    b = b - xp.mean(b)
    return _ratio(xp.sum(a * b), xp.sum(a * a) * xp.sum(b * b))
