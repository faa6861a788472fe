"""Update rules of the feature-learning loop: how the next feature matrix M is made.

An update rule is called as ``rule(machine, X, Y, iteration=t)`` with the fitted kernel
machine ``f_t`` (a :class:`KernelMachine`), the training inputs and (encoded) targets,
and returns ``M_{t+1}``: a ``(d, d)`` symmetric PSD matrix, or a ``(d,)`` vector when the
rule's ``diag`` is true.  :class:`AGOPUpdate` is the Recursive Feature Machine; FACT-RFM
and ConvRFM implement the same interface with another statistic of ``f_t``.

Every rule ends in the same post-processing (:func:`finish_matrix`): a matrix power
``s`` (SPEC Part A #3) and a normalization (Part A #2).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._lib._compat import array_device, is_array, is_numpy_namespace
from ._lib._validation import check_real_scalar, namespace_of
from ._ops import (
    FeatureMap,
    agop,
    fact_mapped,
    feature_map,
    kernel_mv,
    predictor_grads,
    thin_factor,
)
from .kernels import Kernel

__all__ = [
    "FACT_VARIANTS",
    "NORMALIZATIONS",
    "AGOPUpdate",
    "FACTUpdate",
    "KernelMachine",
    "MachineKernel",
    "UpdateRule",
    "block_diagonal",
    "finish_matrix",
]

NORMALIZATIONS = ("max", "fro", "trace", "mean", None)
FACT_VARIANTS = ("fact", "geometric", "inner_product")
_CENTERINGS = (None, "per_output", "pooled")


@dataclass(frozen=True, eq=False)
class KernelMachine:
    """The predictor ``f(x) = sum_j coef_j k_M(x, centers_j)`` of one iteration.

    ``fmap`` is the factor of ``M`` (computed once); ``centers_mapped`` are the centers
    mapped by it.  All arrays share one namespace and device.
    """

    kernel: Kernel
    centers: Any  # (n, d)
    coef: Any  # (n, c)
    M: Any  # None, (d,) or (d, d)
    fmap: FeatureMap
    centers_mapped: Any
    #: a :class:`KernelMatrixLoan` of ``K(centers_mapped, centers_mapped)`` while the
    #: solver still holds it: the RFM loop hands it to the update rule only (the first
    #: AGOP over the centers consumes it; later calls recompute)
    train_kernel: Any = field(default=None, repr=False)

    @classmethod
    def build(cls, kernel: Kernel, centers: Any, coef: Any, M: Any = None) -> KernelMachine:
        xp = namespace_of(centers)
        fmap = feature_map(M, centers.shape[1], xp, centers.dtype, thin=thin_factor(kernel))
        return cls(kernel, centers, coef, M, fmap, fmap.apply(centers))

    @property
    def n_features(self) -> int:
        return self.centers.shape[1]

    def predict(self, X: Any) -> Any:
        """``f(X)``, shape ``(m, c)``."""
        return kernel_mv(self.kernel, self.fmap.apply(X), self.centers_mapped, self.coef)

    def grads(self, X: Any) -> Any:
        """Input gradients ``(m, c, d)`` of ``f`` at the rows of ``X``."""
        G = predictor_grads(self.kernel, self.fmap.apply(X), self.centers_mapped, self.coef)
        return self.fmap.grads_back(G)

    def agop(self, X: Any, *, centering: str | None = None, diag: bool = False) -> Any:
        """AGOP of ``f`` over the rows of ``X`` (see :func:`agop.agop`)."""
        inside = diag and self.fmap.metric != "full"
        A = None
        if self.train_kernel is not None and X is self.centers:
            A = self._agop_from_train_kernel(centering, inside)
        if A is None:
            A = agop(
                self.kernel,
                self.fmap.apply(X),
                self.centers_mapped,
                self.coef,
                centering=centering,
                diag=inside,
            )
        return self.fmap.agop_back(A, diag)

    def _agop_from_train_kernel(self, centering: str | None, diag: bool) -> Any:
        """The AGOP over the centers with the weights read off ``train_kernel`` (numba
        backend, Laplace or Gaussian kernel), or ``None`` where that does not apply."""
        from . import _backends
        from ._ops import _prepare

        inp = _prepare(self.centers_mapped, self.centers_mapped, self.coef)
        if not is_numpy_namespace(inp.xp) or _backends.select(
            "agop", inp.context("agop", self.kernel)
        ).backend != "numba_cpu":
            return None
        from ._backends.numba_cpu import agop_from_kernel_matrix

        K = self.train_kernel.take()
        if K is None:
            return None
        return agop_from_kernel_matrix(self.kernel, K, inp.Xt, inp.coef,
                                       centering=centering, diag=diag, overwrite=True,
                                       lower=self.train_kernel.lower)

    def fact(self, X: Any = None, alpha: Any = None, *, diag: bool = False) -> Any:
        """FACT ``(1/m) sum_i (J_f(x_i)^T alpha_i) x_i^T`` (see :func:`agop.fact`).

        By default over the centers with their coefficients ``coef``; pass rows ``X`` of
        the training data together with their coefficients ``alpha`` for a subset.
        """
        if X is None:
            if alpha is not None:
                raise ValueError("pass alpha together with the rows X it belongs to")
            X = self.centers
        return fact_mapped(self.kernel, X, self.fmap, self.centers_mapped, self.coef, alpha,
                           diag=diag)


class KernelMatrixLoan:
    """A kernel matrix lent to one AGOP, which may overwrite it (the RFM loop lends the
    solver's buffer, rewritten by the next solve anyway): :meth:`take` hands it out once,
    then returns ``None``.  ``lower``: the matrix holds its lower triangle only (the
    strict upper one is garbage), as PCG keeps it."""

    __slots__ = ("_K", "lower")

    def __init__(self, K: Any, lower: bool = False) -> None:
        self._K = K
        self.lower = bool(lower)

    def take(self) -> Any:
        K, self._K = self._K, None
        return K


class MachineKernel:
    """A kernel that builds and solves its own kernel machine.

    For kernels on structured inputs, such as the convolutional kernels of
    :mod:`agop.conv` on flattened images, whose machine is not ``sum_j coef_j k_M(x, x_j)``
    with ``M`` acting on the rows themselves.  The loop of :func:`agop.fit_feature_machine`
    calls ``kernel.solve(X, Y, M, reg, solver=, coef0=, random_state=)`` (returning the
    machine and its :class:`agop.solvers.SolveInfo`) where it would otherwise build a
    :class:`KernelMachine` and solve by :func:`agop.solvers.solve_kernel_ridge`; the machine
    offers ``predict``, ``coef``, ``M`` and what its update rule needs (e.g. ``agop``).
    """

    def build(self, centers: Any, coef: Any, M: Any = None) -> Any:
        """The machine with these centers, coefficients and feature matrix."""
        raise NotImplementedError

    def solve(self, X: Any, Y: Any, M: Any, reg: float, *, solver: str = "auto",
              coef0: Any = None, random_state: Any = None) -> tuple[Any, Any]:
        """Fit the coefficients by kernel ridge regression: ``(machine, SolveInfo)``."""
        raise NotImplementedError


class UpdateRule:
    """Base of the update rules: ``rule(machine, X, Y, iteration=t) -> M_next``.

    Subclasses set ``diag`` (whether ``M`` is a diagonal vector) and implement
    ``__call__``.
    """

    diag: bool = False

    def __call__(self, machine: KernelMachine, X: Any, Y: Any, *, iteration: int = 0) -> Any:
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """The rule's settings (JSON-compatible values)."""
        return {}


def _check_power(power: Any) -> float:
    return check_real_scalar(power, "power", low=0.0, low_open=True)


def _check_normalize(normalize: Any) -> str | None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    return normalize


def finish_matrix(A: Any, *, power: float = 1.0, normalize: str | None = "max",
                  n_points: int = 1, clip: bool = False) -> Any:
    """Post-process an averaged statistic ``A`` (e.g. the AGOP) into the next ``M``.

    ``A`` is ``(d, d)`` symmetric PSD up to round-off, or ``(d,)`` non-negative (the
    diagonal of diagonal RFM).  Steps, in order:

    1. ``normalize=None`` rescales to the **sum** over the ``n_points`` evaluation
       points, ``n_points * A`` (the unnormalized AGOP of the rfm package);
       ``"mean"`` keeps the average ``A``.
    2. matrix power ``A^power`` by ``eigh`` of the symmetrized matrix with negative
       eigenvalues clipped to 0 (entrywise, clipped at 0, for a vector); ``power = 1``
       only symmetrizes, unless ``clip`` (for a statistic that need not be PSD).
    3. ``"max"``: divide by the largest entry; ``"fro"``: by the Frobenius norm;
       ``"trace"``: by the trace (these three make the result scale-free).

    A zero statistic (a constant predictor) stays zero.

    Examples
    --------
    >>> import numpy as np
    >>> from agop.updates import finish_matrix
    >>> A = np.array([[4.0, 0.0], [0.0, 1.0]])
    >>> finish_matrix(A, power=0.5, normalize="max")
    array([[1. , 0. ],
           [0. , 0.5]])
    """
    power = _check_power(power)
    normalize = _check_normalize(normalize)
    xp = namespace_of(A)
    if normalize is None:
        A = A * float(n_points)
    if A.ndim == 1:
        A = xp.where(A > 0, A, 0.0)
        if power != 1.0:
            A = A**power
        total = {"max": xp.max(A) if A.shape[0] else None, "fro": xp.sqrt(xp.sum(A * A)),
                 "trace": xp.sum(A)}.get(normalize)
    else:
        A = (A + A.T) / 2.0
        if power != 1.0 or clip:
            evals, evecs = xp.linalg.eigh(A)
            evals = xp.where(evals > 0, evals, 0.0) ** power
            A = (evecs * evals[None, :]) @ evecs.T
            A = (A + A.T) / 2.0
        total = {"max": xp.max(A), "fro": xp.sqrt(xp.sum(A * A)),
                 "trace": xp.sum(xp.linalg.diagonal(A))}.get(normalize)
    if total is not None:
        t = float(total)
        if t > 0 and np.isfinite(t):
            A = A / t
    return A


def _check_blocks(blocks: Any) -> tuple[tuple[int, ...], ...] | None:
    """``blocks`` as a tuple of tuples of coordinate indices (or ``None``)."""
    if blocks is None:
        return None
    try:
        out = tuple(tuple(operator.index(i) for i in b) for b in blocks)
        bools = any(isinstance(i, bool | np.bool_) for b in blocks for i in b)
    except TypeError as exc:
        raise TypeError("blocks must be a sequence of sequences of integer coordinate "
                        f"indices, got {blocks!r}") from exc
    if bools or not out or any(len(b) == 0 for b in out):
        raise TypeError("blocks must be a non-empty sequence of non-empty sequences of "
                        f"integer coordinate indices, got {blocks!r}")
    flat = [i for b in out for i in b]
    if len(set(flat)) != len(flat) or min(flat) < 0:
        raise ValueError(f"blocks must be disjoint sets of coordinates >= 0, got {out!r}")
    return out


def block_diagonal(A: Any, blocks: Any) -> Any:
    """``A`` with the entries between different ``blocks`` set to zero.

    ``blocks`` partitions the ``d`` coordinates (each index in exactly one block); a
    ``(d,)`` vector (a diagonal statistic) is returned unchanged.  This is how the
    feature matrix of categorical features stays block-diagonal (``docs/categorical.md``).

    Examples
    --------
    >>> import numpy as np
    >>> from agop.updates import block_diagonal
    >>> block_diagonal(np.ones((3, 3)), [[0, 2], [1]])
    array([[1., 0., 1.],
           [0., 1., 0.],
           [1., 0., 1.]])
    """
    blocks = _check_blocks(blocks)
    if blocks is None or A.ndim == 1:
        return A
    d = A.shape[0]
    if sorted(i for b in blocks for i in b) != list(range(d)):
        raise ValueError(f"blocks must partition the {d} coordinates of the statistic "
                         f"(each index 0..{d - 1} in exactly one block), got {blocks!r}")
    label = np.empty(d, dtype=np.intp)
    for k, b in enumerate(blocks):
        label[list(b)] = k
    xp = namespace_of(A)
    mask = xp.asarray(label[:, None] == label[None, :], device=array_device(A))
    return xp.where(mask, A, xp.zeros_like(A))


def _generator(random_state: Any, iteration: int) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31))
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        raise TypeError(
            f"random_state must be None, an int or a numpy Generator, got {random_state!r}"
        )
    return np.random.default_rng(np.random.SeedSequence(int(random_state), spawn_key=(iteration,)))


