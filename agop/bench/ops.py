"""``agop bench ops``: kernel matrix, kernel-matrix product and AGOP against xRFM and the floor.

For each kernel (Laplace, L1 = product Laplace), size ``n`` (evaluation points = centers),
dimension ``d`` and number of outputs ``c``, one run times

- **agop-numba**: ``agop`` with ``backend="numba_cpu"`` (the default for NumPy input);
- **agop-generic**: ``backend="generic"``, the Array-API path on NumPy;
- **xRFM**: xRFM 0.4.5's kernel object on the same float32 data as torch tensors, with
  its own AGOP batching (10 000 evaluation points per batch, as its ``RFM`` does on CPU)
  and, for the product, its kernel matrix times the coefficients in the same batches;
- **floor**: the operation's FLOP count divided by the float32 GEMM rate measured in the
  same run, and for the kernel matrix at least the time to allocate and write its
  ``n x n`` output at the rate measured in the same run (``2 n m d`` for distances,
  ``2 n m c`` for the product, ``2 n m c d`` for the gradient sums, ``2 n c d^2`` for
  the outer products; the L1 kernel, which has no GEMM form, is counted as ``3 n m d``
  for its distances and ``3 n m c d`` for its gradients).

Times are the best of two calls after a warm-up (one call when a call takes longer than
10 s).  A measurement whose time predicted from the smaller size (``n^2`` scaling)
exceeds ``--max-seconds`` is skipped and marked as such.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

from .rfm import _versions

OPS = ("kernel_matrix", "kernel_mv", "agop")
XRFM_BATCH = 10_000


def gemm_gflops(dtype: Any = np.float32) -> float:
    """float32 GEMM rate of this machine (best of three 4096 x 256 x 4096 products)."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4096, 256)).astype(dtype)
    B = rng.normal(size=(256, 4096)).astype(dtype)
    best = np.inf
    for _ in range(4):
        t0 = time.perf_counter()
        A @ B
        best = min(best, time.perf_counter() - t0)
    return 2 * 4096 * 256 * 4096 / best / 1e9


def write_gbps(dtype: Any = np.float32, n: int = 4096) -> float:
    """Rate, in GB/s, at which a fresh ``n x n`` array is allocated and written (best of
    three): a kernel matrix must at least do this for its output."""
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        a = np.empty((n, n), dtype=dtype)
        a.fill(1.0)
        best = min(best, time.perf_counter() - t0)
        del a
    return n * n * np.dtype(dtype).itemsize / best / 1e9


def floor_seconds(op: str, kernel: str, n: int, d: int, c: int, gflops: float,
                  gbps: float) -> float:
    """The larger of the FLOP floor and, for the kernel matrix, the time to write its
    ``n x n`` float32 output."""
    t = flops(op, kernel, n, d, c) / (gflops * 1e9)
    if op == "kernel_matrix":
        t = max(t, 4.0 * n * n / (gbps * 1e9))
    return t


def flops(op: str, kernel: str, n: int, d: int, c: int) -> float:
    """FLOP count of one op with ``n`` evaluation points and ``n`` centers."""
    per = 3 if kernel == "l1" else 2  # L1: difference, absolute value, sum
    dist = per * n * n * d
    if op == "kernel_matrix":
        return dist
    if op == "kernel_mv":
        return dist + 2 * n * n * c
    return dist + per * n * n * c * d + 2 * n * c * d * d


def _timed(fn, slow_after: float = 10.0) -> float:
    t0 = time.perf_counter()
    fn()
    best = time.perf_counter() - t0
    if best < slow_after:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _agop_call(op: str, kernel: Any, X: np.ndarray, coef: np.ndarray, backend: str):
    import agop

    if op == "kernel_matrix":
        return lambda: agop.kernel_matrix(kernel, X, X, backend=backend)
    if op == "kernel_mv":
        return lambda: agop.kernel_mv(kernel, X, X, coef, backend=backend)
    return lambda: agop.agop(kernel, X, X, coef, backend=backend)


def _xrfm_call(op: str, name: str, X: np.ndarray, coef: np.ndarray):
    try:
        import torch
        from xrfm.rfm_src.kernels import LaplaceKernel, ProductLaplaceKernel
    except ImportError:
        return None
    kern = (LaplaceKernel if name == "laplace" else ProductLaplaceKernel)(
        bandwidth=10.0, exponent=1.0
    )
    Xt = torch.from_numpy(X)
    coefs = torch.from_numpy(np.ascontiguousarray(coef.T))  # xRFM: (c, n)
    n = X.shape[0]

    def batches():
        return [(i, min(i + XRFM_BATCH, n)) for i in range(0, n, XRFM_BATCH)]

    if op == "kernel_matrix":
        return lambda: kern.get_kernel_matrix(Xt, Xt)
    if op == "kernel_mv":
        return lambda: [kern.get_kernel_matrix(Xt[a:b], Xt) @ coefs.T for a, b in batches()]

    def agop_batched():
        A = 0
        for a, b in batches():
            A = A + kern.get_agop(Xt, Xt[a:b], coefs)
        return A / n

    return agop_batched


