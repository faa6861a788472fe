"""The one feature-learning loop of agop (ARCHITECTURE §1).

``fit_feature_machine`` alternates a kernel ridge solve with an update rule::

    M_0 = I (or the given M0)
    for t = 0 .. iters:
        coef_t = (K_{M_t}(X, X) + reg I)^{-1} Y           # solver: direct or PCG
        score  = metric of f_t on the training and validation data
        if t < iters: M_{t+1} = update(f_t, X, Y)          # AGOP, FACT, patch AGOP, ...

and returns the chosen iterate: with validation data the one with the best validation
score (stopping early once a score is worse than best x ``early_stop_tol``), without
validation data the last one (SPEC Part A #6).  Every estimator of agop runs this loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._lib._compat import array_device
from ._lib._scratch import scratch_pool
from ._lib._validation import as_float_array, check_real_scalar, namespace_of
from .kernels import Kernel
from .solvers import SOLVERS, SolveInfo, solve_kernel_ridge
from .updates import AGOPUpdate, KernelMachine, KernelMatrixLoan, MachineKernel, UpdateRule

__all__ = ["METRICS", "FitResult", "fit_feature_machine", "score"]

logger = logging.getLogger("agop")

#: metric name -> True when larger is better
METRICS: dict[str, bool] = {
    "mse": False,
    "rmse": False,
    "mae": False,
    "brier": False,
    "accuracy": True,
}


def _clip_proba(P: Any, xp: Any, eps: float = 1e-3) -> Any:
    P = xp.clip(P, eps, 1.0 - eps)
    if P.shape[1] == 1:
        return P
    return P / xp.sum(P, axis=1, keepdims=True)


def score(metric: str, Y: Any, P: Any) -> float:
    """A metric of predictions ``P`` against (encoded) targets ``Y``, both ``(n, c)``.

    ``"mse"``, ``"rmse"``, ``"mae"``: over all entries.  ``"accuracy"``: one column:
    ``P > 0.5`` against ``Y > 0.5``; several: argmax against argmax.  ``"brier"``: mean
    over points of the squared error of the clipped, renormalized probabilities.
    """
    xp = namespace_of(Y, P)
    if metric == "mse":
        return float(xp.mean((P - Y) ** 2))
    if metric == "rmse":
        return float(xp.sqrt(xp.mean((P - Y) ** 2)))
    if metric == "mae":
        return float(xp.mean(xp.abs(P - Y)))
    if metric == "accuracy":
        if Y.shape[1] == 1:
            hit = (P[:, 0] > 0.5) == (Y[:, 0] > 0.5)
        else:
            hit = xp.argmax(P, axis=1) == xp.argmax(Y, axis=1)
        return float(xp.mean(xp.astype(hit, P.dtype)))
    if metric == "brier":
        return float(xp.mean(xp.sum((_clip_proba(P, xp) - Y) ** 2, axis=1)))
    raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")


@dataclass
class FitResult:
    """What :func:`fit_feature_machine` returns.

    ``machine`` is the chosen iterate ``f_t`` (its ``M``, ``coef``); ``history`` has one
    dict per iteration run: ``iteration``, ``metric``, ``train_metric``, ``val_metric``
    (``None`` without validation data), ``seconds`` (solve + scoring + update),
    ``solver``, ``solver_iterations`` and, with ``keep_M=True``, ``M`` (the matrix the
    iterate used).
    """

    machine: KernelMachine
    history: list[dict[str, Any]]
    best_iter: int
    n_iter: int
    stopped_early: bool = False
    last_M: Any = field(default=None, repr=False)

    @property
    def M(self) -> Any:
        return self.machine.M

    @property
    def coef(self) -> Any:
        return self.machine.coef


def _as_2d_targets(Y: Any, name: str, xp: Any, device: Any, dtype: Any, n: int) -> Any:
    Y = as_float_array(Y, name, xp, ndim=(1, 2), device=device, int_dtype=dtype)
    if Y.shape[0] != n:
        raise ValueError(f"{name} has {Y.shape[0]} rows but its inputs have {n}")
    if Y.ndim == 1:
        Y = xp.reshape(Y, (n, 1))
    return xp.astype(Y, dtype, copy=False)


def fit_feature_machine(
    X: Any,
    Y: Any,
    kernel: Kernel,
    update: UpdateRule | None = None,
    *,
    iters: int = 5,
    reg: float = 1e-3,
    solver: str = "auto",
    M0: Any = None,
    X_val: Any = None,
    Y_val: Any = None,
    metric: str = "mse",
    early_stop_tol: float | None = 1.1,
    return_best: bool = True,
    keep_M: bool = False,
    callbacks: Sequence[Callable[[dict[str, Any], KernelMachine], Any]] = (),
    verbose: bool = False,
    random_state: Any = None,
) -> FitResult:
    """Run the feature-learning loop (RFM when ``update`` is an :class:`AGOPUpdate`).

    Parameters
    ----------
    X : array, shape (n, d)
        Training inputs (any Array-API namespace; every result stays in it).
    Y : array, shape (n, c) or (n,)
        Training targets (one-hot or 0/1 columns for classification).
    kernel : agop.kernels.Kernel or agop.updates.MachineKernel
        A kernel of rows, or a kernel that builds its own machine (e.g.
        :class:`agop.conv.ConvKernel` on flattened images).
    update : UpdateRule, default ``AGOPUpdate()``
        Makes ``M_{t+1}`` from ``f_t``.
    iters : int >= 0
        Number of updates; the loop fits ``iters + 1`` machines (``M_0 .. M_iters``).
    reg : float >= 0
        Ridge ``lambda``.
    solver : {"auto", "direct", "pcg"}
        See :func:`agop.solvers.solve_kernel_ridge`; PCG starts from the previous
        iterate's coefficients.
    M0 : None, array (d, d) or (d,)
        Starting feature matrix (identity by default; a vector of ones for a diagonal
        update).
    X_val, Y_val : arrays, optional
        Validation data: select the best iterate and stop early.
    metric : {"mse", "rmse", "mae", "accuracy", "brier"}
        Scored on training and validation data each iteration.
    early_stop_tol : float >= 1 or None
        Stop once the validation score is worse than the best by this factor (for
        "accuracy": below best / tol).  ``None`` never stops early.
    return_best : bool
        With validation data, return the best iterate (else the last one run).
    keep_M : bool
        Store each iterate's ``M`` in its history record.
    callbacks : sequence of callables ``cb(record, machine)``
        Called after each iteration is scored; returning ``True`` stops the loop.
    verbose : bool
        A tqdm progress bar when tqdm is installed, else one ``logging`` INFO line per
        iteration (logger ``"agop"``).
    random_state : None, int or numpy Generator
        Seeds the PCG preconditioner (the update rule has its own ``random_state``).

    Returns
    -------
    FitResult

    Examples
    --------
    >>> import numpy as np, agop
    >>> from agop.rfm import fit_feature_machine
    >>> from agop.datasets import low_rank
    >>> X, y = low_rank(600, random_state=0)
    >>> res = fit_feature_machine(X, y, agop.Laplace(10.0), iters=3)
    >>> top = np.argsort(-np.diag(res.M))[:3]
    >>> sorted(int(i) for i in top)
    [0, 1, 5]
    """
    if not isinstance(kernel, Kernel | MachineKernel):
        raise TypeError(f"kernel must be an agop kernel object, got {type(kernel).__name__}")
    update = AGOPUpdate() if update is None else update
    if not isinstance(update, UpdateRule):
        raise TypeError(f"update must be an agop.updates.UpdateRule, got {type(update).__name__}")
    if isinstance(iters, bool) or not isinstance(iters, int | np.integer) or iters < 0:
        raise ValueError(f"iters must be an int >= 0, got {iters!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if early_stop_tol is not None:
        early_stop_tol = check_real_scalar(early_stop_tol, "early_stop_tol", low=1.0,
                                           low_open=False)
    if (X_val is None) != (Y_val is None):
        raise ValueError("pass both X_val and Y_val, or neither")
    reg = check_real_scalar(reg, "reg", low=0.0, low_open=False)

    xp = namespace_of(X, Y, X_val, Y_val, M0)
    X = as_float_array(X, "X", xp, ndim=(2,))
    device, dtype = array_device(X), X.dtype
    n, d = X.shape
    Y = _as_2d_targets(Y, "Y", xp, device, dtype, n)
    if X_val is not None:
        X_val = xp.astype(as_float_array(X_val, "X_val", xp, ndim=(2,), device=device), dtype)
        if X_val.shape[1] != d:
            raise ValueError(f"X_val has {X_val.shape[1]} features but X has {d}")
        Y_val = _as_2d_targets(Y_val, "Y_val", xp, device, dtype, X_val.shape[0])
        if Y_val.shape[1] != Y.shape[1]:
            raise ValueError(f"Y_val has {Y_val.shape[1]} columns but Y has {Y.shape[1]}")
    M = M0
    if M is None and update.diag:
        M = xp.ones((d,), dtype=dtype, device=device)
    larger_better = METRICS[metric]
    rng = np.random.default_rng(random_state) if not isinstance(
        random_state, np.random.Generator) else random_state

    bar = _progress(iters + 1, verbose)
    history: list[dict[str, Any]] = []
    best_iter, best_val, best_machine = 0, None, None
    machine = None
    coef_prev = None
    stopped = False
    # buffers the solver reuses from one iteration to the next (the in-memory kernel
    # matrix of PCG), released when the fit returns
    workspace: dict[str, Any] = {}
    # and the ops' row-block buffers (each size faulted in once per fit)
    with scratch_pool():
        try:
            for t in range(iters + 1):
                t0 = time.perf_counter()
                machine, info = _solve(kernel, X, Y, M, reg, solver, coef_prev, rng, workspace)
                coef_prev = machine.coef
                # train predictions from the normal equations: K coef = Y - reg coef
                train = score(metric, Y, Y - reg * machine.coef)
                val = None if X_val is None else score(metric, Y_val, machine.predict(X_val))
                record: dict[str, Any] = {
                    "iteration": t,
                    "metric": metric,
                    "train_metric": train,
                    "val_metric": val,
                    "solver": info.solver,
                    "solver_iterations": info.iterations,
                }
                if keep_M:
                    record["M"] = M
                if val is not None and (best_val is None or _better(val, best_val, larger_better)):
                    best_iter, best_val, best_machine = t, val, machine
                stop = any(bool(cb(record, machine)) for cb in callbacks)
                if (
                    val is not None
                    and early_stop_tol is not None
                    and _worse_by(val, best_val, early_stop_tol, larger_better)
                ):
                    stop = True
                    stopped = t < iters
                if t < iters and not stop:
                    # the solver's in-memory kernel matrix of this iterate, if it kept one: the
                    # AGOP reads its gradient weights off it, in place (the next solve rewrites
                    # the buffer; only the update sees it)
                    K_train = workspace.get("K")
                    loan = None if K_train is None else KernelMatrixLoan(
                        K_train, lower=workspace.get("K_lower", False))
                    M = update(machine if loan is None or not isinstance(machine, KernelMachine)
                               else replace(machine, train_kernel=loan),
                               X, Y, iteration=t)
                    del loan
                    del K_train
                    if not bool(xp.any(M != 0)):
                        logger.warning("iteration %d: the update is zero (a constant predictor); "
                                       "stopping with the last iterate", t)
                        stop = True
                record["seconds"] = time.perf_counter() - t0
                history.append(record)
                _report(bar, record, verbose)
                if stop:
                    stopped = stopped or t < iters
                    break
        finally:
            if bar is not None:
                bar.close()
    n_iter = history[-1]["iteration"]
    if best_machine is None or not return_best:
        best_iter, best_machine = n_iter, machine
    return FitResult(best_machine, history, best_iter, n_iter, stopped, last_M=M)


def _solve(kernel, X, Y, M, reg, solver, coef0, rng,
           workspace=None) -> tuple[KernelMachine, SolveInfo]:
    if isinstance(kernel, MachineKernel):
        return kernel.solve(X, Y, M, reg, solver=solver, coef0=coef0, random_state=rng)
    proto = KernelMachine.build(kernel, X, None, M)
    coef, info = solve_kernel_ridge(
        kernel, proto.centers_mapped, Y, reg, solver=solver, coef0=coef0, random_state=rng,
        workspace=workspace,
    )
    return KernelMachine(kernel, X, coef, M, proto.fmap, proto.centers_mapped), info


def _better(a: float, b: float, larger_better: bool) -> bool:
    return a > b if larger_better else a < b


def _worse_by(val: float, best: float, tol: float, larger_better: bool) -> bool:
    return val < best / tol if larger_better else val > best * tol


def _progress(total: int, verbose: bool):
    if not verbose:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="RFM", unit="iter")


def _report(bar, record: dict[str, Any], verbose: bool) -> None:
    val = record["val_metric"]
    text = (f"iteration {record['iteration']}: train {record['metric']} "
            f"{record['train_metric']:.5g}"
            + ("" if val is None else f", validation {val:.5g}")
            + f" ({record['seconds']:.2f} s)")
    if bar is not None:
        bar.set_postfix_str(text.split(": ", 1)[1])
        bar.update(1)
    else:
        logger.log(logging.INFO if verbose else logging.DEBUG, text)
