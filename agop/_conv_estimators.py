"""ConvRFM estimators: the RFM estimators of :mod:`agop.estimators` on images.

``ConvRFMClassifier`` / ``ConvRFMRegressor`` flatten images to rows, fit the one loop
with a :class:`agop.conv.ConvKernel` and the :class:`agop.conv.PatchAGOPUpdate`, and
otherwise behave exactly like ``RFMClassifier`` / ``RFMRegressor`` (validation data,
``history_``, ``best_iter_``, ``predict_proba``, namespaces kept, ...).
``DeepConvRFMClassifier`` stacks levels (SPEC §4.4).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ._lib._compat import array_device, is_array
from ._lib._validation import namespace_of
from ._patches import patch_grid, patches_of
from .conv import (
    VARIANTS,
    ConvKernel,
    PatchAGOPUpdate,
    level_weights,
    random_conv_features,
)
from .estimators import (
    RFMClassifier,
    RFMRegressor,
    _Base,
    _ClassifierMixin,
    _median_distance,
    _to_host,
)
from .kernels import Kernel
from .updates import UpdateRule

__all__ = ["ConvRFMClassifier", "ConvRFMRegressor", "DeepConvRFMClassifier"]


def _image_array(X: Any, name: str) -> Any:
    if X is None:
        raise ValueError(f"{name} is None; expected images of shape (n, C, H, W) or (n, H, W)")
    if not is_array(X):
        X = np.asarray(X)
    if X.ndim not in (3, 4):
        raise ValueError(
            f"{name} must hold images, shape (n, C, H, W) or (n, H, W); got an array of "
            f"shape {tuple(X.shape)}"
        )
    return X


def _flat(X: Any) -> Any:
    return namespace_of(X).reshape(X, (X.shape[0], -1))


def _shape_of(X: Any) -> tuple[int, int, int]:
    return (1, *X.shape[1:]) if X.ndim == 3 else tuple(X.shape[1:])


_CONV_DOC = """
    Parameters
    ----------
    kernel : str or agop kernel, default "laplace"
        The base kernel ``kappa`` on patches (a name of
        :func:`agop.kernels.kernel_names`, bandwidth 10, or a kernel object).
    bandwidth : float, "median" or None
        Overrides the base kernel's bandwidth; ``"median"``: the median distance between
        distinct training patches (of a subsample of 1000).
    patch_size : int, default 3
        ``q``; odd when padded, at most the image height and width.
    stride : int >= 1, default 1
    padding : {"zero", "circular", None}, default "zero"
    variant : {"aligned", "all_pairs"}, default "aligned"
        Patches compared at the same position, or every patch with every patch
        (translation invariant, ``P`` times the cost).
    reg, iters, early_stopping, early_stop_tol, validation_fraction, tuning_metric,
    random_state, verbose
        As for :class:`agop.RFMRegressor`.
    agop_power : float > 0, default 1
        ``M = G^power`` for the patch AGOP ``G`` (the reference's ``-sqrtM`` is 1).
    normalize : {"fro", "max", "trace", "mean", None}, default "fro"
    centering : {None, "per_output", "pooled"}
    agop_max_points : int or None, default 2000
        Cap on the evaluation images of the patch AGOP.
    solver : {"auto", "direct"}
        The convolutional kernel is solved directly (Cholesky).

    Attributes
    ----------
    M_ : array (d, d), d = C q^2
        The learned patch matrix.
    image_shape_ : (C, H, W)
    coef_, X_fit_ (flattened images), kernel_ (the :class:`agop.conv.ConvKernel`),
    history_, n_iter_, best_iter_
        As for :class:`agop.RFMRegressor`.
"""


class _ConvRFMBase:
    """Images in, the RFM estimators' machinery underneath."""

    #: read by the RFM estimators' parameter checks: the patch AGOP is the only update,
    #: ``M`` is a full matrix and images have no categorical columns (these are not
    #: hyperparameters of the conv estimators)
    update = "agop"
    diag = False
    categorical_features = None
    categorical_vectors = None
    handle_unknown = "error"

    def __init__(
        self,
        *,
        kernel: str | Kernel = "laplace",
        bandwidth: float | str | None = None,
        patch_size: int = 3,
        stride: int = 1,
        padding: str | None = "zero",
        variant: str = "aligned",
        reg: float = 1e-3,
        iters: int = 5,
        agop_power: float = 1.0,
        normalize: str | None = "fro",
        centering: str | None = None,
        agop_max_points: int | None = 2000,
        solver: str = "auto",
        early_stopping: bool = True,
        early_stop_tol: float = 1.1,
        validation_fraction: float = 0.0,
        tuning_metric: str | None = None,
        random_state: Any = None,
        verbose: bool = False,
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.patch_size = patch_size
        self.stride = stride
        self.padding = padding
        self.variant = variant
        self.reg = reg
        self.iters = iters
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

    def _check_params(self) -> None:
        super()._check_params()
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.solver not in ("auto", "direct"):
            raise ValueError(
                f"solver must be 'auto' or 'direct' (the convolutional kernel is solved "
                f"directly), got {self.solver!r}"
            )
        patch_grid(self.image_shape_, self.patch_size, stride=self.stride,
                   padding=self.padding)

    def _images_in(self, X: Any, X_val: Any) -> tuple[Any, Any]:
        """Flatten training (and validation) images; set ``image_shape_``."""
        X = _image_array(X, "X")
        self.image_shape_ = _shape_of(X)
        patch_grid(self.image_shape_, self.patch_size, stride=self.stride,
                   padding=self.padding)  # clear errors before any work
        if X_val is not None:
            X_val = _image_array(X_val, "X_val")
            if _shape_of(X_val) != self.image_shape_:
                raise ValueError(f"X_val holds images of shape {_shape_of(X_val)} but X "
                                 f"holds {self.image_shape_}")
            X_val = _flat(X_val)
        return _flat(X), X_val

    def _make_kernel(self, X: Any, xp: Any) -> ConvKernel:
        settings = self
        if self.bandwidth == "median":  # the median distance between patches, not images
            grid = patch_grid(self.image_shape_, self.patch_size, stride=self.stride,
                              padding=self.padding)
            images = xp.reshape(X, (X.shape[0], *grid.image_shape))
            rows = xp.reshape(patches_of(images, grid, xp), (-1, grid.n_features))
            settings = copy.copy(self)
            settings.bandwidth = _median_distance(rows, xp, self.random_state)
        base = super(_ConvRFMBase, settings)._make_kernel(X, xp)
        return ConvKernel(base, self.image_shape_, self.patch_size, self.stride,
                          self.padding, self.variant)

    def _update(self) -> UpdateRule:
        return PatchAGOPUpdate(
            power=self.agop_power,
            normalize=self.normalize,
            centering=self.centering,
            agop_max_points=self.agop_max_points,
            random_state=self.random_state,
        )

    def _predictor(self) -> Any:
        m = getattr(self, "_machine", None)
        if m is None:  # e.g. after agop.load
            xp = namespace_of(self.M_)
            coef = xp.reshape(self.coef_, (self.coef_.shape[0], -1))
            m = self._machine = self.kernel_.build(self.X_fit_, coef, self.M_)
        return m

    def _decision(self, X: Any) -> Any:
        self._check_fitted()
        X = _image_array(X, "X")
        if _shape_of(X) != tuple(self.image_shape_):
            raise ValueError(f"X holds images of shape {_shape_of(X)}, but "
                             f"{type(self).__name__} was fitted on {tuple(self.image_shape_)}")
        return super()._decision(_flat(X))

    def filters_(self, n_filters: int | None = None) -> Any:
        """The top eigenvectors of ``M_`` as filters, ``(k, C, q, q)``, largest first.

        Each filter is a unit-norm patch direction that the model weighs by its
        eigenvalue (sign arbitrary); ``n_filters`` (default all ``d``) keeps the top ones.
        """
        self._check_fitted()
        xp = namespace_of(self.M_)
        evals, evecs = xp.linalg.eigh(self.M_)
        d = evecs.shape[0]
        k = d if n_filters is None else int(n_filters)
        if not 1 <= k <= d:
            raise ValueError(f"n_filters must be in [1, {d}], got {n_filters!r}")
        order = xp.asarray(np.argsort(-_to_host(evals))[:k],
                           device=array_device(evecs))
        top = xp.take(evecs, order, axis=1)  # (d, k)
        C = self.image_shape_[0]
        q = int(self.patch_size)
        return xp.reshape(top.T, (k, C, q, q))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags


class ConvRFMRegressor(_ConvRFMBase, RFMRegressor):
    __doc__ = """ConvRFM regression on images: an RFM whose feature matrix acts on patches.

    The kernel machine ``f(x) = sum_j coef_j k_M(x, x_j)`` with the convolutional kernel
    of :class:`agop.conv.ConvKernel`; ``M`` is learned by the patch AGOP
    (:class:`agop.conv.PatchAGOPUpdate`) in the loop of :func:`agop.fit_feature_machine`.
    ``fit(X, y, X_val=None, y_val=None)`` takes images ``(n, C, H, W)`` or ``(n, H, W)``.
""" + _CONV_DOC

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> ConvRFMRegressor:
        """Fit on images ``X`` and targets ``y``; ``(X_val, y_val)`` select the iterate."""
        X, X_val = self._images_in(X, X_val)
        return super().fit(X, y, X_val, y_val)


class ConvRFMClassifier(_ConvRFMBase, RFMClassifier):
    __doc__ = """ConvRFM classification on images (labels of any type).

    As :class:`ConvRFMRegressor` on the one-hot (two classes: 0/1) encoded labels, with
    the prediction methods of :class:`agop.RFMClassifier` (``predict``,
    ``predict_proba``, ``decision_function``, ``score``; accuracy is the default tuning
    metric) and ``filters_()``.

    Examples
    --------
    >>> import numpy as np, agop
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 6, 6)); y = (X[:, 2:4, 2:4].sum(axis=(1, 2)) > 0)
    >>> clf = agop.ConvRFMClassifier(bandwidth=5.0, iters=1).fit(X[:40], y[:40])
    >>> clf.M_.shape, clf.filters_(2).shape
    ((9, 9), (2, 1, 3, 3))
""" + _CONV_DOC

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> ConvRFMClassifier:
        """Fit on images ``X`` and labels ``y``; ``(X_val, y_val)`` select the iterate."""
        X, X_val = self._images_in(X, X_val)
        return super().fit(X, y, X_val, y_val)


class DeepConvRFMClassifier(_ClassifierMixin, _Base):
    """Deep ConvRFM (SPEC §4.4): levels of ConvRFM, each feeding random features of its
    learned ``M`` to the next.

    Level ``l`` fits a :class:`ConvRFMClassifier` on its input images
    ``x^(l)`` (``C_l`` channels) and keeps its best ``M_l`` (``C_l q^2`` square); the next
    level's input is the random convolution
    ``x^(l+1)[o] = sigma(W_l[o] . x^(l)_p)`` over the patches ``x^(l)_p`` (same patch size
    and padding, stride 1) with ``width`` filters ``W_l = G M_l^{1/2}``, ``G`` i.i.d.
    ``N(0, 1/width)``, and ``sigma`` ReLU when ``relu`` (else linear, as in the reference).
    Predictions come from the last level.

    Parameters
    ----------
    levels : int >= 1, default 2
    width : int >= 1, default 16
        Channels of each random layer.
    relu : bool, default False
    random_state : None or int
        Seeds the random filters (level ``l`` uses ``SeedSequence(seed, (l,))``) and each
        level's ConvRFM.
    kernel, bandwidth, patch_size, padding, variant, reg, iters, agop_power, normalize,
    agop_max_points, early_stopping, validation_fraction
        Passed to every level's :class:`ConvRFMClassifier` (``bandwidth`` defaults to
        ``"median"``, so that each level adapts to the scale of its features).

    Attributes
    ----------
    estimators_ : list of ConvRFMClassifier
        One per level.
    weights_ : list of arrays (width, C_l q^2)
        The random filters between levels (``levels - 1`` of them).
    levels_ : list of dict
        Per level: ``level``, ``channels``, ``train_accuracy`` and ``val_accuracy`` (of
        the returned iterate; ``None`` without validation data), ``best_iter``.
    classes_ : array
    """

    def __init__(
        self,
        *,
        levels: int = 2,
        width: int = 16,
        relu: bool = False,
        kernel: str | Kernel = "laplace",
        bandwidth: float | str | None = "median",
        patch_size: int = 3,
        padding: str | None = "zero",
        variant: str = "aligned",
        reg: float = 1e-3,
        iters: int = 3,
        agop_power: float = 1.0,
        normalize: str | None = "fro",
        agop_max_points: int | None = 2000,
        early_stopping: bool = True,
        validation_fraction: float = 0.0,
        random_state: Any = None,
    ) -> None:
        self.levels = levels
        self.width = width
        self.relu = relu
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.patch_size = patch_size
        self.padding = padding
        self.variant = variant
        self.reg = reg
        self.iters = iters
        self.agop_power = agop_power
        self.normalize = normalize
        self.agop_max_points = agop_max_points
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    _LEVEL_PARAMS = ("kernel", "bandwidth", "patch_size", "padding", "variant", "reg",
                     "iters", "agop_power", "normalize", "agop_max_points", "early_stopping",
                     "validation_fraction", "random_state")

    def _check(self) -> None:
        for name in ("levels", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.relu, bool | np.bool_):
            raise TypeError(f"relu must be a bool, got {self.relu!r}")
        if self.random_state is not None and (
            isinstance(self.random_state, bool)
            or not isinstance(self.random_state, int | np.integer)
        ):
            raise TypeError(f"random_state must be None or an int, got {self.random_state!r}")

    def _layer(self, X: Any, level: int) -> Any:
        """Images of level ``level + 1`` from images ``X`` of level ``level``."""
        grid = patch_grid(_shape_of(X), self.patch_size, padding=self.padding)
        return random_conv_features(X, self.weights_[level], grid, relu=bool(self.relu))

    def fit(self, X: Any, y: Any, X_val: Any = None,
            y_val: Any = None) -> DeepConvRFMClassifier:
        """Fit the levels in turn on images ``X`` and labels ``y`` (``X_val, y_val``
        select each level's iterate and are scored per level)."""
        self._check()
        X = _image_array(X, "X")
        X_val = None if X_val is None else _image_array(X_val, "X_val")
        params = {k: getattr(self, k) for k in self._LEVEL_PARAMS}
        self.estimators_, self.weights_, self.levels_ = [], [], []
        for level in range(int(self.levels)):
            clf = ConvRFMClassifier(**params).fit(X, y, X_val, y_val)
            best = clf.history_[[h["iteration"] for h in clf.history_].index(clf.best_iter_)]
            self.estimators_.append(clf)
            self.levels_.append({
                "level": level,
                "channels": int(clf.image_shape_[0]),
                "train_accuracy": best["train_metric"],
                "val_accuracy": best["val_metric"],
                "best_iter": int(clf.best_iter_),
            })
            if level == int(self.levels) - 1:
                break
            seed = None if self.random_state is None else np.random.SeedSequence(
                int(self.random_state), spawn_key=(level,))
            self.weights_.append(level_weights(clf.M_, int(self.width),
                                               np.random.default_rng(seed)))
            X = self._layer(X, level)
            X_val = None if X_val is None else self._layer(X_val, level)
        self.classes_ = self.estimators_[-1].classes_
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "estimators_"):
            from .estimators import NotFittedError

            raise NotFittedError(
                "This DeepConvRFMClassifier instance is not fitted yet. Call 'fit' first."
            )

    def transform_levels(self, X: Any) -> list[Any]:
        """The input images of every level for images ``X``: ``[X, x^(1), ...]``."""
        self._check_fitted()
        out = [_image_array(X, "X")]
        for level in range(len(self.weights_)):
            out.append(self._layer(out[-1], level))
        return out

    def score_levels(self, X: Any, y: Any) -> list[float]:
        """Accuracy of every level's classifier on images ``X`` with labels ``y``."""
        return [clf.score(Xl, y) for clf, Xl in zip(self.estimators_, self.transform_levels(X),
                                                     strict=True)]

    def predict(self, X: Any) -> Any:
        """Labels predicted by the last level."""
        return self.estimators_[-1].predict(self.transform_levels(X)[-1])

    def predict_proba(self, X: Any) -> Any:
        """Scores of the last level (see :meth:`agop.RFMClassifier.predict_proba`)."""
        return self.estimators_[-1].predict_proba(self.transform_levels(X)[-1])

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of the last level."""
        return self.estimators_[-1].score(self.transform_levels(X)[-1], y, sample_weight)
