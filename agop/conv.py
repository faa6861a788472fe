"""Convolutional kernel machines with a learned patch metric: ConvRFM and deep ConvRFM.

Images ``x`` of shape ``(C, H, W)`` are seen through their ``q x q`` patches ``x_p``
(``agop._patches``: ``P`` positions, patch vectors of length ``d = C q^2``).  The
feature matrix ``M`` (``d x d``) acts on patches, ``S^T S = M``, and the convolutional
kernel of a base kernel ``kappa`` (Laplace, Gaussian, ... of :mod:`agop.kernels`) is

- ``variant="aligned"``:   ``k_M(x, z) = (1/P) sum_p kappa(||S (x_p - z_p)||)``,
  patches compared at the same position;
- ``variant="all_pairs"``: ``k_M(x, z) = (1/P^2) sum_{p, p'} kappa(||S (x_p - z_p')||)``,
  every patch against every patch: invariant to translations of the images (up to
  their borders).

Both are sums of positive definite kernels.  The predictor
``f(x) = sum_j coef_j k_M(x, x_j)`` is a function of the patches of ``x``; its gradient
with respect to patch ``p`` is that of a kernel machine on patches,

- aligned:   ``grad_{x_p} f = predictor_grads(kappa, x_p, {z_jp}_j, coef / P)``,
- all pairs: ``grad_{x_p} f = predictor_grads(kappa, x_p, {z_jp'}_{j,p'}, coef / P^2)``
  (the ``n P`` center patches with their image's coefficient),

so every kernel evaluation runs on the existing ops (and their compiled loops).  The
ConvRFM update is the **patch AGOP** (SPEC §4.3),

    ``G = (1/m) sum_{images i} sum_{positions p} sum_{outputs l}
    grad_{x_ip} f_l grad_{x_ip} f_l^T``   (``d x d``),

averaged over the ``m`` evaluation images and summed over positions and outputs
(:class:`PatchAGOPUpdate`); ConvRFM runs the one loop
:func:`agop.fit_feature_machine` with a :class:`ConvKernel`, which builds its own
machine (:class:`agop.updates.MachineKernel`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._generic import AGOPAccumulator
from ._lib._blocking import plan_blocks
from ._lib._compat import array_device, is_array
from ._lib._validation import namespace_of
from ._ops import FeatureMap, feature_map, kernel_matrix, kernel_mv, predictor_grads
from ._patches import PADDINGS, PatchGrid, as_images, extract_patches, patch_grid, patches_of
from .kernels import Kernel, make_kernel
from .solvers import SolveInfo, solve_ridge
from .updates import AGOPUpdate, MachineKernel

__all__ = [
    "PADDINGS",
    "VARIANTS",
    "ConvKernel",
    "ConvKernelMachine",
    "ConvRFMClassifier",
    "ConvRFMRegressor",
    "DeepConvRFMClassifier",
    "PatchAGOPUpdate",
    "extract_patches",
    "level_weights",
    "patch_grid",
    "random_conv_features",
]

VARIANTS = ("aligned", "all_pairs")


@dataclass(frozen=True)
class ConvKernel(MachineKernel):
    """Convolutional kernel on images with a patch feature matrix ``M``.

    Parameters
    ----------
    base : agop.kernels.Kernel
        The kernel ``kappa`` on (mapped) patches, e.g. ``agop.Laplace(2.0)``.
    image_shape : (C, H, W) or (H, W)
    patch_size : int
        ``q`` (odd when padded).
    stride : int >= 1
    padding : {"zero", "circular", None}
    variant : {"aligned", "all_pairs"}
        Patches compared at the same position, or all against all (see the module
        docstring).

    Notes
    -----
    Inputs are images ``(n, C, H, W)`` or their rows flattened to ``(n, C*H*W)`` (what
    the loop passes).  ``M`` is ``None`` (identity), a ``(d, d)`` PSD matrix or a
    ``(d,)`` vector with ``d = C q^2``.  The reference ConvRFM used the NTK of a
    convolutional network instead of ``kappa`` (SPEC §4.2; ``docs/conv.md``).

    Examples
    --------
    >>> import numpy as np, agop
    >>> from agop.conv import ConvKernel
    >>> X = np.random.default_rng(0).normal(size=(4, 6, 6))
    >>> k = ConvKernel(agop.Laplace(3.0), (6, 6), variant="all_pairs")
    >>> K = k.matrix(X)
    >>> shifted = np.roll(X, 1, axis=2)  # circular shift: all-pairs is invariant
    >>> kc = ConvKernel(agop.Laplace(3.0), (6, 6), padding="circular", variant="all_pairs")
    >>> bool(np.allclose(kc.matrix(shifted), kc.matrix(X)))
    True
    >>> bool(np.allclose(K, K.T))
    True
    >>> ka = ConvKernel(agop.Laplace(3.0), (6, 6))  # aligned: k(x, x) = kappa(0) = 1
    >>> bool(np.allclose(np.diag(ka.matrix(X)), 1.0))
    True
    """

    base: Kernel
    image_shape: tuple[int, ...]
    patch_size: int = 3
    stride: int = 1
    padding: str | None = "zero"
    variant: str = "aligned"
    grid: PatchGrid = field(init=False, repr=False, compare=False)

    name = "conv"

    def __post_init__(self) -> None:
        if not isinstance(self.base, Kernel):
            raise TypeError(
                "base must be an agop kernel object such as agop.Laplace(2.0), got "
                f"{type(self.base).__name__}"
            )
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        grid = patch_grid(self.image_shape, self.patch_size, stride=self.stride,
                          padding=self.padding)
        object.__setattr__(self, "image_shape", grid.image_shape)
        object.__setattr__(self, "grid", grid)

    # -- shapes ------------------------------------------------------------------------

    @property
    def n_features(self) -> int:
        """``d = C q^2``, the size of ``M``."""
        return self.grid.n_features

    @property
    def n_positions(self) -> int:
        return self.grid.n_positions

    def images(self, X: Any, name: str = "X") -> Any:
        """``X`` (``(n, C*H*W)``, ``(n, C, H, W)`` or ``(n, H, W)``) as validated images."""
        xp = namespace_of(X)
        C, H, W = self.image_shape
        if is_array(X) and X.ndim == 2:
            if X.shape[1] != C * H * W:
                raise ValueError(
                    f"{name} has {X.shape[1]} columns but images of shape {(C, H, W)} "
                    f"flatten to {C * H * W}"
                )
            X = xp.reshape(X, (X.shape[0], C, H, W))
        X = as_images(X, name, xp)
        if tuple(X.shape[1:]) != (C, H, W):
            raise ValueError(f"{name} holds images of shape {tuple(X.shape[1:])}; the kernel "
                             f"expects {(C, H, W)}")
        return X

    def patches(self, X: Any, name: str = "X") -> Any:
        """Raw patches ``(n, P, d)`` of the images ``X``."""
        X = self.images(X, name)
        return patches_of(X, self.grid, namespace_of(X))

    def _mapped(self, X: Any, fmap: FeatureMap, dtype: Any = None, name: str = "X") -> Any:
        xp = fmap.xp
        Xp = self.patches(X, name)
        if dtype is not None:
            Xp = xp.astype(Xp, dtype, copy=False)
        n, P, d = Xp.shape
        return xp.reshape(fmap.apply(xp.reshape(Xp, (n * P, d))), (n, P, d))

    # -- the machine -------------------------------------------------------------------

    def build(self, centers: Any, coef: Any, M: Any = None) -> ConvKernelMachine:
        """The machine ``f(x) = sum_j coef_j k_M(x, centers_j)`` (``coef`` may be
        ``None`` for a machine that is about to be solved)."""
        xp = namespace_of(centers, coef, M)
        images = self.images(centers, "centers")
        flat = xp.reshape(images, (images.shape[0], -1))
        fmap = feature_map(M, self.n_features, xp, flat.dtype)
        return ConvKernelMachine(self, flat, coef, M, fmap, self._mapped(images, fmap))

    def solve(self, X: Any, Y: Any, M: Any, reg: float, *, solver: str = "auto",
              coef0: Any = None, random_state: Any = None) -> tuple[Any, SolveInfo]:
        """Kernel ridge regression with this kernel: ``(K + reg I) coef = Y`` by Cholesky
        (:func:`agop.solve_ridge`) of the ``n x n`` convolutional kernel matrix.

        ``coef0`` and ``random_state`` (used by iterative solvers) are ignored."""
        if solver not in ("auto", "direct"):
            raise ValueError(
                "a ConvKernel is solved directly (Cholesky of its n x n kernel matrix): "
                f"solver must be 'auto' or 'direct', got {solver!r}"
            )
        proto = self.build(X, None, M)
        K = _conv_matrix(self, proto.centers_mapped, proto.centers_mapped)
        coef = solve_ridge(K, Y, reg)
        return dataclasses.replace(proto, coef=coef), SolveInfo("direct", 0, 0.0, True, True)

    def matrix(self, X: Any, Z: Any = None, M: Any = None) -> Any:
        """Kernel matrix ``K[i, j] = k_M(X[i], Z[j])``, ``(n, m)`` (``Z = X`` if omitted)."""
        xp = namespace_of(X, Z, M)
        Xi = self.images(X)
        fmap = feature_map(M, self.n_features, xp, Xi.dtype)
        Xp = self._mapped(Xi, fmap)
        Zp = Xp if Z is None else self._mapped(Z, fmap, Xi.dtype, "Z")
        return _conv_matrix(self, Xp, Zp)

    # -- saving ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable description; :meth:`from_dict` rebuilds the kernel."""
        return {
            "name": self.name, "base": self.base.to_dict(),
            "image_shape": list(self.image_shape), "patch_size": self.patch_size,
            "stride": self.stride, "padding": self.padding, "variant": self.variant,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvKernel:
        params = {k: v for k, v in d.items() if k != "name"}
        params["base"] = make_kernel(**params["base"])
        params["image_shape"] = tuple(params["image_shape"])
        return cls(**params)


# --------------------------------------------------------------------------- kernel sums


def _rows(A: Any, xp: Any) -> Any:
    """``(n, P, d) -> (n P, d)``: every patch one row (image-major)."""
    n, P, d = A.shape
    return xp.reshape(A, (n * P, d))


def _repeat_coef(coef: Any, P: int, xp: Any) -> Any:
    """``coef`` of images ``(m, c)`` as coefficients of their ``m P`` patch rows."""
    m, c = coef.shape
    return xp.reshape(xp.broadcast_to(coef[:, None, :], (m, P, c)), (m * P, c))


def _conv_matrix(kern: ConvKernel, Xp: Any, Zp: Any) -> Any:
    """``(n, m)`` kernel matrix from mapped patches ``Xp (n, P, d)``, ``Zp (m, P, d)``."""
    xp = namespace_of(Xp, Zp)
    (n, P, _), m = Xp.shape, Zp.shape[0]
    base = kern.base
    if kern.variant == "aligned":
        K = None
        for p in range(P):
            Kp = kernel_matrix(base, Xp[:, p, :], Zp[:, p, :])
            K = Kp if K is None else K + Kp
        return K / float(P)
    # all pairs: one block of images at a time, never the (n P) x (m P) matrix whole
    Zr = _rows(Zp, xp)
    itemsize = 8 if Xp.dtype == xp.float64 else 4
    blocks = []
    for i0, i1 in plan_blocks(n, 2 * P * m * P * itemsize):
        Kb = kernel_matrix(base, _rows(Xp[i0:i1], xp), Zr)  # (b P, m P)
        Kb = xp.reshape(Kb, (i1 - i0, P, m, P))
        blocks.append(xp.sum(xp.sum(Kb, axis=3), axis=1))
    return xp.concat(blocks, axis=0) / float(P * P)


def _conv_mv(kern: ConvKernel, Xp: Any, Zp: Any, coef: Any) -> Any:
    """Predictions ``(n, c)`` of the machine with centers ``Zp`` at mapped patches ``Xp``."""
    xp = namespace_of(Xp, Zp, coef)
    n, P, _ = Xp.shape
    if kern.variant == "aligned":
        out = None
        for p in range(P):
            fp = kernel_mv(kern.base, Xp[:, p, :], Zp[:, p, :], coef)
            out = fp if out is None else out + fp
        return out / float(P)
    f = kernel_mv(kern.base, _rows(Xp, xp), _rows(Zp, xp), _repeat_coef(coef, P, xp))
    return xp.sum(xp.reshape(f, (n, P, coef.shape[1])), axis=1) / float(P * P)


def _conv_grads(kern: ConvKernel, Xp: Any, Zp: Any, coef: Any) -> Any:
    """Mapped-space patch gradients ``(n, P, c, d)`` at the mapped patches ``Xp``."""
    xp = namespace_of(Xp, Zp, coef)
    n, P, d = Xp.shape
    c = coef.shape[1]
    if kern.variant == "aligned":
        a = coef / float(P)
        return xp.stack(
            [predictor_grads(kern.base, Xp[:, p, :], Zp[:, p, :], a) for p in range(P)], axis=1
        )
    G = predictor_grads(kern.base, _rows(Xp, xp), _rows(Zp, xp),
                        _repeat_coef(coef, P, xp) / float(P * P))
    return xp.reshape(G, (n, P, c, d))


@dataclass(frozen=True, eq=False)
class ConvKernelMachine:
    """The predictor ``f(x) = sum_j coef_j k_M(x, centers_j)`` of a :class:`ConvKernel`.

    ``centers`` are the training images flattened to ``(n, C*H*W)``, ``fmap`` the factor
    of ``M`` (acting on patches), ``centers_mapped`` their mapped patches ``(n, P, d)``.
    """

    kernel: ConvKernel
    centers: Any
    coef: Any
    M: Any
    fmap: FeatureMap
    centers_mapped: Any

    @property
    def n_features(self) -> int:
        """``d = C q^2``: the size of ``M``."""
        return self.kernel.n_features

    def _patches(self, X: Any) -> Any:
        return self.kernel._mapped(X, self.fmap, self.centers.dtype)

    def predict(self, X: Any) -> Any:
        """``f(X)``, shape ``(m, c)``, for images ``X`` (or their flattened rows)."""
        return _conv_mv(self.kernel, self._patches(X), self.centers_mapped, self.coef)

    def grads(self, X: Any) -> Any:
        """Gradients ``(m, P, c, d)`` of ``f`` with respect to each patch of each image
        (every patch an independent variable, in raw patch coordinates)."""
        G = _conv_grads(self.kernel, self._patches(X), self.centers_mapped, self.coef)
        return self.fmap.grads_back(G)

    def agop(self, X: Any, *, centering: str | None = None, diag: bool = False) -> Any:
        """Patch AGOP over the images ``X``: ``(1/m) sum_i sum_p sum_l g g^T``, ``(d, d)``
        (or its diagonal).

        Computed in blocks of images.  ``centering`` subtracts the mean gradient over all
        (image, position) pairs (per output for ``"per_output"``, over outputs too for
        ``"pooled"``) before the outer products.
        """
        xp = self.fmap.xp
        Xp = self._patches(X)
        m, P, d = Xp.shape
        c = self.coef.shape[1]
        inside = bool(diag) and self.fmap.metric != "full"
        acc = AGOPAccumulator(centering=centering, diag=inside, xp=xp)
        itemsize = 8 if Xp.dtype == xp.float64 else 4
        for i0, i1 in plan_blocks(m, 3 * P * c * d * itemsize):
            G = _conv_grads(self.kernel, Xp[i0:i1], self.centers_mapped, self.coef)
            acc.add(xp.reshape(G, ((i1 - i0) * P, c, d)))
        return self.fmap.agop_back(acc.finish() * float(P), bool(diag))


@dataclass(frozen=True)
class PatchAGOPUpdate(AGOPUpdate):
    """The ConvRFM update: ``M_{t+1} = normalize(G^power)`` from the patch AGOP ``G``.

    ``G = (1/m) sum_{images} sum_{positions} sum_{outputs} grad_patch f grad_patch f^T``
    over ``m`` evaluation images (:meth:`ConvKernelMachine.agop`), then
    :func:`agop.updates.finish_matrix`.  The parameters are those of
    :class:`agop.AGOPUpdate`, with the defaults of the reference ConvRFM: ``normalize``
    ``"fro"`` (Frobenius norm 1), ``power`` 1 (its ``-sqrtM`` setting, ``M = G``;
    without ``-sqrtM`` it used ``M = G^2``, ``power=2``), and at most
    ``agop_max_points = 2000`` evaluation images.  ``normalize=None`` gives the sum over
    the images, ``"mean"`` the average.  ``diag`` is not offered (``M`` acts on whole
    patches).
    """

    normalize: str | None = "fro"
    agop_max_points: int | None = 2000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.diag:
            raise ValueError("PatchAGOPUpdate learns a full patch matrix M: diag must be False")


# --------------------------------------------------------------------------- deep


def random_conv_features(X: Any, weights: Any, grid: PatchGrid, *, relu: bool = False) -> Any:
    """One random convolution layer: ``out[i, o, r, s] = sigma(weights[o] . x_(r, s))``.

    ``X`` are images ``(n, C, H, W)``, ``weights`` an ``(width, C q^2)`` filter bank laid
    out like the patches, ``grid`` their :func:`patch_grid`.  Returns
    ``(n, width, H_out, W_out)``; ``sigma`` is ReLU when ``relu`` and the identity
    otherwise.
    """
    xp = namespace_of(X, weights)
    X = as_images(X, "X", xp)
    Xp = patches_of(X, grid, xp)  # (n, P, d)
    F = Xp @ xp.astype(weights, Xp.dtype).T  # (n, P, width)
    if relu:
        F = xp.where(F > 0, F, 0.0)
    n, P, width = F.shape
    Ho, Wo = grid.out_shape
    return xp.reshape(xp.permute_dims(F, (0, 2, 1)), (n, width, Ho, Wo))


def level_weights(M: Any, width: int, rng: np.random.Generator) -> Any:
    """Random filters ``G M^{1/2}`` (``G`` i.i.d. N(0, 1/width), ``width x d``) for a
    ``(d, d)`` PSD ``M``, in its namespace and device (SPEC §4.4; the ``1/width``
    variance keeps ``E |W x_p|^2 = x_p^T M x_p``)."""
    xp = namespace_of(M)
    if not is_array(M) or M.ndim != 2:
        raise ValueError("level_weights needs a square (d, d) feature matrix M")
    S = feature_map(M, M.shape[0], xp, M.dtype).S  # the symmetric square root
    G = rng.normal(size=(width, M.shape[0])) / np.sqrt(width)
    return xp.asarray(G, dtype=M.dtype, device=array_device(M)) @ S


from ._conv_estimators import (  # noqa: E402 - they build on the classes above
    ConvRFMClassifier,
    ConvRFMRegressor,
    DeepConvRFMClassifier,
)
