"""``agop bench scale``: xRFM trees on up to a million rows, against gradient boosting.

A synthetic regression with ``d = 20`` inputs whose target depends on three linear
projections of them (:func:`synthetic_data`) is fitted at several sizes ``n`` (default
100 000, 300 000 and 1 000 000 rows) by

- **agop**: :class:`agop.xRFMRegressor` with CPU-sized leaves (:data:`AGOP_SETTINGS`);
- **hgb**: scikit-learn's ``HistGradientBoostingRegressor`` (:data:`HGB_SETTINGS`);
- **xgboost**: ``XGBRegressor`` with the ``hist`` tree method (:data:`XGB_SETTINGS`);
- **xrfm**: the ``xrfm`` package (0.4.5, torch on the CPU) with the same leaf and split
  sizes and leaf settings as agop, on the first ``--xrfm-size`` (100 000) rows only.

Every method gets the same float32 rows: of the ``n`` rows, the last 10 % are the
validation data (agop and xRFM select each leaf's iterate and the routing temperature
on them, the boosters stop early on them) and the rest the training data; the test set
is a fixed, separate ``--test-size`` (20 000) rows.  The table gives fit and predict
seconds, test RMSE and R², and the peak resident memory of the process.

Each fit runs in a **fresh Python process** with the thread count fixed before any
library is imported (``OMP_NUM_THREADS``, ``NUMBA_NUM_THREADS``, torch's
``set_num_threads``, xgboost's ``n_jobs``; ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS``
from ``--blas-threads``, default the same): so every fit has its own peak RSS (read
from ``VmHWM`` in ``/proc/self/status``, else ``getrusage``), and every fit pays alike
for the memory it touches first (on some machines the first touch of new pages costs
several ms per MB, which the process that first reaches a new peak pays).  A tiny
warm-up fit in the same process comes first, so that loading numba's compiled loops or
torch's kernels is not counted.

The peers are optional (``pip install scikit-learn xgboost xrfm torch==2.13.0``); a peer
that is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .rfm import _versions

D = 20  #: input dimension
N_PROJECTIONS = 3  #: the target depends on X only through X @ W, W (20, 3) orthonormal
NOISE = 0.1  #: standard deviation of the Gaussian noise added to the target
VAL_FRACTION = 0.1  #: the last 10 % of the n rows are the validation data
CHUNK = 100_000  #: rows are drawn in chunks, so the first k rows never depend on n
SIZES = (100_000, 300_000, 1_000_000)
PEERS = ("hgb", "xgboost", "xrfm")
METHODS = ("agop", *PEERS)
TARGETS = {"n": 1_000_000, "fit_s": 600.0, "rss_gb": 8.0}  #: the 1M targets (2 cores)

#: agop.xRFMRegressor: leaves of at most 3 000 training points (median splits give
#: 2 812 at n = 100 000, 2 109 at 300 000 and 1 758 at 1 000 000, before the validation
#: refill), so that a leaf's direct float32 solve takes a fraction of a second on two
#: cores; split models on 1 000 points (cheaper than a leaf: a million rows need 511
#: splits); three RFM iterations; the library's defaults otherwise
AGOP_SETTINGS: dict[str, Any] = {"max_leaf_size": 3000, "split_max_points": 1000,
                                 "rfm_params": {"iters": 3}}
#: HistGradientBoostingRegressor: up to 500 boosting rounds at learning rate 0.1,
#: early stopping on the validation data after 20 rounds without improvement
HGB_SETTINGS: dict[str, Any] = {"max_iter": 500, "learning_rate": 0.1,
                                "early_stopping": True, "n_iter_no_change": 20}
#: XGBRegressor: the same rounds, rate and stopping rule, depth-6 trees, hist method
XGB_SETTINGS: dict[str, Any] = {"n_estimators": 500, "learning_rate": 0.1, "max_depth": 6,
                                "tree_method": "hist", "early_stopping_rounds": 20}

_MARKER = "AGOP_SCALE_RESULT "
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")
_BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


# --------------------------------------------------------------------------- data


def projections(seed: int = 0, d: int = D) -> np.ndarray:
    """The ``(d, 3)`` orthonormal matrix ``W`` of the target's projections."""
    G = np.random.default_rng([seed, 99]).standard_normal((d, N_PROJECTIONS))
    return np.linalg.qr(G)[0]


