"""Saving and loading fitted models: one ``.npz`` file, arrays plus JSON metadata.

``agop.save(model, path)`` writes the fitted arrays (``M_``, ``coef_``, ``X_fit_``,
``classes_``; with categorical features their categories and embeddings) as NumPy arrays
and everything else (the class, its hyperparameters, the fitted kernel, the history, a
format version) as a JSON document inside the same file. ``agop.load(path)`` reads it
back with ``allow_pickle=False``: no pickle is ever involved, so loading a file cannot
run code.  A reloaded model predicts bit-identical numbers.
"""

from __future__ import annotations

import json
import numbers
import os
import zipfile
from typing import Any

import numpy as np

from ._lib._compat import is_array, namespace_name
from ._lib._validation import namespace_of
from .kernels import Kernel, make_kernel

__all__ = ["FORMAT", "FORMAT_VERSION", "load", "save"]

FORMAT = "agop-model"
FORMAT_VERSION = 2  # 2: categorical features (files without them are still written as 1)
#: the hyperparameters format 2 added, with their defaults: a file whose values are all
#: defaults leaves them out and is written as format 1, which format-1 readers accept
_CATEGORICAL_PARAMS = {"categorical_features": None, "categorical_vectors": None,
                       "handle_unknown": "error"}
_META = "__agop_meta__"
_ARRAYS = ("M_", "coef_", "X_fit_", "classes_")
_SCALARS = ("n_features_in_", "n_iter_", "best_iter_", "_y_1d")


def _estimator_classes() -> dict[str, type]:
    from .estimators import RFMClassifier, RFMRegressor

    return {"RFMRegressor": RFMRegressor, "RFMClassifier": RFMClassifier}


def _jsonable(value: Any, name: str) -> Any:
    if isinstance(value, Kernel):
        return {"__kernel__": value.to_dict()}
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.random.Generator | np.random.RandomState):
        return None  # a generator's state is not saved; the fitted model does not need it
    if isinstance(value, list | tuple):
        return [_jsonable(v, name) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, name) for k, v in value.items()}
    if is_array(value):
        return None  # M snapshots and the like are not part of the saved state
    raise TypeError(f"cannot save {name}={value!r} ({type(value).__name__}) as JSON")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__kernel__"}:
        return make_kernel(**value["__kernel__"])
    if isinstance(value, dict) and set(value) == {"__ndarray__"}:
        return np.asarray(value["__ndarray__"])
    return value


