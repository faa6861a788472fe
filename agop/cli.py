"""The ``agop`` command line.

``agop fit``: fit a Recursive Feature Machine to a CSV file or a bundled data set, report
each iteration and the learned feature importances, save the model and pictures of M.
``agop predict``: predictions of a saved model for a CSV file.
``agop demo``: fit a kernel machine on the low-rank problem of the original RFM paper,
compute its AGOP and print which input coordinates it finds relevant.
``agop bench NAME``: benchmarks against the peers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import __version__
from ._ops import agop, kernel_matrix, kernel_mv
from ._tabular import run_fit, run_predict
from .bench import names as bench_names
from .datasets import dataset_names, low_rank
from .kernels import kernel_names, make_kernel
from .solvers import solve_ridge

TRUE_SUPPORT = (0, 1, 5)


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agop", description="Feature learning with the Average Gradient Outer Product."
    )
    parser.add_argument("--version", action="version", version=f"agop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="kernel machine + AGOP on a generated low-rank problem",
        description=(
            "Fit a kernel ridge machine to y = x0*x1*1{x5 > 0} with x ~ N(0, 0.25 I_d), "
            "compute the AGOP of the fitted predictor at the training points, and print "
            "the coordinates it ranks highest (the true ones are 0, 1 and 5)."
        ),
    )
    demo.add_argument("--n", type=_positive_int, default=4000, help="training points (4000)")
    demo.add_argument("--n-test", type=_positive_int, default=1000, help="test points (1000)")
    demo.add_argument("--d", type=_positive_int, default=20, help="dimension, >= 6 (20)")
    demo.add_argument("--kernel", default="laplace", choices=kernel_names(), help="(laplace)")
    demo.add_argument("--bandwidth", type=float, default=10.0, help="kernel bandwidth (10)")
    demo.add_argument("--reg", type=float, default=1e-3, help="ridge lambda (1e-3)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.add_argument("--top", type=_positive_int, default=8, help="rows of the table (8)")
    fit = sub.add_parser(
        "fit",
        help="fit a Recursive Feature Machine to a CSV file or a bundled data set",
        description=(
            "Fit an RFM (agop.RFMRegressor / RFMClassifier) and report each iteration, the "
            "test score and the most important features; save the model and pictures of "
            "M.  Without --data or --dataset it fits the bundled low-rank problem."
        ),
    )
    src = fit.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="FILE.csv", help="CSV file with a header row")
    src.add_argument("--dataset", metavar="NAME",
                     help="bundled data set: " + ", ".join(dataset_names()))
    fit.add_argument("--target", metavar="COL", help="target column of --data (default: last)")
    fit.add_argument("--task", choices=("auto", "regression", "classification"), default="auto")
    fit.add_argument("--kernel", default="laplace", choices=kernel_names(), help="(laplace)")
    fit.add_argument("--bandwidth", default="10", help="a number or 'median' (10)")
    fit.add_argument("--reg", type=float, default=1e-3, help="ridge lambda (1e-3)")
    fit.add_argument("--iters", type=_nonnegative_int, default=5, help="M updates (5)")
    fit.add_argument("--diag", action="store_true", help="learn a diagonal M")
    fit.add_argument("--agop-power", type=float, default=1.0, help="M = AGOP^power (1)")
    fit.add_argument("--normalize", default="max", choices=("max", "fro", "trace", "mean", "none"))
    fit.add_argument("--centering", default="none", choices=("none", "per_output", "pooled"))
    fit.add_argument("--solver", default="auto", choices=("auto", "direct", "pcg"))
    fit.add_argument("--test-size", type=float, default=0.2, help="held-out fraction (0.2)")
    fit.add_argument("--val-size", type=float, default=0.2,
                     help="fraction of the training part used to pick the best iterate and "
                     "stop early (0.2; 0 for none: the last iterate)")
    fit.add_argument("--no-standardize", action="store_true",
                     help="do not z-score the features (default: z-score with training stats)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (0)")
    fit.add_argument("--out", default="agop_model", metavar="PREFIX",
                     help="writes PREFIX.npz, PREFIX.json, PREFIX_M.png, "
                     "PREFIX_importances.png (agop_model)")
    fit.add_argument("--no-plots", action="store_true", help="do not write the PNG files")
    pred = sub.add_parser(
        "predict",
        help="predict with a model saved by agop fit",
        description="Read MODEL.npz (and MODEL.json from agop fit), predict for a CSV file.",
    )
    pred.add_argument("model", help="PREFIX.npz written by agop fit")
    pred.add_argument("--data", required=True, metavar="FILE.csv")
    pred.add_argument("--out", metavar="FILE.csv", help="write predictions here (default: stdout)")
    pred.add_argument("--proba", action="store_true", help="class probabilities (classifiers)")
    bench = sub.add_parser(
        "bench",
        help="benchmarks against the peers (xRFM, scikit-learn)",
        description="Run the benchmark NAME; options after NAME go to it (agop bench NAME -h).",
    )
    bench.add_argument("name", help="benchmark name: " + ", ".join(bench_names()))
    bench.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark")
    return parser


def run_bench(name: str, options: Sequence[str]) -> int:
    """Run ``agop.bench.<name>.main(options)``."""
    if name not in bench_names():
        raise ValueError(f"unknown benchmark {name!r}; choose one of {bench_names()}")
    module = importlib.import_module(f"agop.bench.{name}")
    return int(module.main(list(options)) or 0)


def run_demo(args: argparse.Namespace, out=None) -> dict:
    """Run the demo; print the report to ``out`` (stdout) and return its numbers."""
    out = sys.stdout if out is None else out
    t0 = time.perf_counter()
    X, y = low_rank(args.n + args.n_test, args.d, random_state=args.seed)
    X_train, y_train, X_test, y_test = X[: args.n], y[: args.n], X[args.n :], y[args.n :]
    params = {} if args.kernel == "quadratic" else {"bandwidth": args.bandwidth}
    kernel = make_kernel(args.kernel, **params)
    coef = solve_ridge(kernel_matrix(kernel, X_train, X_train), y_train, args.reg)
    mse = float(np.mean((kernel_mv(kernel, X_test, X_train, coef) - y_test) ** 2))
    null_mse = float(np.mean((y_test - y_train.mean()) ** 2))
    weights = np.diag(agop(kernel, X_train, X_train, coef))
    weights = weights / weights.max()
    order = np.argsort(-weights)
    relevant = sorted(int(i) for i in np.flatnonzero(weights >= 3 * np.median(weights)))
    seconds = time.perf_counter() - t0

    w = out.write
    w("agop demo: which inputs does a kernel machine use?\n")
    w(f"  data    y = x0 * x1 * 1{{x5 > 0}},  x ~ N(0, 0.25 I_{args.d}),  "
      f"n = {args.n} train / {args.n_test} test\n")
    w(f"  model   {kernel!r}, ridge {args.reg:g}\n")
    w(f"  test MSE {mse:.5f}  (predicting the mean: {null_mse:.5f})\n\n")
    w("  rank  coordinate  AGOP diagonal (relative)\n")
    for rank, i in enumerate(order[: args.top], start=1):
        bar = "#" * max(1, round(30 * weights[i])) if weights[i] > 0 else ""
        mark = "  <- true" if i in TRUE_SUPPORT else ""
        w(f"  {rank:>4}  {i:>10}  {weights[i]:8.4f}  {bar}{mark}\n")
    verdict = "matches" if tuple(relevant) == TRUE_SUPPORT else "differs from"
    w(f"\n  coordinates with AGOP weight >= 3 x median: {relevant} ({verdict} the true "
      f"{list(TRUE_SUPPORT)})\n")
    w(f"  {seconds:.1f} s\n")
    return {"mse": mse, "null_mse": null_mse, "weights": weights, "relevant": relevant}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "demo":
            run_demo(args)
        elif args.command == "fit":
            run_fit(args)
        elif args.command == "predict":
            run_predict(args)
        elif args.command == "bench":
            return run_bench(args.name, args.options)
    except (ValueError, TypeError, OSError) as exc:
        print(f"agop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
