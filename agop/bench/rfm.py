"""``agop bench rfm``: RFM fits of agop against xRFM on identical data and settings.

Both libraries get the same float32 arrays (after one tiny warm-up fit each, so that
one-off compilation is not counted), the same split (train / validation / test),
the Laplace kernel with bandwidth 10, ridge 1e-3, 5 iterations, a full M normalized by
its largest entry, validation-based choice of the best iterate with early stopping at
1.1 x best, and the same number of threads.  Classification sets are fitted as
regression on one-hot targets by both (and scored by argmax accuracy).  The table gives
fit seconds, the speed-up, and the test error of each.

Each fit runs ``--repeats`` times (default 3), the two libraries taking turns, and the
table gives each library's fastest run (consecutive fits of one library vary by about
5 % here).  On a virtual machine the first touch of memory the guest has not used
before costs the host's allocation too (measured here: 1.8 s for one 12 800 x 12 800
float32 matrix, 0.12 s when the same matrix is allocated again), and which pages a new
allocation gets depends on what ran before: a fit right after the other library's fit
got fresh memory and ran up to 1 s slower.  So before any fit the benchmark touches,
once, four times the largest kernel matrix (plus 1 GB from n_fit = 4096 up) and frees
it: later allocations of either library reuse those pages.

xRFM is optional: ``pip install xrfm torch==2.13.0``; without it only agop runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import __version__

SETTINGS = {"bandwidth": 10.0, "reg": 1e-3, "iters": 5, "early_stop_tol": 1.1}


@dataclass
class Problem:
    name: str
    task: str  # "regression" or "classification"
    X_train: np.ndarray
    Y_train: np.ndarray
    X_val: np.ndarray
    Y_val: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray


def _split3(X, Y, rng, test=0.2, val=0.2):
    n = X.shape[0]
    perm = rng.permutation(n)
    n_test = int(round(test * n))
    n_val = int(round(val * (n - n_test)))
    te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return X[tr], Y[tr], X[va], Y[va], X[te], Y[te]


def _standardize(parts):
    X_train = parts[0]
    mu, sd = X_train.mean(0), X_train.std(0)
    sd[sd == 0] = 1.0
    out = list(parts)
    for i in (0, 2, 4):
        out[i] = ((parts[i] - mu) / sd).astype(np.float32)
    for i in (1, 3, 5):
        out[i] = parts[i].astype(np.float32)
    return out


def _load_real(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from ..datasets import load_dataset  # bundled copies

        ds = load_dataset(name)
        return np.asarray(ds.X, float), np.asarray(ds.y), ds.task
    except (ImportError, AttributeError):  # pragma: no cover - fall back to scikit-learn
        from sklearn import datasets as skd

        loader = {"breast_cancer": skd.load_breast_cancer, "wine": skd.load_wine,
                  "diabetes": skd.load_diabetes, "digits": skd.load_digits}[name]
        X, y = loader(return_X_y=True)
        return X, y, "regression" if name == "diabetes" else "classification"


def real_problem(name: str, seed: int = 0) -> Problem:
    X, y, task = _load_real(name)
    rng = np.random.default_rng(seed)
    if task == "classification":
        classes, inv = np.unique(y, return_inverse=True)
        Y = np.eye(len(classes))[inv]
    else:
        Y = ((y - y.mean()) / y.std())[:, None]
    parts = _standardize(_split3(X, Y, rng))
    return Problem(name, task, *parts)


def synthetic_problem(n_fit: int, d: int = 100, seed: int = 0) -> Problem:
    """y = [1(x0 > 0), 1(x1 < 0.5)], x ~ N(0, I_d); n_fit training points, n_fit/4 val/test."""
    rng = np.random.default_rng(seed)
    n_other = n_fit // 4
    X = rng.normal(size=(n_fit + 2 * n_other, d))
    Y = np.stack([X[:, 0] > 0, X[:, 1] < 0.5], axis=1).astype(float)
    X = X.astype(np.float32)
    Y = Y.astype(np.float32)
    a, b = n_fit, n_fit + n_other
    return Problem(f"synthetic n={n_fit}", "regression", X[:a], Y[:a], X[a:b], Y[a:b],
                   X[b:], Y[b:])


def _test_error(problem: Problem, P: np.ndarray) -> tuple[str, float]:
    if problem.task == "classification":
        return "accuracy", float(np.mean(P.argmax(1) == problem.Y_test.argmax(1)))
    return "rmse", float(np.sqrt(np.mean((P - problem.Y_test) ** 2)))


def run_agop(problem: Problem) -> tuple[float, np.ndarray]:
    from ..kernels import Laplace
    from ..rfm import fit_feature_machine
    from ..updates import AGOPUpdate

    t0 = time.perf_counter()
    res = fit_feature_machine(
        problem.X_train, problem.Y_train, Laplace(SETTINGS["bandwidth"]),
        AGOPUpdate(normalize="max"), iters=SETTINGS["iters"], reg=SETTINGS["reg"],
        X_val=problem.X_val, Y_val=problem.Y_val, metric="mse",
        early_stop_tol=SETTINGS["early_stop_tol"], random_state=0,
    )
    seconds = time.perf_counter() - t0
    return seconds, np.asarray(res.machine.predict(problem.X_test))


def run_xrfm(problem: Problem, threads: int) -> tuple[float, np.ndarray] | None:
    try:
        import torch
        from xrfm import RFM
    except ImportError:
        return None
    torch.set_num_threads(threads)
    model = RFM(kernel="l2", iters=SETTINGS["iters"], bandwidth=SETTINGS["bandwidth"],
                device="cpu", diag=False, verbose=False, tuning_metric="mse")
    t = [torch.from_numpy(a) for a in (problem.X_train, problem.Y_train, problem.X_val,
                                       problem.Y_val)]
    t0 = time.perf_counter()
    model.fit((t[0], t[1]), (t[2], t[3]), reg=SETTINGS["reg"], early_stop_rfm=True,
              early_stop_multiplier=SETTINGS["early_stop_tol"], return_best_params=True,
              verbose=False)
    seconds = time.perf_counter() - t0
    P = model.predict(torch.from_numpy(problem.X_test))
    return seconds, np.asarray(P.detach().numpy() if hasattr(P, "detach") else P)


def _versions() -> str:
    parts = [f"agop {__version__}", f"numpy {np.__version__}",
             f"python {platform.python_version()}"]
    for mod in ("numba", "torch", "xrfm"):
        try:
            m = __import__(mod)
            parts.append(f"{mod} {getattr(m, '__version__', '?')}")
        except ImportError:
            parts.append(f"{mod} (not installed)")
    return ", ".join(parts)


def warm_up(threads: int, with_xrfm: bool = True) -> None:
    """One tiny fit with each library first: numba loads (or compiles) its loops and
    torch sets up its kernels once per process, which is not part of a fit's cost."""
    tiny = synthetic_problem(64, d=5)
    run_agop(tiny)
    if with_xrfm:
        run_xrfm(tiny, threads)