def target_function(U: np.ndarray) -> np.ndarray:
    """The noiseless target ``sin(2 u1) + u2 u3 / 2`` of the projections ``U = X W``."""
    return np.sin(2.0 * U[:, 0]) + 0.5 * U[:, 1] * U[:, 2]


def synthetic_data(n: int, seed: int = 0, *, test: bool = False,
                   d: int = D) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` in float32: ``X ~ N(0, I_d)``, ``y = f(X W) + 0.1 N(0, 1)``.

    Rows are drawn in chunks of :data:`CHUNK` with their own seeds, so the first ``k``
    rows are the same for every ``n >= k`` (the 100 000-row subsample is the start of
    the million-row set); ``test=True`` draws from a separate stream.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    W = projections(seed, d)
    stream = 1 if test else 0
    X = np.empty((n, d), dtype=np.float32)
    y = np.empty(n, dtype=np.float32)
    for i, start in enumerate(range(0, n, CHUNK)):
        rows = min(CHUNK, n - start)
        Xc = np.random.default_rng([seed, stream, i]).standard_normal((rows, d),
                                                                      dtype=np.float32)
        noise = np.random.default_rng([seed, stream, i, 1]).standard_normal(rows)
        X[start:start + rows] = Xc
        y[start:start + rows] = target_function(Xc.astype(np.float64) @ W) + NOISE * noise
    return X, y


def split_rows(n: int) -> int:
    """Number of training rows among ``n`` (the rest, the last 10 %, validate)."""
    return n - int(round(VAL_FRACTION * n))


# --------------------------------------------------------------------------- one fit


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``VmHWM``, else ``getrusage``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    import resource  # pragma: no cover

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover
    return int(peak if sys.platform == "darwin" else peak * 1024)  # pragma: no cover


def _fit_agop(X, y, Xv, yv, threads: int, settings: dict) -> tuple[Any, dict]:
    from ..tree import xRFMRegressor

    model = xRFMRegressor(**settings, random_state=0).fit(X, y, Xv, yv)
    tree = model.trees_[0]
    sizes = [leaf.X_fit_.shape[0] for leaf in tree.leaves]
    return model, {"leaves": model.n_leaves_, "leaf_train_points": [min(sizes), max(sizes)],
                   "temperature": tree.temperature}


def _fit_hgb(X, y, Xv, yv, threads: int, settings: dict) -> tuple[Any, dict]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(**settings, random_state=0)
    model.fit(X, y, X_val=Xv, y_val=yv)
    return model, {"rounds": int(model.n_iter_)}


def _fit_xgboost(X, y, Xv, yv, threads: int, settings: dict) -> tuple[Any, dict]:
    from xgboost import XGBRegressor

    model = XGBRegressor(**settings, n_jobs=threads, random_state=0)
    model.fit(X, y, eval_set=[(Xv, yv)], verbose=False)
    return model, {"rounds": int(model.best_iteration) + 1}


def xrfm_params(settings: dict) -> dict:
    """``rfm_params`` of the xrfm package matching agop's leaves: Laplace (``l2``) kernel,
    bandwidth 10, full M, ridge 1e-3, the same iterations, best iterate on validation
    with early stopping at 1.1 x best."""
    iters = settings.get("rfm_params", {}).get("iters", 5)
    return {"model": {"kernel": "l2", "bandwidth": 10.0, "exponent": 1.0, "diag": False,
                      "bandwidth_mode": "constant"},
            "fit": {"reg": 1e-3, "iters": iters, "early_stop_rfm": True,
                    "early_stop_multiplier": 1.1, "return_best_params": True,
                    "verbose": False}}


def _fit_xrfm(X, y, Xv, yv, threads: int, settings: dict) -> tuple[Any, dict]:
    import torch
    from xrfm import xRFM

    torch.set_num_threads(threads)
    split_points = int(settings["split_max_points"])

    class _SizedSplits(xRFM):
        # xrfm fixes its split models' subsample at 50 000 points (sized for GPUs); on
        # the CPU it gets agop's split_max_points through the method's own parameter
        def _get_agop_on_subset(self, X, y, subset_size=50_000, **kwargs):
            return super()._get_agop_on_subset(X, y, subset_size=split_points, **kwargs)

    model = _SizedSplits(rfm_params=xrfm_params(settings),
                         max_leaf_size=int(settings["max_leaf_size"]), device="cpu",
                         n_threads=threads, tuning_metric="mse", random_state=0,
                         verbose=False)
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (X, y[:, None], Xv, yv[:, None])]
    model.fit(*t)
    return _XRFMPredictor(model), {}


class _XRFMPredictor:
    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        P = self.model.predict(torch.from_numpy(X))
        return np.asarray(P.detach().numpy() if hasattr(P, "detach") else P).reshape(-1)


_FITTERS = {"agop": _fit_agop, "hgb": _fit_hgb, "xgboost": _fit_xgboost, "xrfm": _fit_xrfm}


def booster_settings(rounds: int | None = None) -> dict[str, dict[str, Any]]:
    """Settings of ``hgb`` and ``xgboost``, with ``rounds`` boosting rounds at most
    (None: 500)."""
    hgb, xgb = dict(HGB_SETTINGS), dict(XGB_SETTINGS)
    if rounds is not None:
        hgb["max_iter"] = xgb["n_estimators"] = int(rounds)
    return {"hgb": hgb, "xgboost": xgb}


def measure(method: str, n: int, *, threads: int = 2, test_size: int = 20_000,
            seed: int = 0, settings: dict | None = None,
            rounds: int | None = None) -> dict[str, Any]:
    """Fit ``method`` on the first ``n`` rows of :func:`synthetic_data` (last 10 % as
    validation data) in this process, after a tiny warm-up fit; test on ``test_size``
    separate rows.  ``settings`` are agop's (and xRFM's leaf and split sizes),
    ``rounds`` the boosters' limit.  Returns seconds, errors and memory (bytes)."""
    if method not in _FITTERS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    fitter = _FITTERS[method]
    settings = booster_settings(rounds).get(
        method, AGOP_SETTINGS if settings is None else settings)
    # warm-up: 600 rows with leaves of 200 points, so every code path loads once
    Xw, yw = synthetic_data(600, seed + 1)
    tiny = {**settings, "max_leaf_size": 200, "split_max_points": 100} \
        if method in ("agop", "xrfm") else settings
    fitter(Xw[:500], yw[:500], Xw[500:], yw[500:], threads, tiny)[0].predict(Xw[:50])
    X, y = synthetic_data(n, seed)
    X_test, y_test = synthetic_data(test_size, seed, test=True)
    k = split_rows(n)
    rss_before = _current_rss_bytes()
    t0 = time.perf_counter()
    model, info = fitter(X[:k], y[:k], X[k:], y[k:], threads, settings)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    P = np.asarray(model.predict(X_test), dtype=np.float64).reshape(-1)
    predict_s = time.perf_counter() - t0
    err = P - y_test
    rmse = float(np.sqrt(np.mean(err**2)))
    r2 = float(1.0 - np.mean(err**2) / np.var(y_test.astype(np.float64)))
    return {"method": method, "n": n, "n_train": k, "n_val": n - k, "fit_s": fit_s,
            "predict_s": predict_s, "rmse": rmse, "r2": r2, "peak_rss": peak_rss_bytes(),
            "rss_before": rss_before, "info": info}


def _current_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return 0  # pragma: no cover


def _child(spec: str) -> int:
    """Entry point of the fresh process: ``measure(**json.loads(spec))``, printed as
    one marked JSON line."""
    kwargs = json.loads(spec)
    sys.stdout.write(_MARKER + json.dumps(measure(**kwargs)) + "\n")
    return 0


def available(method: str) -> bool:
    """Whether the libraries ``method`` needs can be imported here."""
    mods = {"agop": (), "hgb": ("sklearn",), "xgboost": ("xgboost",),
            "xrfm": ("xrfm", "torch")}[method]
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in mods)


def run_isolated(method: str, n: int, *, threads: int, test_size: int, seed: int,
                 settings: dict, timeout: float, rounds: int | None = None,
                 blas_threads: int | None = None) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process with ``threads`` threads everywhere
    (``blas_threads`` for the BLAS libraries, default ``threads``).

    Returns its result, or ``{"error": ...}`` when the process failed or ran past
    ``timeout`` seconds."""
    env = dict(os.environ)
    for var in _THREAD_VARIABLES:
        env[var] = str(threads)
    for var in _BLAS_VARIABLES:
        env[var] = str(threads if blas_threads is None else blas_threads)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    spec = json.dumps({"method": method, "n": n, "threads": threads, "test_size": test_size,
                       "seed": seed, "settings": settings, "rounds": rounds})
    code = "import sys; from agop.bench.scale import _child; sys.exit(_child(sys.argv[1]))"
    try:
        proc = subprocess.run([sys.executable, "-c", code, spec], capture_output=True,
                              text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"method": method, "n": n, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_MARKER):
            return json.loads(line[len(_MARKER):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"method": method, "n": n, "error": f"exit {proc.returncode}: {tail}"}


# --------------------------------------------------------------------------- the table


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f}"


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['method']} | {r['n']} | - | - | - | - | - | - | {r['error']} |"
    info = r.get("info", {})
    notes = ", ".join(
        f"{k} {v[0]}-{v[1]}" if isinstance(v, list) else
        (f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}") for k, v in info.items())
    return (f"| {r['method']} | {r['n']} | {r['fit_s']:.1f} | {r['predict_s']:.2f} | "
            f"{_gb(r['peak_rss'])} | {_gb(r['rss_before'])} | {r['rmse']:.4f} | "
            f"{r['r2']:.4f} | {notes} |")


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """agop against each peer at the same ``n``: peer fit / agop fit, peer predict /
    agop predict, agop RMSE / peer RMSE."""
    ok = [r for r in rows if "error" not in r]
    mine = {r["n"]: r for r in ok if r["method"] == "agop"}
    out = []
    for r in ok:
        a = mine.get(r["n"])
        if r["method"] == "agop" or a is None:
            continue
        out.append({"n": r["n"], "peer": r["method"], "fit": r["fit_s"] / a["fit_s"],
                    "predict": r["predict_s"] / a["predict_s"], "rmse": a["rmse"] / r["rmse"]})
    return out


def growth(rows: list[dict[str, Any]], method: str) -> list[tuple[int, float, float | None]]:
    """``(n, fit seconds, exponent)`` for ``method``: the exponent of ``n`` between each
    size and the one before, ``log(t2 / t1) / log(n2 / n1)`` (1 is linear)."""
    pts = sorted((r["n"], r["fit_s"]) for r in rows
                 if r["method"] == method and "error" not in r)
    out = []
    for i, (n, t) in enumerate(pts):
        slope = None
        if i:
            n0, t0 = pts[i - 1]
            slope = math.log(t / t0) / math.log(n / n0)
        out.append((n, t, slope))
    return out


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The lines that check agop's fit at 1M rows against 600 s and 8 GB."""
    hit = [r for r in rows if r["method"] == "agop" and r["n"] == TARGETS["n"]]
    if not hit:
        return [f"agop at n = {TARGETS['n']}: not measured in this run."]
    r = hit[0]
    if "error" in r:
        return [f"agop at n = {TARGETS['n']}: {r['error']} (FAIL)."]
    fit_ok = r["fit_s"] <= TARGETS["fit_s"]
    rss_ok = r["peak_rss"] <= TARGETS["rss_gb"] * 1e9
    return [
        f"agop at n = {TARGETS['n']}: fit {r['fit_s']:.0f} s (target <= "
        f"{TARGETS['fit_s']:.0f} s: {'PASS' if fit_ok else 'FAIL'}); peak RSS "
        f"{_gb(r['peak_rss'])} GB (target <= {TARGETS['rss_gb']:.0f} GB: "
        f"{'PASS' if rss_ok else 'FAIL'})."
    ]


def _library_versions() -> str:
    import importlib.metadata as md

    parts = [_versions()]
    for dist in ("scikit-learn", "xgboost"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def table(rows: list[dict[str, Any]], args: argparse.Namespace, load: tuple) -> str:
    s = args.settings
    boost = booster_settings(args.rounds)
    lines = [
        f"# agop at scale: {D}-dimensional synthetic regression, up to "
        f"{max(args.sizes)} rows",
        "",
        f"{os.cpu_count()} CPU cores, {args.threads} threads for every library"
        + ("" if getattr(args, "blas_threads", None) is None
           else f" ({args.blas_threads} for BLAS)") + "; load "
        f"average {load[0][0]:.2f} at the start and {load[1][0]:.2f} at the end; "
        f"{_library_versions()}.",
        "",
        f"Data: x ~ N(0, I_{D}) (float32), y = sin(2 u1) + u2 u3 / 2 + {NOISE} N(0, 1) with "
        f"u = x W, W a random orthonormal {D} x {N_PROJECTIONS} matrix; of the n rows the last "
        f"{VAL_FRACTION:.0%} validate (iterate and temperature selection, early stopping); "
        f"test on {args.test_size} separate rows (noise floor RMSE {NOISE}).  Each fit in a "
        "fresh process after a tiny warm-up fit; peak RSS is the process's (imports and "
        "data included), 'RSS before' the resident memory when the timed fit starts.",
        "",
        f"agop: `xRFMRegressor(max_leaf_size={s['max_leaf_size']}, "
        f"split_max_points={s['split_max_points']}, rfm_params={s['rfm_params']})` "
        "(Laplace leaves, bandwidth 10, ridge 1e-3, full M, best iterate on validation, "
        "temperature tuned).  xRFM: the same leaf and split sizes and leaf settings "
        f"(`l2` kernel), on the first {args.xrfm_size} rows.  hgb: "
        f"`HistGradientBoostingRegressor({_kw(boost['hgb'])})`; xgboost: "
        f"`XGBRegressor({_kw(boost['xgboost'])})`.",
        "",
        "| method | n | fit (s) | predict (s) | peak RSS (GB) | RSS before (GB) | test RMSE "
        "| test R² | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *(_row(r) for r in rows),
        "",
        "agop against each peer at the same n (time ratios > 1: agop is faster; RMSE ratio "
        "< 1: agop is more accurate):",
        "",
        "| n | peer | peer fit / agop fit | peer predict / agop predict | agop RMSE / peer RMSE |",
        "|---:|---|---:|---:|---:|",
        *(f"| {q['n']} | {q['peer']} | {q['fit']:.2f} | {q['predict']:.2f} | {q['rmse']:.3f} |"
          for q in ratios(rows)),
        "",
        "Fit time against n (exponent: log(t2 / t1) / log(n2 / n1) from the previous size; "
        "1 is linear):",
        "",
        "| method | n | fit (s) | exponent |",
        "|---|---:|---:|---:|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        for n, t, slope in growth(rows, method):
            lines.append(f"| {method} | {n} | {t:.1f} | "
                         f"{'-' if slope is None else f'{slope:.2f}'} |")
    lines += ["", *check_targets(rows)]
    return "\n".join(lines) + "\n"


def _kw(d: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in d.items())


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be integers, got {text!r}") from None
    if not sizes or sizes[0] < 100:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 100, got {text!r}")
    return sizes


def _peers(text: str) -> list[str]:
    peers = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peers {unknown}; choose from {PEERS}")
    return peers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agop bench scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=list(SIZES),
                        help="rows n (training + validation), comma separated "
                             "(default 100000,300000,1000000)")
    parser.add_argument("--peers", type=_peers, default=list(PEERS),
                        help="peers to run, comma separated, from hgb,xgboost,xrfm ('' for none)")
    parser.add_argument("--xrfm-size", type=int, default=100_000,
                        help="xRFM runs only at the sizes up to this one (default 100000)")
    parser.add_argument("--threads", type=int, default=2, help="threads per library (2)")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="threads of the BLAS libraries (OpenBLAS, MKL) in every fit "
                             "(default: --threads)")
    parser.add_argument("--test-size", type=int, default=20_000)
    parser.add_argument("--max-leaf-size", type=int, default=AGOP_SETTINGS["max_leaf_size"])
    parser.add_argument("--split-max-points", type=int,
                        default=AGOP_SETTINGS["split_max_points"])
    parser.add_argument("--iters", type=int, default=AGOP_SETTINGS["rfm_params"]["iters"],
                        help="RFM iterations of agop's (and xRFM's) leaves")
    parser.add_argument("--rounds", type=int, default=HGB_SETTINGS["max_iter"],
                        help="boosting rounds at most of hgb and xgboost (500)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds after which one fit is stopped (default 1800)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    args.settings = {"max_leaf_size": args.max_leaf_size,
                     "split_max_points": args.split_max_points,
                     "rfm_params": {"iters": args.iters}}
    load_start = os.getloadavg()
    rows = []
    for n in args.sizes:
        for method in ("agop", *args.peers):
            if method == "xrfm" and n > args.xrfm_size:
                continue
            if not available(method):
                rows.append({"method": method, "n": n, "error": "not installed"})
                continue
            r = run_isolated(method, n, threads=args.threads, test_size=args.test_size,
                             seed=args.seed, settings=args.settings, timeout=args.timeout,
                             rounds=args.rounds, blas_threads=args.blas_threads)
            rows.append(r)
            sys.stderr.write(f"{json.dumps(r)}\n")
    text = table(rows, args, (load_start, os.getloadavg()))
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0
