"""ConvRFM: patches, the convolutional kernel, the patch AGOP, the estimators.

References: naive loops over ``np.pad``-ded images (tests/naive.py), torch's ``unfold``,
torch autograd through an explicitly written patch predictor, and accuracy targets on
digits and on a synthetic translated-pattern task.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import agop
from agop import conv
from agop.datasets import load_dataset
from agop.testing import assert_close, to_numpy

from . import naive

F64 = {"rtol": 1e-10, "atol": 1e-12}


def _images(n, C=2, H=5, W=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, C, H, W))


def _psd(d, seed=1):
    B = np.random.default_rng(seed).normal(size=(d, d))
    return B @ B.T / d


# --------------------------------------------------------------------------- patches


@pytest.mark.parametrize("padding", conv.PADDINGS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("q", [1, 3])
def test_patches_match_naive_loop(xp, padding, stride, q):
    X = _images(3)
    ref = np.array([naive.image_patches(x, q, stride, padding) for x in X])
    out = agop.extract_patches(xp.asarray(X), q, stride=stride, padding=padding)
    assert_close(out, ref, rtol=0, atol=0, xp=xp, dtype=xp.float64)


@given(
    n=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 7), W=st.integers(1, 7),
    half=st.integers(0, 2), stride=st.integers(1, 3),
    padding=st.sampled_from(conv.PADDINGS), backend=st.sampled_from(["generic", "numba_cpu"]),
)
def test_patches_match_naive_loop_on_drawn_shapes(n, C, H, W, half, stride, padding, backend):
    q = min(2 * half + 1, H, W)
    q -= 1 - q % 2  # odd and at most min(H, W)
    X = np.random.default_rng(n * 100 + H * 10 + W).normal(size=(n, C, H, W))
    ref = np.array([naive.image_patches(x, q, stride, padding) for x in X])
    out = agop.extract_patches(X, q, stride=stride, padding=padding, backend=backend)
    assert out.shape == ref.shape and np.array_equal(out, ref)


@pytest.mark.parametrize("padding", conv.PADDINGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_patch_backends_agree(padding, dtype):
    X = _images(4, C=3, H=7, W=5).astype(dtype)
    fast = agop.extract_patches(X, 3, stride=2, padding=padding, backend="numba_cpu")
    slow = agop.extract_patches(X, 3, stride=2, padding=padding, backend="generic")
    assert fast.dtype == dtype and np.array_equal(fast, slow)


def test_even_patches_without_padding_and_one_channel():
    X = _images(2, C=1)[:, 0]  # (n, H, W)
    ref = np.array([naive.image_patches(x[None], 2, 1, None) for x in X])
    assert np.array_equal(agop.extract_patches(X, 2, padding=None), ref)


@pytest.mark.parametrize("padding", ["zero", "circular"])
def test_patches_equal_torch_unfold(padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    X = torch.from_numpy(_images(2, C=3, H=6, W=7))
    Xp = F.pad(X, (1, 1, 1, 1), mode="constant" if padding == "zero" else "circular")
    ref = F.unfold(Xp, 3).transpose(1, 2)  # (n, P, C*9), layout (c, di, dj)
    out = agop.extract_patches(X, 3, padding=padding)
    assert isinstance(out, torch.Tensor)
    assert torch.equal(out, ref)


def test_patches_registry_truth_table():
    """NumPy and torch CPU get the compiled loop; autograd inputs and other libraries the
    generic gather; forcing the loop on them says why not."""
    from agop import _backends
    from agop._backends import DispatchContext

    def ctx(namespace="numpy", device="cpu", **kw):
        return DispatchContext(op="patches", namespace=namespace, device=device,
                               dtype="float64", kernel=None, metric="identity", **kw)

    assert _backends.select("patches", ctx()).backend == "numba_cpu"
    assert _backends.select("patches", ctx("torch")).backend == "numba_cpu"
    assert _backends.select("patches", ctx("torch", requires_grad=True)).backend == "generic"
    strict = ctx("array_api_strict", "CPU_DEVICE")
    assert _backends.select("patches", strict).backend == "generic"
    with pytest.raises(ValueError, match="NumPy arrays or torch CPU tensors"):
        _backends.select("patches", strict, "numba_cpu")


def test_patches_are_differentiable_by_torch():
    torch = pytest.importorskip("torch")
    X = torch.from_numpy(_images(2)).requires_grad_(True)
    P = agop.extract_patches(X, 3)
    P.sum().backward()  # each pixel appears in as many patches as cover it
    counts = np.zeros((5, 6))
    for r in range(5):
        for c in range(6):
            counts[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] += 1
    assert np.array_equal(X.grad.numpy(), np.broadcast_to(counts, (2, 2, 5, 6)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patch_size": 2}, "must be odd"),
        ({"patch_size": 7}, "exceeds the image size"),
        ({"patch_size": 0}, "patch_size must be an int >= 1"),
        ({"stride": 0}, "stride must be an int >= 1"),
        ({"padding": "reflect"}, "padding must be one of"),
    ],
)
def test_patch_parameters_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        agop.extract_patches(_images(1), **{"patch_size": 3, **kwargs})


def test_patch_inputs_are_validated():
    with pytest.raises(ValueError, match="must be 3-D or 4-D"):
        agop.extract_patches(np.ones((4, 9)))
    with pytest.raises(TypeError, match="strings"):
        agop.extract_patches([[["a"]]])
    with pytest.raises(ValueError, match="NaN"):
        agop.extract_patches(np.full((1, 4, 4), np.nan))


# --------------------------------------------------------------------------- kernel


KERNELS = [agop.Laplace(2.5), agop.Gaussian(1.5)]


@pytest.mark.parametrize("kernel", KERNELS, ids=repr)
@pytest.mark.parametrize("variant", conv.VARIANTS)
@pytest.mark.parametrize("padding", ["zero", None])
def test_conv_kernel_matrix_matches_naive_loop(kernel, variant, padding):
    X, Z = _images(3, H=4, W=5), _images(4, H=4, W=5, seed=3)
    M = _psd(18)
    k = conv.ConvKernel(kernel, (2, 4, 5), 3, padding=padding, variant=variant)
    ref = np.array([[naive.conv_kernel_value(kernel, x, z, M, 3, 1, padding, variant)
                     for z in Z] for x in X])
    assert_close(k.matrix(X, Z, M), ref, **F64)
    assert_close(k.matrix(X.reshape(3, -1), Z, M), ref, **F64)  # flattened rows


@pytest.mark.parametrize("variant", conv.VARIANTS)
def test_conv_machine_predicts_K_coef_and_blocks_agree(variant):
    X, Z = _images(4, H=4, W=4), _images(5, H=4, W=4, seed=2)
    coef = np.random.default_rng(4).normal(size=(5, 2))
    M = _psd(18)
    k = conv.ConvKernel(agop.Laplace(2.0), (2, 4, 4), variant=variant)
    f = k.build(Z, coef, M)
    assert_close(f.predict(X), k.matrix(X, Z, M) @ coef, **F64)
    with agop.config_context(block_rows=1):
        assert_close(f.predict(X), k.matrix(X, Z, M) @ coef, **F64)
        A1 = f.agop(X)
    assert_close(A1, f.agop(X), **F64)


def test_all_pairs_kernel_is_invariant_to_circular_shifts():
    X, Z = _images(3), _images(2, seed=5)
    k = conv.ConvKernel(agop.Laplace(2.0), (2, 5, 6), padding="circular", variant="all_pairs")
    shifted = np.roll(np.roll(X, 2, axis=2), -1, axis=3)
    assert_close(k.matrix(shifted, Z), k.matrix(X, Z), **F64)
    aligned = conv.ConvKernel(agop.Laplace(2.0), (2, 5, 6), padding="circular")
    assert not np.allclose(aligned.matrix(shifted, Z), aligned.matrix(X, Z))


def test_conv_kernel_namespaces(xp):
    X, Z = _images(3), _images(4, seed=2)
    coef = np.random.default_rng(4).normal(size=(4, 1))
    k = conv.ConvKernel(agop.Laplace(2.0), (2, 5, 6), variant="all_pairs")
    ref = k.build(Z, coef).predict(X)
    out = k.build(xp.asarray(Z), xp.asarray(coef)).predict(xp.asarray(X))
    assert_close(out, ref, rtol=1e-10, atol=1e-13, xp=xp, dtype=xp.float64)


@pytest.mark.parametrize("variant", conv.VARIANTS)
def test_float32_is_kept(variant):
    X = _images(6).astype(np.float32)
    Y = np.ones((6, 1), dtype=np.float32)
    k = conv.ConvKernel(agop.Laplace(2.0), (2, 5, 6), variant=variant)
    f, _ = k.solve(X.reshape(6, -1), Y, None, 1e-2)
    assert f.coef.dtype == np.float32 and f.predict(X).dtype == np.float32
    assert f.agop(X).dtype == np.float32 and f.grads(X).dtype == np.float32


def test_conv_kernel_validates():
    with pytest.raises(TypeError, match="base must be an agop kernel"):
        conv.ConvKernel("laplace", (5, 5))
    with pytest.raises(ValueError, match="variant must be one of"):
        conv.ConvKernel(agop.Laplace(1.0), (5, 5), variant="max")
    k = conv.ConvKernel(agop.Laplace(1.0), (2, 5, 6))
    with pytest.raises(ValueError, match="flatten to 60"):
        k.matrix(np.ones((3, 59)))
    with pytest.raises(ValueError, match="expects"):
        k.matrix(np.ones((3, 2, 6, 5)))
    with pytest.raises(ValueError, match="solved directly"):
        k.solve(_images(3).reshape(3, -1), np.ones((3, 1)), None, 1e-3, solver="pcg")


# --------------------------------------------------------------------------- patch AGOP


def _torch_patch_grads(kernel, X, Z, coef, M, variant, padding):
    """Gradients (m, P, c, d) of the conv predictor with respect to an explicit patch
    tensor, by torch autograd through the kernel formula written out here."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    q = 3

    def unfold(imgs):
        t = torch.from_numpy(imgs)
        if padding is not None:
            t = F.pad(t, (1, 1, 1, 1), mode="constant" if padding == "zero" else "circular")
        return F.unfold(t, q).transpose(1, 2)  # (n, P, d)

    evals, evecs = np.linalg.eigh(M)
    S = torch.from_numpy((evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T)
    Xp = unfold(X).clone().requires_grad_(True)
    Zp = unfold(Z)
    a = torch.from_numpy(coef)
    P = Xp.shape[1]

    def kappa(D):  # D (..., d) patch differences
        r2 = ((D @ S) ** 2).sum(-1)
        if isinstance(kernel, agop.Laplace):
            return torch.exp(-torch.sqrt(r2) / kernel.bandwidth)
        return torch.exp(-r2 / (2 * kernel.bandwidth**2))

    if variant == "aligned":  # (m, n, P) -> mean over positions
        Kx = kappa(Xp[:, None, :, :] - Zp[None, :, :, :]).mean(-1)
    else:  # (m, n, P, P') -> mean over all pairs
        Kx = kappa(Xp[:, None, :, None, :] - Zp[None, :, None, :, :]).mean((-1, -2))
    f = Kx @ a  # (m, c)
    grads = [torch.autograd.grad(f[:, ell].sum(), Xp, retain_graph=True)[0]
             for ell in range(coef.shape[1])]
    assert P == Zp.shape[1]
    return torch.stack(grads, dim=2).numpy()  # (m, P, c, d)


@pytest.mark.parametrize("kernel", KERNELS, ids=repr)
@pytest.mark.parametrize("variant", conv.VARIANTS)
@pytest.mark.parametrize("padding", ["zero", "circular"])
def test_patch_grads_and_agop_equal_torch_autograd(kernel, variant, padding):
    X, Z = _images(3, H=4, W=5), _images(4, H=4, W=5, seed=7)
    coef = np.random.default_rng(8).normal(size=(4, 2))
    M = _psd(18)
    ref = _torch_patch_grads(kernel, X, Z, coef, M, variant, padding)
    k = conv.ConvKernel(kernel, (2, 4, 5), padding=padding, variant=variant)
    f = k.build(Z, coef, M)
    assert_close(f.grads(X), ref, rtol=1e-8, atol=1e-12)
    m, P, c, d = ref.shape
    G = ref.reshape(-1, d)
    assert_close(f.agop(X), G.T @ G / m, rtol=1e-8, atol=1e-12)  # mean over images
    Gc = (ref - ref.mean(axis=(0, 1))).reshape(-1, d)
    assert_close(f.agop(X, centering="per_output"), Gc.T @ Gc / m, rtol=1e-8, atol=1e-12)
    Gp = G - G.mean(axis=0)
    assert_close(f.agop(X, centering="pooled"), Gp.T @ Gp / m, rtol=1e-8, atol=1e-12)


def test_patch_agop_update_normalizes_and_subsamples():
    X, coef = _images(6), np.random.default_rng(2).normal(size=(6, 3))
    k = conv.ConvKernel(agop.Laplace(2.0), (2, 5, 6))
    f = k.build(X, coef)
    A = f.agop(X)
    Xf = X.reshape(6, -1)
    assert_close(agop.PatchAGOPUpdate()(f, Xf, None), A / np.linalg.norm(A), **F64)
    assert_close(agop.PatchAGOPUpdate(normalize=None)(f, Xf, None), 6 * A, **F64)
    assert_close(agop.PatchAGOPUpdate(power=2.0, normalize="mean")(f, Xf, None), A @ A,
                 rtol=1e-9, atol=1e-12)
    sub = agop.PatchAGOPUpdate(agop_max_points=2, random_state=0, normalize="mean")
    idx = np.sort(np.random.default_rng(np.random.SeedSequence(0, spawn_key=(0,))).choice(
        6, size=2, replace=False))
    assert_close(sub(f, Xf, None), f.agop(X[idx]), **F64)
    with pytest.raises(ValueError, match="diag must be False"):
        agop.PatchAGOPUpdate(diag=True)


def test_fit_feature_machine_runs_the_conv_machine():
    """The one loop with a ConvKernel: each iterate's M is the update of the previous."""
    X = _images(12)
    Y = np.random.default_rng(3).normal(size=(12, 1))
    k = conv.ConvKernel(agop.Laplace(2.0), (2, 5, 6))
    res = agop.fit_feature_machine(X.reshape(12, -1), Y, k, agop.PatchAGOPUpdate(), iters=2,
                                   keep_M=True, reg=1e-2)
    assert res.M.shape == (18, 18) and len(res.history) == 3
    M1 = res.history[1]["M"]
    f0, _ = k.solve(X.reshape(12, -1), Y, None, 1e-2)
    A = f0.agop(X)
    assert_close(M1, A / np.linalg.norm(A), rtol=1e-9, atol=1e-12)
    assert_close(res.machine.predict(X), k.matrix(X, X, res.M) @ res.coef, **F64)


# --------------------------------------------------------------------------- estimators


def test_estimator_conventions_and_validation():
    sklearn = pytest.importorskip("sklearn")
    X = _images(20, C=1)[:, 0]
    y = (X[:, 1:3, 1:3].sum(axis=(1, 2)) > 0).astype(int)
    clf = agop.ConvRFMClassifier(bandwidth=3.0, iters=1)
    assert sklearn.base.clone(clf).get_params() == clf.get_params()
    assert "update" not in clf.get_params() and clf.get_params()["variant"] == "aligned"
    clf.fit(X, y)
    assert clf.image_shape_ == (1, 5, 6) and clf.M_.shape == (9, 9)
    P = clf.predict_proba(X)
    assert P.shape == (20, 2) and np.allclose(P.sum(axis=1), 1.0)
    assert clf.score(X, y) >= 0.9
    assert clf.filters_().shape == (9, 1, 3, 3)
    with pytest.raises(ValueError, match="images"):
        clf.fit(X.reshape(20, -1), y)
    with pytest.raises(ValueError, match="fitted on"):
        clf.predict(_images(2, C=2))
    with pytest.raises(ValueError, match="must be odd"):
        agop.ConvRFMClassifier(patch_size=4).fit(X, y)
    with pytest.raises(ValueError, match="variant"):
        agop.ConvRFMClassifier(variant="max").fit(X, y)
    with pytest.raises(ValueError, match="solver"):
        agop.ConvRFMClassifier(solver="pcg").fit(X, y)
    with pytest.raises(ValueError, match="n_filters"):
        clf.filters_(10)
    with pytest.raises(TypeError, match="strings"):
        agop.ConvRFMClassifier().fit(np.full((4, 5, 5), "a"), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="X_val holds images of shape"):
        agop.ConvRFMClassifier().fit(X, y, X[:, :4], y)


def test_regressor_with_validation_and_median_bandwidth():
    X = _images(30, C=2, H=6, W=6)
    y = X[:, 0, 2:4, 2:4].sum(axis=(1, 2))
    reg = agop.ConvRFMRegressor(bandwidth="median", iters=2).fit(X[:20], y[:20], X[20:], y[20:])
    assert reg.predict(X[20:]).shape == (10,)
    assert len(reg.history_) >= 1 and reg.history_[0]["val_metric"] is not None
    rows = agop.extract_patches(X[:20]).reshape(-1, 18)
    D = np.sqrt(((rows[:, None] - rows[None]) ** 2).sum(-1))
    assert reg.kernel_.base.bandwidth == pytest.approx(np.median(D[np.triu_indices(len(rows), 1)]))


def test_estimator_keeps_torch_namespace():
    torch = pytest.importorskip("torch")
    X = torch.from_numpy(_images(16, C=1)[:, 0])
    y = (X[:, 2, 2] > 0).long()
    clf = agop.ConvRFMClassifier(bandwidth=3.0, iters=1).fit(X, y)
    assert isinstance(clf.M_, torch.Tensor) and isinstance(clf.predict_proba(X), torch.Tensor)
    assert isinstance(clf.filters_(1), torch.Tensor)


def _digits(n_train, n_test=600, seed=0):
    ds = load_dataset("digits")
    idx = np.random.default_rng(seed).permutation(len(ds.y))
    X = (ds.X / 16.0).astype(np.float32)  # float32: the vectorized compiled loops
    tr, te = idx[:n_train], idx[n_train:n_train + n_test]
    return X[tr], ds.y[tr], X[te], ds.y[te]


@pytest.fixture(scope="module")
def digits_models():
    Xtr, ytr, Xte, yte = _digits(150)
    rfm = agop.RFMClassifier(iters=2).fit(Xtr, ytr)
    cnn = agop.ConvRFMClassifier(bandwidth=2.0, iters=2).fit(Xtr.reshape(-1, 8, 8), ytr)
    return rfm, cnn, Xte, yte


@pytest.mark.slow
def test_convrfm_beats_rfm_on_digits(digits_models):
    rfm, cnn, Xte, yte = digits_models
    acc_rfm, acc_conv = rfm.score(Xte, yte), cnn.score(Xte.reshape(-1, 8, 8), yte)
    assert acc_conv >= acc_rfm + 0.01, (acc_conv, acc_rfm)
    assert acc_conv >= 0.92


def edge_contrast(f):
    """Largest difference between the mean of opposite border columns or rows of a
    3 x 3 filter (0 for a constant or a centered blob)."""
    return max(abs(f[:, 2].mean() - f[:, 0].mean()), abs(f[2].mean() - f[0].mean()))


@pytest.mark.slow
def test_learned_digit_filters_are_oriented(digits_models):
    """M is far from the isotropic identity (its effective rank tr(M)^2 / |M|_F^2 is
    9 for the identity), and the top two filters are oriented edges: a strong contrast
    between opposite sides, and not symmetric under a quarter turn (a rotation-invariant
    filter f has <f, rot90 f> = |f|^2 = 1)."""
    _, cnn, _, _ = digits_models
    M = cnn.M_
    assert np.trace(M) ** 2 / np.sum(M * M) < 6.5
    for f in cnn.filters_(2)[:, 0]:
        assert abs(np.sum(f * np.rot90(f))) < 0.5
        assert edge_contrast(f) > 0.4
    assert edge_contrast(np.full((3, 3), 1 / 3)) == 0.0


def pattern_images(n, size=10, amplitude=2.0, seed=0):
    """Gaussian noise images (float32); class 1 has a fixed 3 x 3 checkerboard added at a
    uniformly random position."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, size, size))
    y = rng.integers(0, 2, size=n)
    pattern = amplitude * np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, size - 2, size=2)
        X[i, r:r + 3, c:c + 3] += pattern
    return X.astype(np.float32), y


@pytest.mark.slow
def test_convrfm_finds_a_translated_pattern_where_rfm_cannot():
    X, y = pattern_images(550)
    tr, va, te = slice(0, 150), slice(150, 250), slice(250, 550)
    rfm = agop.RFMClassifier(iters=3).fit(X[tr].reshape(150, -1), y[tr],
                                          X[va].reshape(100, -1), y[va])
    acc_rfm = rfm.score(X[te].reshape(300, -1), y[te])
    cnn = agop.ConvRFMClassifier(bandwidth=1.0, padding=None, variant="all_pairs", iters=3,
                                 early_stop_tol=2.0).fit(X[tr], y[tr], X[va], y[va])
    acc_conv = cnn.score(X[te], y[te])
    assert acc_rfm <= 0.65, acc_rfm
    assert acc_conv >= 0.9, acc_conv


# --------------------------------------------------------------------------- deep


def test_deep_convrfm_levels():
    Xtr, ytr, Xte, yte = _digits(80, 100)
    deep = agop.DeepConvRFMClassifier(levels=2, width=4, iters=1, random_state=0)
    deep.fit(Xtr.reshape(-1, 8, 8), ytr, Xte.reshape(-1, 8, 8), yte)
    assert [lv["channels"] for lv in deep.levels_] == [1, 4]
    assert len(deep.weights_) == 1 and deep.weights_[0].shape == (4, 9)
    scores = deep.score_levels(Xte.reshape(-1, 8, 8), yte)
    assert scores == pytest.approx([lv["val_accuracy"] for lv in deep.levels_])
    assert deep.score(Xte.reshape(-1, 8, 8), yte) == scores[-1] and scores[-1] > 0.5
    # the layer is the random convolution G M^(1/2) over the level's patches
    feats = deep.transform_levels(Xte[:3].reshape(-1, 8, 8))[1]
    W = deep.weights_[0]
    P = agop.extract_patches(Xte[:3].reshape(-1, 8, 8))
    assert_close(feats, np.transpose(P @ W.T, (0, 2, 1)).reshape(3, 4, 8, 8), **F64)
    with pytest.raises(ValueError, match="levels must be an int"):
        agop.DeepConvRFMClassifier(levels=0).fit(Xtr.reshape(-1, 8, 8), ytr)


def test_deep_convrfm_keeps_torch_namespace():
    torch = pytest.importorskip("torch")
    Xtr, ytr, _, _ = _digits(40, 1)
    X = torch.from_numpy(Xtr.reshape(-1, 8, 8))
    deep = agop.DeepConvRFMClassifier(levels=2, width=3, iters=1, random_state=0).fit(X, ytr)
    assert isinstance(deep.weights_[0], torch.Tensor)
    assert isinstance(deep.transform_levels(X[:2])[1], torch.Tensor)
    assert isinstance(deep.predict_proba(X[:2]), torch.Tensor)
    assert deep.score(X, ytr) > 0.8


def test_level_weights_have_covariance_M():
    M = _psd(9)
    W = conv.level_weights(M, 20000, np.random.default_rng(0))
    assert_close(W.T @ W, M, rtol=0, atol=0.05 * np.abs(M).max())
    assert to_numpy(W).shape == (20000, 9)
    with pytest.raises(ValueError, match="square"):
        conv.level_weights(np.ones(9), 4, np.random.default_rng(0))


@pytest.mark.parametrize("variant", conv.VARIANTS)
def test_save_load_is_bit_identical(tmp_path, variant):
    X = _images(24, C=2, H=5, W=5)
    y = np.where(X[:, 0, 1:3, 1:3].sum(axis=(1, 2)) > 0, "a", "b")
    clf = agop.ConvRFMClassifier(kernel="gaussian", bandwidth="median", variant=variant,
                                 padding="circular", iters=1).fit(X, y)
    back = agop.load(agop.save(clf, tmp_path / "conv"))
    assert type(back) is agop.ConvRFMClassifier and back.kernel_ == clf.kernel_
    assert np.array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert np.array_equal(back.predict(X), clf.predict(X))
    assert np.array_equal(back.filters_(), clf.filters_())
    reg = agop.ConvRFMRegressor(bandwidth=3.0, iters=1).fit(X[:, 0], X[:, 0, 2, 2])
    back = agop.load(agop.save(reg, tmp_path / "reg"))
    assert np.array_equal(back.predict(X[:, 0]), reg.predict(X[:, 0]))
