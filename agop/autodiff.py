"""AGOP of any differentiable torch callable, by automatic differentiation.

Used to check the closed forms of :mod:`agop` and by the NFA tools.  torch is imported
only when one of these functions is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._generic import AGOPAccumulator
from ._lib._compat import array_namespace, import_torch, is_array

__all__ = ["agop_of", "grads_of"]


def _torch() -> Any:
    return import_torch("agop.autodiff")


def grads_of(f: Callable[[Any], Any], X: Any) -> Any:
    """Per-point input gradients of a batched torch callable.

    Parameters
    ----------
    f : callable
        Maps a tensor of shape ``(m, d)`` to ``(m,)`` or ``(m, c)``; row ``i`` of the
        output must depend on row ``i`` of the input only (a per-sample function, such as
        an ``nn.Module`` in eval mode).
    X : torch tensor or NumPy array, shape (m, d)

    Returns
    -------
    G : shape (m, c, d)
        ``G[i, l] = grad f_l(X[i])``, computed with one backward pass per output; a
        NumPy ``X`` gives a NumPy result, a tensor gives a tensor on its device.
    """
    torch = _torch()
    from_numpy = not isinstance(X, torch.Tensor)
    if from_numpy:
        if not is_array(X):
            raise TypeError(f"X must be a torch tensor or an array, got {type(X).__name__}")
        import numpy as np

        X = np.asarray(X)
        if X.dtype.kind in "biu":
            X = X.astype(np.float64)  # NumPy's default float (SPEC Part A #12)
        X = torch.from_numpy(np.ascontiguousarray(X))
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (m, d), got shape {tuple(X.shape)}")
    if not torch.is_floating_point(X):
        X = X.to(torch.get_default_dtype())
    Xr = X.detach().clone().requires_grad_(True)
    Y = f(Xr)
    if not isinstance(Y, torch.Tensor):
        raise TypeError(f"f must return a torch tensor, got {type(Y).__name__}")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(
            f"f must map (m, d) to (m,) or (m, c); got output shape {tuple(Y.shape)} "
            f"for input shape {tuple(X.shape)}"
        )
    c = Y.shape[1]
    grads = []
    for ell in range(c):
        (g,) = torch.autograd.grad(Y[:, ell].sum(), Xr, retain_graph=ell < c - 1)
        grads.append(g)
    G = torch.stack(grads, dim=1).detach()
    return G.numpy() if from_numpy else G


def agop_of(
    f: Callable[[Any], Any], X: Any, *, centering: str | None = None, diag: bool = False
) -> Any:
    """AGOP ``(1/m) sum_i J_f(x_i)^T J_f(x_i)`` of a torch callable, by autograd.

    ``centering`` and ``diag`` mean what they mean in :func:`agop.agop`.

    Examples
    --------
    >>> import torch
    >>> from agop.autodiff import agop_of
    >>> W = torch.tensor([[1.0, 2.0, 0.0]])
    >>> agop_of(lambda x: x @ W.T, torch.ones(4, 3)).tolist()
    [[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 0.0]]
    """
    if centering not in (None, "per_output", "pooled"):
        raise ValueError(f"centering must be None, 'per_output' or 'pooled', got {centering!r}")
    G = grads_of(f, X)
    acc = AGOPAccumulator(centering=centering, diag=diag, xp=array_namespace(G))
    acc.add(G)
    return acc.finish()
