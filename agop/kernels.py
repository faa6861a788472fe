"""Kernels with a learned feature matrix M: profile composed with a metric.

Every kernel here is an immutable (frozen) dataclass.  The Mahalanobis matrix is not a
kernel parameter but a *transform*: ``k_M(x, z) = k_I(S x, S z)`` for a factor ``S`` with
``S^T S = M`` (diagonal M: ``S = diag(sqrt(m))``).  The kernels come in three families:

``"radial"``
    ``k(x, z) = kappa(||x - z||_M)`` with a scalar profile ``kappa``: :class:`Laplace`,
    :class:`Gaussian`, :class:`GeneralizedExponential` (and :class:`LpqLaplace` with
    ``p = 2``).  Distances come from one matrix product, and the input gradient is
    ``grad_x k = (kappa'(r) / r) M (x - z)``.
``"lp"``
    ``k(x, z) = exp(-(||S(x - z)||_p / L)^q)`` with ``S = M^{1/2}`` symmetric (SPEC Part A
    #13): :class:`LpqLaplace`, :class:`ProductLaplace`.  No matrix-product form.
``"dot"``
    inner-product kernels, ``k(x, z) = (x^T M z)^2``: :class:`Quadratic`.

Calling a kernel object evaluates its kernel matrix: ``Laplace(10.0)(X, Z, M)``.
``kernel.gradient(X, Z, M)`` gives the pairwise input gradients.

Pairs closer than round-off (the self-pair rule, SPEC Part A #10, see
``agop._lib._selfpair``) are treated as coincident: ``k = kappa(0)``, zero gradient.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ._lib._validation import check_real_scalar

__all__ = [
    "Gaussian",
    "GeneralizedExponential",
    "Kernel",
    "Laplace",
    "LpqLaplace",
    "ProductLaplace",
    "Quadratic",
    "RadialKernel",
    "kernel_names",
    "make_kernel",
]


class Kernel(ABC):
    """Base class of all agop kernels (immutable; compare and hash by value)."""

    #: ``"radial"``, ``"lp"`` or ``"dot"`` (see the module docstring).
    family: ClassVar[str]
    #: canonical name used by :func:`make_kernel` and saved models.
    name: ClassVar[str]

    def __call__(self, X: Any, Z: Any = None, M: Any = None, *, backend: str = "auto") -> Any:
        """Kernel matrix ``K[i, j] = k_M(X[i], Z[j])`` (``Z = X`` when omitted)."""
        from ._ops import kernel_matrix

        return kernel_matrix(self, X, X if Z is None else Z, M, backend=backend)

    def gradient(self, X: Any, Z: Any = None, M: Any = None) -> Any:
        """Pairwise input gradients ``G[i, j] = grad_x k_M(x, Z[j])`` at ``x = X[i]``.

        Returns an ``(n, m, d)`` array (this materializes ``n * m * d`` numbers; use
        :func:`agop.predictor_grads` for gradients of a kernel machine).
        """
        from ._ops import pairwise_grads

        return pairwise_grads(self, X, X if Z is None else Z, M)

    def get_params(self) -> dict[str, float]:
        """The kernel's hyperparameters as a dict of floats."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable description; ``make_kernel(**kernel.to_dict())`` rebuilds it."""
        return {"name": self.name, **self.get_params()}

    def replace(self, **changes: float) -> Kernel:
        """A copy with some hyperparameters changed (kernels are immutable)."""
        return dataclasses.replace(self, **changes)

    def value_at_zero(self) -> float | None:
        """``kappa(0) = k(x, x)`` for distance kernels; ``None`` for inner-product kernels."""
        return 1.0


class RadialKernel(Kernel):
    """A kernel ``kappa(||x - z||_M)`` of the Mahalanobis distance.

    Subclasses provide the profile on squared distances, ``_k_from_sq(d2, xp)``, and the
    gradient weight ``w = kappa'(r) / r`` (``_w_from_sq(d2, k, xp)``, only called with
    ``d2 > 0``), so that ``grad_x k(x, z) = w * M (x - z)``.
    """

    family: ClassVar[str] = "radial"
    bandwidth: float

    def profile(self, r: Any) -> Any:
        """``kappa(r)`` for NumPy distances ``r >= 0``."""
        r = np.asarray(r, dtype=float)
        return self._k_from_sq(r * r, np)

    @abstractmethod
    def _k_from_sq(self, d2: Any, xp: Any) -> Any: ...

    @abstractmethod
    def _w_from_sq(self, d2: Any, k: Any, xp: Any) -> Any: ...


def _bandwidth(value: Any) -> float:
    L = check_real_scalar(value, "bandwidth", low=0.0)
    if not math.isfinite(1.0 / L):
        raise ValueError(f"bandwidth {L:g} is too small: its reciprocal overflows")
    return L


