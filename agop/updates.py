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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._lib._compat import array_device, is_array
from ._lib._validation import check_real_scalar, namespace_of
from ._ops import FeatureMap, agop, feature_map, kernel_mv, predictor_grads
from .kernels import Kernel

__all__ = ["NORMALIZATIONS", "AGOPUpdate", "KernelMachine", "UpdateRule", "finish_matrix"]

NORMALIZATIONS = ("max", "fro", "trace", "mean", None)
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

    @classmethod
    def build(cls, kernel: Kernel, centers: Any, coef: Any, M: Any = None) -> KernelMachine:
        xp = namespace_of(centers)
        fmap = feature_map(M, centers.shape[1], xp, centers.dtype)
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
        A = agop(
            self.kernel,
            self.fmap.apply(X),
            self.centers_mapped,
            self.coef,
            centering=centering,
            diag=inside,
        )
        return self.fmap.agop_back(A, diag)


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
                  n_points: int = 1) -> Any:
    """Post-process an averaged statistic ``A`` (e.g. the AGOP) into the next ``M``.

    ``A`` is ``(d, d)`` symmetric PSD up to round-off, or ``(d,)`` non-negative (the
    diagonal of diagonal RFM).  Steps, in order:

    1. ``normalize=None`` rescales to the **sum** over the ``n_points`` evaluation
       points, ``n_points * A`` (the unnormalized AGOP of the rfm package);
       ``"mean"`` keeps the average ``A``.
    2. matrix power ``A^power`` by ``eigh`` of the symmetrized matrix with negative
       eigenvalues clipped to 0 (entrywise, clipped at 0, for a vector); ``power = 1``
       only symmetrizes.
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
        if power != 1.0:
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


def subsample_rows(X: Any, max_points: int | None, random_state: Any, iteration: int) -> Any:
    """``X`` itself, or ``max_points`` of its rows drawn uniformly without replacement."""
    n = X.shape[0]
    if max_points is None or n <= max_points:
        return X
    rng = _generator(random_state, iteration)
    idx = np.sort(rng.choice(n, size=int(max_points), replace=False))
    xp = namespace_of(X)
    return xp.take(X, xp.asarray(idx, device=array_device(X)), axis=0)


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

    def __post_init__(self) -> None:
        _check_power(self.power)
        _check_normalize(self.normalize)
        if self.centering not in _CENTERINGS:
            raise ValueError(f"centering must be one of {_CENTERINGS}, got {self.centering!r}")
        if not isinstance(self.diag, bool | np.bool_):
            raise TypeError(f"diag must be a bool, got {self.diag!r}")
        m = self.agop_max_points
        if m is not None and (isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1):
            raise ValueError(f"agop_max_points must be None or an int >= 1, got {m!r}")
        if self.agop_points is not None and not is_array(self.agop_points):
            raise TypeError("agop_points must be an array of shape (m, d) or None")

    def points(self, X: Any, iteration: int) -> Any:
        """The AGOP evaluation points of iteration ``iteration``."""
        if self.agop_points is not None:
            return self.agop_points
        return subsample_rows(X, self.agop_max_points, self.random_state, iteration)

    def __call__(self, machine: KernelMachine, X: Any, Y: Any, *, iteration: int = 0) -> Any:
        Xs = self.points(X, iteration)
        A = machine.agop(Xs, centering=self.centering, diag=bool(self.diag))
        return finish_matrix(
            A, power=self.power, normalize=self.normalize, n_points=Xs.shape[0]
        )

    def get_params(self) -> dict[str, Any]:
        return {
            "power": self.power,
            "normalize": self.normalize,
            "centering": self.centering,
            "diag": bool(self.diag),
            "agop_max_points": self.agop_max_points,
        }
