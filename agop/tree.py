"""xRFM: a tree of leaf Recursive Feature Machines.

Beaglehole, Holzmüller, Radhakrishnan and Belkin, "xRFM: accurate, scalable, and
interpretable feature learning models for tabular data" (arXiv 2508.10053, ICLR 2026);
SPEC §10.  The data are split recursively, at the median of their projection on one
direction ``v``, until every node holds at most ``max_leaf_size`` training points; each
leaf is an :class:`agop.RFMRegressor` fitted on its own points (the one loop,
:func:`agop.fit_feature_machine`).  The default direction is the top eigenvector of the
AGOP of a light kernel machine fitted on a random subsample of the node, so the tree
splits along the direction the target varies most.

Prediction routes a point down the tree (left iff ``x·v <= b``) to one leaf, or, with a
temperature ``T > 0``, to a few leaves weighted by products of sigmoids of
``(x·v_j - b_j) / (T·tau_j)`` along the paths (``tau_j`` the interquartile range of the
node's projections); ``T`` is tuned on validation data.

Leaves are independent fits: ``fit(..., client=client)`` runs them as tasks on a
``dask.distributed`` cluster (the split tree is built first, in the calling process).
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._lib._compat import array_device, is_numpy_namespace
from ._lib._validation import namespace_of
from .estimators import (
    NotFittedError,
    RFMRegressor,
    _ClassifierMixin,
    _ClassifierOutputs,
    _EstimatorBase,
    _RegressorMixin,
    _RegressorOutputs,
    _split,
)
from .rfm import METRICS, score
from .solvers import solve_ridge
from .updates import _generator, subsample_rows

__all__ = [
    "SPLIT_METHODS",
    "TEMPERATURES",
    "TUNING_MAX_POINTS",
    "Tree",
    "fit_leaf",
    "xRFMClassifier",
    "xRFMRegressor",
]

logger = logging.getLogger("agop")

#: ``split_method=`` choices: top AGOP eigenvector of a light RFM on a subsample, top
#: principal component, a random direction, ridge-regression coefficients
SPLIT_METHODS = ("agop", "pca", "random", "linear")

#: temperatures tried on the validation data (0 is hard routing), SPEC §10.4
TEMPERATURES = (0.0, *(float(t) for t in np.logspace(0.025, 4.5, 20)))

#: the temperature is tuned on at most this many validation points (a random subset
#: above it): every point of the tuning set evaluates up to min(n_leaves, 12 * 20) leaves
TUNING_MAX_POINTS = 20_000

_LOG_WEIGHT_FLOOR = -50.0  # log p(leaf) is clamped here before the softmax
_MIN_SCALE = 1e-6  # floor of the temperature scale tau (IQR of the projections)
_EIGH_MAX_D = 256  # dense eigh up to this dimension, LOBPCG above (NumPy)
_BLOCK_ENTRIES = 1 << 22  # soft routing works on row blocks of at most this many (row, leaf)


# --------------------------------------------------------------------------- the tree


@dataclass(eq=False)
class Tree:
    """One fitted tree.

    Nodes are numbered in depth-first order (0 is the root).  An internal node ``i``
    has ``split[i] = j >= 0``: points with ``x · directions[j] <= thresholds[j]`` go to
    ``children[i, 0]``, the others to ``children[i, 1]``; ``scales[j]`` is the
    temperature scale ``tau_j``.  A leaf has ``leaf[i] = k >= 0``: its model is
    ``leaves[k]``, an :class:`agop.RFMRegressor` fitted on the encoded targets.

    Attributes
    ----------
    children : ndarray (n_nodes, 2) of int
    split, leaf : ndarray (n_nodes,) of int, -1 where not applicable
    directions : array (n_splits, d), thresholds, scales : arrays (n_splits,)
        In the namespace and on the device of the training data.
    leaves : list of RFMRegressor
    temperature : float
        Routing temperature used by ``predict`` (0: hard routing).
    temperature_scores : dict
        Validation score of each temperature tried (empty when none was tuned).
    """

    children: np.ndarray
    split: np.ndarray
    leaf: np.ndarray
    directions: Any
    thresholds: Any
    scales: Any
    leaves: list
    temperature: float = 0.0
    temperature_scores: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # nodes are numbered parents first; the node of each leaf and the tree's depth
        self._leaf_node = np.argsort(np.where(self.leaf >= 0, self.leaf, len(self.leaf)),
                                     kind="stable")[:len(self.leaves)]
        level = np.zeros(len(self.leaf), dtype=np.int64)
        for node in range(len(self.leaf)):
            if self.split[node] >= 0:
                level[self.children[node]] = level[node] + 1
        self._depth = int(level.max()) if level.size else 0

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)

    @property
    def depth(self) -> int:
        """Number of splits on the longest root-to-leaf path."""
        return self._depth

    # -- routing ---------------------------------------------------------------------

    def _route(self, X: Any) -> list[tuple[int, Any]]:
        """``[(leaf, rows)]``: the rows of ``X`` that hard routing sends to each leaf."""
        xp = namespace_of(X)
        out = []
        stack = [(0, xp.arange(X.shape[0], device=array_device(X)))]
        while stack:
            node, rows = stack.pop()
            if rows.shape[0] == 0:
                continue
            k = int(self.leaf[node])
            if k >= 0:
                out.append((k, rows))
                continue
            j = int(self.split[node])
            s = xp.take(X, rows, axis=0) @ self.directions[j, :]
            left = s <= self.thresholds[j]
            stack.append((int(self.children[node, 1]), xp.take(rows, xp.nonzero(~left)[0])))
            stack.append((int(self.children[node, 0]), xp.take(rows, xp.nonzero(left)[0])))
        return out

    def apply(self, X: Any) -> Any:
        """Index of the leaf that hard routing sends each row of ``X`` to, ``(m,)``."""
        xp = namespace_of(X)
        parts = self._route(X)
        ids = [xp.full((rows.shape[0], 1), k, dtype=xp.int64, device=array_device(X))
               for k, rows in parts]
        return _assemble([rows for _, rows in parts], ids, X.shape[0], xp)[:, 0]

    def leaf_weights(self, X: Any, temperature: float, *, keep_weight_fraction: float = 0.99,
                     max_leaves: int = 12) -> Any:
        """Soft-routing weights ``(m, n_leaves)``; rows sum to 1 (SPEC §10.4).

        ``log p(leaf) = sum over the splits on its path of log sigmoid(-+z_j)`` with
        ``z_j = (x · v_j - b_j) / (T tau_j)`` (minus sign to the left), clamped at -50
        and normalized; only the fewest heaviest leaves that cover ``keep_weight_fraction``
        of the weight (at most ``max_leaves``) are kept, then renormalized.
        """
        xp = namespace_of(X)
        m, n_leaves = X.shape[0], self.n_leaves
        dev = array_device(X)
        if n_leaves == 1:
            return xp.ones((m, 1), dtype=X.dtype, device=dev)
        if temperature <= 0:
            raise ValueError("leaf_weights needs a temperature > 0 (0 is hard routing: apply)")
        Z = (X @ self.directions.T - self.thresholds[None, :]) / (
            float(temperature) * self.scales[None, :])
        zero = xp.zeros((), dtype=X.dtype, device=dev)
        # log p accumulated from the root down (parents are numbered before children)
        acc = {0: xp.zeros((m,), dtype=X.dtype, device=dev)}
        for node in range(len(self.leaf)):
            j = int(self.split[node])
            if j < 0:
                continue
            a, z = acc.pop(node), Z[:, j]
            acc[int(self.children[node, 0])] = a - xp.logaddexp(zero, z)
            acc[int(self.children[node, 1])] = a - xp.logaddexp(zero, -z)
        logp = xp.stack([acc[int(i)] for i in self._leaf_node], axis=1)
        logp = xp.maximum(logp, _LOG_WEIGHT_FLOOR)
        w = xp.exp(logp - xp.max(logp, axis=1, keepdims=True))
        w = w / xp.sum(w, axis=1, keepdims=True)
        ws = -xp.sort(-w, axis=1)
        before = xp.cumulative_sum(ws, axis=1) - ws
        n_keep = xp.sum(xp.astype(before < keep_weight_fraction, xp.int64), axis=1)
        n_keep = xp.clip(n_keep, 1, int(max_leaves))
        rank = xp.argsort(xp.argsort(-w, axis=1, stable=True), axis=1, stable=True)
        W = xp.where(rank < n_keep[:, None], w, xp.zeros_like(w))
        return W / xp.sum(W, axis=1, keepdims=True)

    # -- prediction ------------------------------------------------------------------

    def predict(self, X: Any, temperature: float | None = None, **soft: Any) -> Any:
        """Encoded outputs ``(m, c)`` of the tree (``temperature`` defaults to the tuned
        one; 0 routes every point to one leaf, which alone is evaluated on it)."""
        T = self.temperature if temperature is None else float(temperature)
        if T <= 0 or self.n_leaves == 1:
            return self._predict_hard(X)
        return self._predict_soft(X, [T], **soft)[0]

    def _predict_hard(self, X: Any) -> Any:
        xp = namespace_of(X)
        parts = self._route(X)
        vals = [_leaf_predict(self.leaves[k], xp.take(X, rows, axis=0)) for k, rows in parts]
        return _assemble([rows for _, rows in parts], vals, X.shape[0], xp)

    def _predict_soft(self, X: Any, temperatures: list[float], *,
                      keep_weight_fraction: float = 0.99, max_leaves: int = 12) -> list[Any]:
        """Outputs at each temperature; each leaf is evaluated once per row block, on the
        rows that any of the temperatures gives it weight."""
        xp = namespace_of(X)
        m, n_leaves = X.shape[0], self.n_leaves
        step = max(1, _BLOCK_ENTRIES // max(n_leaves * len(temperatures), 1))
        blocks: list[list[Any]] = [[] for _ in temperatures]
        for start in range(0, m, step):
            Xb = X[start:min(start + step, m), :]
            Ws = [self.leaf_weights(Xb, T, keep_weight_fraction=keep_weight_fraction,
                                    max_leaves=max_leaves) for T in temperatures]
            used = Ws[0] > 0
            for W in Ws[1:]:
                used = used | (W > 0)
            outs = [None] * len(temperatures)
            for k in range(n_leaves):
                rows = xp.nonzero(used[:, k])[0]
                if rows.shape[0] == 0:
                    continue
                P = _leaf_predict(self.leaves[k], xp.take(Xb, rows, axis=0))
                rest = xp.nonzero(~used[:, k])[0]
                full = _assemble([rows, rest], [P, xp.zeros((rest.shape[0], P.shape[1]),
                                                            dtype=P.dtype,
                                                            device=array_device(P))],
                                 Xb.shape[0], xp)
                for i, W in enumerate(Ws):
                    part = W[:, k:k + 1] * full
                    outs[i] = part if outs[i] is None else outs[i] + part
            for i in range(len(temperatures)):
                blocks[i].append(outs[i])
        return [xp.concat(b, axis=0) for b in blocks]


def _assemble(index_parts: list[Any], value_parts: list[Any], m: int, xp: Any) -> Any:
    """Rows ``value_parts[i][r]`` placed at ``index_parts[i][r]``; the index parts must
    partition ``range(m)`` (Array-API: no index assignment, one inverse permutation)."""
    idx = xp.concat(index_parts, axis=0)
    vals = xp.concat(value_parts, axis=0)
    if idx.shape[0] != m:  # pragma: no cover - guarded by the callers
        raise RuntimeError("routing lost or duplicated points")
    return xp.take(vals, xp.argsort(idx), axis=0)


def _leaf_predict(leaf: RFMRegressor, X: Any) -> Any:
    machine = leaf._predictor()
    xp = namespace_of(X)
    return machine.predict(xp.astype(X, machine.centers.dtype))


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
            p.jobs.append(self._leaf_job(train, val))
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
        model = RFMRegressor(**{**self.split_params, "random_state": seed})
        model.fit(Xt, Yt, Xv, Yv)
        points = subsample_rows(Xt, model.agop_max_points, seed, 0)
        A = model._predictor().agop(points)
        return _top_eigenvector(A, xp, rng)

    def _leaf_job(self, train: Any, val: Any) -> _Job:
        """The leaf's rows, after the validation refill of SPEC §10.2."""
        xp, rng = self.xp, self.rng
        seed = int(rng.integers(2**31 - 1))
        moved = None
        if val is not None:
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


