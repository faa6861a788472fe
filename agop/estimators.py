"""Recursive Feature Machine estimators with scikit-learn conventions.

``RFMRegressor`` and ``RFMClassifier`` are thin wrappers around the one loop,
:func:`agop.rfm.fit_feature_machine`.  They follow scikit-learn (keyword
hyperparameters stored unchanged by ``__init__``, ``fit`` returns ``self``, fitted state
ends in ``_``) and work in ``Pipeline`` and ``GridSearchCV``; scikit-learn itself is
optional.  Arrays of any Array-API library (NumPy, torch, CuPy, array-api-strict) stay in
their library and on their device: fitted arrays and predictions come back in it.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import warnings
from typing import Any

import numpy as np

from ._lib._compat import array_device, is_array, is_numpy_namespace
from ._lib._validation import namespace_of
from .categorical import HANDLE_UNKNOWN, CategoricalEncoding, fit_encoding
from .kernels import Kernel, make_kernel
from .rfm import METRICS, FitResult, fit_feature_machine
from .solvers import SOLVERS
from .updates import NORMALIZATIONS, AGOPUpdate, FACTUpdate, KernelMachine, UpdateRule

__all__ = ["UPDATES", "RFMClassifier", "RFMRegressor"]

#: ``update=`` name -> FACT variant (``None``: the AGOP update of RFM)
UPDATES: dict[str, str | None] = {
    "agop": None,
    "fact": "fact",
    "fact_geometric": "geometric",
    "fact_inner_product": "inner_product",
}

try:  # scikit-learn is optional: without it the estimators bring their own minimal base
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import ClassifierMixin as _ClassifierMixin
    from sklearn.base import RegressorMixin as _RegressorMixin

    _HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised in the core-only install
    _HAVE_SKLEARN = False

    class _Base:  # type: ignore[no-redef]
        """get_params / set_params as in scikit-learn, for installs without it."""

        @classmethod
        def _get_param_names(cls) -> list[str]:
            sig = inspect.signature(cls.__init__)
            return sorted(p for p in sig.parameters if p != "self")

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params: Any):
            valid = self._get_param_names()
            for key, value in params.items():
                if key not in valid:
                    raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}")
                setattr(self, key, value)
            return self

        def __repr__(self) -> str:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class _ClassifierMixin:  # type: ignore[no-redef]
        _estimator_type = "classifier"

    class _RegressorMixin:  # type: ignore[no-redef]
        _estimator_type = "regressor"


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit``."""


_DataConversionWarning: type[Warning] = UserWarning
if _HAVE_SKLEARN:
    from sklearn.exceptions import DataConversionWarning as _DataConversionWarning
    from sklearn.exceptions import NotFittedError  # noqa: F811 - same role, sklearn's class


# --------------------------------------------------------------------------- inputs


def _check_features(X: Any, name: str = "X") -> tuple[Any, Any, list[str] | None]:
    """``(xp, X, feature_names)`` with ``X`` a 2-D real floating array of its library."""
    try:
        import scipy.sparse

        if scipy.sparse.issparse(X):
            raise TypeError(
                f"{name} is a scipy sparse matrix; agop estimators do not accept sparse input "
                f"(convert with {name}.toarray())"
            )
    except ImportError:  # pragma: no cover
        pass
    names = None
    if X is None:
        raise ValueError(f"{name} is None; expected an array of shape (n_samples, n_features)")
    _reject_dask(X, name)
    if is_array(X) and not isinstance(X, np.ndarray):
        xp = namespace_of(X)
        kind = str(X.dtype)
        if "complex" in kind:
            raise ValueError(f"Complex data not supported: {name} has dtype {kind}")
        if X.dtype not in (xp.float32, xp.float64):
            X = xp.astype(X, xp.float64 if _has_float64(xp, X) else xp.float32)
    else:
        columns = getattr(X, "columns", None)
        if columns is not None and hasattr(X, "to_numpy"):
            cols = list(columns)
            if cols and all(isinstance(c, str) for c in cols):
                names = cols
            X = X.to_numpy()
        X = np.asarray(X)
        if X.dtype.kind in "USV" or (X.dtype.kind == "O" and _has_strings(X)):
            raise TypeError(
                f"{name} contains strings in a numerical column; name the columns that hold "
                "categories in categorical_features= (or encode them as numbers first)"
            )
        if X.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
        if X.dtype.kind == "O":
            X = X.astype(np.float64)  # TypeError for non-numbers such as dicts
        elif X.dtype.kind in "biu":
            X = X.astype(np.float64)
        elif X.dtype.kind != "f":
            raise TypeError(f"{name} has unsupported dtype {X.dtype}; expected numbers")
        elif X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        xp = namespace_of(X)
    if X.ndim == 1:
        raise ValueError(
            f"Expected 2D array, got 1D array instead for {name} (shape {tuple(X.shape)}): "
            "Reshape your data with X.reshape(-1, 1) for one feature or X.reshape(1, -1) "
            "for one sample"
        )
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {X.ndim}-D")
    n, d = X.shape
    if n == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape=({n}, {d})) while a minimum of "
                         "1 is required.")
    if d == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape=({n}, {d})) while a minimum of "
                         "1 is required.")
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError(f"Input {name} contains NaN or infinity; agop needs finite values")
    return xp, X, names


