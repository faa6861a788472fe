"""Slow, obviously correct reference loops (float64 NumPy, one pair at a time).

Written from the formulas of SPEC §1-2 with M used directly (no factor), so they share
no code with the library beyond the constants of the self-pair rule.
"""

from __future__ import annotations

import math

import numpy as np

from agop._lib._selfpair import self_pair_params
from agop.kernels import (
    Gaussian,
    GeneralizedExponential,
    Laplace,
    LpqLaplace,
    ProductLaplace,
    Quadratic,
)


def full_M(M, d):
    """M as a d x d matrix (None -> identity, vector -> diagonal)."""
    if M is None:
        return np.eye(d)
    M = np.asarray(M, dtype=float)
    return np.diag(M) if M.ndim == 1 else M


def psd_sqrt(M):
    """Symmetric square root of a PSD matrix through its SVD (M = U S U^T).

    Singular values below the numerical rank threshold count as zero (the square root
    is not Lipschitz at 0: a round-off eigenvalue of 1e-17 would add 3e-9)."""
    U, s, _ = np.linalg.svd(M)
    s = np.where(s > len(s) * np.finfo(float).eps * s.max(), s, 0.0)
    return (U * np.sqrt(s)) @ U.T


def coincident(x, z, M, dtype="float64"):
    atol2, rho = self_pair_params(dtype, len(x))
    diff = x - z
    return diff @ M @ diff <= atol2 + rho * (x @ M @ x + z @ M @ z)


def _pq(kernel):
    if isinstance(kernel, ProductLaplace):
        return kernel.exponent, kernel.exponent
    return kernel.norm_p, kernel.exponent


def kernel_value(kernel, x, z, M):
    """k_M(x, z) for one pair."""
    if isinstance(kernel, Quadratic):
        return float(x @ M @ z) ** 2
    if coincident(x, z, M):
        return 1.0
    L = kernel.bandwidth
    if isinstance(kernel, LpqLaplace | ProductLaplace):
        p, q = _pq(kernel)
        delta = psd_sqrt(M) @ (x - z)
        s = np.sum(np.abs(delta) ** p)  # |delta|_p^p; (s^(1/p) / L)^q through logs
        return math.exp(-math.exp((q / p) * math.log(s) - q * math.log(L))) if s > 0 else 1.0
    r = math.sqrt(max((x - z) @ M @ (x - z), 0.0))
    if isinstance(kernel, Laplace):
        return math.exp(-r / L)
    if isinstance(kernel, Gaussian):
        return math.exp(-(r**2) / (2 * L**2))
    if isinstance(kernel, GeneralizedExponential):
        return math.exp(-((r / L) ** kernel.exponent))
    raise TypeError(kernel)


def kernel_grad(kernel, x, z, M):
    """grad_x k_M(x, z) for one pair (zero for coincident pairs)."""
    if isinstance(kernel, Quadratic):
        return 2.0 * float(x @ M @ z) * (M @ z)
    if coincident(x, z, M):
        return np.zeros_like(x)
    k = kernel_value(kernel, x, z, M)
    L = kernel.bandwidth
    if isinstance(kernel, LpqLaplace | ProductLaplace):
        p, q = _pq(kernel)
        S = psd_sqrt(M)
        delta = S @ (x - z)
        a = np.abs(delta)
        s = np.sum(a**p)
        coord = np.zeros_like(delta)
        nz = a > 0
        coord[nz] = a[nz] ** (p - 1) * np.sign(delta[nz])
        # (q / L^q) |delta|_p^(q - p) = q exp((q/p) log s - q log L) / s
        g_t = -q * math.exp((q / p) * math.log(s) - q * math.log(L)) / s * k * coord
        return S @ g_t
    r = math.sqrt((x - z) @ M @ (x - z))
    if isinstance(kernel, Laplace):
        w = -k / (L * r)
    elif isinstance(kernel, Gaussian):
        w = -k / L**2
    elif isinstance(kernel, GeneralizedExponential):
        qq = kernel.exponent
        w = -(qq / L**qq) * r ** (qq - 2) * k
    else:
        raise TypeError(kernel)
    return w * (M @ (x - z))