def _fit_leaf_model(X: Any, Y: Any, X_val: Any, Y_val: Any, rfm_params: dict,
                    random_state: int) -> RFMRegressor:
    return RFMRegressor(**{**rfm_params, "random_state": random_state}).fit(X, Y, X_val, Y_val)


def fit_leaf(X: np.ndarray, Y: np.ndarray, X_val: np.ndarray | None, Y_val: np.ndarray | None,
             rfm_params: dict, random_state: int) -> tuple[dict, dict]:
    """Fit one leaf: ``agop.RFMRegressor(**rfm_params, random_state=random_state)`` on
    ``(X, Y)`` with validation data ``(X_val, Y_val)`` (or None).

    A pure function of NumPy arrays and a parameter dict, so it can run anywhere (a
    ``dask.distributed`` task); returns the fitted state ``(arrays, metadata)`` of
    :func:`agop.io.model_state`.
    """
    from .io import model_state

    return model_state(_fit_leaf_model(X, Y, X_val, Y_val, rfm_params, random_state))


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
                verbose: bool) -> list[RFMRegressor]:
    """Fit the leaves of ``jobs`` (``arrays = (X, Y, X_val, Y_val)``), in this process or
    as tasks on a dask client; each leaf's rows are gathered only when it is fitted."""
    xp = namespace_of(arrays[0])
    if client is None:
        leaves = []
        for i, job in enumerate(jobs):
            Xl, Yl, Xv, Yv = _leaf_data(*arrays, job, xp)
            leaves.append(_fit_leaf_model(Xl, Yl, Xv, Yv, rfm_params, job.seed))
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
        futures.append(client.submit(fit_leaf, *data, rfm_params, job.seed, pure=False))
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