@dataclass(frozen=True)
class Laplace(RadialKernel):
    """Laplace kernel ``k(x, z) = exp(-||x - z||_M / L)``, the default RFM kernel.

    Notes
    -----
    ``grad_x k = -(k / (L r)) M (x - z)`` with ``r = ||x - z||_M`` (SPEC §1.1).

    Examples
    --------
    >>> import numpy as np
    >>> from agop.kernels import Laplace
    >>> K = Laplace(2.0)(np.array([[0.0, 0.0], [3.0, 4.0]]))
    >>> bool(np.isclose(K[0, 1], np.exp(-5.0 / 2.0)))
    True
    """

    name: ClassVar[str] = "laplace"
    bandwidth: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bandwidth", _bandwidth(self.bandwidth))

    def _k_from_sq(self, d2: Any, xp: Any) -> Any:
        return xp.exp(-(xp.sqrt(d2) / self.bandwidth))

    def _w_from_sq(self, d2: Any, k: Any, xp: Any) -> Any:
        return -((k / xp.sqrt(d2)) / self.bandwidth)


@dataclass(frozen=True)
class Gaussian(RadialKernel):
    """Gaussian kernel ``k(x, z) = exp(-||x - z||_M^2 / (2 L^2))``.

    Notes
    -----
    The reference code's convention (SPEC Part A #1); the grokking paper's bandwidth
    "L" equals ``2 L^2`` here.  ``grad_x k = -(k / L^2) M (x - z)``.
    """

    name: ClassVar[str] = "gaussian"
    bandwidth: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bandwidth", _bandwidth(self.bandwidth))

    # L is divided twice rather than squared: L**2 overflows or underflows as a float
    # for extreme bandwidths, the array expression then saturates to 0 or inf cleanly
    def _k_from_sq(self, d2: Any, xp: Any) -> Any:
        return xp.exp(-0.5 * ((d2 / self.bandwidth) / self.bandwidth))

    def _w_from_sq(self, d2: Any, k: Any, xp: Any) -> Any:
        return -((k / self.bandwidth) / self.bandwidth)


# (r / L)^q is formed on arrays, never L^q as a float (which overflows for extreme L);
# the gradient weight -(q / L^q) r^(q-2) k is written as -q (r / L)^q k / r^2.
def _genexp_k(d2: Any, bandwidth: float, q: float, xp: Any) -> Any:
    return xp.exp(-((xp.sqrt(d2) / bandwidth) ** q))


def _genexp_w(d2: Any, k: Any, bandwidth: float, q: float, xp: Any) -> Any:
    tk = xp.where(k > 0, ((xp.sqrt(d2) / bandwidth) ** q) * k, 0.0)  # t e^-t -> 0, not inf*0
    return tk * (-q) / d2


def _exponent(value: Any, name: str = "exponent") -> float:
    return check_real_scalar(value, name, low=0.0, high=2.0)


@dataclass(frozen=True)
class GeneralizedExponential(RadialKernel):
    """Generalized exponential kernel ``k(x, z) = exp(-(||x - z||_M / L)^q)``, ``0 < q <= 2``.

    Notes
    -----
    xRFM's ``laplace``/``l2`` kernel with ``exponent = q`` (SPEC §1.3); the bandwidth is
    raised to ``q``.  ``q = 1`` is :class:`Laplace`; ``q = 2`` is ``exp(-r^2 / L^2)``
    (not :class:`Gaussian`, which divides by ``2 L^2``).
    ``grad_x k = -(q / L^q) r^(q - 2) k M (x - z)``.
    """

    name: ClassVar[str] = "generalized_exponential"
    bandwidth: float = 1.0
    exponent: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bandwidth", _bandwidth(self.bandwidth))
        object.__setattr__(self, "exponent", _exponent(self.exponent))

    def _k_from_sq(self, d2: Any, xp: Any) -> Any:
        return _genexp_k(d2, self.bandwidth, self.exponent, xp)

    def _w_from_sq(self, d2: Any, k: Any, xp: Any) -> Any:
        return _genexp_w(d2, k, self.bandwidth, self.exponent, xp)


class _LpKernel(Kernel):
    """``k(x, z) = exp(-(||S(x - z)||_p / L)^q)`` with ``S = M^{1/2}``, ``0 < q <= p <= 2``.

    With ``p = 2`` the kernel is radial and runs on the matrix-product path.
    """

    bandwidth: float

    @property
    @abstractmethod
    def p(self) -> float: ...

    @property
    @abstractmethod
    def q(self) -> float: ...

    @property
    def family(self) -> str:  # type: ignore[override]
        return "radial" if self.p == 2.0 else "lp"

    def profile(self, r: Any) -> Any:
        """``kappa(r) = exp(-(r / L)^q)`` for NumPy ``p``-norm distances ``r >= 0``."""
        r = np.asarray(r, dtype=float)
        return np.exp(-((r / self.bandwidth) ** self.q))

    # Used only when p == 2 (radial path).
    def _k_from_sq(self, d2: Any, xp: Any) -> Any:
        return _genexp_k(d2, self.bandwidth, self.q, xp)

    def _w_from_sq(self, d2: Any, k: Any, xp: Any) -> Any:
        return _genexp_w(d2, k, self.bandwidth, self.q, xp)


