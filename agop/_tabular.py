"""``agop fit`` and ``agop predict``: CSV files and bundled data sets in, reports out.

Kept apart from ``cli.py`` (argument parsing) so that the logic is testable with plain
namespaces.  Reports go to ``out`` (stdout by default); errors are ``ValueError`` /
``TypeError`` / ``OSError`` with one-line messages, which the command prints.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from typing import Any

import numpy as np

_MISSING = {"", "na", "nan", "null", "none", "?"}


def read_csv(path: str, target: str | None = None, *, need_target: bool = True,
             features: list[str] | None = None) -> tuple[np.ndarray, Any, list[str], str | None]:
    """``(X, y, feature_names, target_name)`` from a CSV file with a header row.

    The target is ``target`` (default: the last column) and may hold numbers or labels;
    every feature column must be numeric.  With ``features`` given, exactly those
    columns are the features (any other column, such as the target, is ignored).
    """
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a readable CSV file: {exc}") from exc
    if not rows:
        raise ValueError(f"{path} is empty")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise ValueError(f"{path} has a header row but no data rows")
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise ValueError(f"{path} line {i} has {len(r)} fields; the header has {len(header)}")
    cols = {name: j for j, name in enumerate(header)}
    if features is not None:
        missing = [f for f in features if f not in cols]
        if missing:
            raise ValueError(f"{path} lacks the model's feature columns {missing[:5]}")
        tcol = None
        fcols = [cols[f] for f in features]
    else:
        if need_target:
            if target is None:
                tcol = len(header) - 1
            elif target in cols:
                tcol = cols[target]
            else:
                raise ValueError(f"no column {target!r} in {path}; columns: {header}")
        else:
            tcol = None
        fcols = [j for j in range(len(header)) if j != tcol]
        if not fcols:
            raise ValueError(f"{path} has no feature columns besides the target")
    X = np.empty((len(body), len(fcols)))
    for k, j in enumerate(fcols):
        for i, r in enumerate(body):
            v = r[j].strip()
            if v.lower() in _MISSING:
                raise ValueError(
                    f"{path}: missing value in column {header[j]!r} (line {i + 2}); fill or "
                    "drop missing values first"
                )
            try:
                X[i, k] = float(v)
            except ValueError:
                raise ValueError(
                    f"{path}: column {header[j]!r} is not numeric (line {i + 2}: {v!r}); "
                    "encode categorical features as numbers first"
                ) from None
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{path}: features contain infinite values")
    y = None
    if tcol is not None:
        raw = [r[tcol].strip() for r in body]
        if any(v.lower() in _MISSING for v in raw):
            raise ValueError(f"{path}: missing values in the target column {header[tcol]!r}")
        try:
            y = np.array([float(v) for v in raw])
        except ValueError:
            y = np.array(raw)
    return X, y, [header[j] for j in fcols], (header[tcol] if tcol is not None else None)


def _task(y: np.ndarray, task: str) -> str:
    if task != "auto":
        if task == "regression" and y.dtype.kind not in "fiu":
            raise ValueError("--task regression needs a numeric target column")
        return task
    if y.dtype.kind not in "fiu":
        return "classification"
    if np.all(y == np.round(y)) and len(np.unique(y)) <= 20:
        return "classification"
    return "regression"


def _split(n: int, frac: float, rng, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held out); stratified by ``labels`` when given."""
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"split fractions must be in [0, 1), got {frac}")
    held = np.zeros(n, dtype=bool)
    if frac > 0:
        if labels is not None:
            for c in np.unique(labels):
                idx = np.flatnonzero(labels == c)
                k = int(round(frac * idx.size))
                held[rng.choice(idx, size=k, replace=False)] = True
        if not held.any():
            held[rng.choice(n, size=max(1, int(round(frac * n))), replace=False)] = True
    if held.all():
        raise ValueError("the split leaves no training data")
    return np.flatnonzero(~held), np.flatnonzero(held)


