"""The dispatch registry: which implementation of an op runs for given inputs.

A backend is one module that, on import, calls :func:`register` once per op it
implements, with a predicate ``is_usable_for(ctx)`` over a :class:`DispatchContext`
(namespace, device, dtype, kernel, metric kind).  ``select`` picks the usable
implementation of highest priority (``backend="auto"``) or the one the caller names.
Backend modules are imported lazily, on the first op call, so ``import agop`` never
imports numba, torch or CuPy.

Adding a backend is one module plus one entry in ``_BACKEND_MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DispatchContext",
    "Implementation",
    "available_backends",
    "check_backend",
    "register",
    "select",
]

#: backend name -> module that registers it (imported on first use)
_BACKEND_MODULES: dict[str, str] = {
    "generic": "agop._backends.generic",
    "numba_cpu": "agop._backends.numba_cpu",
    "numba_cuda": "agop._backends.numba_cuda",
}


def _on_cpu(ctx: DispatchContext) -> bool:
    return ctx.namespace in ("numpy", "torch") and str(ctx.device) == "cpu"


def _on_cuda(ctx: DispatchContext) -> bool:
    return ctx.namespace in ("cupy", "torch") and "cuda" in str(ctx.device).lower()


#: ``backend="auto"`` imports a backend module only for inputs it may take, so NumPy
#: calls never import numba.cuda and array-api-strict calls never import numba.
_AUTO_GATES: dict[str, Callable[[DispatchContext], bool]] = {
    "numba_cpu": _on_cpu,
    "numba_cuda": _on_cuda,
}

OPS = ("kernel_matrix", "kernel_mv", "predictor_grads", "agop")
#: ops on data that involve no kernel (``ctx.kernel`` is ``None``): patch extraction
DATA_OPS = ("patches",)


@dataclass(frozen=True)
class DispatchContext:
    """What a backend may look at to decide whether it can run an op."""

    op: str
    namespace: str  # 'numpy', 'torch', 'cupy', 'array_api_strict', ...
    device: Any
    dtype: str  # 'float32' or 'float64'
    kernel: Any
    metric: str  # 'identity', 'diag' or 'full'
    xp: Any = None
    requires_grad: bool = False  # a torch input is tracked by autograd


@dataclass(frozen=True)
class Implementation:
    op: str
    backend: str
    func: Callable[..., Any]
    is_usable_for: Callable[[DispatchContext], bool]
    priority: int
    requirement: str


_REGISTRY: dict[str, list[Implementation]] = {op: [] for op in OPS + DATA_OPS}
_loaded: set[str] = set()


def register(
    op: str,
    backend: str,
    func: Callable[..., Any],
    *,
    is_usable_for: Callable[[DispatchContext], bool],
    priority: int,
    requirement: str = "",
) -> None:
    """Register ``func`` as backend ``backend``'s implementation of ``op``.

    ``requirement`` says in words what ``is_usable_for`` demands; it is quoted when a
    caller forces this backend on inputs it cannot take.
    """
    if op not in _REGISTRY:
        raise ValueError(f"unknown op {op!r}; ops: {OPS + DATA_OPS}")
    impls = [i for i in _REGISTRY[op] if i.backend != backend]
    impls.append(Implementation(op, backend, func, is_usable_for, priority, requirement))
    impls.sort(key=lambda i: -i.priority)
    _REGISTRY[op] = impls


def _load(name: str) -> None:
    if name in _loaded:
        return
    try:
        importlib.import_module(_BACKEND_MODULES[name])
    except ImportError:  # an optional dependency is missing: the backend stays unregistered
        if name == "generic":
            raise
    _loaded.add(name)


def available_backends() -> list[str]:
    """Backends whose module imported (their optional dependencies are present)."""
    for name in _BACKEND_MODULES:
        _load(name)
    return sorted({i.backend for impls in _REGISTRY.values() for i in impls})


def check_backend(backend: Any) -> None:
    """Raise unless ``backend`` is ``"auto"`` or the name of a backend."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend != "auto" and backend not in _BACKEND_MODULES:
        raise ValueError(
            f"unknown backend {backend!r}; choose 'auto' or one of {sorted(_BACKEND_MODULES)}"
        )


def select(op: str, ctx: DispatchContext, backend: str = "auto") -> Implementation:
    """The implementation of ``op`` to run for ``ctx``.

    ``backend="auto"`` returns the usable implementation of highest priority (the
    generic one always is); a named backend is returned if usable and otherwise raises
    ``ValueError`` saying what it needs.
    """
    check_backend(backend)
    for name in _BACKEND_MODULES if backend == "auto" else (backend,):
        if backend != "auto" or _AUTO_GATES.get(name, bool)(ctx):
            _load(name)
    impls = _REGISTRY[op]
    if backend == "auto":
        for impl in impls:
            if impl.is_usable_for(ctx):
                return impl
        raise RuntimeError(f"no implementation of {op} accepts {ctx}")  # pragma: no cover
    for impl in impls:
        if impl.backend == backend:
            if impl.is_usable_for(ctx):
                return impl
            raise ValueError(
                f"backend {backend!r} cannot run {op} on {ctx.namespace} {ctx.dtype} arrays "
                f"on device {ctx.device} with kernel {ctx.kernel!r}"
                + (f": it needs {impl.requirement}" if impl.requirement else "")
            )
    raise ValueError(
        f"backend {backend!r} is not available: its optional dependencies are not installed"
    )
