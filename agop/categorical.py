"""Categorical features: an embedding per category, a block-diagonal feature matrix.

A categorical column ``g`` with categories ``c_1 < ... < c_K`` is replaced by the rows of
an embedding matrix ``E_g`` (``K x e_g``; the identity, i.e. one-hot, by default).  The
kernels then run unchanged on the embedded rows ``e(x) = [x_num, E_1[x_1], ..., E_G[x_G]]``
with a feature matrix ``M`` that is **block-diagonal**: one block for the numerical
columns, one block per categorical feature, zero between blocks
(``AGOPUpdate(blocks=...)`` keeps the AGOP so).  With ``S = M^{1/2}`` block-diagonal
(blocks ``S_num``, ``S_g``), the distance of the embedded rows splits by block:

- ``||S (e(x) - e(z))||_2^2 = ||S_num (x_num - z_num)||_2^2 + sum_g D_g[x_g, z_g]`` with
  ``D_g[a, b] = ||S_g (E_g[a] - E_g[b])||_2^2`` (Laplace, Gaussian, generalized
  exponential);
- ``||S (e(x) - e(z))||_p^p = ||S_num (x_num - z_num)||_p^p + sum_g D_g[x_g, z_g]`` with
  ``D_g[a, b] = ||S_g (E_g[a] - E_g[b])||_p^p`` (``LpqLaplace``, ``ProductLaplace``),

which is the categorical kernel of xRFM (SPEC §1.9): a ``K_g x K_g`` table of
embedding distances, looked up for each pair and added to the numerical part before the
kernel's profile.  So every kernel handles categorical columns, and the AGOP of the
embedded machine restricted to the blocks is xRFM's categorical AGOP.

:class:`CategoricalEncoding` is the fitted map (categories learned in ``fit``, as
scikit-learn's ``OneHotEncoder`` does); the estimators build it from
``categorical_features=`` and ``categorical_vectors=``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._lib._compat import array_device, is_array
from ._lib._validation import namespace_of

__all__ = ["HANDLE_UNKNOWN", "CategoricalEncoding", "fit_encoding", "resolve_features"]

#: what ``transform`` does with a category not seen in ``fit``: raise, or embed as zeros
HANDLE_UNKNOWN = ("error", "ignore")

_INT64 = np.iinfo(np.int64)


def resolve_features(spec: Any, d: int) -> tuple[int, ...]:
    """The sorted column indices named by ``categorical_features`` for ``d`` columns.

    ``spec`` is a sequence of column indices (negative ones count from the end) or a
    boolean mask of length ``d``.
    """
    try:
        arr = np.asarray(spec)
    except Exception as exc:  # noqa: BLE001 - say what is accepted
        raise TypeError("categorical_features must be column indices or a boolean mask") from exc
    if arr.ndim != 1:
        raise ValueError(f"categorical_features must be 1-D (column indices or a boolean "
                         f"mask), got shape {arr.shape}")
    if arr.dtype.kind == "b":
        if arr.shape[0] != d:
            raise ValueError(f"the boolean mask categorical_features has {arr.shape[0]} "
                             f"entries but X has {d} columns")
        return tuple(int(i) for i in np.flatnonzero(arr))
    if arr.size == 0:
        return ()
    if arr.dtype.kind not in "iu":
        raise TypeError(f"categorical_features must be integer column indices or a boolean "
                        f"mask, got {list(arr.tolist())[:5]!r}")
    bad = [int(i) for i in arr if not -d <= int(i) < d]
    if bad:
        raise ValueError(f"categorical_features names columns {bad} but X has {d} columns")
    idx = sorted(int(i) % d for i in arr)
    if len(set(idx)) != len(idx):
        raise ValueError(f"categorical_features names a column twice: {list(arr.tolist())}")
    return tuple(idx)


def _column_values(values: np.ndarray, col: int) -> tuple[str, np.ndarray]:
    """``("int", int64 codes)`` or ``("str", str array)`` for one categorical column."""
    values = np.asarray(values).reshape(-1)
    kind = values.dtype.kind
    if kind in "biu":
        if kind == "u" and values.size and int(values.max()) > _INT64.max:
            _out_of_range(col, int(values.max()))
        return "int", values.astype(np.int64)
    if kind in "US":
        return "str", values.astype(str)
    if kind == "f":
        if not np.all(np.isfinite(values)):
            raise ValueError(f"categorical column {col} has missing or infinite values; "
                             "encode a missing value as a category of its own")
        if not np.all(values == np.round(values)):
            raise ValueError(f"categorical column {col} holds non-integer numbers "
                             f"(e.g. {values[values != np.round(values)][0]!r}); categories "
                             "must be integer codes or strings")
        big = np.abs(values) >= 2.0**63
        if np.any(big):
            _out_of_range(col, values[big][0])
        return "int", values.astype(np.int64)
    if kind != "O":
        raise TypeError(f"categorical column {col} has unsupported dtype {values.dtype}")
    strings = [isinstance(v, str | np.str_) for v in values]
    if all(strings):
        return "str", values.astype(str)
    if any(_is_missing(v) for v in values):
        raise ValueError(f"categorical column {col} has missing values (None or NaN); "
                         "encode a missing value as a category of its own")
    if any(strings):
        raise TypeError(f"categorical column {col} mixes strings and other values; use one "
                        "kind of category per column")
    if not all(isinstance(v, numbers.Integral) or (isinstance(v, numbers.Real)
                                                   and float(v).is_integer()) for v in values):
        raise TypeError(f"categorical column {col} holds values that are neither strings "
                        "nor integer codes")
    codes = [int(v) for v in values]
    for v in codes:
        if not _INT64.min <= v <= _INT64.max:
            _out_of_range(col, v)
    return "int", np.asarray(codes, dtype=np.int64)


def _is_missing(v: Any) -> bool:
    """None, a NaN or infinite float, or pandas' NA / NaT."""
    if v is None or (isinstance(v, float | np.floating) and not np.isfinite(v)):
        return True
    return type(v).__module__.startswith("pandas") and type(v).__name__ in ("NAType",
                                                                             "NaTType")