@dataclass(frozen=True)
class LpqLaplace(_LpKernel):
    """L_pq Laplace kernel ``k(x, z) = exp(-(||S(x - z)||_p / L)^q)``, ``0 < q <= p <= 2``.

    Notes
    -----
    xRFM's ``lpq`` kernel (SPEC §1.5), ``S = M^{1/2}`` symmetric.  The gradient with
    respect to the transformed point is
    ``-(q / L^q) k ||D||_p^(q - p) |D_i|^(p - 1) sign(D_i)``, ``D = S(x - z)``, then
    multiplied by ``S``; a coordinate with ``D_i = 0`` contributes zero.
    """

    name: ClassVar[str] = "lpq_laplace"
    bandwidth: float = 1.0
    norm_p: float = 1.0
    exponent: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bandwidth", _bandwidth(self.bandwidth))
        p = _exponent(self.norm_p, "norm_p")
        q = _exponent(self.exponent)
        if q > p:
            raise ValueError(
                f"LpqLaplace needs 0 < exponent <= norm_p <= 2 (a positive definite "
                f"kernel); got exponent={q:g} > norm_p={p:g}"
            )
        object.__setattr__(self, "norm_p", p)
        object.__setattr__(self, "exponent", q)

    @property
    def p(self) -> float:
        return self.norm_p

    @property
    def q(self) -> float:
        return self.exponent


@dataclass(frozen=True)
class ProductLaplace(_LpKernel):
    """Product Laplace kernel ``k(x, z) = prod_i exp(-|(S(x - z))_i|^q / L^q)``.

    Notes
    -----
    :class:`LpqLaplace` with ``norm_p = exponent = q``; ``q = 1`` (the default) is the
    L1 Laplace kernel, xRFM's ``product_laplace``/``l1`` (SPEC §1.4).
    """

    name: ClassVar[str] = "product_laplace"
    bandwidth: float = 1.0
    exponent: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bandwidth", _bandwidth(self.bandwidth))
        object.__setattr__(self, "exponent", _exponent(self.exponent))

    @property
    def p(self) -> float:
        return self.exponent

    @property
    def q(self) -> float:
        return self.exponent


@dataclass(frozen=True)
class Quadratic(Kernel):
    """Quadratic inner-product kernel ``k(x, z) = (x^T M z)^2`` (grokking paper, SPEC §1.7).

    Notes
    -----
    ``grad_x k = 2 (x^T M z) M z``.  The reference code multiplies by 3; a constant
    factor only rescales the coefficients of a ridgeless fit.
    """

    family: ClassVar[str] = "dot"
    name: ClassVar[str] = "quadratic"

    def value_at_zero(self) -> None:
        return None

    def _k_from_dot(self, t: Any, xp: Any) -> Any:
        return t * t

    def _dk_from_dot(self, t: Any, xp: Any) -> Any:
        return 2.0 * t


_KERNELS: dict[str, type[Kernel]] = {
    "laplace": Laplace,
    "l2": Laplace,
    "gaussian": Gaussian,
    "rbf": Gaussian,
    "generalized_exponential": GeneralizedExponential,
    "lpq_laplace": LpqLaplace,
    "lpq": LpqLaplace,
    "product_laplace": ProductLaplace,
    "l1": ProductLaplace,
    "quadratic": Quadratic,
}


def kernel_names() -> list[str]:
    """Names (and aliases) accepted by :func:`make_kernel`."""
    return sorted(_KERNELS)


def make_kernel(name: str | Kernel, **params: Any) -> Kernel:
    """Build a kernel from its name and hyperparameters.

    Examples
    --------
    >>> from agop.kernels import make_kernel
    >>> make_kernel("laplace", bandwidth=10)
    Laplace(bandwidth=10.0)
    >>> make_kernel(**make_kernel("l1", bandwidth=2).to_dict())
    ProductLaplace(bandwidth=2.0, exponent=1.0)
    """
    if isinstance(name, Kernel):
        return name.replace(**params) if params else name
    if not isinstance(name, str):
        raise TypeError(f"kernel must be a name or an agop Kernel, got {type(name).__name__}")
    cls = _KERNELS.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown kernel {name!r}; known: {', '.join(kernel_names())}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    bad = set(params) - allowed
    if bad:
        raise ValueError(
            f"kernel {name!r} takes {sorted(allowed) or 'no parameters'}; "
            f"got unexpected {sorted(bad)}"
        )
    return cls(**params)
