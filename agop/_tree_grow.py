"""Growing an xRFM tree (SPEC §10.2) and fitting its leaves; see :mod:`agop.tree`.

A :class:`_Grower` splits the rows of a node at the median of their projection on a
direction (:func:`_top_eigenvector` of a light RFM's AGOP, a principal component, a
random or a linear direction) and records, per leaf, its training and validation rows
after the validation refill; the leaves are then fitted by :func:`fit_leaf` (in this
process or as dask tasks).  The training data are never copied per level: nodes hold
row indices, and rows are gathered only for a node's projection, its split subsample
and, at the end, a leaf's fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._lib._compat import array_device, is_numpy_namespace
from ._lib._validation import namespace_of
from .estimators import RFMRegressor
from .solvers import solve_ridge
from .updates import block_diagonal, subsample_rows

__all__ = ["fit_leaf"]

logger = logging.getLogger("agop")

_MIN_SCALE = 1e-6  # floor of the temperature scale tau (IQR of the projections)
_EIGH_MAX_D = 256  # dense eigh up to this dimension, LOBPCG above (NumPy)


# --------------------------------------------------------------------------- building


@dataclass
class _Job:
    """One leaf to fit: training rows ``train`` of X, validation rows ``val`` of X_val plus
    training rows ``moved`` of X refilled into its validation set, and its seed."""

    train: Any
    val: Any
    moved: Any
    seed: int


@dataclass
class _Plan:
    """A grown tree before its leaves are fitted."""

    children: list = field(default_factory=list)
    split: list = field(default_factory=list)
    leaf: list = field(default_factory=list)
    directions: list = field(default_factory=list)
    thresholds: list = field(default_factory=list)
    scales: list = field(default_factory=list)
    jobs: list = field(default_factory=list)


@dataclass
class _Grower:
    X: Any
    Y: Any
    X_val: Any
    xp: Any
    rng: np.random.Generator
    max_leaf_size: int
    split_method: str
    split_params: dict
    split_max_points: int
    split_validation_fraction: float
    refill_size: int
    refill_fraction: float
    plan: _Plan = field(default_factory=_Plan)
    blocks: Any = None  # feature blocks of the embedded columns (categorical features)

    def grow(self, train: Any, val: Any) -> int:
        """Add the subtree of the rows ``train`` (of X) and ``val`` (of X_val); its node."""
        p = self.plan
        node = len(p.children)
        p.children.append([-1, -1])
        p.split.append(-1)
        p.leaf.append(-1)
        found = self._split(train) if train.shape[0] > self.max_leaf_size else None
        if found is None:
            p.leaf[node] = len(p.jobs)
            p.jobs.append(self._leaf_job(train, val, refill=node > 0))
            return node
        v, b, tau, left, right = found
        xp = self.xp
        j = len(p.directions)
        p.split[node] = j
        p.directions.append(v)
        p.thresholds.append(b)
        p.scales.append(tau)
        val_left = val_right = None
        if val is not None:
            s_val = xp.take(self.X_val, val, axis=0) @ v
            go = s_val <= b
            val_left = xp.take(val, xp.nonzero(go)[0])
            val_right = xp.take(val, xp.nonzero(~go)[0])
        p.children[node][0] = self.grow(left, val_left)
        p.children[node][1] = self.grow(right, val_right)
        return node

    def _split(self, train: Any):
        """``(v, b, tau, left rows, right rows)`` of a balanced median split, or None."""
        xp = self.xp
        n = train.shape[0]
        Xn = xp.take(self.X, train, axis=0)
        v = self._direction(Xn, train)
        s = Xn @ v
        if not float(xp.max(s)) > float(xp.min(s)):
            v = _random_direction(Xn.shape[1], self.rng, xp, Xn)
            s = Xn @ v
            if not float(xp.max(s)) > float(xp.min(s)):
                return None  # all points coincide: nothing to split
        del Xn
        order = xp.argsort(s, stable=True)
        ss = xp.take(s, order)
        k = (n + 1) // 2
        b = (ss[k - 1] + ss[k]) / 2.0
        tau = max(_quantile(ss, 0.75) - _quantile(ss, 0.25), _MIN_SCALE)
        return v, b, tau, xp.take(train, order[:k]), xp.take(train, order[k:])

    def _direction(self, Xn: Any, train: Any) -> Any:
        xp, rng = self.xp, self.rng
        n, d = Xn.shape
        if self.split_method == "random":
            return _random_direction(d, rng, xp, Xn)
        m = min(n, self.split_max_points)
        pos = None
        if m < n:
            pos = xp.asarray(np.sort(rng.choice(n, size=m, replace=False)),
                             device=array_device(Xn))
        Xs = Xn if pos is None else xp.take(Xn, pos, axis=0)
        v = None
        if self.split_method in ("agop", "linear"):
            rows = train if pos is None else xp.take(train, pos)
            Ys = xp.take(self.Y, rows, axis=0)
            if self.split_method == "agop":
                v = self._agop_direction(Xs, Ys)
            else:
                v = _linear_direction(Xs, Ys, xp, rng)
        if v is None:  # "pca", or a constant predictor / target
            Xc = Xs - xp.mean(Xs, axis=0, keepdims=True)
            v = _top_eigenvector(Xc.T @ Xc, xp, rng)
        if v is None:
            v = _random_direction(d, rng, xp, Xn)
        return v

    def _agop_direction(self, Xs: Any, Ys: Any) -> Any:
        """Top eigenvector of the AGOP of an RFM fitted on ``Xs`` (95 / 5 split)."""
        xp, rng = self.xp, self.rng
        m = Xs.shape[0]
        seed = int(rng.integers(2**31 - 1))
        n_val = int(round(self.split_validation_fraction * m))
        Xt, Yt, Xv, Yv = Xs, Ys, None, None
        if 1 <= n_val < m:
            perm = xp.asarray(rng.permutation(m), device=array_device(Xs))
            tr, va = perm[n_val:], perm[:n_val]
            Xt, Yt = xp.take(Xs, tr, axis=0), xp.take(Ys, tr, axis=0)
            Xv, Yv = xp.take(Xs, va, axis=0), xp.take(Ys, va, axis=0)
        model = _rfm(self.split_params, seed, self.blocks).fit(Xt, Yt, Xv, Yv)
        points = subsample_rows(Xt, model.agop_max_points, seed, 0)
        A = model._predictor().agop(points)
        if self.blocks is not None:  # the AGOP an update of the split model would keep
            A = block_diagonal(A, self.blocks)
        return _top_eigenvector(A, xp, rng)

    def _leaf_job(self, train: Any, val: Any, refill: bool = True) -> _Job:
        """The leaf's rows, after the validation refill of SPEC §10.2 (only below a
        split, as in xRFM: a tree that never splits is one RFM on all its points)."""
        xp, rng = self.xp, self.rng
        seed = int(rng.integers(2**31 - 1))
        moved = None
        if val is not None and refill:
            n_val, n = val.shape[0], train.shape[0]
            k = min(self.refill_size - n_val, int(self.refill_fraction * n)) \
                if n_val <= self.refill_size else 0
            if 0 < k < n:
                pick = np.zeros(n, dtype=bool)
                pick[rng.choice(n, size=k, replace=False)] = True
                dev = array_device(train)
                moved = xp.take(train, xp.asarray(np.flatnonzero(pick), device=dev))
                train = xp.take(train, xp.asarray(np.flatnonzero(~pick), device=dev))
        return _Job(train, val, moved, seed)


def _quantile(sorted_values: Any, q: float) -> float:
    """Linear-interpolation quantile of a sorted 1-D array (NumPy's default method)."""
    n = sorted_values.shape[0]
    pos = q * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    a, b = float(sorted_values[lo]), float(sorted_values[hi])
    return a + (pos - lo) * (b - a)


def _oriented(v: Any, xp: Any) -> Any | None:
    """Unit vector ``v`` with its largest-magnitude entry positive; None if degenerate."""
    norm = float(xp.sqrt(xp.sum(v * v)))
    if not np.isfinite(norm) or norm <= 0:
        return None
    i = int(xp.argmax(xp.abs(v)))
    return v / (norm if float(v[i]) > 0 else -norm)


def _random_direction(d: int, rng: np.random.Generator, xp: Any, like: Any) -> Any:
    g = xp.asarray(rng.normal(size=d), dtype=like.dtype, device=array_device(like))
    return _oriented(g, xp)


def _top_eigenvector(A: Any, xp: Any, rng: np.random.Generator) -> Any | None:
    """Eigenvector of the largest eigenvalue of the symmetric PSD ``A`` (None if ``A`` is
    zero or not finite): dense ``eigh`` up to d = 256, LOBPCG above (NumPy arrays)."""
    if not bool(xp.all(xp.isfinite(A))) or not bool(xp.any(A != 0)):
        return None
    A = (A + A.T) / 2.0
    d = A.shape[0]
    if d > _EIGH_MAX_D and is_numpy_namespace(xp):
        from scipy.sparse.linalg import lobpcg

        x0 = rng.normal(size=(d, 1))
        try:
            _, vec = lobpcg(A, x0, largest=True, maxiter=200, tol=1e-8)
            v = _oriented(xp.asarray(vec[:, 0], dtype=A.dtype), xp)
            if v is not None and np.isfinite(v).all():
                return v
        except (ValueError, np.linalg.LinAlgError):  # pragma: no cover - fall back to eigh
            pass
    _, vecs = xp.linalg.eigh(A)
    return _oriented(vecs[:, -1], xp)


def _linear_direction(Xs: Any, Ys: Any, xp: Any, rng: np.random.Generator) -> Any | None:
    """Ridge-regression coefficients of the centered data (several outputs: the top left
    singular vector of the coefficient matrix, which one-hot targets do not cancel)."""
    Xc = Xs - xp.mean(Xs, axis=0, keepdims=True)
    Yc = Ys - xp.mean(Ys, axis=0, keepdims=True)
    G = Xc.T @ Xc
    reg = 1e-3 * float(xp.sum(xp.linalg.diagonal(G))) / G.shape[0] + 1e-12
    W = solve_ridge(G, Xc.T @ Yc, reg=reg)
    if W.shape[1] == 1:
        return _oriented(W[:, 0], xp)
    return _top_eigenvector(W @ W.T, xp, rng)


# --------------------------------------------------------------------------- leaves


def _rfm(params: dict, random_state: int, blocks: Any) -> RFMRegressor:
    """An unfitted ``RFMRegressor(**params)`` whose updates keep ``M`` block-diagonal over
    ``blocks`` (columns embedded by the tree's categorical encoding), when given."""
    model = RFMRegressor(**{**params, "random_state": random_state})
    if blocks is not None:
        model._blocks = tuple(tuple(int(i) for i in b) for b in blocks)
    return model


def _fit_leaf_model(X: Any, Y: Any, X_val: Any, Y_val: Any, rfm_params: dict,
                    random_state: int, blocks: Any = None) -> RFMRegressor:
    return _rfm(rfm_params, random_state, blocks).fit(X, Y, X_val, Y_val)


def fit_leaf(X: np.ndarray, Y: np.ndarray, X_val: np.ndarray | None, Y_val: np.ndarray | None,
             rfm_params: dict, random_state: int, blocks: Any = None) -> tuple[dict, dict]:
    """Fit one leaf: ``agop.RFMRegressor(**rfm_params, random_state=random_state)`` on
    ``(X, Y)`` with validation data ``(X_val, Y_val)`` (or None).

    ``blocks`` (a list of lists of column indices, or None) keeps the leaf's ``M``
    block-diagonal over them, as ``AGOPUpdate(blocks=...)`` does: the feature blocks of
    rows embedded by a tree's categorical encoding (``feature_blocks_``).

    A pure function of NumPy arrays and a parameter dict, so it can run anywhere (a
    ``dask.distributed`` task); returns the fitted state ``(arrays, metadata)`` of
    :func:`agop.io.model_state`.
    """
    from .io import model_state

    return model_state(_fit_leaf_model(X, Y, X_val, Y_val, rfm_params, random_state, blocks))


def _leaf_data(X: Any, Y: Any, X_val: Any, Y_val: Any, job: _Job, xp: Any) -> tuple[Any, ...]:
    Xl, Yl = xp.take(X, job.train, axis=0), xp.take(Y, job.train, axis=0)
    parts_x, parts_y = [], []
    if job.val is not None and job.val.shape[0]:
        parts_x.append(xp.take(X_val, job.val, axis=0))
        parts_y.append(xp.take(Y_val, job.val, axis=0))
    if job.moved is not None:
        parts_x.append(xp.take(X, job.moved, axis=0))
        parts_y.append(xp.take(Y, job.moved, axis=0))
    if not parts_x:
        return Xl, Yl, None, None
    return Xl, Yl, xp.concat(parts_x, axis=0), xp.concat(parts_y, axis=0)


def _fit_leaves(jobs: list[_Job], arrays: tuple[Any, ...], rfm_params: dict, client: Any,
                verbose: bool, blocks: Any = None) -> list[RFMRegressor]:
    """Fit the leaves of ``jobs`` (``arrays = (X, Y, X_val, Y_val)``), in this process or
    as tasks on a dask client; each leaf's rows are gathered only when it is fitted, and
    its ``M`` kept block-diagonal over ``blocks`` (when not None)."""
    xp = namespace_of(arrays[0])
    if client is None:
        leaves = []
        for i, job in enumerate(jobs):
            Xl, Yl, Xv, Yv = _leaf_data(*arrays, job, xp)
            leaves.append(_fit_leaf_model(Xl, Yl, Xv, Yv, rfm_params, job.seed, blocks))
            logger.log(logging.INFO if verbose else logging.DEBUG,
                       "leaf %d of %d: %d training points", i + 1, len(jobs), Xl.shape[0])
        return leaves
    _require_distributed()
    from .io import model_from_state

    for attr in ("submit", "scatter", "gather"):
        if not hasattr(client, attr):
            raise TypeError(
                f"client must be a dask.distributed.Client, got {type(client).__name__}")
    futures = []
    for job in jobs:
        Xl, Yl, Xv, Yv = _leaf_data(*arrays, job, xp)
        data = client.scatter([a for a in (Xl, Yl, Xv, Yv) if a is not None])
        if Xv is None:
            data = [*data, None, None]
        futures.append(client.submit(fit_leaf, *data, rfm_params, job.seed, blocks,
                                     pure=False))
    states = client.gather(futures)
    if verbose:
        logger.info("%d leaves fitted on the cluster", len(states))
    return [model_from_state(a, m, where="leaf fitted on the cluster") for a, m in states]


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "fit(..., client=...) needs dask.distributed; install it with "
            "pip install agop[dask]"
        ) from exc
