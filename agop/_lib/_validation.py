"""Input validation shared by every public op.

Every check raises a ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind,
wrong content) whose message names the argument, says what was wrong and what is
accepted.  Nothing here uses ``assert``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._compat import array_device, array_namespace, dtype_name, is_array
from ._config import get_config

__all__ = [
    "as_float_array",
    "floating_dtype",
    "check_finite",
    "check_real_scalar",
    "namespace_of",
    "validate_M",
]


def namespace_of(*arrays: Any) -> Any:
    """Namespace of the array arguments; plain lists/tuples alone mean NumPy."""
    real = [a for a in arrays if a is not None and is_array(a)]
    if real:
        return array_namespace(*real)
    return array_namespace(np.empty(0))


def _dtype_kind(xp: Any, dtype: Any) -> str:
    for kind in ("bool", "integral", "real floating", "complex floating"):
        try:
            if xp.isdtype(dtype, kind):
                return kind
        except (TypeError, ValueError):  # exotic dtypes (strings, objects) in some libraries
            break
    return "other"


def floating_dtype(xp: Any, *arrays: Any) -> Any:
    """Promoted dtype of the real floating arrays among ``arrays`` (None if there are none)."""
    floats = [
        a for a in arrays
        if a is not None and is_array(a) and _dtype_kind(xp, a.dtype) == "real floating"
    ]
    return xp.result_type(*floats) if floats else None


def as_float_array(
    a: Any,
    name: str,
    xp: Any,
    *,
    ndim: tuple[int, ...] = (2,),
    device: Any = None,
    int_dtype: Any = None,
) -> Any:
    """Return ``a`` as a real floating array of namespace ``xp``.

    float32 and float64 are kept; bool and integer input is converted to the default
    real floating dtype of the namespace (SPEC Part A #12); anything else (strings,
    objects, complex, half precision) raises ``TypeError``.  ``ndim`` lists the accepted
    numbers of dimensions.  A list or tuple becomes an array on ``device`` (the device
    of the other arguments).  ``int_dtype`` (the floating dtype of the other arguments)
    replaces the namespace default for integer input, so integer labels do not promote
    float32 data.
    """
    if a is None:
        raise TypeError(f"{name} is required, got None")
    if isinstance(a, str | bytes):
        raise TypeError(f"{name} must be an array of numbers, got a string {a!r}")
    if not is_array(a):
        if isinstance(a, list | tuple):
            try:
                a = np.asarray(a)
            except ValueError as exc:
                raise ValueError(f"{name} could not be read as a rectangular array: {exc}") from exc
            if a.dtype.kind not in "biuf":
                raise TypeError(
                    f"{name} must contain numbers; got values of NumPy dtype {a.dtype} "
                    "(strings are never converted silently)"
                )
            a = xp.asarray(a) if device is None else xp.asarray(a, device=device)
        else:
            raise TypeError(
                f"{name} must be an array (NumPy, torch, CuPy or any Array-API array), "
                f"got {type(a).__name__}"
            )
    kind = _dtype_kind(xp, a.dtype)
    if kind in ("bool", "integral"):
        if int_dtype is None:
            info = xp.__array_namespace_info__().default_dtypes(device=array_device(a))
            int_dtype = info["real floating"]
        a = xp.astype(a, int_dtype)
    elif kind == "real floating":
        if a.dtype not in (xp.float32, xp.float64):
            raise TypeError(
                f"{name} has dtype {a.dtype}; agop computes in float32 or float64 — "
                "cast it explicitly (e.g. to float32)"
            )
    else:
        raise TypeError(
            f"{name} must be a real numeric array (float32, float64, integer or bool), "
            f"got dtype {a.dtype}"
        )
    if a.ndim not in ndim:
        want = " or ".join(f"{k}-D" for k in ndim)
        hint = " (use X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one point)"
        raise ValueError(
            f"{name} must be {want}, got an array of shape {tuple(a.shape)}"
            + (hint if 2 in ndim and a.ndim == 1 else "")
        )
    if any(s == 0 for s in a.shape):
        raise ValueError(
            f"{name} is empty (shape {tuple(a.shape)}); at least one row and one column "
            "are required"
        )
    return a


def check_finite(a: Any, name: str, xp: Any) -> None:
    """Raise ``ValueError`` if ``a`` holds NaN or infinity (skipped when the
    ``check_finite`` config option is False)."""
    if not get_config()["check_finite"]:
        return
    if not bool(xp.all(xp.isfinite(a))):
        n_nan = int(xp.sum(xp.astype(xp.isnan(a), xp.int64)))
        what = f"{n_nan} NaN value(s)" if n_nan else "infinite value(s)"
        raise ValueError(f"{name} contains {what}; agop needs finite input")


def check_real_scalar(
    value: Any, name: str, *, low: float | None = None, high: float | None = None,
    low_open: bool = True, high_open: bool = False,
) -> float:
    """Validate a real scalar hyperparameter and return it as a Python float."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        rng = f"{lo or '(-inf'}, {hi or 'inf)'}"
        raise ValueError(f"{name} must lie in {rng}, got {v:g}")
    return v


