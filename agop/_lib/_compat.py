"""Thin access layer over array-api-compat: namespace, device and dtype facts."""

from __future__ import annotations

from typing import Any

import array_api_compat
from array_api_compat import device as array_device  # noqa: F401  (re-exported)
from array_api_compat import (
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

__all__ = [
    "array_device",
    "array_namespace",
    "dtype_name",
    "finfo_eps",
    "import_torch",
    "is_array",
    "namespace_name",
]


def is_array(a: Any) -> bool:
    """True for any array object array-api-compat understands (NumPy, torch, CuPy, ...)."""
    return array_api_compat.is_array_api_obj(a)


def array_namespace(*arrays: Any) -> Any:
    """The array-API namespace shared by ``arrays`` (``None`` entries are skipped).

    Raises a ``TypeError`` that says which kinds were mixed when the arrays come from
    different libraries: agop never converts between libraries silently.
    """
    present = [a for a in arrays if a is not None]
    try:
        return array_api_compat.array_namespace(*present)
    except TypeError as exc:
        kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in present})
        raise TypeError(
            "all arrays passed to one agop call must come from the same array library; "
            f"got {', '.join(kinds)}. Convert them first (agop never moves data between "
            "libraries or devices silently)."
        ) from exc


def namespace_name(xp: Any) -> str:
    """A short name for a namespace: 'numpy', 'torch', 'cupy', 'array_api_strict', ..."""
    if is_numpy_namespace(xp):
        return "numpy"
    if is_torch_namespace(xp):
        return "torch"
    if is_cupy_namespace(xp):
        return "cupy"
    if is_array_api_strict_namespace(xp):
        return "array_api_strict"
    return getattr(xp, "__name__", repr(xp)).split(".")[-1]


def dtype_name(xp: Any, dtype: Any) -> str:
    """'float32' or 'float64' for a real floating dtype of namespace ``xp``."""
    if dtype == xp.float64:
        return "float64"
    if dtype == xp.float32:
        return "float32"
    return str(dtype)


def finfo_eps(xp: Any, dtype: Any) -> float:
    """Machine epsilon of a real floating dtype, as a Python float."""
    return float(xp.finfo(dtype).eps)


def import_torch(module: str) -> Any:
    """``import torch`` for an agop module that needs it, with an install hint."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{module} needs PyTorch; install it with `pip install torch==2.13.0` "
            "(or the `agop[torch]` extra)"
        ) from exc
    return torch