def _warm_up() -> None:
    import agop

    X = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    for k in (agop.Laplace(10.0), agop.ProductLaplace(10.0)):
        for op in OPS:
            _agop_call(op, k, X, X[:, :1], "numba_cpu")()


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import agop

    sizes = sorted(int(s) for s in args.sizes.split(","))
    impls = ["numba"] + ["generic"] * (not args.no_generic) + ["xrfm"] * (not args.no_xrfm)
    _warm_up()
    rows = []
    last: dict[tuple, tuple[int, float]] = {}  # (impl, kernel, op, d, c) -> (n, seconds)
    for name in args.kernels.split(","):
        kernel = agop.Laplace(10.0) if name == "laplace" else agop.ProductLaplace(10.0)
        for n in sizes:
            for d in (int(v) for v in args.dims.split(",")):
                rng = np.random.default_rng(0)
                X = rng.normal(size=(n, d)).astype(np.float32)
                for c in (int(v) for v in args.outputs.split(",")):
                    coef = rng.normal(size=(n, c)).astype(np.float32)
                    for op in OPS:
                        if op == "kernel_matrix" and c != min(
                            int(v) for v in args.outputs.split(",")
                        ):
                            continue  # no outputs involved
                        row = {"kernel": name, "op": op, "n": n, "d": d,
                               "c": "-" if op == "kernel_matrix" else c,
                               "floor": floor_seconds(op, name, n, d, c, args.gflops,
                                                      args.gbps)}
                        for impl in impls:
                            key = (impl, name, op, d, c)
                            if key in last:
                                n0, s0 = last[key]
                                predicted = s0 * (n / n0) ** 2
                                if predicted > args.max_seconds:
                                    row[impl] = f"skipped (~{predicted:.0f} s)"
                                    continue
                            if impl == "xrfm":
                                fn = _xrfm_call(op, name, X, coef)
                                if fn is None:
                                    row[impl] = "n/a"
                                    continue
                            else:
                                backend = "numba_cpu" if impl == "numba" else "generic"
                                fn = _agop_call(op, kernel, X, coef, backend)
                            seconds = _timed(fn)
                            last[key] = (n, seconds)
                            row[impl] = seconds
                        rows.append(row)
                        sys.stderr.write(f"{row}\n")
    return rows


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# agop ops: numba vs generic vs xRFM vs the machine's floor (float32, seconds)",
        "",
        f"{os.cpu_count()} CPU cores, {args.threads} threads; float32 GEMM "
        f"{args.gflops:.1f} GFLOP/s and fresh-array write rate {args.gbps:.1f} GB/s measured "
        f"in this run; {_versions()}.",
        "Evaluation points = centers = n; Laplace and L1 (product Laplace) with bandwidth 10; "
        "floor = FLOP count / GEMM rate, for the kernel matrix at least the time to write "
        "its n x n output (see `agop/bench/ops.py`).",
        "",
        "| kernel | op | n | d | c | agop-numba | agop-generic | xRFM | floor | numba / floor "
        "| xRFM / numba |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        nb, xr = r.get("numba"), r.get("xrfm")
        vs_floor = f"{nb / r['floor']:.2f}" if isinstance(nb, float) else "n/a"
        speedup = f"{xr / nb:.1f}x" if isinstance(nb, float) and isinstance(xr, float) else "n/a"
        lines.append(
            f"| {r['kernel']} | {r['op']} | {r['n']} | {r['d']} | {r['c']} | {_fmt(nb)} | "
            f"{_fmt(r.get('generic', 'n/a'))} | {_fmt(xr if xr is not None else 'n/a')} | "
            f"{r['floor']:.3f} | {vs_floor} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agop bench ops", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--dims", default="20,100")
    parser.add_argument("--outputs", default="1,10")
    parser.add_argument("--kernels", default="laplace,l1")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-xrfm", action="store_true", help="skip xRFM")
    parser.add_argument("--no-generic", action="store_true", help="skip the generic path")
    parser.add_argument("--max-seconds", type=float, default=90.0,
                        help="skip a measurement predicted to take longer (default 90)")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    args.gflops = gemm_gflops()
    args.gbps = write_gbps()
    rows = run(args)
    text = table(rows, args)
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0
