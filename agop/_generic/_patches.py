"""Array-API patch extraction: one gather over a flattened, zero-extended image."""

from __future__ import annotations

from typing import Any

from .._lib._compat import array_device

__all__ = ["patches"]


def patches(X: Any, index: Any, *, xp: Any) -> Any:
    """Patches of images ``X`` (``(n, C, H*W)``, pixels flattened row-major).

    ``index`` is an integer ``(P, k)`` array of source pixels, one row per patch position
    and one column per patch offset; the value ``H*W`` stands for a padding zero.  Returns
    ``(n, P, C*k)``: patch ``p`` of image ``i`` is ``out[i, p]``, laid out ``(c, offset)``.
    """
    n, C, hw = X.shape
    P, k = index.shape
    zero = xp.zeros((n, C, 1), dtype=X.dtype, device=array_device(X))
    Xz = xp.concat([X, zero], axis=2)  # pixel hw is the padding zero
    flat = xp.reshape(xp.asarray(index, device=array_device(X)), (P * k,))
    out = xp.take(Xz, flat, axis=2)  # (n, C, P*k)
    out = xp.permute_dims(xp.reshape(out, (n, C, P, k)), (0, 2, 1, 3))
    return xp.reshape(out, (n, P, C * k))
