"""Saving and loading fitted models: one ``.npz`` file, arrays plus JSON metadata.

``agop.save(model, path)`` writes the fitted arrays (``M_``, ``coef_``, ``X_fit_``,
``classes_``) as NumPy arrays and everything else (the class, its hyperparameters, the
fitted kernel, the history, a format version) as a JSON document inside the same file.
``agop.load(path)`` reads it back with ``allow_pickle=False``: no pickle is ever involved,
so loading a file cannot run code.  A reloaded model predicts bit-identical numbers.
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
FORMAT_VERSION = 1
_META = "__agop_meta__"
_ARRAYS = ("M_", "coef_", "X_fit_", "classes_")
_SCALARS = ("n_features_in_", "n_iter_", "best_iter_", "_y_1d", "image_shape_")


def _estimator_classes() -> dict[str, type]:
    from .conv import ConvRFMClassifier, ConvRFMRegressor
    from .estimators import RFMClassifier, RFMRegressor

    return {"RFMRegressor": RFMRegressor, "RFMClassifier": RFMClassifier,
            "ConvRFMRegressor": ConvRFMRegressor, "ConvRFMClassifier": ConvRFMClassifier}


def _kernel_from_dict(d: dict[str, Any]) -> Any:
    if d.get("name") == "conv":
        from .conv import ConvKernel

        return ConvKernel.from_dict(d)
    return make_kernel(**d)


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
    return value


def _to_numpy(a: Any) -> np.ndarray:
    from .testing import to_numpy

    return a if isinstance(a, np.ndarray) else to_numpy(a)


def save(model: Any, path: str | os.PathLike) -> str:
    """Write a fitted ``RFMRegressor`` / ``RFMClassifier`` (or their ConvRFM versions)
    to ``path`` (``.npz``).

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
        raise TypeError("agop.save takes a fitted RFMRegressor or RFMClassifier (or "
                        f"ConvRFMRegressor / ConvRFMClassifier), got {name}")
    if not hasattr(model, "M_"):
        raise ValueError(f"this {name} is not fitted yet; call fit first")
    arrays: dict[str, np.ndarray] = {}
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
        "format_version": FORMAT_VERSION,
        "class": name,
        "namespace": namespace_name(namespace_of(model.M_)),
        "params": _jsonable(model.get_params(deep=False), "params"),
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
    params = {k: _from_json(v) for k, v in meta["params"].items()}
    try:
        model = cls(**params)
    except TypeError as exc:
        raise ValueError(f"{path}: saved hyperparameters do not fit {cls.__name__}: {exc}") from exc
    convert = _converter(meta.get("namespace"), like)
    for key in ("M_", "coef_", "X_fit_"):
        setattr(model, key, convert(arrays[key]))
    if "classes_" in arrays:
        model.classes_ = arrays["classes_"]
    model.kernel_ = _kernel_from_dict(meta["kernel_"])
    model.history_ = meta.get("history_", [])
    for key in _SCALARS:
        if key in meta:
            setattr(model, key, meta[key])
    if meta.get("feature_names_in_") is not None:
        model.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
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