def _out_of_range(col: int, value: Any) -> None:
    raise ValueError(f"categorical column {col} holds the code {value!r}, outside the int64 "
                     "range of category codes; recode the categories as smaller integers or "
                     "as strings")


def _check_vectors(spec: Any, col: int) -> tuple[str, np.ndarray, np.ndarray]:
    """``(kind, categories, E)`` from one entry of ``categorical_vectors``: an array
    ``(K, e)`` (the embeddings of the integer codes ``0 .. K-1``) or a mapping
    ``{category: vector}``."""
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError(f"categorical_vectors[{col}] is an empty mapping")
        keys = np.asarray(list(spec.keys()), dtype=object)
        kind, cats = _column_values(keys, col)
        E = [_vector(spec[k], col, k) for k in spec]
        if len({e.shape for e in E}) != 1:
            raise ValueError(f"the vectors of categorical_vectors[{col}] differ in length")
        if E[0].size == 0:
            raise ValueError(f"the vectors of categorical_vectors[{col}] are empty")
        order = np.argsort(cats, kind="stable")
        cats, E = cats[order], np.stack(E)[order]
        if np.unique(cats).size != cats.size:
            raise ValueError(f"categorical_vectors[{col}] names a category twice")
    else:
        E = np.asarray(spec)
        if E.dtype.kind not in "biuf":
            raise TypeError(f"categorical_vectors[{col}] must be a real array (K, e) or a "
                            "mapping {category: vector}")
        E = E.astype(np.float64)
        if E.ndim != 2 or E.shape[0] < 1 or E.shape[1] < 1:
            raise ValueError(f"categorical_vectors[{col}] must have shape (n_categories, "
                             f"embedding_dim), got {E.shape}")
        kind, cats = "int", np.arange(E.shape[0], dtype=np.int64)
    if not np.all(np.isfinite(E)):
        raise ValueError(f"categorical_vectors[{col}] has NaN or infinite entries")
    return kind, cats, E


def _vector(value: Any, col: int, key: Any) -> np.ndarray:
    """One embedding vector of a ``{category: vector}`` mapping, as float64 (no strings)."""
    try:
        v = np.asarray(value)
    except Exception:  # noqa: BLE001 - say what is accepted
        v = np.asarray(None)
    if v.dtype.kind not in "biuf":
        raise TypeError(f"categorical_vectors[{col}][{key!r}] must be a vector of real "
                        f"numbers, got {value!r}")
    return v.astype(np.float64).reshape(-1)


