"""PNG pictures of a fitted feature matrix: a heatmap of M and a bar chart of its diagonal.

With matplotlib installed (``pip install agop[plot]``) the pictures have axes, labels
and a colorbar.  Without it, a plain raster of the same picture is written with NumPy
and zlib (no labels), so the command line always produces its files.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["bar_png", "heatmap_png", "write_png"]

logger = logging.getLogger("agop")


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_png(path: str, rgb: np.ndarray) -> None:
    """Write an ``(h, w, 3)`` uint8 image as an 8-bit RGB PNG."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    with open(path, "wb") as fh:
        fh.write(png)


def _diverging(v: np.ndarray) -> np.ndarray:
    """Blue (-1) - white (0) - red (+1) colors for values in [-1, 1]."""
    v = np.clip(v, -1.0, 1.0)[..., None]
    white = np.array([1.0, 1.0, 1.0])
    red, blue = np.array([0.70, 0.09, 0.17]), np.array([0.13, 0.40, 0.67])
    out = np.where(v >= 0, white + v * (red - white), white - v * (blue - white))
    return (255 * out).astype(np.uint8)


def heatmap_png(M: np.ndarray, path: str, names: Sequence[str] | None = None,
                title: str = "feature matrix M", *, use_matplotlib: bool | None = None) -> str:
    """Heatmap of ``M`` (``(d, d)``, or a ``(d,)`` diagonal) scaled by ``max |M|``."""
    M = np.asarray(M, dtype=float)
    if M.ndim == 1:
        M = np.diag(M)
    scale = float(np.abs(M).max()) or 1.0
    if use_matplotlib is None:
        use_matplotlib = _have_matplotlib()
    if use_matplotlib:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        d = M.shape[0]
        fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=100)
        im = ax.imshow(M, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.85)
        if names is not None and d <= 30:
            ax.set_xticks(range(d), labels=list(names), rotation=90, fontsize=7)
            ax.set_yticks(range(d), labels=list(names), fontsize=7)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path
    logger.info("matplotlib is not installed: writing %s without labels "
                "(pip install agop[plot] for labelled pictures)", path)
    cell = max(1, 400 // M.shape[0])
    img = _diverging(M / scale)
    write_png(path, np.repeat(np.repeat(img, cell, axis=0), cell, axis=1))
    return path


def bar_png(values: np.ndarray, path: str, names: Sequence[str] | None = None,
            title: str = "feature importances (diagonal of M)", top: int = 30,
            *, use_matplotlib: bool | None = None) -> str:
    """Bar chart of the ``top`` largest ``values``, largest first."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(-values)[:top]
    labels = [str(names[i]) if names is not None else str(i) for i in order]
    vals = values[order]
    if use_matplotlib is None:
        use_matplotlib = _have_matplotlib()
    if use_matplotlib:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 0.22 * len(vals) + 1.2), dpi=100)
        ax.barh(range(len(vals)), vals, color="#b2182b")
        ax.set_yticks(range(len(vals)), labels=labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("M_ii")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path
    logger.info("matplotlib is not installed: writing %s without labels", path)
    width, bar_h = 400, 12
    peak = float(vals.max()) if vals.size and vals.max() > 0 else 1.0
    img = np.full((bar_h * max(1, len(vals)), width, 3), 255, dtype=np.uint8)
    for i, v in enumerate(vals):
        n = int(round(width * max(v, 0.0) / peak))
        img[i * bar_h + 2 : (i + 1) * bar_h - 2, :n] = (178, 24, 43)
    write_png(path, img)
    return path