def kernel_matrix(kernel, X, Z, M=None):
    X, Z = np.asarray(X, float), np.asarray(Z, float)
    Mf = full_M(M, X.shape[1])
    return np.array([[kernel_value(kernel, x, z, Mf) for z in Z] for x in X])


def predictor_grads(kernel, X, Z, coef, M=None):
    """(m, c, d): grad f_l(X[i]) = sum_j coef[j, l] grad_x k(X[i], Z[j])."""
    X, Z = np.asarray(X, float), np.asarray(Z, float)
    coef = np.asarray(coef, float).reshape(len(Z), -1)
    Mf = full_M(M, X.shape[1])
    G = np.zeros((len(X), coef.shape[1], X.shape[1]))
    for i, x in enumerate(X):
        for j, z in enumerate(Z):
            g = kernel_grad(kernel, x, z, Mf)
            for ell in range(coef.shape[1]):
                G[i, ell] += coef[j, ell] * g
    return G


def agop_from_grads(G, centering=None, diag=False):
    """AGOP from its definition, centering the gradients explicitly first."""
    G = np.array(G, dtype=float)
    m, c, d = G.shape
    if centering == "per_output":
        G = G - G.mean(axis=0, keepdims=True)
    elif centering == "pooled":
        G = G - G.reshape(-1, d).mean(axis=0)
    A = np.zeros((d, d))
    for i in range(m):
        for ell in range(c):
            A += np.outer(G[i, ell], G[i, ell])
    A /= m
    return np.diag(A).copy() if diag else A


def agop(kernel, X, Z, coef, M=None, centering=None, diag=False):
    return agop_from_grads(predictor_grads(kernel, X, Z, coef, M), centering, diag)


def fact(kernel, X, Z, coef, M=None, alpha=None):
    """FACT from its definition: (1/m) sum_i sum_l alpha[i, l] grad f_l(X[i]) X[i]^T."""
    X = np.asarray(X, float)
    coef = np.asarray(coef, float).reshape(len(Z), -1)
    alpha = coef if alpha is None else np.asarray(alpha, float).reshape(len(X), -1)
    G = predictor_grads(kernel, X, Z, coef, M)
    F = np.zeros((X.shape[1], X.shape[1]))
    for i, x in enumerate(X):
        for ell in range(G.shape[1]):
            F += alpha[i, ell] * np.outer(G[i, ell], x)
    return F / len(X)


def image_patches(img, q, stride=1, padding="zero"):
    """Patches of one image (C, H, W) by explicit loops over an ``np.pad``-ded copy:
    a list of vectors laid out (channel, row offset, column offset), row-major over
    positions."""
    img = np.asarray(img, float)
    C, H, W = img.shape
    pad = 0 if padding is None else q // 2
    mode = {"zero": "constant", "circular": "wrap", None: "constant"}[padding]
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode=mode)
    out = []
    for r in range(0, H + 2 * pad - q + 1, stride):
        for s in range(0, W + 2 * pad - q + 1, stride):
            v = []
            for c in range(C):
                for di in range(q):
                    for dj in range(q):
                        v.append(padded[c, r + di, s + dj])
            out.append(np.array(v))
    return out


def conv_kernel_value(kernel, x, z, M, q, stride=1, padding="zero", variant="aligned"):
    """The convolutional kernel of two images from its definition: the mean of the base
    kernel over aligned patch pairs, or over all pairs of patches."""
    px, pz = image_patches(x, q, stride, padding), image_patches(z, q, stride, padding)
    Mf = full_M(M, len(px[0]))
    if variant == "aligned":
        return sum(kernel_value(kernel, a, b, Mf) for a, b in zip(px, pz, strict=True)) / len(px)
    return sum(kernel_value(kernel, a, b, Mf) for a in px for b in pz) / len(px) ** 2