def touch_memory(nbytes: int) -> None:
    """Write ``nbytes`` of new memory once and free it (see the module docstring)."""
    if nbytes > 0:
        buf = np.empty(nbytes // 8, dtype=np.float64)
        buf.fill(1.0)
        del buf


def run(problems: list[Problem], threads: int, with_xrfm: bool = True,
        repeats: int = 3) -> list[dict[str, Any]]:
    """Fit every problem ``repeats`` times with each library (taking turns); each
    library's fastest fit is reported, with the test error of its last fit."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n_max = max((p.X_train.shape[0] for p in problems), default=0)
    touch_memory(4 * 4 * n_max * n_max + (2**30 if n_max >= 4096 else 0))
    warm_up(threads, with_xrfm)
    rows = []
    for p in problems:
        row = {"problem": p.name, "n_fit": p.X_train.shape[0], "d": p.X_train.shape[1],
               "metric": None, "agop_s": None, "agop_err": None,
               "xrfm_s": None, "xrfm_err": None}
        for _ in range(repeats):
            sa, Pa = run_agop(p)
            row["metric"], row["agop_err"] = _test_error(p, Pa)
            row["agop_s"] = sa if row["agop_s"] is None else min(row["agop_s"], sa)
            res = run_xrfm(p, threads) if with_xrfm else None
            if res is not None:
                row["xrfm_err"] = _test_error(p, res[1])[1]
                row["xrfm_s"] = res[0] if row["xrfm_s"] is None else min(row["xrfm_s"], res[0])
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], threads: int, repeats: int = 3) -> str:
    lines = [
        "# agop vs xRFM: RFM fits (Laplace L=10, reg 1e-3, 5 iterations, full M, "
        "best iterate on validation)",
        "",
        f"{os.cpu_count()} CPU cores, {threads} threads, fastest of {repeats} fits each; "
        f"{_versions()}.",
        "",
        "| problem | n_fit | d | agop fit (s) | xRFM fit (s) | speed-up | test metric | agop "
        "| xRFM |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        xs = "n/a" if r["xrfm_s"] is None else f"{r['xrfm_s']:.2f}"
        sp = "n/a" if r["xrfm_s"] is None else f"{r['xrfm_s'] / r['agop_s']:.1f}x"
        xe = "n/a" if r["xrfm_err"] is None else f"{r['xrfm_err']:.4f}"
        lines.append(
            f"| {r['problem']} | {r['n_fit']} | {r['d']} | {r['agop_s']:.2f} | {xs} | {sp} | "
            f"{r['metric']} | {r['agop_err']:.4f} | {xe} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agop bench rfm", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="3200,12800",
                        help="n_fit of the synthetic problem, comma separated (3200,12800)")
    parser.add_argument("--datasets", default="breast_cancer,wine,diabetes,digits",
                        help="bundled data sets, comma separated ('' for none)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-xrfm", action="store_true", help="time agop only")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits per library and problem; the fastest is reported (3)")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    problems = [real_problem(n) for n in args.datasets.split(",") if n]
    problems += [synthetic_problem(int(s)) for s in args.sizes.split(",") if s]
    rows = run(problems, args.threads, with_xrfm=not args.no_xrfm, repeats=args.repeats)
    text = table(rows, args.threads, args.repeats)
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0