def _as_float64(A: Any, xp: Any) -> Any:
    """``A`` in float64 where its library and device have it, else ``A`` itself."""
    if A.dtype == xp.float64:
        return A
    try:
        return xp.astype(A, xp.float64)
    except (TypeError, RuntimeError, ValueError):  # e.g. torch on Apple MPS
        return A


def validate_M(M: Any, d: int, xp: Any, dtype: Any) -> tuple[str, Any, Any]:
    """Check a feature matrix; return ``(kind, M, eig)``.

    ``kind`` is ``"identity"`` (``M is None``), ``"diag"`` (a length-``d`` vector of
    non-negative weights) or ``"full"`` (a symmetric PSD ``d x d`` matrix).  A diagonal
    M is cast to ``dtype``; a full M is symmetrized, ``(M + M^T) / 2``, and keeps float64
    if it came as float64 (its factor is cast down later), and ``eig`` is its
    ``(eigenvalues, eigenvectors)`` pair (``None`` for the other kinds), so callers can
    build a factor without a second decomposition.  The eigendecomposition runs in
    float64 whatever M's dtype (where the device has float64): the small eigenvalues of
    a learned M are real feature weights, not round-off, and a float32 ``eigh`` that
    loses them would zero the AGOP in their directions for every later iteration.  The
    caller has already checked that M shares the namespace and device of the data.
    """
    if M is None:
        return "identity", None, None
    M = as_float_array(M, "M", xp, ndim=(1, 2))
    check_finite(M, "M", xp)
    if M.ndim == 1 or M.dtype != xp.float64:
        M = xp.astype(M, dtype)  # a float64 matrix keeps its precision for the eigh
    rtol = get_config()[f"matrix_rtol_{dtype_name(xp, M.dtype)}"]
    if M.ndim == 1:
        if M.shape[0] != d:
            raise ValueError(
                f"diagonal M must have length d = {d} (the number of features), "
                f"got shape {tuple(M.shape)}"
            )
        if bool(xp.any(M < 0)):
            raise ValueError(
                "diagonal M must be non-negative (it holds squared feature weights); "
                f"its smallest entry is {float(xp.min(M)):g}"
            )
        return "diag", M, None
    if tuple(M.shape) != (d, d):
        raise ValueError(
            f"M must be a {d} x {d} matrix (d = number of features) or a length-{d} "
            f"vector, got shape {tuple(M.shape)}"
        )
    scale = float(xp.max(xp.abs(M)))
    asym = float(xp.max(xp.abs(M - M.T)))
    if asym > rtol * max(scale, 1e-300):
        raise ValueError(
            f"M must be symmetric: max |M - M^T| = {asym:.3g} exceeds {rtol:g} x max |M| "
            f"= {rtol * scale:.3g}"
        )
    M = (M + M.T) / 2.0
    evals, evecs = xp.linalg.eigh(_as_float64(M, xp))
    lo, hi = float(xp.min(evals)), float(xp.max(xp.abs(evals)))
    if lo < -rtol * max(hi, 1e-300):
        raise ValueError(
            f"M must be positive semi-definite: its smallest eigenvalue is {lo:.3g} "
            f"(largest |eigenvalue| {hi:.3g})"
        )
    return "full", M, (evals, evecs)
