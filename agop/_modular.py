"""Modular arithmetic tasks (the grokking data of SPEC §6.1), re-exported by ``agop.datasets``.

Every pair ``(a, b)`` of residues mod ``p`` is one point: the input is the
concatenation of two one-hot vectors ``e_a (+) e_b`` in ``R^{2p}`` and the target the
one-hot vector ``e_{f(a, b)}`` in ``R^p``.  Division uses ``b = 1 .. p-1`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "OPERATIONS",
    "ModularData",
    "discrete_log_order",
    "modular_arithmetic",
    "primitive_root",
]


def _div(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    inv = np.array([pow(int(v), p - 2, p) for v in range(p)], dtype=np.int64)
    return a * inv[b]


#: operation name -> label function ``f(a, b, p)`` (reduced mod p afterwards)
OPERATIONS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "+": lambda a, b, p: a + b,
    "-": lambda a, b, p: a - b,
    "*": lambda a, b, p: a * b,
    "/": _div,
    "x^2+y": lambda a, b, p: a**2 + b,
    "x^2+y^2": lambda a, b, p: a**2 + b**2,
    "x^2+xy+y^2": lambda a, b, p: a**2 + a * b + b**2,
    "x^2+xy+y^2+x": lambda a, b, p: a**2 + a * b + b**2 + a,
    "x^3+xy": lambda a, b, p: a**3 + a * b,
    "x^3+xy^2+x": lambda a, b, p: a**3 + a * b**2 + a,
}
_ALIASES = {"x+y": "+", "x-y": "-", "x*y": "*", "x/y": "/"}
_NEEDS_PRIME = ("/",)


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % q for q in range(2, int(p**0.5) + 1))


def _check_p(p: Any, *, prime: bool) -> int:
    if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 2:
        raise ValueError(f"p must be an integer >= 2, got {p!r}")
    p = int(p)
    if prime and not _is_prime(p):
        raise ValueError(f"p must be a prime here, got {p}")
    return p


def primitive_root(p: int) -> int:
    """The smallest generator ``g`` of the multiplicative group mod the prime ``p``.

    Examples
    --------
    >>> from agop.datasets import primitive_root
    >>> primitive_root(7), primitive_root(61)
    (3, 2)
    """
    p = _check_p(p, prime=True)
    if p == 2:
        return 1
    factors = [q for q in range(2, p) if (p - 1) % q == 0 and _is_prime(q)]
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in factors):
            return g
    raise ValueError(f"no primitive root mod {p}")  # unreachable for a prime


def discrete_log_order(p: int) -> np.ndarray:
    """Residues ordered by their discrete logarithm: ``[0, 1, g, g^2, ..., g^(p-2)]``.

    With ``g`` the smallest generator (:func:`primitive_root`), ``order[k] = g^(k-1)``
    for ``k >= 1`` and ``0`` stays first.  Reindexing a ``p x p`` block as
    ``A[np.ix_(order, order)]`` turns the features learned for ``x * y`` and ``x / y``
    into circulant structure on the trailing ``(p-1) x (p-1)`` block (SPEC §6.4): in
    log coordinates multiplication is addition mod ``p - 1``.

    Examples
    --------
    >>> from agop.datasets import discrete_log_order
    >>> discrete_log_order(7).tolist()
    [0, 1, 3, 2, 6, 4, 5]
    """
    p = _check_p(p, prime=True)
    g = primitive_root(p)
    return np.array([0] + [pow(g, k, p) for k in range(p - 1)], dtype=np.int64)


@dataclass(frozen=True)
class ModularData:
    """A modular arithmetic task split into training and test pairs.

    ``X_*`` are ``(n, 2p)`` float64 inputs ``e_a (+) e_b``, ``Y_*`` the ``(n, p)``
    one-hot targets, ``y_*`` the integer labels, ``pairs_*`` the ``(n, 2)`` operands
    ``(a, b)`` and ``train_index`` / ``test_index`` the positions in :attr:`pairs`, the
    list of all pairs in row-major order (``a`` outer, ``b`` inner).  Unpacks as
    ``X_train, Y_train, X_test, Y_test``.
    """

    p: int
    op: str
    X_train: np.ndarray = field(repr=False)
    Y_train: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    Y_test: np.ndarray = field(repr=False)
    pairs: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    train_index: np.ndarray = field(repr=False)
    test_index: np.ndarray = field(repr=False)
    split: str = "random"

    def __iter__(self):
        return iter((self.X_train, self.Y_train, self.X_test, self.Y_test))

    @property
    def pairs_train(self) -> np.ndarray:
        return self.pairs[self.train_index]

    @property
    def pairs_test(self) -> np.ndarray:
        return self.pairs[self.test_index]

    @property
    def y_train(self) -> np.ndarray:
        return self.labels[self.train_index]

    @property
    def y_test(self) -> np.ndarray:
        return self.labels[self.test_index]

    @property
    def n_train(self) -> int:
        return int(self.train_index.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_index.shape[0])


def _encode(pairs: np.ndarray, labels: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    n = pairs.shape[0]
    X = np.zeros((n, 2 * p))
    rows = np.arange(n)
    X[rows, pairs[:, 0]] = 1.0
    X[rows, p + pairs[:, 1]] = 1.0
    Y = np.zeros((n, p))
    Y[rows, labels] = 1.0
    return X, Y


def _split_indices(split: Any, pairs: np.ndarray, train_fraction: Any, seed: Any
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    N = pairs.shape[0]
    a, b = pairs[:, 0], pairs[:, 1]
    if isinstance(split, str):
        if split == "random":
            if isinstance(train_fraction, bool) or not isinstance(
                    train_fraction, int | float | np.integer | np.floating):
                raise TypeError(f"train_fraction must be a number, got {train_fraction!r}")
            r = float(train_fraction)
            if not 0.0 < r <= 1.0:
                raise ValueError(f"train_fraction must lie in (0, 1], got {train_fraction!r}")
            n_train = int(r * N)
            if n_train < 1:
                raise ValueError(f"train_fraction={r:g} leaves no training pair out of {N}")
            perm = np.random.default_rng(seed).permutation(N)
            return perm[:n_train], perm[n_train:], "random"
        if split == "symmetric":
            mask = a != b
            return np.flatnonzero(mask), np.flatnonzero(~mask), "symmetric"
        raise ValueError(
            f"split must be 'random', 'symmetric', a predicate f(a, b) -> bool array or "
            f"an index set; got {split!r}"
        )
    if callable(split):
        mask = np.asarray(split(a.copy(), b.copy()))
        if mask.shape != (N,) or mask.dtype != bool:
            raise ValueError(
                f"a split predicate must return a bool array of shape ({N},) (True = train) "
                f"for integer arrays a, b of all pairs; got dtype {mask.dtype}, shape "
                f"{mask.shape}"
            )
        if not mask.any():
            raise ValueError("the split predicate puts no pair in the training set")
        return np.flatnonzero(mask), np.flatnonzero(~mask), "predicate"
    idx = np.asarray(split)
    if idx.dtype == bool:
        if idx.shape != (N,):
            raise ValueError(f"a boolean split mask must have shape ({N},), got {idx.shape}")
        idx = np.flatnonzero(idx)
    elif idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise TypeError(
            "split must be 'random', 'symmetric', a predicate, a boolean mask or a 1-D "
            f"integer index array into the pairs; got {type(split).__name__}"
        )
    if idx.size == 0:
        raise ValueError("the split index set is empty: no training pair")
    if idx.min() < 0 or idx.max() >= N:
        raise ValueError(f"split indices must lie in [0, {N}), got [{idx.min()}, {idx.max()}]")
    if np.unique(idx).size != idx.size:
        raise ValueError("split indices contain duplicates")
    test = np.ones(N, dtype=bool)
    test[idx] = False
    return idx.astype(np.int64), np.flatnonzero(test), "index"


def modular_arithmetic(
    p: int,
    op: str | Callable[[np.ndarray, np.ndarray, int], np.ndarray] = "+",
    train_fraction: float = 0.5,
    seed: Any = 0,
    split: Any = "random",
) -> ModularData:
    """The modular arithmetic task ``f(a, b) = a op b (mod p)`` of the grokking paper.

    Parameters
    ----------
    p : int >= 2
        The modulus (a prime for ``"/"`` and for the discrete-log helpers).
    op : str or callable
        ``"+"``, ``"-"``, ``"*"``, ``"/"`` (also ``"x+y"``, ``"x-y"``, ``"x*y"``,
        ``"x/y"``), the polynomials ``"x^2+y"``, ``"x^2+y^2"``, ``"x^2+xy+y^2"``,
        ``"x^2+xy+y^2+x"``, ``"x^3+xy"``, ``"x^3+xy^2+x"`` (SPEC §6.1), or a function
        ``f(a, b, p)`` of integer arrays (the result is taken mod ``p``).
    train_fraction : float in (0, 1]
        Fraction ``r`` of the ``N`` pairs in the training set: ``int(r N)`` pairs drawn
        uniformly without replacement.  Used only by ``split="random"``.
    seed : int or numpy Generator
        Seeds the random split.
    split : "random", "symmetric", callable or index set
        ``"random"``: the uniformly random split above.  ``"symmetric"``: train on
        ``a != b``, test on ``a == b`` (a swap-invariant partition, SPEC §6.6).  A
        predicate ``split(a, b)`` returning a bool array over all pairs (True = train),
        a boolean mask of length ``N``, or integer indices into :attr:`ModularData.pairs`
        of the training pairs.

    Returns
    -------
    ModularData
        ``X_train (n, 2p)``, ``Y_train (n, p)``, ``X_test``, ``Y_test`` (float64) and the
        operands and labels of each point.

    Notes
    -----
    ``N = p^2`` pairs, or ``p (p - 1)`` for ``"/"`` (``b != 0``), whose label is
    ``a b^{-1} mod p``.  Input ``x = e_a (+) e_b``, target ``e_{f(a, b)}``
    (Mallinar et al., "Emergence in non-neural models: grokking modular arithmetic via
    average gradient outer product", ICML 2025).

    Examples
    --------
    >>> from agop.datasets import modular_arithmetic
    >>> data = modular_arithmetic(5, "+", train_fraction=0.6, seed=0)
    >>> data.X_train.shape, data.Y_train.shape, data.n_test
    ((15, 10), (15, 5), 10)
    >>> a, b = data.pairs_train[0]
    >>> bool(data.y_train[0] == (a + b) % 5)
    True
    >>> sym = modular_arithmetic(5, "*", split="symmetric")
    >>> sym.n_train, sym.n_test
    (20, 5)
    """
    if callable(op):
        name, fn = getattr(op, "__name__", "custom"), op
    elif isinstance(op, str):
        name = _ALIASES.get(op.replace(" ", ""), op.replace(" ", ""))
        fn = OPERATIONS.get(name)
        if fn is None:
            known = sorted(OPERATIONS) + sorted(_ALIASES)
            raise ValueError(f"unknown operation {op!r}; choose one of {known} or a function")
    else:
        raise TypeError(f"op must be an operation name or a function, got {type(op).__name__}")
    p = _check_p(p, prime=name in _NEEDS_PRIME)
    first = 1 if name == "/" else 0
    a, b = np.meshgrid(np.arange(p), np.arange(first, p), indexing="ij")
    pairs = np.stack([a.ravel(), b.ravel()], axis=1).astype(np.int64)
    labels = np.asarray(fn(pairs[:, 0].copy(), pairs[:, 1].copy(), p))
    if labels.shape != (pairs.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"operation {name!r} must return one integer label per pair, got dtype "
            f"{labels.dtype} and shape {labels.shape}"
        )
    labels = np.mod(labels, p).astype(np.int64)
    train, test, kind = _split_indices(split, pairs, train_fraction, seed)
    X_tr, Y_tr = _encode(pairs[train], labels[train], p)
    X_te, Y_te = _encode(pairs[test], labels[test], p)
    return ModularData(p, name, X_tr, Y_tr, X_te, Y_te, pairs, labels, train, test, kind)
