"""Patches of images: the representation that convolutional kernels act on.

An image ``x`` of shape ``(C, H, W)`` has one ``q x q`` patch per position of a grid of
``P = H_out * W_out`` positions (stride ``s``); each patch is a vector of length
``C * q * q`` laid out ``(channel, row offset, column offset)``, so that
``patch.reshape(C, q, q)`` is the patch as a small image.

Padding (SPEC §4.1): ``None`` keeps the valid positions only
(``H_out = (H - q) // s + 1``); ``"zero"`` and ``"circular"`` pad ``q // 2`` pixels on
each side (zeros, or the image wrapped around), so that an odd ``q`` with stride 1 keeps
``H_out = H``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backends
from ._backends import DispatchContext
from ._lib._compat import array_device, dtype_name, namespace_name
from ._lib._validation import as_float_array, check_finite, namespace_of

__all__ = ["PADDINGS", "PatchGrid", "extract_patches", "patch_grid"]

PADDINGS = ("zero", "circular", None)


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of ``(C, H, W)`` images come from.

    ``index[p, o]`` is the flattened source pixel (``row * W + col``) of offset ``o``
    (``o = di * q + dj``) of the patch at position ``p``; the value ``H * W`` stands for
    a padding zero.
    """

    image_shape: tuple[int, int, int]
    patch_size: int
    stride: int
    padding: str | None
    out_shape: tuple[int, int]
    index: np.ndarray

    @property
    def n_positions(self) -> int:
        return self.out_shape[0] * self.out_shape[1]

    @property
    def n_features(self) -> int:
        """Length of one patch vector, ``C * q * q``."""
        return self.image_shape[0] * self.patch_size**2


def patch_grid(
    image_shape: tuple[int, ...], patch_size: int, *, stride: int = 1,
    padding: str | None = "zero",
) -> PatchGrid:
    """Validate the patch parameters for images of ``image_shape`` and plan the gather.

    ``image_shape`` is ``(C, H, W)`` or ``(H, W)`` (one channel).  ``patch_size`` must be
    at most ``H`` and ``W``, and odd when the images are padded (so that a patch is
    centered on its pixel); ``stride >= 1``; ``padding`` one of ``"zero"``,
    ``"circular"``, ``None``.
    """
    shape = tuple(image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W) or (H, W), got {image_shape!r}")
    C, H, W = (_check_int(v, "image_shape entries", 1) for v in shape)
    q = _check_int(patch_size, "patch_size", 1)
    s = _check_int(stride, "stride", 1)
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if q > H or q > W:
        raise ValueError(f"patch_size {q} exceeds the image size {H} x {W}")
    if padding is not None and q % 2 == 0:
        raise ValueError(
            f"patch_size must be odd with padding={padding!r} (a padded patch is centered "
            f"on its pixel), got {q}; use an odd size or padding=None"
        )
    pad = 0 if padding is None else q // 2
    Ho, Wo = (H + 2 * pad - q) // s + 1, (W + 2 * pad - q) // s + 1
    rows = (np.arange(Ho) * s - pad)[:, None, None, None] + np.arange(q)[None, None, :, None]
    cols = (np.arange(Wo) * s - pad)[None, :, None, None] + np.arange(q)[None, None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)  # (Ho, Wo, q, q)
    if padding == "circular":
        index = (rows % H) * W + (cols % W)
    else:
        inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
        index = np.where(inside, rows * W + cols, H * W)
    index = np.ascontiguousarray(index.reshape(Ho * Wo, q * q), dtype=np.int64)
    return PatchGrid((C, H, W), q, s, padding, (Ho, Wo), index)


def as_images(X: Any, name: str = "X", xp: Any = None) -> Any:
    """``X`` as a real floating ``(n, C, H, W)`` array (``(n, H, W)`` means ``C = 1``)."""
    xp = namespace_of(X) if xp is None else xp
    X = as_float_array(X, name, xp, ndim=(3, 4))
    if X.ndim == 3:
        X = xp.reshape(X, (X.shape[0], 1, X.shape[1], X.shape[2]))
    check_finite(X, name, xp)
    return X


def extract_patches(
    X: Any, patch_size: int = 3, *, stride: int = 1, padding: str | None = "zero",
    backend: str = "auto",
) -> Any:
    """All ``q x q`` patches of a batch of images.

    Parameters
    ----------
    X : array, shape (n, C, H, W) or (n, H, W)
        Images (any Array-API namespace; the result stays in it).
    patch_size : int
        ``q``; odd when ``padding`` is not ``None``.
    stride : int >= 1
    padding : {"zero", "circular", None}
        Pad ``q // 2`` pixels with zeros, by wrapping around, or not at all.
    backend : {"auto", "generic", "numba_cpu"}
        ``"numba_cpu"``: a compiled loop for NumPy arrays and torch CPU tensors;
        ``"generic"``: one Array-API gather (differentiable by torch autograd).

    Returns
    -------
    array, shape (n, P, C * q * q)
        ``out[i, p]`` is the patch at position ``p = row * W_out + col`` of image ``i``,
        laid out ``(channel, row offset, column offset)``.

    Examples
    --------
    >>> import numpy as np
    >>> from agop.conv import extract_patches
    >>> X = np.arange(16.0).reshape(1, 4, 4)
    >>> P = extract_patches(X, 3, padding=None)
    >>> P.shape
    (1, 4, 9)
    >>> P[0, 3].reshape(3, 3)
    array([[ 5.,  6.,  7.],
           [ 9., 10., 11.],
           [13., 14., 15.]])
    """
    xp = namespace_of(X)
    X = as_images(X, "X", xp)
    grid = patch_grid(X.shape[1:], patch_size, stride=stride, padding=padding)
    return patches_of(X, grid, xp, backend=backend)


def patches_of(X: Any, grid: PatchGrid, xp: Any, *, backend: str = "auto") -> Any:
    """Patches ``(n, P, C q^2)`` of validated images ``(n, C, H, W)`` on ``grid``."""
    n, C, H, W = X.shape
    if (C, H, W) != grid.image_shape:
        raise ValueError(f"images have shape {(C, H, W)} but the patch grid expects "
                         f"{grid.image_shape}")
    ctx = DispatchContext(
        op="patches", namespace=namespace_name(xp), device=array_device(X),
        dtype=dtype_name(xp, X.dtype), kernel=None, metric="identity", xp=xp,
        requires_grad=bool(getattr(X, "requires_grad", False)),
    )
    impl = _backends.select("patches", ctx, backend)
    return impl.func(xp.reshape(X, (n, C, H * W)), grid.index, xp=xp)
