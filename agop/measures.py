"""Measures of learned feature matrices: matrix correlations (SPEC Part A #7) and the
grokking progress measures (Part A #8, §6.4).

Every function takes arrays of any Array-API library (NumPy, torch, ...) and returns a
Python float.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._lib._compat import array_device
from ._lib._validation import as_float_array, namespace_of

__all__ = ["alignment", "circulant_deviation", "cosine", "pearson"]


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


# --- grokking progress measures (SPEC §6.4) -------------------------------------------


def circulant_deviation(A: Any, hankel: bool = False) -> float:
    """How far a square block is from circulant (or Hankel) structure, in ``[0, 1]``.

    Parameters
    ----------
    A : array, shape (p, p)
        E.g. the off-diagonal block ``M[p:, :p]`` of a feature matrix learned for
        modular arithmetic (reordered by :func:`agop.datasets.discrete_log_order` for
        ``*`` and ``/``).
    hankel : bool
        Shift row ``l`` **right** by ``l`` instead of left: measures Hankel structure
        (constant anti-diagonals).

    Returns
    -------
    float
        ``D(A)``; 0 exactly for a circulant (``hankel=False``) or Hankel
        (``hankel=True``) matrix, NaN for a zero matrix.

    Notes
    -----
    ``D(A) = (1 / ||A||_F^2) sum_j Var(S(A)[:, j])`` with ``Var(v) = sum_i (v_i -
    mean(v))^2`` (a sum, not an average) and ``S(A)[l, j] = A[l, (j + l) mod p]`` (row
    ``l`` shifted left by ``l``; right: ``A[l, (j - l) mod p]``).  A circulant has
    ``A[l, j] = c_{j - l}``, so every column of ``S(A)`` is constant (SPEC Part A #8;
    the grokking paper, Mallinar et al. 2025 §3, says "right", which zeroes Hankel
    blocks instead).  Since ``sum_j Var(.) <= ||A||_F^2``, ``0 <= D <= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.linalg import circulant, hankel
    >>> from agop.measures import circulant_deviation
    >>> c = np.arange(5.0)
    >>> circulant_deviation(circulant(c))
    0.0
    >>> H = hankel(c, np.roll(c, 1))
    >>> circulant_deviation(H, hankel=True)
    0.0
    >>> round(circulant_deviation(H), 4)
    0.3333
    """
    xp = namespace_of(A)
    A = as_float_array(A, "A", xp, ndim=(2,))
    p = A.shape[0]
    if A.shape[1] != p:
        raise ValueError(f"A must be square, got shape {tuple(A.shape)}")
    if not isinstance(hankel, bool | np.bool_):
        raise TypeError(f"hankel must be a bool, got {hankel!r}")
    rows = np.arange(p)[:, None]
    cols = (np.arange(p)[None, :] + (-rows if hankel else rows)) % p
    flat = xp.asarray((rows * p + cols).reshape(-1), device=array_device(A))
    S = xp.reshape(xp.take(xp.reshape(A, (-1,)), flat, axis=0), (p, p))
    total = float(xp.sum(A * A))
    if total == 0.0:
        return float("nan")
    dev = S - xp.mean(S, axis=0, keepdims=True)
    return float(xp.sum(dev * dev)) / total


def alignment(A: Any, B: Any) -> float:
    """Uncentered cosine similarity of two matrices, ``<A, B>_F / (||A||_F ||B||_F)``.

    Parameters
    ----------
    A, B : arrays of the same shape
        E.g. the feature matrix of one iteration and the final one ("AGOP alignment",
        the grokking paper's progress measure).

    Returns
    -------
    float in ``[-1, 1]``

    Notes
    -----
    ``rho(A, B) = sum_ij A_ij B_ij / (||A||_F ||B||_F)``: no mean is subtracted (SPEC
    Part A #7 calls this "cosine"; Pearson correlation centers the entries first).  A
    zero matrix has no direction: ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> from agop.measures import alignment
    >>> A = np.array([[2.0, 0.0], [0.0, 1.0]])
    >>> alignment(A, 3.0 * A)
    1.0
    >>> alignment(np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]]))
    0.0
    """
    xp = namespace_of(A, B)
    A = as_float_array(A, "A", xp, ndim=(1, 2))
    B = as_float_array(B, "B", xp, ndim=(1, 2))
    if tuple(A.shape) != tuple(B.shape):
        raise ValueError(f"A and B must have the same shape, got {tuple(A.shape)} and "
                         f"{tuple(B.shape)}")
    value = cosine(A, B)
    if math.isnan(value):
        raise ValueError("alignment is undefined for a zero matrix (it has no direction)")
    return value