def run_fit(args: Any, out=None) -> dict[str, Any]:
    """Run ``agop fit``; print the report to ``out`` and return its numbers."""
    import agop
    from agop.datasets import load_dataset

    out = sys.stdout if out is None else out
    w = out.write
    t_start = time.perf_counter()
    if args.data is not None:
        X, y, names, target_name = read_csv(args.data, args.target)
        source = args.data
        task = _task(y, args.task)
    else:
        if args.target is not None:
            raise ValueError("--target goes with --data")
        ds = load_dataset(args.dataset or "lowrank", random_state=args.seed)
        X, y, names, target_name, source = ds.X, ds.y, ds.feature_names, ds.target_name, ds.name
        task = ds.task if args.task == "auto" else args.task
    if task == "regression":
        y = np.asarray(y, dtype=float)
    rng = np.random.default_rng(args.seed)
    strat = y if task == "classification" else None
    tr, te = _split(len(X), args.test_size, rng, strat)
    Xtr, ytr = X[tr], y[tr]
    val = None
    if args.val_size > 0:
        sub, va = _split(len(tr), args.val_size, rng, ytr if strat is not None else None)
        val = (Xtr[va], ytr[va])
        Xtr, ytr = Xtr[sub], ytr[sub]
    mean = np.zeros(X.shape[1])
    std = np.ones(X.shape[1])
    if not args.no_standardize:
        mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
        std[std == 0] = 1.0
    scale = lambda A: (A - mean) / std  # noqa: E731
    bandwidth = args.bandwidth
    if bandwidth != "median":
        try:
            bandwidth = float(bandwidth)
        except ValueError:
            raise ValueError(
                f"--bandwidth must be a number or 'median', got {bandwidth!r}"
            ) from None
    kw = dict(
        kernel=args.kernel, bandwidth=None if args.kernel == "quadratic" else bandwidth,
        reg=args.reg, iters=args.iters, diag=args.diag, agop_power=args.agop_power,
        normalize=None if args.normalize == "none" else args.normalize,
        centering=None if args.centering == "none" else args.centering,
        solver=args.solver, random_state=args.seed,
    )
    cls = agop.RFMClassifier if task == "classification" else agop.RFMRegressor
    model = cls(**kw)
    if val is None:
        model.fit(scale(Xtr), ytr)
    else:
        model.fit(scale(Xtr), ytr, scale(val[0]), val[1])
    test_metric = "accuracy" if task == "classification" else "rmse"
    test_value = None
    if len(te):
        pred = model.predict(scale(X[te]))
        test_value = (float(np.mean(pred == y[te])) if task == "classification"
                      else float(np.sqrt(np.mean((pred - y[te]) ** 2))))

    w(f"agop fit: {source} ({len(X)} samples x {X.shape[1]} features, {task}"
      + (f", target {target_name!r}" if target_name else "") + ")\n")
    w(f"  model   {cls.__name__}, {model.kernel_!r}, reg {args.reg:g}, {args.iters} updates, "
      f"{'diagonal' if args.diag else 'full'} M\n")
    w(f"  split   {len(Xtr)} train" + (f" / {len(val[0])} validation" if val else "")
      + f" / {len(te)} test (seed {args.seed})\n\n")
    metric = model.history_[0]["metric"]
    w(f"  iteration  train {metric:<9} validation {metric:<9} seconds\n")
    for h in model.history_:
        v = "-" if h["val_metric"] is None else f"{h['val_metric']:.5g}"
        mark = "  <- chosen" if h["iteration"] == model.best_iter_ else ""
        w(f"  {h['iteration']:>9}  {h['train_metric']:<15.5g} {v:<20} {h['seconds']:7.2f}{mark}\n")
    if test_value is not None:
        w(f"\n  test {test_metric}: {test_value:.5g}\n")
    imp = np.asarray(model.feature_importances_, dtype=float)
    order = np.argsort(-imp)
    peak = imp[order[0]] if imp[order[0]] > 0 else 1.0
    w("\n  most important features (diagonal of M, relative to the largest)\n")
    for rank, i in enumerate(order[:10], start=1):
        bar = "#" * max(1, round(30 * imp[i] / peak)) if imp[i] > 0 else ""
        w(f"  {rank:>4}  {names[i][:24]:<24} {imp[i] / peak:8.4f}  {bar}\n")

    written = []
    prefix = args.out
    if os.path.dirname(prefix):
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
    written.append(agop.save(model, prefix + ".npz"))
    side = {"format": "agop-fit", "task": task, "feature_names": list(names),
            "target_name": target_name, "mean": mean.tolist(), "std": std.tolist()}
    with open(prefix + ".json", "w") as fh:
        json.dump(side, fh, indent=1)
    written.append(prefix + ".json")
    if not args.no_plots:
        from ._plot import bar_png, heatmap_png

        M = np.asarray(model.M_, dtype=float)
        written.append(heatmap_png(M, prefix + "_M.png", names))
        written.append(bar_png(imp, prefix + "_importances.png", names))
    seconds = time.perf_counter() - t_start
    w(f"\n  wrote {', '.join(written)}\n  {seconds:.1f} s\n")
    return {"model": model, "task": task, "test_metric": test_metric, "test_value": test_value,
            "top": [int(i) for i in order[:10]], "written": written}


def run_predict(args: Any, out=None) -> np.ndarray:
    """Run ``agop predict``; write predictions as CSV to ``args.out`` or ``out``."""
    import agop

    out = sys.stdout if out is None else out
    model = agop.load(args.model)
    side_path = os.path.splitext(args.model)[0] + ".json"
    side = None
    if os.path.isfile(side_path):
        try:
            with open(side_path) as fh:
                side = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{side_path} is not readable: {exc}") from exc
    if side is not None:
        X, _, _, _ = read_csv(args.data, features=side["feature_names"])
        X = (X - np.asarray(side["mean"])) / np.asarray(side["std"])
    else:
        X, _, _, _ = read_csv(args.data, need_target=False)
    if X.shape[1] != model.n_features_in_:
        raise ValueError(
            f"{args.data} has {X.shape[1]} feature columns; the model expects "
            f"{model.n_features_in_}"
        )
    if args.proba:
        if not hasattr(model, "predict_proba"):
            raise ValueError("--proba needs a classifier model")
        P = np.asarray(model.predict_proba(X))
        header = [f"p_{c}" for c in model.classes_]
        rows = [[f"{v:.6g}" for v in r] for r in P]
        result = P
    else:
        pred = np.asarray(model.predict(X))
        name = (side or {}).get("target_name") or "prediction"
        if pred.ndim == 1:
            header = [f"predicted_{name}"]
            rows = [[f"{v:.10g}" if pred.dtype.kind == "f" else str(v)] for v in pred]
        else:
            header = [f"predicted_{j}" for j in range(pred.shape[1])]
            rows = [[f"{v:.10g}" for v in r] for r in pred]
        result = pred
    target = open(args.out, "w", newline="") if args.out else out
    try:
        writer = csv.writer(target, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if args.out:
            target.close()
    return result