@dataclass(frozen=True, eq=False)
class CategoricalEncoding:
    """The fitted map from raw rows to embedded rows (see the module docstring).

    Attributes
    ----------
    n_features_in : int
        Columns of the raw input.
    categorical : tuple of int
        Raw indices of the categorical columns (sorted); the others are numerical.
    kinds : tuple of {"int", "str"}
        How each categorical column is coded.
    categories : tuple of arrays
        The known categories of each categorical column, sorted.
    embeddings : tuple of float64 arrays ``(K_g, e_g)``
        Row ``k`` embeds ``categories[g][k]``.
    handle_unknown : {"error", "ignore"}
        An unknown category raises a ``ValueError``, or (``"ignore"``) is embedded as
        the zero vector.
    """

    n_features_in: int
    categorical: tuple[int, ...]
    kinds: tuple[str, ...]
    categories: tuple[np.ndarray, ...]
    embeddings: tuple[np.ndarray, ...]
    handle_unknown: str = "error"

    @property
    def numerical(self) -> tuple[int, ...]:
        cat = set(self.categorical)
        return tuple(j for j in range(self.n_features_in) if j not in cat)

    @property
    def n_embedded(self) -> int:
        return len(self.numerical) + sum(E.shape[1] for E in self.embeddings)

    @property
    def blocks(self) -> tuple[tuple[int, ...], ...]:
        """Column indices of the embedded rows, one block per feature group: the
        numerical columns (when there are any), then each categorical feature."""
        n_num = len(self.numerical)
        out = [tuple(range(n_num))] if n_num else []
        start = n_num
        for E in self.embeddings:
            out.append(tuple(range(start, start + E.shape[1])))
            start += E.shape[1]
        return tuple(out)

    def codes(self, g: int, values: Any, name: str = "X") -> np.ndarray:
        """Row indices into ``embeddings[g]`` for raw values of categorical column ``g``
        (``-1`` for an unknown category when ``handle_unknown="ignore"``)."""
        col = self.categorical[g]
        kind, vals = _column_values(np.asarray(values), col)
        cats = self.categories[g]
        if kind != self.kinds[g]:
            raise TypeError(f"categorical column {col} of {name} was coded as {self.kinds[g]} "
                            f"categories in fit but holds {kind} values now")
        pos = np.searchsorted(cats, vals)
        pos_c = np.minimum(pos, cats.size - 1)
        known = cats[pos_c] == vals
        if not np.all(known):
            if self.handle_unknown == "error":
                unseen = np.unique(vals[~known])[:5].tolist()
                raise ValueError(
                    f"categorical column {col} of {name} has categories not seen in fit: "
                    f"{unseen}; pass handle_unknown='ignore' to embed them as zeros"
                )
            pos_c = np.where(known, pos_c, -1)
        return pos_c

    def transform(self, X: Any, name: str = "X") -> tuple[Any, Any, list[str] | None]:
        """``(xp, X_embedded, feature_names)``: the embedded rows ``(n, n_embedded)`` in
        the namespace and on the device of the numerical columns (NumPy for NumPy,
        pandas and list input)."""
        from .estimators import _check_features, _has_float64

        n, d, names, pick, host = _raw_columns(X, name)
        if d != self.n_features_in:
            raise ValueError(f"{name} has {d} features, but the model is expecting "
                             f"{self.n_features_in} features as input.")
        num = self.numerical
        if num:
            xp, Xn, _ = _check_features(pick(num), name)
        else:
            xp, Xn = namespace_of(X) if is_array(X) else np, None
        if Xn is not None:
            dtype = Xn.dtype
        elif is_array(X) and X.dtype in (xp.float32, xp.float64):
            dtype = X.dtype  # float32 codes keep float32, as numerical columns do
        else:
            dtype = xp.float64 if _has_float64(xp, X) else xp.float32
        device = array_device(Xn) if Xn is not None else (
            array_device(X) if is_array(X) else None)
        parts = [] if Xn is None else [Xn]
        for g, col in enumerate(self.categorical):
            idx = self.codes(g, host(col), name)
            E = self.embeddings[g]
            V = np.zeros((n, E.shape[1]), dtype=np.float64)
            ok = idx >= 0
            V[ok] = E[idx[ok]]
            parts.append(xp.astype(xp.asarray(V, device=device), dtype))
        out = parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)
        return xp, out, names


