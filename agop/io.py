"""Saving and loading fitted models: one ``.npz`` file, arrays plus JSON metadata.

``agop.save(model, path)`` writes the fitted arrays (``M_``, ``coef_``, ``X_fit_``,
``classes_``; with categorical features their categories and embeddings; for an xRFM
tree its node arrays, every leaf's arrays and, with categorical features, the tree's
categories and embeddings) as NumPy arrays
and everything else (the class, its hyperparameters, the fitted kernel, the history, a
format version) as a JSON document inside the same file.
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

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "load",
    "model_from_state",
    "model_state",
    "save",
    "tree_model_from_state",
    "tree_model_state",
]

FORMAT = "agop-model"
FORMAT_VERSION = 2  # 2: categorical features (files without them are still written as 1)
#: the hyperparameters format 2 added, with their defaults: a file whose values are all
#: defaults leaves them out and is written as format 1, which format-1 readers accept
_CATEGORICAL_PARAMS = {"categorical_features": None, "categorical_vectors": None,
                       "handle_unknown": "error"}
_META = "__agop_meta__"
_ARRAYS = ("M_", "coef_", "X_fit_", "classes_")
_SCALARS = ("n_features_in_", "n_iter_", "best_iter_", "_y_1d", "n_leaves_", "image_shape_")
_TREE_ARRAYS = ("children", "split", "leaf", "directions", "thresholds", "scales")


def _estimator_classes() -> dict[str, type]:
    from .conv import ConvRFMClassifier, ConvRFMRegressor
    from .estimators import RFMClassifier, RFMRegressor
    from .tree import xRFMClassifier, xRFMRegressor

    return {"RFMRegressor": RFMRegressor, "RFMClassifier": RFMClassifier,
            "xRFMRegressor": xRFMRegressor, "xRFMClassifier": xRFMClassifier,
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
    if isinstance(value, dict):
        if set(value) == {"__kernel__"}:
            return make_kernel(**value["__kernel__"])
        if set(value) == {"__ndarray__"}:
            return np.asarray(value["__ndarray__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
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


def model_state(model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The fitted state of an RFM estimator: NumPy arrays and JSON-compatible metadata.

    :func:`model_from_state` rebuilds the estimator from it; :func:`save` writes it.
    """
    if not hasattr(model, "M_"):
        raise ValueError(f"this {type(model).__name__} is not fitted yet; call fit first")
    arrays, meta = _common_state(model, model.M_)
    meta["kernel_"] = model.kernel_.to_dict()
    meta["history_"] = _jsonable(model.history_, "history_")
    return arrays, meta