def _params_to_json(params: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The hyperparameters as JSON; the arrays of ``categorical_vectors`` go to ``arrays``."""
    params = dict(params)
    if not any(k in params for k in _CATEGORICAL_PARAMS):  # a format-1 file
        return _jsonable(params, "params")
    features = params.pop("categorical_features", None)
    vectors = params.pop("categorical_vectors", None)
    out = _jsonable(params, "params")
    if is_array(features):  # NumPy, torch, ...: saved as its values
        out["categorical_features"] = {"__ndarray__": _to_numpy(features).tolist()}
    else:
        out["categorical_features"] = _jsonable(features, "categorical_features")
    if vectors is None:
        out["categorical_vectors"] = None
        return out
    entries = []
    for i, (col, spec) in enumerate(dict(vectors).items()):
        key = f"param_categorical_vectors_{i}"
        entry: dict[str, Any] = {"column": int(col), "array": key}
        if isinstance(spec, dict):
            entry["keys"] = [k if isinstance(k, str) else int(k) for k in spec]
            arrays[key] = np.stack([np.asarray(v, dtype=np.float64).reshape(-1)
                                    for v in spec.values()])
        else:
            arrays[key] = _to_numpy(spec) if is_array(spec) else np.asarray(spec)
        entries.append(entry)
    out["categorical_vectors"] = {"__categorical_vectors__": entries}
    return out


def _params_from_json(meta_params: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict:
    params = {k: _from_json(v) for k, v in meta_params.items()}
    vec = params.get("categorical_vectors")
    if isinstance(vec, dict) and "__categorical_vectors__" in vec:
        out: dict[int, Any] = {}
        for entry in vec["__categorical_vectors__"]:
            A = arrays[entry["array"]]
            out[int(entry["column"])] = (A if "keys" not in entry
                                         else {k: A[i] for i, k in enumerate(entry["keys"])})
        params["categorical_vectors"] = out
    return params


def _to_numpy(a: Any) -> np.ndarray:
    from .testing import to_numpy

    return a if isinstance(a, np.ndarray) else to_numpy(a)


def save(model: Any, path: str | os.PathLike) -> str:
    """Write a fitted ``RFMRegressor`` / ``RFMClassifier`` to ``path`` (``.npz``).

    Returns the path written (``.npz`` is appended when missing, as NumPy does).

    Examples
    --------
    >>> import numpy as np, agop, tempfile, os
    >>> X = np.random.default_rng(0).normal(size=(40, 3)); y = X[:, 0] ** 2
    >>> m = agop.RFMRegressor(iters=1).fit(X, y)
    >>> path = agop.save(m, os.path.join(tempfile.mkdtemp(), "model"))
    >>> bool(np.array_equal(agop.load(path).predict(X), m.predict(X)))
    True
    """
    classes = _estimator_classes()
    name = type(model).__name__
    if name not in classes or not isinstance(model, classes[name]):
        raise TypeError(f"agop.save takes a fitted RFMRegressor or RFMClassifier, got {name}")
    if not hasattr(model, "M_"):
        raise ValueError(f"this {name} is not fitted yet; call fit first")
    arrays: dict[str, np.ndarray] = {}
    n_cat = len(getattr(model, "categories_", []))
    params = model.get_params(deep=False)
    version = FORMAT_VERSION
    if not n_cat and all(params.get(k) is None if v is None else params.get(k) == v
                         for k, v in _CATEGORICAL_PARAMS.items()):
        version = 1
        params = {k: v for k, v in params.items() if k not in _CATEGORICAL_PARAMS}
    if n_cat:
        arrays["categorical_features_"] = np.asarray(model.categorical_features_, dtype=np.int64)
        for g in range(n_cat):
            arrays[f"categories_{g}"] = np.asarray(model.categories_[g])
            arrays[f"categorical_embeddings_{g}"] = np.asarray(model.categorical_embeddings_[g])
    for key in _ARRAYS:
        if hasattr(model, key):
            a = _to_numpy(getattr(model, key))
            if a.dtype.kind == "O":
                if not all(isinstance(v, str) for v in a):
                    raise TypeError(f"cannot save {key} of mixed object labels without pickle")
                a = a.astype(str)
            arrays[key] = a
    meta = {
        "format": FORMAT,
        "format_version": version,
        "class": name,
        "namespace": namespace_name(namespace_of(model.M_)),
        "params": _params_to_json(params, arrays),
        "n_categorical": n_cat,
        "kernel_": model.kernel_.to_dict(),
        "history_": _jsonable(model.history_, "history_"),
        "feature_names_in_": (
            [str(v) for v in model.feature_names_in_] if hasattr(model, "feature_names_in_")
            else None
        ),
        **{key: _jsonable(getattr(model, key), key) for key in _SCALARS if hasattr(model, key)},
    }
    from . import __version__

    meta["agop_version"] = __version__
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays[_META] = np.array(json.dumps(meta))
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load(path: str | os.PathLike, *, like: Any = None) -> Any:
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or path-like
    like : array, optional
        Put the fitted arrays in this array's library and device (e.g. a torch tensor);
        by default they come back in the library they were fitted in when it is
        installed (NumPy and torch), on the CPU.

    Raises
    ------
    ValueError
        When the file is missing pieces, truncated, corrupted, of a newer format or not
        an agop model at all.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if _META not in data.files:
                raise ValueError(f"{path} is an .npz file but not an agop model (no metadata)")
            meta = json.loads(str(data[_META][()]))
            arrays = {k: np.array(data[k]) for k in data.files if k != _META}
    except ValueError as exc:
        if "not an agop model" in str(exc):
            raise
        raise ValueError(f"{path} is not a readable agop model file: {exc}") from exc
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable agop model file: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an agop model file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has agop model format {version!r}; this agop reads format "
            f"<= {FORMAT_VERSION} (upgrade agop)"
        )
    classes = _estimator_classes()
    cls = classes.get(meta.get("class"))
    if cls is None:
        raise ValueError(f"{path}: unknown model class {meta.get('class')!r}")
    missing = [k for k in ("M_", "coef_", "X_fit_") if k not in arrays]
    if missing:
        raise ValueError(f"{path} is incomplete: missing arrays {missing}")
    try:
        params = _params_from_json(meta["params"], arrays)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{path} has malformed hyperparameters: {exc}") from exc
    try:
        model = cls(**params)
    except TypeError as exc:
        raise ValueError(f"{path}: saved hyperparameters do not fit {cls.__name__}: {exc}") from exc
    convert = _converter(meta.get("namespace"), like)
    for key in ("M_", "coef_", "X_fit_"):
        setattr(model, key, convert(arrays[key]))
    if "classes_" in arrays:
        model.classes_ = arrays["classes_"]
    model.kernel_ = make_kernel(**meta["kernel_"])
    model.history_ = meta.get("history_", [])
    for key in _SCALARS:
        if key in meta:
            setattr(model, key, meta[key])
    if meta.get("feature_names_in_") is not None:
        model.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
    n_cat = meta.get("n_categorical", 0)
    if n_cat:
        keys = ["categorical_features_"] + [f"{k}_{g}" for g in range(n_cat) for k in
                                            ("categories", "categorical_embeddings")]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ValueError(f"{path} is incomplete: missing arrays {missing}")
        model.categorical_features_ = arrays["categorical_features_"]
        model.categories_ = [arrays[f"categories_{g}"] for g in range(n_cat)]
        model.categorical_embeddings_ = [arrays[f"categorical_embeddings_{g}"]
                                         for g in range(n_cat)]
        model.feature_blocks_ = [np.asarray(b, dtype=np.int64)
                                 for b in model._categorical_encoding().blocks]
    return model


def _converter(namespace: str | None, like: Any):
    if like is not None:
        xp = namespace_of(like)
        from ._lib._compat import array_device

        dev = array_device(like)
        return lambda a: xp.asarray(a, device=dev)
    if namespace == "torch":
        try:
            import torch
        except ImportError:
            return lambda a: a
        return lambda a: torch.from_numpy(a)
    return lambda a: a