def _raw_columns(X: Any, name: str):
    """``(n, d, feature_names, pick, host)`` for raw input with mixed columns:
    ``pick(idx)`` selects numerical columns (keeping the library), ``host(j)`` gives
    column ``j`` as a NumPy array."""
    from .estimators import _reject_dask

    if X is None:
        raise ValueError(f"{name} is None; expected an array of shape (n_samples, n_features)")
    _reject_dask(X, name)
    if hasattr(X, "iloc") and hasattr(X, "columns"):
        cols = list(X.columns)
        names = cols if cols and all(isinstance(c, str) for c in cols) else None
        n, d = X.shape
        return n, d, names, (lambda idx: X.iloc[:, list(idx)]), (
            lambda j: X.iloc[:, j].to_numpy())
    if is_array(X) and not isinstance(X, np.ndarray):
        xp = namespace_of(X)
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {X.ndim}-D")
        from .testing import to_numpy

        def pick(idx):
            return xp.take(X, xp.asarray(list(idx), device=array_device(X)), axis=1)

        return X.shape[0], X.shape[1], None, pick, lambda j: to_numpy(X[:, j])
    A = np.asarray(X)
    if A.dtype.kind in "US" and not isinstance(X, np.ndarray):
        # a list of mixed rows: NumPy makes every entry a string; keep each value's type
        A = np.asarray(X, dtype=object)
    if A.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {A.ndim}D array instead for {name} (shape {A.shape})"
        )
    return A.shape[0], A.shape[1], None, (lambda idx: A[:, list(idx)]), (
        lambda j: A[:, j])


def fit_encoding(X: Any, categorical_features: Any, categorical_vectors: Any = None,
                 handle_unknown: str = "error") -> CategoricalEncoding:
    """Learn the categories of the categorical columns of ``X``.

    Parameters
    ----------
    X : array-like (n, d) or a pandas DataFrame
        Raw rows: categorical columns hold integer codes or strings; the other columns
        are numbers.
    categorical_features : sequence of int or boolean mask (d,)
    categorical_vectors : mapping {column: embedding}, optional
        For a column: an array ``(K, e)`` embedding the integer codes ``0 .. K-1`` (all
        ``K`` codes are then known, seen in ``X`` or not), or a mapping
        ``{category: vector}``.  Other categorical columns are one-hot (``E = I``) over
        the categories seen in ``X``.
    handle_unknown : {"error", "ignore"}
    """
    if handle_unknown not in HANDLE_UNKNOWN:
        raise ValueError(f"handle_unknown must be one of {HANDLE_UNKNOWN}, got "
                         f"{handle_unknown!r}")
    n, d, _, _, host = _raw_columns(X, "X")
    cat = resolve_features(categorical_features, d)
    vectors = {} if categorical_vectors is None else categorical_vectors
    if not isinstance(vectors, Mapping):
        raise TypeError("categorical_vectors must be None or a dict {column index: "
                        f"embedding}}, got {type(vectors).__name__}")
    resolved, keys = {}, {}
    for key, spec in vectors.items():
        if isinstance(key, bool) or not isinstance(key, numbers.Integral) or not -d <= key < d:
            raise ValueError(f"categorical_vectors has key {key!r}; keys must be column "
                             f"indices of X (d = {d})")
        if int(key) % d not in cat:
            raise ValueError(f"categorical_vectors has column {key} which is not in "
                             f"categorical_features {list(cat)}")
        col = int(key) % d
        if col in resolved:
            raise ValueError(f"categorical_vectors names column {col} twice (keys "
                             f"{keys[col]!r} and {key!r})")
        resolved[col], keys[col] = spec, key
    kinds, categories, embeddings = [], [], []
    for col in cat:
        kind, vals = _column_values(host(col), col)
        if col in resolved:
            vkind, cats, E = _check_vectors(resolved[col], col)
            if vkind != kind:
                raise TypeError(f"categorical_vectors[{col}] is keyed by {vkind} categories "
                                f"but column {col} holds {kind} values")
            unknown = np.setdiff1d(vals, cats)
            if unknown.size:
                raise ValueError(f"column {col} has categories {unknown[:5].tolist()} "
                                 f"that categorical_vectors[{col}] does not embed")
        else:
            cats = np.unique(vals)
            E = np.eye(cats.size)
        kinds.append(kind)
        categories.append(cats)
        embeddings.append(E)
    if n == 0:
        raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
    return CategoricalEncoding(d, cat, tuple(kinds), tuple(categories), tuple(embeddings),
                               handle_unknown)
