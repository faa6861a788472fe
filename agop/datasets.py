"""Generated data sets (offline, seeded).

Each generator returns NumPy arrays ``(X, y)`` and is deterministic given
``random_state``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["low_rank"]


def low_rank(
    n: int = 4000, d: int = 20, *, noise: float = 0.0, random_state: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The low-rank target of the original RFM notebook (SPEC §12).

    ``x ~ N(0, 0.25 I_d)`` and ``y = x_0 x_1 1{x_5 > 0} (+ noise N(0, noise^2))``: the
    target depends on the three coordinates 0, 1 and 5 only, so the AGOP of a good
    predictor concentrates on them.

    Returns
    -------
    X : ndarray, shape (n, d)
    y : ndarray, shape (n,)

    Examples
    --------
    >>> from agop.datasets import low_rank
    >>> X, y = low_rank(100, random_state=1)
    >>> X.shape, y.shape
    ((100, 20), (100,))
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 6:
        raise ValueError(f"d must be an integer >= 6 (the target uses coordinate 5), got {d!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(random_state)
    X = rng.normal(scale=0.5, size=(n, d))
    y = X[:, 0] * X[:, 1] * (X[:, 5] > 0)
    if noise:
        y = y + rng.normal(scale=noise, size=n)
    return X, y
