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

Categorical columns (``categorical_features=``) are embedded once for the whole tree
(:mod:`agop.categorical`); splits, routing and leaves work on the embedded rows, and the
leaves and split models keep ``M`` block-diagonal over the feature blocks.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._lib._compat import array_device, is_numpy_namespace
from ._lib._validation import namespace_of
from ._tree_grow import _fit_leaves, _Grower, _Plan, _require_distributed, fit_leaf
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
from .updates import _generator

__all__ = [
    "SPLIT_METHODS",
    "TEMPERATURES",
    "TUNING_MAX_POINTS",
    "Tree",
    "fit_leaf",
    "xRFMClassifier",
    "xRFMRegressor",
]

#: ``split_method=`` choices: top AGOP eigenvector of a light RFM on a subsample, top
#: principal component, a random direction, ridge-regression coefficients
SPLIT_METHODS = ("agop", "pca", "random", "linear")

#: temperatures tried on the validation data (0 is hard routing): xRFM's grid, 20 values
#: geometrically spaced from 0.025 to 4.5 (multiples of each node's IQR), SPEC §10.4
TEMPERATURES = (0.0, *(float(t) for t in np.geomspace(0.025, 4.5, 20)))

#: the temperature is tuned on at most this many validation points (a random subset
#: above it): every point of the tuning set evaluates up to min(n_leaves, 12 * 20) leaves
TUNING_MAX_POINTS = 20_000

_LOG_WEIGHT_FLOOR = -50.0  # log p(leaf) is clamped here before the softmax
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
        if not 0 < float(temperature) < np.inf:
            raise ValueError("leaf_weights needs a finite temperature > 0 (0 is hard "
                             f"routing: apply), got {temperature!r}")
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
        if not 0 <= T < np.inf:
            raise ValueError(f"temperature must be a finite number >= 0 (0: hard routing), "
                             f"got {temperature!r}")
        if T == 0 or self.n_leaves == 1:
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
        categorical_features: Any = None,
        categorical_vectors: Any = None,
        handle_unknown: str = "error",
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
        self.categorical_features = categorical_features
        self.categorical_vectors = categorical_vectors
        self.handle_unknown = handle_unknown

    # -- hyperparameters -------------------------------------------------------------

    def _check_params(self) -> None:
        self._check_categorical_params()
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
        enc = self._categorical_encoding()
        # the leaves and split models keep M block-diagonal over the embedded blocks
        blocks = enc.blocks if enc is not None and len(enc.blocks) > 1 else None
        plans, tuning = [], []
        for t in range(int(self.n_trees)):
            grower = _Grower(
                X, Y, X_val, xp, _generator(self.random_state, t), int(self.max_leaf_size),
                self.split_method, split_params, max(cap, 2),
                float(self.split_validation_fraction), int(self.refill_size),
                float(self.refill_fraction), blocks=blocks,
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
        leaves = _fit_leaves(jobs, (X, Y, X_val, Y_val), leaf_params, client, bool(self.verbose),
                             blocks)
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

    @property
    def feature_importances_(self) -> Any:
        """Per tree, the mean of the leaves' ``feature_importances_`` (the diagonals of
        their ``M_``) weighted by the leaves' numbers of training points; averaged over
        the trees.  ``(d,)``, in embedded coordinates with categorical features."""
        self._check_fitted()
        total = None
        for tree in self.trees_:
            sizes = [float(leaf.X_fit_.shape[0]) for leaf in tree.leaves]
            acc = sum(w * leaf.feature_importances_ for w, leaf in zip(sizes, tree.leaves,
                                                                          strict=True))
            acc = acc / sum(sizes)
            total = acc if total is None else total + acc
        return total / float(len(self.trees_))

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
    categorical = sorted({"categorical_features", "categorical_vectors",
                          "handle_unknown"} & set(params))
    if categorical:
        raise ValueError(f"{name} must not set {categorical}: pass them to the xRFM estimator, "
                         "which embeds the categorical columns once for the whole tree")
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
        A leaf below a split with at most ``refill_size`` validation points moves
        ``min(refill_size - n_val, refill_fraction * n_train)`` random training points
        into its validation set (only when there are validation data).
    temperature : "auto" or float >= 0, default "auto"
        Routing temperature; "auto" tunes it on the validation data (at most
        ``agop.tree.TUNING_MAX_POINTS`` = 20 000 of them, a random subset above) over
        ``agop.tree.TEMPERATURES`` (0, hard routing, and 20 values geometrically
        spaced from 0.025 to 4.5, as in xRFM), hard routing without validation data.
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
    categorical_features : sequence of int, boolean mask (d,) or None
        Columns of ``X`` holding categories (integer codes or strings), as for
        :class:`agop.RFMRegressor`: the categories are learned once, on all of the
        training data, each categorical column is replaced by its embedding (one-hot by
        default), and the tree is grown, routed and its leaves fitted on the embedded
        rows; every leaf (and split model) keeps ``M`` block-diagonal, one block for the
        numerical columns and one per categorical feature (``docs/categorical.md``).
    categorical_vectors : dict or None
        ``{{column: embedding}}`` for some categorical columns: an array ``(K, e)`` that
        embeds the integer codes ``0 .. K-1``, or a dict ``{{category: vector}}``.
    handle_unknown : {{"error", "ignore"}}, default "error"
        A category not seen in ``fit`` raises a ``ValueError`` at predict time, or
        (``"ignore"``) is embedded as the zero vector (and routed and predicted so).

    Attributes
    ----------
    trees_ : list of :class:`agop.tree.Tree`
        Each with ``directions``, ``thresholds``, ``scales``, ``leaves`` (fitted
        :class:`agop.RFMRegressor` models), ``temperature``, ``n_leaves``.
    n_leaves_ : int
        Number of leaves, over all trees.
    n_features_in_ : int
        Raw columns of ``X`` (categorical ones included).
    feature_importances_ : array (d,)
        The leaves' ``M_`` diagonals, averaged with weights proportional to the leaves'
        numbers of training points, then averaged over the trees (embedded columns with
        categorical features).
    categorical_features_, categories_, categorical_embeddings_, feature_blocks_ : list
        With categorical features, as for :class:`agop.RFMRegressor`; ``directions``
        and the leaves' arrays are in the embedded coordinates of ``feature_blocks_``.

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