def _common_state(model: Any, fitted: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fitted arrays of ``_ARRAYS`` and the metadata every saved estimator has."""
    arrays: dict[str, np.ndarray] = {}
    params = model.get_params(deep=False)
    version = 1
    if any(k in params for k in _CATEGORICAL_PARAMS):
        # the hyperparameters format 2 added are left out while they hold their defaults
        # and the model has no categorical features: such a file is format 1
        if len(getattr(model, "categories_", [])) or not all(
            params.get(k) is None if v is None else params.get(k) == v
            for k, v in _CATEGORICAL_PARAMS.items()
        ):
            version = FORMAT_VERSION
        else:
            params = {k: v for k, v in params.items() if k not in _CATEGORICAL_PARAMS}
    for key in _ARRAYS:
        if hasattr(model, key):
            a = _to_numpy(getattr(model, key))
            if a.dtype.kind == "O":
                if not all(isinstance(v, str) for v in a):
                    raise TypeError(f"cannot save {key} of mixed object labels without pickle")
                a = a.astype(str)
            arrays[key] = a
    meta = {
        "class": type(model).__name__,
        "namespace": namespace_name(namespace_of(fitted)),
        "format_version": version,
        "params": _params_to_json(params, arrays),
        "feature_names_in_": (
            [str(v) for v in model.feature_names_in_] if hasattr(model, "feature_names_in_")
            else None
        ),
        **{key: _jsonable(getattr(model, key), key) for key in _SCALARS if hasattr(model, key)},
    }
    n_cat = len(getattr(model, "categories_", []))
    if n_cat:
        arrays["categorical_features_"] = np.asarray(model.categorical_features_, dtype=np.int64)
        for g in range(n_cat):
            arrays[f"categories_{g}"] = np.asarray(model.categories_[g])
            arrays[f"categorical_embeddings_{g}"] = np.asarray(model.categorical_embeddings_[g])
    meta["n_categorical"] = n_cat
    return arrays, meta


def _set_categorical(model: Any, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                     where: str) -> None:
    """The categorical attributes :func:`_common_state` saved (none: nothing to do)."""
    n_cat = meta.get("n_categorical", 0)
    if not n_cat:
        return
    keys = ["categorical_features_"] + [f"{k}_{g}" for g in range(n_cat) for k in
                                        ("categories", "categorical_embeddings")]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"{where} is incomplete: missing arrays {missing}")
    model.categorical_features_ = arrays["categorical_features_"]
    model.categories_ = [arrays[f"categories_{g}"] for g in range(n_cat)]
    model.categorical_embeddings_ = [arrays[f"categorical_embeddings_{g}"]
                                     for g in range(n_cat)]
    model.feature_blocks_ = [np.asarray(b, dtype=np.int64)
                             for b in model._categorical_encoding().blocks]


def tree_model_state(model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The fitted state of an ``xRFMRegressor`` / ``xRFMClassifier``: per tree its node
    arrays (``tree{t}.children`` ...) and per leaf the :func:`model_state` arrays
    (``tree{t}.leaf{k}.M_`` ...), with the leaves' metadata in ``trees``."""
    if not hasattr(model, "trees_"):
        raise ValueError(f"this {type(model).__name__} is not fitted yet; call fit first")
    arrays, meta = _common_state(model, model.trees_[0].directions)
    trees = []
    for t, tree in enumerate(model.trees_):
        for key in _TREE_ARRAYS:
            arrays[f"tree{t}.{key}"] = _to_numpy(getattr(tree, key))
        leaves = []
        for k, leaf in enumerate(tree.leaves):
            leaf_arrays, leaf_meta = model_state(leaf)
            arrays.update({f"tree{t}.leaf{k}.{a}": v for a, v in leaf_arrays.items()})
            leaves.append(leaf_meta)
        trees.append({
            "temperature": float(tree.temperature),
            "temperature_scores": [[float(T), float(v)]
                                   for T, v in tree.temperature_scores.items()],
            "leaves": leaves,
        })
    meta["trees"] = trees
    meta["format_version"] = max([meta["format_version"]] + [
        leaf.get("format_version", 1) for tree in trees for leaf in tree["leaves"]])
    return arrays, meta


def tree_model_from_state(arrays: dict[str, np.ndarray], meta: dict[str, Any], *,
                          convert: Any, where: str) -> Any:
    """The tree estimator :func:`tree_model_state` describes."""
    from .tree import Tree

    cls = _estimator_classes()[meta["class"]]
    trees_meta = meta.get("trees")
    if not isinstance(trees_meta, list) or not trees_meta:
        raise ValueError(f"{where} is incomplete: no trees")
    model = _new_model(cls, meta, where, arrays)
    trees = []
    for t, tm in enumerate(trees_meta):
        missing = [f"tree{t}.{k}" for k in _TREE_ARRAYS if f"tree{t}.{k}" not in arrays]
        if missing or not isinstance(tm, dict) or not isinstance(tm.get("leaves"), list):
            raise ValueError(f"{where} is incomplete: tree {t} misses {missing or 'its leaves'}")
        leaves = []
        for k, leaf_meta in enumerate(tm["leaves"]):
            prefix = f"tree{t}.leaf{k}."
            leaf_arrays = {a[len(prefix):]: v for a, v in arrays.items() if a.startswith(prefix)}
            leaves.append(model_from_state(leaf_arrays, leaf_meta, convert=convert,
                                           where=f"{where} (tree {t}, leaf {k})"))
        node = {k: arrays[f"tree{t}.{k}"] for k in _TREE_ARRAYS}
        problem = _tree_arrays_problem(node, len(leaves), leaves[0].X_fit_.shape[1])
        if problem:
            raise ValueError(f"{where}: tree {t} has inconsistent node arrays ({problem})")
        tree = Tree(node["children"], node["split"], node["leaf"], convert(node["directions"]),
                    convert(node["thresholds"]), convert(node["scales"]), leaves,
                    temperature=float(tm.get("temperature", 0.0)),
                    temperature_scores={float(T): v for T, v in tm.get("temperature_scores", [])})
        trees.append(tree)
    model.trees_ = trees
    if "classes_" in arrays:
        model.classes_ = arrays["classes_"]
    _set_common(model, meta)
    _set_categorical(model, arrays, meta, where)
    return model


def _tree_arrays_problem(node: dict[str, np.ndarray], n_leaves: int, d: int) -> str | None:
    """What is wrong with a saved tree's node arrays (None if they describe a tree whose
    nodes are numbered parents first, with ``n_leaves`` leaves over ``d`` features)."""
    children, split, leaf = node["children"], node["split"], node["leaf"]
    if any(a.dtype.kind not in "iu" for a in (children, split, leaf)):
        return "children, split and leaf must be integer arrays"
    n_nodes = split.shape[0] if split.ndim == 1 else -1
    if n_nodes < 1 or children.shape != (n_nodes, 2) or leaf.shape != (n_nodes,):
        return "children (n_nodes, 2), split and leaf (n_nodes,) do not match"
    inner = split >= 0
    if np.any(inner == (leaf >= 0)):
        return "every node must be either a split or a leaf"
    n_splits = int(inner.sum())
    if sorted(split[inner].tolist()) != list(range(n_splits)):
        return "split indices must number the splits 0 .. n_splits - 1"
    if sorted(leaf[~inner].tolist()) != list(range(n_leaves)):
        return f"leaf indices must number the {n_leaves} leaves 0 .. n_leaves - 1"
    kids = children[inner]
    if sorted(kids.ravel().tolist()) != list(range(1, n_nodes)) or np.any(
            kids <= np.flatnonzero(inner)[:, None]):
        return "children must list every other node once, after its parent"
    V, b, tau = node["directions"], node["thresholds"], node["scales"]
    if V.shape != (n_splits, d) or b.shape != (n_splits,) or tau.shape != (n_splits,):
        return f"directions ({n_splits}, {d}), thresholds and scales ({n_splits},) expected"
    if any(a.dtype.kind != "f" or not np.all(np.isfinite(a)) for a in (V, b, tau)) or np.any(
            tau <= 0):
        return "directions, thresholds and scales must be finite floats, scales > 0"
    return None


def model_from_state(arrays: dict[str, np.ndarray], meta: dict[str, Any], *,
                     convert: Any = None, where: str = "state") -> Any:
    """The estimator :func:`model_state` describes (``convert`` maps each NumPy array to
    the target library; ``where`` names the source in error messages)."""
    classes = _estimator_classes()
    cls = classes.get(meta.get("class"))
    if cls is None:
        raise ValueError(f"{where}: unknown model class {meta.get('class')!r}")
    missing = [k for k in ("M_", "coef_", "X_fit_") if k not in arrays]
    if missing:
        raise ValueError(f"{where} is incomplete: missing arrays {missing}")
    model = _new_model(cls, meta, where, arrays)
    convert = _converter(meta.get("namespace"), None) if convert is None else convert
    for key in ("M_", "coef_", "X_fit_"):
        setattr(model, key, convert(arrays[key]))
    if "classes_" in arrays:
        model.classes_ = arrays["classes_"]
    try:
        model.kernel_ = _kernel_from_dict(meta["kernel_"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: the saved kernel is not readable: {exc}") from exc
    model.history_ = meta.get("history_", [])
    _set_common(model, meta)
    _set_categorical(model, arrays, meta, where)
    return model


def _new_model(cls: type, meta: dict[str, Any], where: str,
               arrays: dict[str, np.ndarray] | None = None) -> Any:
    params = meta.get("params")
    if not isinstance(params, dict):
        raise ValueError(f"{where} is incomplete: no hyperparameters")
    try:
        params = _params_from_json(params, arrays or {})
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{where} has malformed hyperparameters: {exc}") from exc
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(
            f"{where}: saved hyperparameters do not fit {cls.__name__}: {exc}") from exc


def _set_common(model: Any, meta: dict[str, Any]) -> None:
    for key in _SCALARS:
        if key in meta:
            setattr(model, key, meta[key])
    if meta.get("feature_names_in_") is not None:
        model.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)


def save(model: Any, path: str | os.PathLike) -> str:
    """Write a fitted ``RFMRegressor`` / ``RFMClassifier`` / ``xRFMRegressor`` /
    ``xRFMClassifier`` / ``ConvRFMRegressor`` / ``ConvRFMClassifier`` to ``path`` (``.npz``).

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
        raise TypeError(
            "agop.save takes a fitted RFMRegressor or RFMClassifier (or xRFMRegressor / "
            f"xRFMClassifier, ConvRFMRegressor / ConvRFMClassifier), got {name}"
        )
    if name.startswith("xRFM"):
        arrays, meta = tree_model_state(model)
    else:
        arrays, meta = model_state(model)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
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
    convert = _converter(meta.get("namespace"), like)
    if str(meta.get("class", "")).startswith("xRFM"):
        return tree_model_from_state(arrays, meta, convert=convert, where=path)
    return model_from_state(arrays, meta, convert=convert, where=path)


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