# --------------------------------------------------------------------------- estimators


class _TreeBase(_EstimatorBase):
    """Hyperparameters, fitting and routing shared by the xRFM regressor and classifier."""

    _metric: str = "mse"

    def __init__(
        self,
        *,
        rfm_params: dict | None = None,
        max_leaf_size: int = 10_000,
        n_trees: int = 1,
        split_method: str = "agop",
        split_rfm_params: dict | None = None,
        split_max_points: int | None = None,
        split_validation_fraction: float = 0.05,
        refill_size: int = 1500,
        refill_fraction: float = 0.2,
        temperature: float | str = "auto",
        keep_weight_fraction: float = 0.99,
        max_soft_leaves: int = 12,
        validation_fraction: float = 0.2,
        random_state: Any = None,
        verbose: bool = False,
    ) -> None:
        self.rfm_params = rfm_params
        self.max_leaf_size = max_leaf_size
        self.n_trees = n_trees
        self.split_method = split_method
        self.split_rfm_params = split_rfm_params
        self.split_max_points = split_max_points
        self.split_validation_fraction = split_validation_fraction
        self.refill_size = refill_size
        self.refill_fraction = refill_fraction
        self.temperature = temperature
        self.keep_weight_fraction = keep_weight_fraction
        self.max_soft_leaves = max_soft_leaves
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose

    # -- hyperparameters -------------------------------------------------------------

    def _check_params(self) -> None:
        _check_int(self.max_leaf_size, "max_leaf_size", 1)
        _check_int(self.n_trees, "n_trees", 1)
        _check_int(self.refill_size, "refill_size", 0)
        _check_int(self.max_soft_leaves, "max_soft_leaves", 1)
        if self.split_max_points is not None:
            _check_int(self.split_max_points, "split_max_points", 2)
        if not isinstance(self.split_method, str) or self.split_method not in SPLIT_METHODS:
            raise ValueError(
                f"split_method must be one of {SPLIT_METHODS}, got {self.split_method!r}")
        _check_fraction(self.split_validation_fraction, "split_validation_fraction")
        _check_fraction(self.refill_fraction, "refill_fraction")
        _check_fraction(self.validation_fraction, "validation_fraction")
        kw = self.keep_weight_fraction
        if isinstance(kw, bool) or not isinstance(kw, numbers.Real) or not 0.0 < kw <= 1.0:
            raise ValueError(f"keep_weight_fraction must be in (0, 1], got {kw!r}")
        T = self.temperature
        if not (T == "auto" if isinstance(T, str) else (
                not isinstance(T, bool) and isinstance(T, numbers.Real) and 0 <= T < np.inf)):
            raise ValueError(
                f"temperature must be 'auto' (tuned on validation data) or a number >= 0 "
                f"(0: hard routing), got {T!r}")

    def _leaf_params(self) -> dict:
        params = _check_rfm_params(self.rfm_params, "rfm_params")
        params.setdefault("tuning_metric", self._metric)
        return params

    def _split_params(self, leaf_params: dict) -> dict:
        if self.split_rfm_params is None:
            return {**leaf_params, "iters": 0}
        params = _check_rfm_params(self.split_rfm_params, "split_rfm_params")
        params.setdefault("tuning_metric", self._metric)
        return params

    # -- fitting ---------------------------------------------------------------------

    def _fit_trees(self, X: Any, Y: Any, X_val: Any, Y_val: Any, xp: Any,
                   stratify: Any = None, client: Any = None) -> None:
        self._check_params()
        leaf_params = self._leaf_params()
        split_params = self._split_params(leaf_params)
        if client is not None:
            _require_distributed()
            if not is_numpy_namespace(xp):
                raise TypeError("fit(..., client=...) ships NumPy arrays to the workers; "
                                f"got {xp.__name__} arrays (convert X with numpy.asarray)")
        if X_val is None and self.validation_fraction > 0 and X.shape[0] >= 2:
            X, Y, X_val, Y_val = _split(X, Y, self.validation_fraction, self.random_state,
                                        stratify, xp)
        n = X.shape[0]
        cap = int(self.split_max_points) if self.split_max_points is not None else min(
            int(self.max_leaf_size), 50_000)
        dev = array_device(X)
        plans, tuning = [], []
        for t in range(int(self.n_trees)):
            grower = _Grower(
                X, Y, X_val, xp, _generator(self.random_state, t), int(self.max_leaf_size),
                self.split_method, split_params, max(cap, 2),
                float(self.split_validation_fraction), int(self.refill_size),
                float(self.refill_fraction),
            )
            val = None if X_val is None else xp.arange(X_val.shape[0], device=dev)
            grower.grow(xp.arange(n, device=dev), val)
            plans.append(grower.plan)
            if X_val is not None and X_val.shape[0] > TUNING_MAX_POINTS:
                pick = np.sort(grower.rng.choice(X_val.shape[0], TUNING_MAX_POINTS,
                                                 replace=False))
                pick = xp.asarray(pick, device=dev)
                tuning.append((xp.take(X_val, pick, axis=0), xp.take(Y_val, pick, axis=0)))
            else:
                tuning.append((X_val, Y_val))
        jobs = [job for plan in plans for job in plan.jobs]
        leaves = _fit_leaves(jobs, (X, Y, X_val, Y_val), leaf_params, client, bool(self.verbose))
        trees, start = [], 0
        for plan in plans:
            k = len(plan.jobs)
            trees.append(_tree_from_plan(plan, leaves[start:start + k], X, xp))
            start += k
        if X_val is not None:
            for tree, (Xt, Yt) in zip(trees, tuning, strict=True):
                self._set_temperature(tree, Xt, Yt)
        else:
            for tree in trees:
                tree.temperature = 0.0 if self.temperature == "auto" else float(self.temperature)
        self.trees_ = trees
        self.n_leaves_ = sum(t.n_leaves for t in trees)

    def _set_temperature(self, tree: Tree, X_val: Any, Y_val: Any) -> None:
        if self.temperature != "auto":
            tree.temperature = float(self.temperature)
            return
        if tree.n_leaves == 1:
            tree.temperature = 0.0
            return
        soft = self._soft_options()
        temps = list(TEMPERATURES[1:])
        outs = [tree._predict_hard(X_val), *tree._predict_soft(X_val, temps, **soft)]
        larger_better = METRICS[self._tuning_metric()]
        scores = {T: score(self._tuning_metric(), Y_val, P) for T, P in zip(TEMPERATURES, outs,
                                                                             strict=True)}
        best = 0.0
        for T, s in scores.items():
            if (s > scores[best]) if larger_better else (s < scores[best]):
                best = T
        tree.temperature = best
        tree.temperature_scores = scores

    def _tuning_metric(self) -> str:
        return self._leaf_params()["tuning_metric"]

    def _soft_options(self) -> dict:
        return {"keep_weight_fraction": float(self.keep_weight_fraction),
                "max_leaves": int(self.max_soft_leaves)}

    # -- prediction ------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "trees_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def _decision(self, X: Any) -> Any:
        """Encoded outputs ``(m, c)``, averaged over the trees."""
        self._check_fitted()
        xp, X = self._check_predict_input(X)
        ref = self.trees_[0].directions
        if namespace_of(ref) is not xp:
            raise TypeError(f"the model was fitted on {namespace_of(ref).__name__} arrays; pass "
                            "X from the same library")
        X = xp.astype(X, ref.dtype)
        soft = self._soft_options()
        total = None
        for tree in self.trees_:
            P = tree.predict(X, **soft)
            total = P if total is None else total + P
        return total / float(len(self.trees_)) if len(self.trees_) > 1 else total

    def apply(self, X: Any) -> list[Any]:
        """For each tree, the index of the leaf each row of ``X`` is routed to (hard)."""
        self._check_fitted()
        xp, X = self._check_predict_input(X)
        return [t.apply(xp.astype(X, t.directions.dtype)) for t in self.trees_]