def _reject_dask(X: Any, name: str) -> None:
    from ._dask import is_dask_array

    if is_dask_array(X):
        raise TypeError(
            f"{name} is a dask array; the estimators fit and predict in memory: call "
            f"{name}.compute() first (agop.agop, agop.kernel_mv and agop.predictor_grads "
            "take dask arrays)"
        )


def _has_float64(xp: Any, X: Any) -> bool:
    try:
        xp.zeros((1,), dtype=xp.float64, device=array_device(X))
    except Exception:  # noqa: BLE001 - e.g. Apple MPS has no float64
        return False
    return True


def _has_strings(X: np.ndarray) -> bool:
    return any(isinstance(v, str | bytes) for v in X.ravel())


def _check_regression_targets(y: Any, xp: Any, X: Any) -> Any:
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    if is_array(y) and not isinstance(y, np.ndarray):
        if namespace_of(y) is not xp and not is_numpy_namespace(namespace_of(y)):
            raise TypeError("y must come from the same array library as X")
    else:
        y = np.asarray(y)
        if y.dtype.kind in "USVO" and (y.dtype.kind != "O" or _has_strings(y)):
            raise ValueError(
                f"Unknown label type: regression targets must be numbers, got dtype {y.dtype} "
                "(use RFMClassifier for labels)"
            )
        y = y.astype(np.float64)
    if not is_numpy_namespace(xp) and isinstance(y, np.ndarray):
        y = xp.asarray(y, device=array_device(X))
    y = xp.astype(y, X.dtype)
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, got {y.ndim}-D")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}; they must match")
    if not bool(xp.all(xp.isfinite(y))):
        raise ValueError("Input y contains NaN or infinity; agop needs finite targets")
    return y


# --------------------------------------------------------------------------- shared layers


class _EstimatorBase(_Base):
    """What every agop estimator shares: feature bookkeeping (the categorical columns of
    ``categorical_features`` are embedded here, docs/categorical.md) and the predict-time
    check."""

    def _fit_features(self, X: Any) -> tuple[Any, Any, list[str] | None]:
        """Validate the training inputs: ``(xp, X, feature_names)``.  With categorical
        features, learn their categories and return the embedded rows."""
        for key in ("_encoding", "categorical_features_", "categories_",
                    "categorical_embeddings_", "feature_blocks_"):
            self.__dict__.pop(key, None)
        self._check_params()
        if self.categorical_features is None:
            return _check_features(X)
        enc = fit_encoding(X, self.categorical_features, self.categorical_vectors,
                           self.handle_unknown)
        if not enc.categorical:
            return _check_features(X)
        self._encoding = enc
        self.categorical_features_ = np.asarray(enc.categorical, dtype=np.int64)
        self.categories_ = list(enc.categories)
        self.categorical_embeddings_ = list(enc.embeddings)
        self.feature_blocks_ = [np.asarray(b, dtype=np.int64) for b in enc.blocks]
        return enc.transform(X)

    def _features(self, X: Any, name: str = "X") -> tuple[Any, Any, list[str] | None]:
        """Validate (and embed) inputs of a fitted model, or validation data."""
        enc = self._categorical_encoding()
        if enc is None:
            return _check_features(X, name)
        if self.handle_unknown != enc.handle_unknown:  # set_params after fit, as sklearn
            if self.handle_unknown not in HANDLE_UNKNOWN:
                raise ValueError(f"handle_unknown must be one of {HANDLE_UNKNOWN}, got "
                                 f"{self.handle_unknown!r}")
            enc = dataclasses.replace(enc, handle_unknown=self.handle_unknown)
            self._encoding = enc
        return enc.transform(X, name)

    def _categorical_encoding(self) -> CategoricalEncoding | None:
        enc = self.__dict__.get("_encoding")
        if enc is None and hasattr(self, "categorical_features_"):  # e.g. after agop.load
            cats = tuple(np.asarray(c) for c in self.categories_)
            enc = CategoricalEncoding(
                int(self.n_features_in_),
                tuple(int(i) for i in self.categorical_features_),
                tuple("str" if c.dtype.kind in "US" else "int" for c in cats),
                cats,
                tuple(np.asarray(E, dtype=np.float64) for E in self.categorical_embeddings_),
                self.handle_unknown,
            )
            self._encoding = enc
        return enc

    def _check_categorical_params(self) -> None:
        if self.handle_unknown not in HANDLE_UNKNOWN:
            raise ValueError(f"handle_unknown must be one of {HANDLE_UNKNOWN}, got "
                             f"{self.handle_unknown!r}")
        if self.categorical_features is None and self.categorical_vectors:
            raise ValueError("categorical_vectors needs categorical_features (the columns "
                             "they embed)")

    def _check_predict_input(self, X: Any) -> tuple[Any, Any]:
        """``(xp, X)`` for prediction: a valid 2-D array with the fitted number of features."""
        xp, X, names = self._features(X)
        fitted = getattr(self, "feature_names_in_", None)
        if names is not None and fitted is not None and list(names) != list(fitted):
            raise ValueError(
                "The feature names should match those that were passed during fit (same "
                f"names, same order): fitted on {list(fitted)[:10]}, got {list(names)[:10]}"
            )
        if self._categorical_encoding() is None and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return xp, X

    def _set_n_features(self, X: Any, names: list[str] | None) -> None:
        enc = self.__dict__.get("_encoding")
        self.n_features_in_ = int(X.shape[1]) if enc is None else enc.n_features_in
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__() or {})
        state.pop("_encoding", None)  # rebuilt from the fitted attributes
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags


# --------------------------------------------------------------------------- base


class _RFMBase(_EstimatorBase):
    """Hyperparameters and fitting shared by the regressor and the classifier."""

    _metric: str = "mse"

    def __init__(
        self,
        *,
        kernel: str | Kernel = "laplace",
        bandwidth: float | str | None = None,
        reg: float = 1e-3,
        iters: int = 5,
        update: str = "agop",
        diag: bool = False,
        agop_power: float = 1.0,
        normalize: str | None = "max",
        centering: str | None = None,
        agop_max_points: int | None = 20_000,
        solver: str = "auto",
        early_stopping: bool = True,
        early_stop_tol: float = 1.1,
        validation_fraction: float = 0.0,
        tuning_metric: str | None = None,
        random_state: Any = None,
        verbose: bool = False,
        categorical_features: Any = None,
        categorical_vectors: Any = None,
        handle_unknown: str = "error",
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.reg = reg
        self.iters = iters
        self.update = update
        self.diag = diag
        self.agop_power = agop_power
        self.normalize = normalize
        self.centering = centering
        self.agop_max_points = agop_max_points
        self.solver = solver
        self.early_stopping = early_stopping
        self.early_stop_tol = early_stop_tol
        self.validation_fraction = validation_fraction
        self.tuning_metric = tuning_metric
        self.random_state = random_state
        self.verbose = verbose
        self.categorical_features = categorical_features
        self.categorical_vectors = categorical_vectors
        self.handle_unknown = handle_unknown

    # -- hyperparameters -------------------------------------------------------------

    def _check_params(self) -> None:
        if not isinstance(self.reg, numbers.Real) or not self.reg >= 0 or self.reg == np.inf:
            raise ValueError(f"reg must be a finite number >= 0, got {self.reg!r}")
        if isinstance(self.iters, bool) or not isinstance(self.iters, numbers.Integral) or (
            self.iters < 0
        ):
            raise ValueError(f"iters must be an int >= 0, got {self.iters!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if not isinstance(self.update, str) or self.update not in UPDATES:
            raise ValueError(f"update must be one of {sorted(UPDATES)}, got {self.update!r}")
        if UPDATES[self.update] is not None and self.centering is not None:
            raise ValueError(
                f"centering={self.centering!r} centers AGOP gradients; update={self.update!r} "
                "has no centering (leave centering=None)"
            )
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        vf = self.validation_fraction
        if not isinstance(vf, numbers.Real) or not 0.0 <= vf < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {vf!r}")
        self._check_categorical_params()
        if self.tuning_metric is not None and self.tuning_metric not in METRICS:
            raise ValueError(
                f"tuning_metric must be None or one of {sorted(METRICS)}, got "
                f"{self.tuning_metric!r}"
            )

    def _make_kernel(self, X: Any, xp: Any) -> Kernel:
        bw = self.bandwidth
        if isinstance(self.kernel, Kernel):
            kernel = self.kernel
        elif isinstance(self.kernel, str):
            kernel = make_kernel(self.kernel) if self.kernel in ("quadratic",) else make_kernel(
                self.kernel, bandwidth=10.0
            )
        else:
            raise TypeError(
                "kernel must be a kernel name (see agop.kernels.kernel_names()) or an agop "
                f"kernel object, got {type(self.kernel).__name__}"
            )
        if bw is None:
            return kernel
        if "bandwidth" not in kernel.get_params():
            raise ValueError(f"{kernel!r} has no bandwidth; leave bandwidth=None")
        if isinstance(bw, str):
            if bw != "median":
                raise ValueError(f"bandwidth must be a number or 'median', got {bw!r}")
            bw = _median_distance(X, xp, self.random_state)
        return kernel.replace(bandwidth=bw)

    def _update(self) -> UpdateRule:
        variant = UPDATES[self.update]
        enc = self.__dict__.get("_encoding")
        # one block per categorical feature (cross blocks 0); nothing to do for a diagonal M.
        # A model fitted on rows embedded elsewhere (an xRFM leaf) gets them as ``_blocks``.
        blocks = enc.blocks if enc is not None else self.__dict__.get("_blocks")
        blocks = None if blocks is None or self.diag or len(blocks) < 2 else blocks
        if variant is not None:
            return FACTUpdate(
                variant=variant,
                power=self.agop_power,
                normalize=self.normalize,
                diag=bool(self.diag),
                max_points=self.agop_max_points,
                random_state=self.random_state,
                blocks=blocks,
            )
        return AGOPUpdate(
            power=self.agop_power,
            normalize=self.normalize,
            centering=self.centering,
            diag=bool(self.diag),
            agop_max_points=self.agop_max_points,
            random_state=self.random_state,
            blocks=blocks,
        )

    # -- inputs ----------------------------------------------------------------------

    # -- fitting ---------------------------------------------------------------------

    def _fit_encoded(self, X: Any, Y: Any, X_val: Any, Y_val: Any, xp: Any,
                     stratify: Any = None) -> FitResult:
        self._check_params()
        if X_val is None and self.validation_fraction > 0 and X.shape[0] >= 2:
            X, Y, X_val, Y_val = _split(X, Y, self.validation_fraction, self.random_state,
                                        stratify, xp)
        kernel = self._make_kernel(X, xp)
        metric = self.tuning_metric or self._metric
        res = fit_feature_machine(
            X,
            Y,
            kernel,
            self._update(),
            iters=int(self.iters),
            reg=float(self.reg),
            solver=self.solver,
            X_val=X_val,
            Y_val=Y_val,
            metric=metric,
            early_stop_tol=float(self.early_stop_tol) if self.early_stopping else None,
            return_best=bool(self.early_stopping),
            verbose=bool(self.verbose),
            random_state=self.random_state if isinstance(self.random_state, int) else None,
        )
        m = res.machine
        self.kernel_ = kernel
        self.M_ = _identity_like(m, xp) if m.M is None else m.M
        self.X_fit_ = m.centers
        self.history_ = res.history
        self.n_iter_ = res.n_iter
        self.best_iter_ = res.best_iter
        self._machine = m
        return res

    @property
    def feature_importances_(self) -> Any:
        """The diagonal of ``M_``: how strongly the model uses each input coordinate."""
        self._check_fitted()
        M = self.M_
        xp = namespace_of(M)
        return M if M.ndim == 1 else xp.linalg.diagonal(M)

    def _check_fitted(self) -> None:
        if not hasattr(self, "M_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def _predictor(self) -> KernelMachine:
        m = getattr(self, "_machine", None)
        if m is None:  # e.g. after agop.load: rebuild (deterministically) from the state
            M = self.M_
            coef = self.coef_
            xp = namespace_of(M)
            coef2 = xp.reshape(coef, (coef.shape[0], -1))
            m = KernelMachine.build(self.kernel_, self.X_fit_, coef2, M)
            self._machine = m
        return m

    def _decision(self, X: Any) -> Any:
        self._check_fitted()
        xp, X = self._check_predict_input(X)
        m = self._predictor()
        if namespace_of(m.centers) is not xp:
            raise TypeError(
                f"the model was fitted on {namespace_of(m.centers).__name__} arrays; pass X "
                "from the same library"
            )
        return m.predict(xp.astype(X, m.centers.dtype))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_machine", None)
        return state


def _identity_like(m: KernelMachine, xp: Any) -> Any:
    d = m.n_features
    return xp.eye(d, dtype=m.centers.dtype, device=array_device(m.centers))


def _median_distance(X: Any, xp: Any, random_state: Any, max_points: int = 1000) -> float:
    """Median distance between distinct points of (a subsample of) ``X``."""
    n = X.shape[0]
    if n > max_points:
        rng = np.random.default_rng(_int_seed(random_state))
        idx = np.sort(rng.choice(n, size=max_points, replace=False))
        X = xp.take(X, xp.asarray(idx, device=array_device(X)), axis=0)
    sq = xp.sum(X * X, axis=1)
    D2 = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    m = X.shape[0]
    iu = np.triu_indices(m, k=1)
    flat = xp.reshape(D2, (-1,))
    pos = xp.asarray(iu[0] * m + iu[1], device=array_device(X))
    vals = xp.take(flat, pos) if m > 1 else xp.zeros((0,), dtype=X.dtype)
    vals = np.sort(np.sqrt(np.maximum(np.asarray(_to_host(vals)), 0.0)))
    vals = vals[vals > 0]
    if vals.size == 0:
        return 1.0
    return float(np.median(vals))


def _int_seed(random_state: Any) -> int | None:
    """An int seed (Python or NumPy integer) as an int; anything else None."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return None


def _to_host(a: Any) -> np.ndarray:
    from .testing import to_numpy

    return to_numpy(a)


def _split(X, Y, fraction, random_state, stratify, xp):
    n = X.shape[0]
    rng = np.random.default_rng(_int_seed(random_state))
    n_val = max(1, int(round(fraction * n)))
    if stratify is not None:
        idx_val = []
        labels = np.asarray(stratify)
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            k = int(round(fraction * members.size))
            idx_val.extend(rng.choice(members, size=k, replace=False).tolist())
        val = np.zeros(n, dtype=bool)
        val[idx_val] = True
        if not val.any():
            val[rng.choice(n, size=n_val, replace=False)] = True
    else:
        val = np.zeros(n, dtype=bool)
        val[rng.choice(n, size=n_val, replace=False)] = True
    if val.all():
        val[rng.integers(n)] = False
    dev = array_device(X)
    tr_idx = xp.asarray(np.flatnonzero(~val), device=dev)
    va_idx = xp.asarray(np.flatnonzero(val), device=dev)
    return (xp.take(X, tr_idx, axis=0), xp.take(Y, tr_idx, axis=0),
            xp.take(X, va_idx, axis=0), xp.take(Y, va_idx, axis=0))


# --------------------------------------------------------------------------- outputs


class _RegressorOutputs:
    """Fit-input checks, ``predict`` and ``score`` of a regressor whose ``_decision(X)``
    returns the ``(m, c)`` outputs."""

    def _prepare_fit(self, X: Any, y: Any, X_val: Any, y_val: Any) -> tuple[Any, ...]:
        """Checked ``(xp, X, Y, X_val, Y_val)`` with 2-D targets; records ``_y_1d`` and the
        number (and names) of the features."""
        xp, X, names = self._fit_features(X)
        y = _check_regression_targets(y, xp, X)
        Xv = Yv = None
        if X_val is not None or y_val is not None:
            if X_val is None or y_val is None:
                raise ValueError("pass both X_val and y_val, or neither")
            xpv, Xv, _ = self._features(X_val, "X_val")
            if xpv is not xp:
                raise TypeError("X_val must come from the same array library as X")
            if Xv.shape[1] != X.shape[1]:
                raise ValueError(f"X_val has {Xv.shape[1]} features but X has {X.shape[1]}")
            Yv = _check_regression_targets(y_val, xp, Xv)
            if Yv.ndim != y.ndim or (y.ndim == 2 and Yv.shape[1] != y.shape[1]):
                raise ValueError("y_val must have the shape of y (same number of outputs)")
            Xv = xp.astype(Xv, X.dtype)
        self._y_1d = y.ndim == 1
        Y = xp.reshape(y, (y.shape[0], 1)) if self._y_1d else y
        Yv2 = None if Yv is None else (xp.reshape(Yv, (Yv.shape[0], 1)) if Yv.ndim == 1
                                       else Yv)
        self._set_n_features(X, names)
        return xp, X, Y, Xv, Yv2

    def predict(self, X: Any) -> Any:
        """Predictions ``f(X)``: ``(m,)`` for a 1-D training target, else ``(m, c)``."""
        P = self._decision(X)
        return P[:, 0] if self._y_1d else P

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R² (averaged uniformly over outputs)."""
        if sample_weight is not None:
            return super().score(X, y, sample_weight=sample_weight)
        P = self.predict(X)
        xp = namespace_of(P)
        y = _check_regression_targets(y, xp, P if P.ndim == 2 else xp.reshape(P, (-1, 1)))
        y2 = xp.reshape(y, (y.shape[0], -1))
        P2 = xp.reshape(P, (P.shape[0], -1))
        ss_res = xp.sum((y2 - P2) ** 2, axis=0)
        ss_tot = xp.sum((y2 - xp.mean(y2, axis=0)) ** 2, axis=0)
        r2 = xp.where(ss_tot > 0, 1.0 - ss_res / xp.where(ss_tot > 0, ss_tot, 1.0),
                      xp.where(ss_res > 0, 0.0, 1.0))
        return float(xp.mean(r2))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class _ClassifierOutputs:
    """Label encoding, fit-input checks, ``decision_function``, ``predict_proba``,
    ``predict`` and ``score`` of a classifier whose ``_decision(X)`` returns the regressed
    ``(m, c)`` scores of the encoded labels."""

    def _encode(self, y: Any, xp: Any, X: Any) -> tuple[Any, Any]:
        if y is None:
            raise ValueError("requires y to be passed, but the target y is None")
        if is_array(y) and not isinstance(y, np.ndarray):
            y_host = _to_host(y)
        else:
            y_host = np.asarray(y)
        if y_host.ndim == 2 and y_host.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected; it is used as "
                "y.ravel()",
                _DataConversionWarning,
                stacklevel=3,
            )
            y_host = y_host[:, 0]
        if y_host.ndim != 1:
            raise ValueError(
                f"y must be a 1-D array of class labels, got shape {y_host.shape}; "
                "multilabel targets are not supported"
            )
        if y_host.dtype.kind == "f":
            if not np.all(np.isfinite(y_host)):
                raise ValueError("Input y contains NaN or infinity")
            if not np.all(y_host == np.round(y_host)):
                raise ValueError(
                    f"Unknown label type: continuous; {type(self).__name__} needs class "
                    "labels (use a regressor for continuous targets)"
                )
        if y_host.dtype.kind == "O":
            kinds = {type(v) for v in y_host}
            if len(kinds) > 1 and not all(issubclass(k, numbers.Number) for k in kinds):
                raise ValueError(f"Unknown label type: mixed label types {sorted(map(str, kinds))}")
        if y_host.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y_host.shape[0]}")
        classes, inverse = np.unique(y_host, return_inverse=True)
        return classes, inverse

    def _onehot(self, inverse: np.ndarray, xp: Any, X: Any) -> Any:
        k = len(self.classes_)
        if k == 2:
            Y = inverse[:, None].astype(np.float64)
        else:
            Y = np.zeros((inverse.shape[0], k))
            Y[np.arange(inverse.shape[0]), inverse] = 1.0
        return xp.astype(xp.asarray(Y, device=array_device(X)), X.dtype)

    def _prepare_fit(self, X: Any, y: Any, X_val: Any, y_val: Any) -> tuple[Any, ...]:
        """Checked ``(xp, X, Y, X_val, Y_val, inverse)`` with ``Y`` the encoded labels and
        ``inverse`` the class index of each row; records ``classes_`` and the features."""
        xp, X, names = self._fit_features(X)
        classes, inverse = self._encode(y, xp, X)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class: "
                f"{classes[0]!r}"
            )
        self.classes_ = classes
        Y = self._onehot(inverse, xp, X)
        Xv = Yv = None
        if X_val is not None or y_val is not None:
            if X_val is None or y_val is None:
                raise ValueError("pass both X_val and y_val, or neither")
            xpv, Xv, _ = self._features(X_val, "X_val")
            if xpv is not xp:
                raise TypeError("X_val must come from the same array library as X")
            if Xv.shape[1] != X.shape[1]:
                raise ValueError(f"X_val has {Xv.shape[1]} features but X has {X.shape[1]}")
            yv = _to_host(y_val) if is_array(y_val) else np.asarray(y_val)
            yv = yv.reshape(-1)
            unknown = np.setdiff1d(yv, classes)
            if unknown.size:
                raise ValueError(f"y_val has labels not seen in y: {unknown[:5].tolist()}")
            Yv = self._onehot(np.searchsorted(classes, yv), xp, Xv)
            Xv = xp.astype(Xv, X.dtype)
        self._set_n_features(X, names)
        return xp, X, Y, Xv, Yv, inverse

    def decision_function(self, X: Any) -> Any:
        """Regressed scores: ``(m, n_classes)``; for two classes ``f(X) - 0.5``, ``(m,)``.

        With two classes the model regresses the indicator of ``classes_[1]``; the score
        is shifted so that, as in scikit-learn, a positive value means ``classes_[1]``.
        """
        P = self._decision(X)
        return P[:, 0] - 0.5 if P.shape[1] == 1 else P

    def predict_proba(self, X: Any) -> Any:
        """Clipped, renormalized scores, ``(m, n_classes)``; rows sum to 1 (see class doc)."""
        P = self._decision(X)
        xp = namespace_of(P)
        P = xp.clip(P, 1e-3, 1.0 - 1e-3)
        if P.shape[1] == 1:
            return xp.concat([1.0 - P, P], axis=1)
        return P / xp.sum(P, axis=1, keepdims=True)

    def predict(self, X: Any) -> Any:
        """Predicted class labels, shape ``(m,)``."""
        P = self._decision(X)
        xp = namespace_of(P)
        idx = xp.astype(P[:, 0] > 0.5, xp.int64) if P.shape[1] == 1 else xp.argmax(P, axis=1)
        idx_host = _to_host(idx).astype(np.intp)
        labels = self.classes_[idx_host]
        if not is_numpy_namespace(xp) and labels.dtype.kind in "biuf":
            return xp.asarray(labels, device=array_device(P))
        return labels

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy."""
        if sample_weight is not None:
            return super().score(X, y, sample_weight=sample_weight)
        pred = self.predict(X)
        pred = _to_host(pred) if not isinstance(pred, np.ndarray) else pred
        y = _to_host(y) if is_array(y) and not isinstance(y, np.ndarray) else np.asarray(y)
        return float(np.mean(pred == y.reshape(-1)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


# --------------------------------------------------------------------------- regressor


class RFMRegressor(_RegressorOutputs, _RegressorMixin, _RFMBase):
    """Recursive Feature Machine regression (Radhakrishnan et al., Science 2024).

    Fits ``f(x) = sum_j coef_j k_M(x, x_j)`` and learns ``M`` by the loop of
    :func:`agop.rfm.fit_feature_machine` with :class:`agop.updates.AGOPUpdate`
    (``update="fact"``: FACT-RFM, :class:`agop.updates.FACTUpdate`).

    Parameters
    ----------
    kernel : str or agop kernel, default "laplace"
        A name of :func:`agop.kernels.kernel_names` (bandwidth 10) or a kernel object.
    bandwidth : float, "median" or None
        Overrides the kernel's bandwidth; ``"median"`` uses the median distance between
        training points (of a subsample of 1000).
    reg : float >= 0, default 1e-3
        Ridge ``lambda`` (0: ridgeless, float64 only).
    iters : int >= 0, default 5
        Number of feature-matrix updates (``iters + 1`` kernel machines are fitted).
    update : {"agop", "fact", "fact_geometric", "fact_inner_product"}, default "agop"
        The feature-matrix update: the AGOP (RFM, :class:`agop.updates.AGOPUpdate`) or
        the FACT (FACT-RFM, :class:`agop.updates.FACTUpdate` with variant ``"fact"``,
        ``"geometric"`` or ``"inner_product"``).
    diag : bool
        Learn a diagonal ``M`` (one weight per feature).
    agop_power : float > 0, default 1
        ``M = AGOP^power`` (0.5 in the grokking paper); for FACT-RFM
        ``M = (FACT FACT^T)^(power/2)``.
    normalize : {"max", "fro", "trace", "mean", None}
        Normalization of the new ``M`` (see :func:`agop.updates.finish_matrix`).
    centering : {None, "per_output", "pooled"}
        Center gradients before the outer product (AGOP update only).
    agop_max_points : int or None, default 20000
        Cap on AGOP (or FACT) evaluation points (uniform random subset above it).
    solver : {"auto", "direct", "pcg"}
        Kernel ridge solver (:func:`agop.solvers.solve_kernel_ridge`).
    early_stopping : bool, default True
        With validation data: return the iterate with the best validation score and stop
        once a score is worse than the best by ``early_stop_tol``.  Without validation
        data the last iterate is returned.
    early_stop_tol : float >= 1, default 1.1
    validation_fraction : float in [0, 1), default 0
        When ``fit`` gets no ``X_val``, hold out this fraction of the training data as
        validation data (0: no validation).
    tuning_metric : {"mse", "rmse", "mae", "accuracy", "brier"} or None
        Validation score for selection and early stopping (default "mse"; "accuracy"
        for the classifier).
    random_state : None or int
        Seeds the AGOP subsample, the validation split and the PCG preconditioner.
    verbose : bool
        Progress bar (tqdm, when installed) or ``logging`` lines (logger ``"agop"``).
    categorical_features : sequence of int, boolean mask (d,) or None
        Columns of ``X`` holding categories (integer codes or strings).  Each is replaced
        by an embedding of its category (one-hot by default) and ``M`` is kept
        block-diagonal: one block for the numerical columns, one per categorical feature
        (xRFM's categorical kernel, ``docs/categorical.md``).  The categories are learned
        in ``fit``.
    categorical_vectors : dict or None
        ``{column: embedding}`` for some categorical columns: an array ``(K, e)`` that
        embeds the integer codes ``0 .. K-1``, or a dict ``{category: vector}``.
    handle_unknown : {"error", "ignore"}, default "error"
        A category not seen in ``fit`` raises a ``ValueError`` at predict time, or
        (``"ignore"``) is embedded as the zero vector.

    Attributes
    ----------
    M_ : array (d, d), or (d,) when ``diag=True``
        With categorical features ``d`` counts embedded columns (``feature_blocks_``).
    coef_ : array (n, c), or (n,) for a 1-D target
    X_fit_ : array (n, d)
        Training inputs (the centers of the kernel machine; embedded rows with
        categorical features).
    categorical_features_, categories_, categorical_embeddings_ : list
        With categorical features: their column indices, the known categories of each
        (sorted) and each embedding matrix (row ``k`` embeds ``categories_[g][k]``).
    feature_blocks_ : list of int arrays
        With categorical features: the embedded columns of each block of ``M_`` (the
        numerical columns first, in their order, then each categorical feature).
    kernel_ : agop kernel
        The kernel used (with the resolved bandwidth).
    history_ : list of dict
        Per iteration: ``iteration``, ``metric``, ``train_metric``, ``val_metric``,
        ``seconds``, ``solver``, ``solver_iterations``.
    n_iter_ : int
        Index of the last iteration run.
    best_iter_ : int
        Index of the returned iterate.
    feature_importances_ : array (d,)
        The diagonal of ``M_``.

    Examples
    --------
    >>> import numpy as np, agop
    >>> from agop.datasets import low_rank
    >>> X, y = low_rank(1000, random_state=0)
    >>> model = agop.RFMRegressor(iters=3).fit(X[:800], y[:800])
    >>> sorted(np.argsort(-model.feature_importances_)[:3].tolist())
    [0, 1, 5]
    """

    _metric = "mse"

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> RFMRegressor:
        """Fit on ``(X, y)``; ``(X_val, y_val)`` (optional) select the best iterate."""
        xp, X, Y, Xv, Yv2 = self._prepare_fit(X, y, X_val, y_val)
        res = self._fit_encoded(X, Y, Xv, Yv2, xp)
        coef = res.machine.coef
        self.coef_ = coef[:, 0] if self._y_1d else coef
        return self


# --------------------------------------------------------------------------- classifier


class RFMClassifier(_ClassifierOutputs, _ClassifierMixin, _RFMBase):
    """Recursive Feature Machine classification.

    Labels of any type are encoded as one 0/1 column (two classes) or one-hot columns
    (more), regressed by the RFM loop with the same hyperparameters as
    :class:`RFMRegressor` (the default tuning metric is accuracy).

    ``decision_function`` returns the regressed scores (two classes: the score of
    ``classes_[1]`` minus 0.5); ``predict`` the label of the largest score (two classes:
    ``classes_[1]`` when its score exceeds 0.5);
    ``predict_proba`` clips the scores to ``[1e-3, 1 - 1e-3]`` and renormalizes each row
    to sum to 1 (two classes: ``[1 - p, p]`` with ``p`` the clipped score), the
    convention of xRFM.  These are not calibrated probabilities; calibrate with
    ``sklearn.calibration.CalibratedClassifierCV`` when you need them.

    Attributes
    ----------
    classes_ : array (n_classes,)
    M_, coef_, X_fit_, kernel_, history_, n_iter_, best_iter_, feature_importances_
        As for :class:`RFMRegressor`.

    Examples
    --------
    >>> import numpy as np, agop
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 5)); y = np.where(X[:, 2] > 0, "yes", "no")
    >>> clf = agop.RFMClassifier(iters=2).fit(X[:200], y[:200])
    >>> bool((clf.predict(X[200:]) == y[200:]).mean() > 0.9)
    True
    >>> int(np.argmax(clf.feature_importances_))
    2
    """

    _metric = "accuracy"

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> RFMClassifier:
        """Fit on ``(X, y)``; ``(X_val, y_val)`` (optional) select the best iterate."""
        xp, X, Y, Xv, Yv, inverse = self._prepare_fit(X, y, X_val, y_val)
        self._fit_encoded(X, Y, Xv, Yv, xp, stratify=inverse)
        self.coef_ = self._machine.coef
        return self