def subsample_index(n: int, max_points: int | None, random_state: Any,
                    iteration: int) -> np.ndarray | None:
    """``None`` (all ``n`` rows), or ``max_points`` sorted row indices drawn uniformly
    without replacement."""
    if max_points is None or n <= max_points:
        return None
    rng = _generator(random_state, iteration)
    return np.sort(rng.choice(n, size=int(max_points), replace=False))


def _take_rows(A: Any, idx: np.ndarray | None) -> Any:
    if idx is None:
        return A
    xp = namespace_of(A)
    return xp.take(A, xp.asarray(idx, device=array_device(A)), axis=0)


def subsample_rows(X: Any, max_points: int | None, random_state: Any, iteration: int) -> Any:
    """``X`` itself, or ``max_points`` of its rows drawn uniformly without replacement."""
    return _take_rows(X, subsample_index(X.shape[0], max_points, random_state, iteration))


def _check_max_points(m: Any, name: str) -> None:
    if m is not None and (isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {m!r}")


@dataclass(frozen=True)
class AGOPUpdate(UpdateRule):
    """The RFM update: ``M_{t+1} = normalize( AGOP(f_t)^power )``.

    Parameters
    ----------
    power : float > 0
        Matrix power ``s`` of the AGOP (1 for RFM/xRFM, 0.5 in the grokking paper).
    normalize : {"max", "fro", "trace", "mean", None}
        See :func:`finish_matrix` (SPEC Part A #2: ``"max"``).
    centering : {None, "per_output", "pooled"}
        Gradient centering before the outer product (SPEC Part A #4).
    diag : bool
        Keep only the diagonal: ``M`` is a ``(d,)`` vector (diagonal RFM).
    agop_max_points : int or None
        At most this many training points are evaluation points of the AGOP; above it a
        uniform random subset without replacement, fresh each iteration (SPEC Part A #5).
    agop_points : array (m, d), optional
        Explicit evaluation points instead of the training inputs.
    random_state : None, int or numpy Generator
        Seeds the subsets: with an int, iteration ``t`` uses ``SeedSequence(seed, (t,))``.
    blocks : sequence of sequences of int, optional
        Keep ``M`` block-diagonal: the AGOP's entries between different blocks (which
        partition the ``d`` coordinates) are set to zero before the power and the
        normalization (:func:`block_diagonal`); categorical features use one block per
        feature (``docs/categorical.md``).  No effect with ``diag=True``.

    Examples
    --------
    >>> import numpy as np, agop
    >>> from agop.updates import AGOPUpdate, KernelMachine
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 3)); coef = rng.normal(size=(50, 1))
    >>> f = KernelMachine.build(agop.Laplace(2.0), X, coef)
    >>> M = AGOPUpdate(normalize="fro")(f, X, None)
    >>> A = agop.agop(agop.Laplace(2.0), X, X, coef)
    >>> bool(np.allclose(M, A / np.linalg.norm(A)))
    True
    """

    power: float = 1.0
    normalize: str | None = "max"
    centering: str | None = None
    diag: bool = False
    agop_max_points: int | None = 20_000
    agop_points: Any = field(default=None, repr=False)
    random_state: Any = None
    blocks: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", _check_blocks(self.blocks))
        _check_power(self.power)
        _check_normalize(self.normalize)
        if self.centering not in _CENTERINGS:
            raise ValueError(f"centering must be one of {_CENTERINGS}, got {self.centering!r}")
        if not isinstance(self.diag, bool | np.bool_):
            raise TypeError(f"diag must be a bool, got {self.diag!r}")
        _check_max_points(self.agop_max_points, "agop_max_points")
        if self.agop_points is not None and not is_array(self.agop_points):
            raise TypeError("agop_points must be an array of shape (m, d) or None")

    def points(self, X: Any, iteration: int) -> Any:
        """The AGOP evaluation points of iteration ``iteration``."""
        if self.agop_points is not None:
            return self.agop_points
        return subsample_rows(X, self.agop_max_points, self.random_state, iteration)

    def __call__(self, machine: KernelMachine, X: Any, Y: Any, *, iteration: int = 0) -> Any:
        Xs = self.points(X, iteration)
        A = block_diagonal(machine.agop(Xs, centering=self.centering, diag=bool(self.diag)),
                           self.blocks)
        M = finish_matrix(A, power=self.power, normalize=self.normalize, n_points=Xs.shape[0])
        # the eigh of the power mixes blocks only by round-off; remove it
        return block_diagonal(M, self.blocks) if self.power != 1.0 else M

    def get_params(self) -> dict[str, Any]:
        return {
            "power": self.power,
            "normalize": self.normalize,
            "centering": self.centering,
            "diag": bool(self.diag),
            "agop_max_points": self.agop_max_points,
            "blocks": None if self.blocks is None else [list(b) for b in self.blocks],
        }


def _left_polar_power(B: Any, s: float, xp: Any) -> Any:
    """``(B B^T)^{s/2} = U diag(sigma^s) U^T`` from the SVD ``B = U diag(sigma) V^T``.

    The SVD of ``B`` keeps the small singular values that forming ``B B^T`` would square
    below round-off."""
    U, sv, _ = xp.linalg.svd(B, full_matrices=False)
    A = (U * (sv**s)[None, :]) @ U.T
    return (A + A.T) / 2.0


@dataclass(frozen=True)
class FACTUpdate(UpdateRule):
    """The FACT-RFM update: ``M_{t+1}`` from the FACT of ``f_t`` instead of its AGOP.

    ``F = (1/m) sum_i (J_f(x_i)^T alpha_i) x_i^T`` over the training points (with their
    dual coefficients ``alpha_i``; :func:`agop.fact`), then

    - ``variant="fact"``: ``M_{t+1} = (F F^T)^{power/2}`` (FACT-RFM);
    - ``variant="geometric"``: ``M_{t+1} = (F M_t^2 F^T)^{power/4}`` (the geometric-mean
      variant);
    - ``variant="inner_product"``: ``M_{t+1} = (F M_t)^{power/2}``, the simplification
      for inner-product kernels ``k(x^T M z)``, where ``F M_t`` is symmetric PSD
      (for other kernels its symmetric part is used, negative eigenvalues clipped);

    followed by the normalization of :func:`finish_matrix`.

    Parameters
    ----------
    variant : {"fact", "geometric", "inner_product"}
    power : float > 0
        ``1`` is the rule of the paper: a fixed point ``M = F`` (symmetric PSD) of the
        theorem ``W^T W = FACT`` is a fixed point of all three variants.
    normalize : {"max", "fro", "trace", "mean", None}
        As for :class:`AGOPUpdate`: ``"mean"`` keeps the average ``F``, ``None`` uses the
        sum ``m F``; the other three make ``M`` scale-free.
    diag : bool
        Diagonal FACT-RFM: ``M`` is a vector, ``m_{t+1} = |diag F|^power``
        (``"geometric"``: ``|diag(F) m_t|^(power/2)``; ``"inner_product"``:
        ``max(diag(F) m_t, 0)^(power/2)``).
    max_points : int or None
        At most this many training points (uniform random subset without replacement
        above it, fresh each iteration, SPEC Part A #5).
    random_state : None, int or numpy Generator
    blocks : sequence of sequences of int, optional
        Keep ``M`` block-diagonal: ``F`` is restricted to the diagonal blocks
        (:func:`block_diagonal`) before the polar power, as :class:`AGOPUpdate` does.

    Notes
    -----
    Boix-Adsera, Mallinar, Simon and Belkin, "FACT: a first-principles alternative to
    the Neural Feature Ansatz" (arXiv 2507.05644); SPEC §5.2.  ``(F F^T)^{1/2}`` is
    the symmetric factor of the polar decomposition of ``F``; it is computed from the
    SVD of ``F`` (and of ``F M_t`` for the geometric variant:
    ``(F M^2 F^T)^{1/4} = ((F M)(F M)^T)^{1/4}``).

    Examples
    --------
    >>> import numpy as np, agop
    >>> from agop.updates import FACTUpdate, KernelMachine
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3)); coef = rng.normal(size=(40, 1))
    >>> f = KernelMachine.build(agop.Gaussian(2.0), X, coef)
    >>> F = agop.fact(agop.Gaussian(2.0), X, X, coef)
    >>> M = FACTUpdate(normalize="mean")(f, X, None)
    >>> bool(np.allclose(M @ M, F @ F.T))
    True
    """

    variant: str = "fact"
    power: float = 1.0
    normalize: str | None = "max"
    diag: bool = False
    max_points: int | None = 20_000
    random_state: Any = None
    blocks: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", _check_blocks(self.blocks))
        if self.variant not in FACT_VARIANTS:
            raise ValueError(f"variant must be one of {FACT_VARIANTS}, got {self.variant!r}")
        _check_power(self.power)
        _check_normalize(self.normalize)
        if not isinstance(self.diag, bool | np.bool_):
            raise TypeError(f"diag must be a bool, got {self.diag!r}")
        _check_max_points(self.max_points, "max_points")

    def statistic(self, machine: KernelMachine, iteration: int = 0) -> Any:
        """The FACT ``F`` of ``machine`` over this iteration's points (``(d, d)`` or its
        diagonal), scaled as ``normalize`` asks (the sum for ``None``)."""
        n = machine.centers.shape[0]
        idx = subsample_index(n, self.max_points, self.random_state, iteration)
        X = _take_rows(machine.centers, idx)
        alpha = None if idx is None else _take_rows(machine.coef, idx)
        F = machine.fact(X, alpha, diag=bool(self.diag))
        return F * float(X.shape[0]) if self.normalize is None else F

    def __call__(self, machine: KernelMachine, X: Any, Y: Any, *, iteration: int = 0) -> Any:
        return self.from_statistic(self.statistic(machine, iteration), machine.M)

    def from_statistic(self, F: Any, M: Any = None) -> Any:
        """The next ``M`` from a FACT ``F`` (``(d, d)``, or ``(d,)`` when ``diag``) and the
        current ``M`` (``None`` for the identity; the geometric and inner-product variants
        use it)."""
        xp = namespace_of(F, M)
        s = float(self.power)
        if self.diag:
            if F.ndim != 1:
                raise ValueError(f"a diagonal FACT update needs F of shape (d,), got {F.shape}")
            if self.variant == "fact":
                A = xp.abs(F) ** s
            else:
                m = xp.ones_like(F) if M is None else M
                if m.ndim == 2:
                    m = xp.linalg.diagonal(m)
                P = F * m
                P = xp.abs(P) if self.variant == "geometric" else xp.where(P > 0, P, 0.0)
                A = P ** (s / 2.0)
            return finish_matrix(A, power=1.0, normalize=self.normalize, n_points=1)
        if F.ndim != 2 or F.shape[0] != F.shape[1]:
            raise ValueError(f"F must be a square (d, d) matrix, got shape {tuple(F.shape)}")
        if M is not None and M.ndim == 1:  # a diagonal M_0 with a full update
            M = M[:, None] * xp.eye(F.shape[0], dtype=F.dtype, device=array_device(F))
        F = block_diagonal(F, self.blocks)
        if self.variant == "fact":
            A = _left_polar_power(F, s, xp)
        elif self.variant == "geometric":
            A = _left_polar_power(F if M is None else F @ M, s / 2.0, xp)
        else:
            A = finish_matrix(F if M is None else F @ M, power=s / 2.0,
                              normalize=self.normalize, n_points=1, clip=True)
            return block_diagonal(A, self.blocks)
        # the SVD mixes blocks only by round-off; remove it
        A = block_diagonal(A, self.blocks)
        return finish_matrix(A, power=1.0, normalize=self.normalize, n_points=1)

    def get_params(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "power": self.power,
            "normalize": self.normalize,
            "diag": bool(self.diag),
            "max_points": self.max_points,
            "blocks": None if self.blocks is None else [list(b) for b in self.blocks],
        }