def _tree_from_plan(plan: _Plan, leaves: list, X: Any, xp: Any) -> Tree:
    d, dev = X.shape[1], array_device(X)
    if plan.directions:
        V = xp.stack(plan.directions, axis=0)
        b = xp.stack([xp.asarray(t, dtype=X.dtype, device=dev) for t in plan.thresholds])
    else:
        V = xp.zeros((0, d), dtype=X.dtype, device=dev)
        b = xp.zeros((0,), dtype=X.dtype, device=dev)
    tau = xp.asarray(np.asarray(plan.scales, dtype=np.float64), dtype=X.dtype, device=dev)
    return Tree(np.asarray(plan.children, dtype=np.int64).reshape(-1, 2),
                np.asarray(plan.split, dtype=np.int64), np.asarray(plan.leaf, dtype=np.int64),
                V, b, tau, list(leaves))


def _check_int(value: Any, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_fraction(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _check_rfm_params(params: Any, name: str) -> dict:
    """A copy of the leaf hyperparameters, checked against :class:`agop.RFMRegressor`."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise TypeError(f"{name} must be None or a dict of RFMRegressor hyperparameters, got "
                        f"{type(params).__name__}")
    valid = set(RFMRegressor().get_params(deep=False))
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ValueError(f"{name} has unknown RFMRegressor hyperparameters {unknown}; valid: "
                         f"{sorted(valid)}")
    if "random_state" in params:
        raise ValueError(f"{name} must not set random_state: the tree's random_state seeds "
                         "every leaf and split")
    params = dict(params)
    RFMRegressor(**params)._check_params()
    return params


# --------------------------------------------------------------------------- public


_TREE_DOC = """
    Parameters
    ----------
    rfm_params : dict or None
        Hyperparameters of every leaf, passed unchanged to :class:`agop.RFMRegressor`
        (``kernel``, ``bandwidth``, ``reg``, ``iters``, ``diag``, ...; None: its
        defaults, a Laplace kernel of bandwidth 10, ``reg=1e-3``, 5 iterations).  The
        leaves' ``tuning_metric`` defaults to {metric}.
    max_leaf_size : int, default 10000
        Nodes with more training points are split.  A leaf's direct solve holds its
        ``n x n`` kernel matrix (800 MB in float64 at 10 000 points), so fit time and
        memory grow with the square of this value and linearly with ``n``.
    n_trees : int, default 1
        Trees of an ensemble (different random subsamples); predictions are averaged.
    split_method : {{"agop", "pca", "random", "linear"}}, default "agop"
        Split direction: the top eigenvector of the AGOP of a kernel machine fitted on a
        random subsample of the node (``split_rfm_params``); the top principal component;
        a random direction; the ridge-regression coefficients (several outputs: the top
        left singular vector of their matrix).
    split_rfm_params : dict or None
        Hyperparameters of the split model (None: ``rfm_params`` with ``iters=0``, one
        kernel machine with ``M = I`` whose AGOP gives the direction).
    split_max_points : int or None
        Size of the split model's random subsample (None: ``min(50000, max_leaf_size)``,
        so that a split costs no more than a leaf).
    split_validation_fraction : float, default 0.05
        Part of the subsample the split model holds out for validation.
    refill_size, refill_fraction : int, float, default 1500, 0.2
        A leaf with at most ``refill_size`` validation points moves
        ``min(refill_size - n_val, refill_fraction * n_train)`` random training points
        into its validation set (only when there are validation data).
    temperature : "auto" or float >= 0, default "auto"
        Routing temperature; "auto" tunes it on the validation data (at most
        ``agop.tree.TUNING_MAX_POINTS`` = 20 000 of them, a random subset above) over
        ``agop.tree.TEMPERATURES`` (0, hard routing, and 20 values from 10^0.025 to
        10^4.5), hard routing without validation data.
    keep_weight_fraction : float in (0, 1], default 0.99
    max_soft_leaves : int, default 12
        Soft routing keeps the fewest heaviest leaves covering this fraction of a point's
        weight, at most this many, and renormalizes.
    validation_fraction : float in [0, 1), default 0.2
        When ``fit`` gets no ``X_val``, hold out this fraction of the data as validation
        data (routed down the tree; selects each leaf's iterate and the temperature).
    random_state : None or int
        Seeds the validation split, every subsample, split model and leaf: the same seed
        gives the same model.
    verbose : bool
        One ``logging`` line per fitted leaf (logger ``"agop"``).

    Attributes
    ----------
    trees_ : list of :class:`agop.tree.Tree`
        Each with ``directions``, ``thresholds``, ``scales``, ``leaves`` (fitted
        :class:`agop.RFMRegressor` models), ``temperature``, ``n_leaves``.
    n_leaves_ : int
        Number of leaves, over all trees.
    n_features_in_ : int

    Notes
    -----
    Beaglehole, Holzmüller, Radhakrishnan, Belkin, "xRFM: accurate, scalable, and
    interpretable feature learning models for tabular data", arXiv 2508.10053 (ICLR
    2026).  Every node is split at the median of ``x·v`` into two halves of the training
    points (balanced by rank); the threshold ``b`` is the midpoint between the two middle
    projections, ``tau`` their interquartile range.  ``fit(..., client=client)`` fits the
    leaves as tasks on a ``dask.distributed`` client (NumPy data; same ``random_state``,
    same model).
"""


class xRFMRegressor(_RegressorOutputs, _RegressorMixin, _TreeBase):  # noqa: N801
    __doc__ = """A tree of leaf RFMs for regression (xRFM).
""" + _TREE_DOC.format(metric='"mse"') + """
    Examples
    --------
    >>> import numpy as np, agop
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(600, 4)); y = np.sign(X[:, 0]) + 0.5 * X[:, 1]
    >>> model = agop.xRFMRegressor(max_leaf_size=200, random_state=0).fit(X[:500], y[:500])
    >>> model.n_leaves_ > 1
    True
    >>> bool(np.sqrt(np.mean((model.predict(X[500:]) - y[500:]) ** 2)) < 0.3)
    True
    """

    _metric = "mse"

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None, *,
            client: Any = None) -> xRFMRegressor:
        """Grow the tree(s) on ``(X, y)`` and fit the leaves; ``(X_val, y_val)`` optional.

        ``client``: a ``dask.distributed.Client`` to fit the leaves on (NumPy inputs).
        """
        xp, X, Y, Xv, Yv = self._prepare_fit(X, y, X_val, y_val)
        self._fit_trees(X, Y, Xv, Yv, xp, client=client)
        return self


class xRFMClassifier(_ClassifierOutputs, _ClassifierMixin, _TreeBase):  # noqa: N801
    __doc__ = """A tree of leaf RFMs for classification (xRFM).

    Labels of any type are encoded once for the whole tree (``classes_`` from all of
    ``y``: one 0/1 column for two classes, one-hot columns for more), and every leaf
    regresses all columns, so a leaf that sees only some classes still scores them all.
    ``decision_function``, ``predict`` and ``predict_proba`` follow
    :class:`agop.RFMClassifier`, applied to the routed (soft-weighted, tree-averaged)
    leaf scores: ``predict_proba`` clips them to ``[1e-3, 1 - 1e-3]`` and renormalizes.
""" + _TREE_DOC.format(metric='"brier"') + """
    classes_ : array (n_classes,)

    Examples
    --------
    >>> import numpy as np, agop
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(0, 3, size=(600, 4)); y = np.floor(X[:, 0]).astype(int)
    >>> clf = agop.xRFMClassifier(max_leaf_size=200, random_state=0).fit(X[:500], y[:500])
    >>> bool(clf.score(X[500:], y[500:]) > 0.8)
    True
    """

    _metric = "brier"

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None, *,
            client: Any = None) -> xRFMClassifier:
        """Grow the tree(s) on ``(X, y)`` and fit the leaves; ``(X_val, y_val)`` optional.

        ``client``: a ``dask.distributed.Client`` to fit the leaves on (NumPy inputs).
        """
        xp, X, Y, Xv, Yv, inverse = self._prepare_fit(X, y, X_val, y_val)
        self._fit_trees(X, Y, Xv, Yv, xp, stratify=inverse, client=client)
        return self
