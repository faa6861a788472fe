"""Data sets: generated (offline, seeded) and bundled with the package.

Each generator returns NumPy arrays ``(X, y)`` and is deterministic given
``random_state``; :func:`modular_arithmetic` makes the grokking tasks (train/test pairs
of ``a op b mod p``).  :func:`load_dataset` returns a :class:`Dataset` for a bundled real
data set (``breast_cancer``, ``wine``, ``diabetes``, ``digits``, shipped in
``agop/data/``) or the generated ``lowrank`` problem; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from ._modular import (
    OPERATIONS,
    ModularData,
    discrete_log_order,
    modular_arithmetic,
    primitive_root,
)

__all__ = [
    "Dataset", "dataset_names", "load_dataset", "low_rank", "sparse_parity",
    # modular arithmetic (the grokking tasks, agop._modular)
    "OPERATIONS", "ModularData", "discrete_log_order", "modular_arithmetic", "primitive_root",
]


@dataclass(frozen=True)
class Dataset:
    """A data set: features ``X`` (n, d) float64, target ``y`` (n,), and what they mean.

    ``task`` is ``"regression"`` or ``"classification"``; for classification ``y`` holds
    the class names (strings) when the data set names its classes, else integer labels.
    """

    name: str
    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    task: str
    feature_names: list[str] = field(repr=False)
    target_name: str = "target"
    description: str = field(default="", repr=False)


_BUNDLED = ("breast_cancer", "diabetes", "digits", "wine")


def dataset_names() -> list[str]:
    """Names :func:`load_dataset` accepts."""
    return ["lowrank", *_BUNDLED]


def load_dataset(name: str, *, random_state: int | None = 0) -> Dataset:
    """Load a bundled data set, or generate ``lowrank`` (n = 4000, d = 20).

    Examples
    --------
    >>> from agop.datasets import load_dataset
    >>> ds = load_dataset("wine")
    >>> ds.X.shape, ds.task, sorted(set(ds.y.tolist()))
    ((178, 13), 'classification', ['class_0', 'class_1', 'class_2'])
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key in ("lowrank", "low_rank"):
        X, y = low_rank(4000, 20, random_state=random_state)
        return Dataset(
            "lowrank", X, y, "regression", [f"x{i}" for i in range(20)], "y",
            "y = x0 * x1 * 1{x5 > 0}, x ~ N(0, 0.25 I_20) (the low-rank target of the "
            "RFM paper); only coordinates 0, 1 and 5 matter.",
        )
    if key not in _BUNDLED:
        raise ValueError(f"unknown dataset {name!r}; choose one of {dataset_names()}")
    data = resources.files("agop") / "data"
    meta = json.loads((data / "datasets.json").read_text())[key]
    with (data / f"{key}.csv.gz").open("rb") as raw, gzip.open(raw, "rt") as fh:
        header = fh.readline().strip().split(",")
        values = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
    X, target = values[:, :-1], values[:, -1]
    if meta["task"] == "classification":
        codes = target.astype(np.int64)
        names = meta.get("class_names")
        y = np.asarray(names)[codes] if names else codes
    else:
        y = target
    return Dataset(key, X, y, meta["task"], header[:-1], meta["target_name"],
                   meta["description"])


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


def sparse_parity(
    n: int = 2000, d: int = 50, k: int = 2, *, random_state: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse parity: ``x`` uniform on ``{-1, 1}^d`` and ``y = x_0 x_1 ... x_{k-1}``.

    The label is the product of the first ``k`` coordinates (the support); the other
    ``d - k`` are noise, and no ``k - 1`` coordinates carry information about ``y``
    (SPEC §5.3: FACT-RFM and RFM both learn the support).

    Returns
    -------
    X : ndarray, shape (n, d), entries in {-1.0, 1.0}
    y : ndarray, shape (n,), entries in {-1.0, 1.0}

    Examples
    --------
    >>> from agop.datasets import sparse_parity
    >>> X, y = sparse_parity(8, 5, 2, random_state=0)
    >>> bool((y == X[:, 0] * X[:, 1]).all()), X.shape
    (True, (8, 5))
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= d:
        raise ValueError(f"k must be an integer in [1, d] = [1, {d}], got {k!r}")
    rng = np.random.default_rng(random_state)
    X = rng.choice(np.array([-1.0, 1.0]), size=(n, d))
    return X, np.prod(X[:, :k], axis=1)
