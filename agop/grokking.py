"""Grokking modular arithmetic with RFM: the preset and its progress measures (SPEC §6).

The preset is the one loop, :func:`agop.rfm.fit_feature_machine`, with the settings of
the reference code of Mallinar et al. (ICML 2025): a Gaussian kernel with ``L = 2.5``
in agop's ``exp(-||x - z||_M^2 / (2 L^2))`` convention (or the quadratic kernel),
ridgeless float64 direct solves, ``M_{t+1} = [(1/n) sum_i G_i^T G_i]^{1/2}`` from the
per-output centered gradients, no normalization beyond that average, ~30 iterations.
A :class:`GrokkingRecorder` callback records, per iteration, the training and test
accuracy, the test MSE, the circulant deviation of the off-diagonal block of ``M_t``
and (once the fit is over) the alignment of ``M_t`` with the final ``M``.

Examples
--------
>>> from agop.datasets import modular_arithmetic
>>> from agop.grokking import fit_grokking
>>> res = fit_grokking(modular_arithmetic(13, "+", seed=0), iters=2)
>>> res.curve("train_accuracy").tolist()
[1.0, 1.0, 1.0]
>>> float(res.curve("alignment")[-1])
1.0
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._modular import ModularData, discrete_log_order
from .kernels import Gaussian, Kernel, Quadratic
from .measures import alignment, circulant_deviation
from .rfm import FitResult, fit_feature_machine
from .updates import AGOPUpdate, KernelMachine, finish_matrix

__all__ = [
    "GrokkingRecorder",
    "GrokkingResult",
    "cross_block",
    "fit_grokking",
    "grokking_kernel",
    "grokking_update",
    "random_circulant_M",
]

#: the reference code's Gaussian bandwidth, in agop's exp(-d^2 / (2 L^2)) convention
BANDWIDTH = 2.5
#: iterations of the preset (the figures of the paper show ~25-30)
ITERS = 30

_MULTIPLICATIVE = ("*", "/")


def grokking_update() -> AGOPUpdate:
    """The grokking update: ``M_{t+1} = [ (1/n) sum_i G_i^T G_i ]^{1/2}``.

    Returns
    -------
    AGOPUpdate
        ``power=0.5``, ``normalize="mean"``, ``centering="per_output"``, every training
        point an evaluation point (``agop_max_points=None``).

    Notes
    -----
    ``G_i`` is the ``(c, d)`` Jacobian of ``f_t`` at the training point ``x_i`` with the
    mean over points subtracted per output (the reference code's ``centering=True``).
    "No normalization" in the paper means the **average** AGOP is kept as it is:
    agop's ``normalize="mean"``.  (``normalize=None`` would keep the sum, ``n`` times
    larger, which acts as a ``sqrt(n)`` smaller bandwidth and changes the dynamics.)

    Examples
    --------
    >>> from agop.grokking import grokking_update
    >>> u = grokking_update()
    >>> u.power, u.normalize, u.centering
    (0.5, 'mean', 'per_output')
    """
    return AGOPUpdate(power=0.5, normalize="mean", centering="per_output",
                      agop_max_points=None)


def grokking_kernel(kind: str = "gaussian", bandwidth: float = BANDWIDTH) -> Kernel:
    """The kernel of the preset: ``Gaussian(2.5)`` or ``Quadratic()``.

    ``Gaussian(L)`` is ``exp(-||x - z||_M^2 / (2 L^2))``: the reference code's
    ``L = 2.5`` (the paper's ``L`` is ``2 L^2 = 12.5`` here, SPEC Part A #1).  The
    quadratic kernel ``(x^T M z)^2`` is the reference's up to its factor 3, which does
    not change a ridgeless predictor.

    Examples
    --------
    >>> from agop.grokking import grokking_kernel
    >>> grokking_kernel(), grokking_kernel("quadratic")
    (Gaussian(bandwidth=2.5), Quadratic())
    """
    if kind == "gaussian":
        return Gaussian(bandwidth)
    if kind == "quadratic":
        return Quadratic()
    raise ValueError(f"kind must be 'gaussian' or 'quadratic', got {kind!r}")


def cross_block(M: Any, p: int, op: str = "+") -> np.ndarray:
    """The off-diagonal block of a ``(2p, 2p)`` feature matrix whose structure is measured.

    Returns ``M[p:, :p]`` (rows: the second operand, columns: the first) as NumPy;
    for ``op`` in ``"*"``, ``"/"`` the block reindexed by the discrete logarithm
    (:func:`agop.datasets.discrete_log_order`) with the residue 0 dropped, the
    ``(p-1) x (p-1)`` block that is circulant for a model that has learned the task.

    Examples
    --------
    >>> import numpy as np
    >>> from agop.grokking import cross_block
    >>> M = np.arange(36.0).reshape(6, 6)
    >>> cross_block(M, 3).tolist()
    [[18.0, 19.0, 20.0], [24.0, 25.0, 26.0], [30.0, 31.0, 32.0]]
    """
    from .testing import to_numpy

    M = to_numpy(M)
    if M.shape != (2 * p, 2 * p):
        raise ValueError(f"M must be ({2 * p}, {2 * p}) for p = {p}, got {M.shape}")
    B = M[p:, :p]
    if op in _MULTIPLICATIVE:
        order = discrete_log_order(p)
        B = B[np.ix_(order, order)][1:, 1:]
    return B


class GrokkingRecorder:
    """Callback of :func:`agop.rfm.fit_feature_machine` recording the progress measures.

    Called as ``recorder(record, machine)`` after each iteration, it adds to the loop's
    history record (and to its own :attr:`history`):

    ``train_accuracy``, ``test_accuracy``
        argmax accuracy of ``f_t`` on the training / test pairs (from predictions, not
        from the interpolation identity),
    ``train_mse``, ``test_mse``
        mean over all entries of ``(f_t(x) - e_y)^2``,
    ``circulant_deviation``
        :func:`agop.measures.circulant_deviation` of :func:`cross_block` of ``M_t``
        (NaN at ``M_0 = I``, whose block is zero),
    ``alignment``
        :func:`agop.measures.alignment` of ``M_t`` with the final ``M``, filled in by
        :meth:`finish` once the fit is over,
    ``measure_seconds``
        time spent in the callback.

    Every ``M_t`` is kept in :attr:`Ms` (NumPy, ``(2p, 2p)``: small).
    """

    def __init__(self, data: ModularData) -> None:
        if not isinstance(data, ModularData):
            raise TypeError("data must be an agop.datasets.ModularData "
                            f"(from modular_arithmetic), got {type(data).__name__}")
        self.data = data
        self.history: list[dict[str, Any]] = []
        self.Ms: list[np.ndarray] = []

    def __call__(self, record: dict[str, Any], machine: KernelMachine) -> bool:
        from .testing import to_numpy

        t0 = time.perf_counter()
        d = self.data
        M = np.eye(2 * d.p) if machine.M is None else to_numpy(machine.M)
        if M.ndim == 1:  # a diagonal M (a diagonal M0, or a diagonal update)
            M = np.diag(M)
        out = {"iteration": record["iteration"]}
        for part, X, y, Y in (("train", d.X_train, d.y_train, d.Y_train),
                              ("test", d.X_test, d.y_test, d.Y_test)):
            if X.shape[0] == 0:
                out[f"{part}_accuracy"] = out[f"{part}_mse"] = float("nan")
                continue
            P = to_numpy(machine.predict(X))
            out[f"{part}_accuracy"] = float(np.mean(np.argmax(P, axis=1) == y))
            out[f"{part}_mse"] = float(np.mean((P - Y) ** 2))
        out["circulant_deviation"] = circulant_deviation(cross_block(M, d.p, d.op))
        out["alignment"] = float("nan")
        out["measure_seconds"] = time.perf_counter() - t0
        record.update(out)
        self.history.append(record)
        self.Ms.append(M)
        return False

    def finish(self, M_final: Any = None) -> None:
        """Fill in ``alignment`` of every recorded ``M_t`` with ``M_final`` (default:
        the last recorded ``M``)."""
        from .testing import to_numpy

        if not self.history:
            return
        final = self.Ms[-1] if M_final is None else to_numpy(M_final)
        for rec, M in zip(self.history, self.Ms, strict=True):
            rec["alignment"] = alignment(M, final)


@dataclass
class GrokkingResult:
    """What :func:`fit_grokking` returns: the loop's :class:`agop.FitResult`, the data
    and the per-iteration history (the loop's records with the progress measures);
    ``Ms`` holds the feature matrix ``M_t`` of every iteration (NumPy)."""

    fit: FitResult
    data: ModularData = field(repr=False)
    Ms: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.fit.history

    @property
    def M(self) -> Any:
        """The feature matrix of the last iteration."""
        return self.fit.M

    @property
    def machine(self) -> KernelMachine:
        return self.fit.machine

    def curve(self, name: str) -> np.ndarray:
        """One measure over the iterations, e.g. ``curve("test_accuracy")``."""
        if not self.history or name not in self.history[0]:
            known = sorted(self.history[0]) if self.history else []
            raise ValueError(f"no measure {name!r} in the history; known: {known}")
        return np.array([rec[name] for rec in self.history], dtype=float)

    @property
    def seconds_per_iteration(self) -> float:
        """Median wall time of one iteration of the loop (solve + AGOP update +
        the recorder's measures)."""
        return float(np.median(self.curve("seconds")))


def fit_grokking(
    data: ModularData,
    *,
    kernel: str | Kernel = "gaussian",
    iters: int = ITERS,
    M0: Any = None,
    callbacks: Sequence[Callable[[dict[str, Any], KernelMachine], Any]] = (),
    verbose: bool = False,
) -> GrokkingResult:
    """Run RFM on a modular arithmetic task with the grokking preset.

    Parameters
    ----------
    data : ModularData
        From :func:`agop.datasets.modular_arithmetic` (float64 inputs).
    kernel : "gaussian", "quadratic" or a Kernel
        See :func:`grokking_kernel`; a kernel object is used as it is.
    iters : int >= 0
        Number of AGOP updates; ``iters + 1`` kernel machines are fitted.  ``iters=0``
        with ``M0`` is a plain kernel machine with fixed features (e.g.
        :func:`random_circulant_M`).
    M0 : array (2p, 2p), optional
        Starting feature matrix (identity by default).
    callbacks : sequence of ``cb(record, machine)``
        More callbacks for the loop, called after the recorder.
    verbose : bool
        Progress bar / logging of the loop.

    Returns
    -------
    GrokkingResult
        ``history`` has, per iteration, the loop's fields and the
        :class:`GrokkingRecorder` measures; ``curve(name)`` gives one as an array.

    Notes
    -----
    The loop runs with ``reg=0`` (ridgeless: ``coef = K^{-1} Y``), ``solver="direct"``,
    no validation data (every iteration runs; the last is returned) and
    :func:`grokking_update`.  The alignment is taken with the ``M`` of the last
    iteration.  SPEC §6.5 lists an independent run of ``p = 61``, ``x + y``, ``r = 0.5``:
    test accuracy 0.075 at iteration 11, 0.897 at 15, 0.991 at 18.
    """
    if not isinstance(data, ModularData):
        raise TypeError("data must be an agop.datasets.ModularData "
                        f"(from modular_arithmetic), got {type(data).__name__}")
    kern = kernel if isinstance(kernel, Kernel) else grokking_kernel(kernel)
    recorder = GrokkingRecorder(data)
    res = fit_feature_machine(
        data.X_train, data.Y_train, kern, grokking_update(),
        iters=iters, reg=0.0, solver="direct", M0=M0, metric="accuracy",
        early_stop_tol=None, return_best=False, callbacks=[recorder, *callbacks],
        verbose=verbose,
    )
    recorder.finish()
    return GrokkingResult(res, data, recorder.Ms)


def random_circulant_M(p: int, op: str = "+", *, seed: Any = 0) -> np.ndarray:
    """Random circulant features for modular arithmetic (SPEC §6.3), ready as ``M``.

    Builds ``M* = [[A, C], [C^T, A]]`` with ``A = I - (1/p) 1 1^T`` and ``C`` a random
    circulant whose first column has iid ``U[0, 1]`` entries, centered; ``C`` is the
    Hankel matrix ``rot90(C)`` for ``"-"``; for ``"*"`` and ``"/"`` the (rotated)
    circulant lives on the nonzero residues in discrete-log order.  Returns
    ``M = (M*)^{1/2}`` (negative eigenvalues clipped to 0), so that a kernel with this
    ``M`` sees ``x -> (M*)^{1/4} x``, the reference code's random-circulant kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from agop.grokking import random_circulant_M
    >>> M = random_circulant_M(7)
    >>> M.shape, bool(np.allclose(M, M.T)), bool(np.linalg.eigvalsh(M).min() > -1e-12)
    ((14, 14), True, True)
    """
    from scipy.linalg import circulant

    rng = np.random.default_rng(seed)
    if op in _MULTIPLICATIVE:
        order = discrete_log_order(p)
        col = rng.uniform(size=p - 1)
        Clog = circulant(col - col.mean())
        if op == "/":
            Clog = np.rot90(Clog)
        C = np.zeros((p, p))
        C[np.ix_(order[1:], order[1:])] = Clog
    elif op in ("+", "-"):
        if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 2:
            raise ValueError(f"p must be an integer >= 2, got {p!r}")
        col = rng.uniform(size=p)
        C = circulant(col - col.mean())
        if op == "-":
            C = np.rot90(C)
    else:
        raise ValueError(f"op must be one of '+', '-', '*', '/', got {op!r}")
    A = np.eye(p) - np.full((p, p), 1.0 / p)
    Mstar = np.block([[A, C], [C.T, A]])
    return finish_matrix(Mstar, power=0.5, normalize="mean")
