"""Convolutional NFA (SPEC §4.5): the patch AGOP of a torch CNN against an independently
written patch-convolution forward, its closed form for a linear network, and the ansatz
on a small CNN trained on 8x8 digits."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from agop import config_context
from agop.measures import cosine, pearson

torch = pytest.importorskip("torch")
from agop import nfa  # noqa: E402

F64 = torch.float64


def _manual_patches(layer, h):
    """Patches of one image ``h`` (C, H, W) with explicit loops and zero padding:
    ``Q[i, j, c, a, b] = h_pad[c, i s + a d, j s + b d]``."""
    (ph, pw), (sh, sw), (dh, dw) = layer.padding, layer.stride, layer.dilation
    kh, kw = layer.kernel_size
    C, H, W = h.shape
    padded = torch.zeros((C, H + 2 * ph, W + 2 * pw), dtype=h.dtype)
    padded[:, ph:ph + H, pw:pw + W] = h
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows = []
    for i in range(Ho):
        cols = []
        for j in range(Wo):
            block = [[padded[:, i * sh + a * dh, j * sw + b * dw] for b in range(kw)]
                     for a in range(kh)]  # block[a][b] is the (C,) column at offset (a, b)
            cols.append(torch.stack([torch.stack(r, dim=-1) for r in block], dim=-2))
        rows.append(torch.stack(cols))
    return torch.stack(rows)  # (Ho, Wo, C, kh, kw)


def _reference_patch_agop(net, index, X):
    """Brute force: the layer ``net[index]`` rewritten as an einsum over the explicit
    patch tensor of each image, the rest of ``net`` unchanged, and the full Jacobian of
    the outputs with respect to that patch tensor (autograd)."""
    layer = net[index]
    head, tail = net[:index], net[index + 1:]
    W = layer.weight.detach()
    b = layer.bias.detach()
    d = W[0].numel()
    G = torch.zeros((d, d), dtype=F64)
    for x in X:
        with torch.no_grad():
            h = head(x[None])[0]
        Q = _manual_patches(layer, h)

        def f(Q):
            z = torch.einsum("oczw,ijczw->oij", W, Q) + b[:, None, None]
            return tail(z[None])[0]

        J = torch.autograd.functional.jacobian(f, Q)  # (c, Ho, Wo, C, kh, kw)
        J = J.reshape(-1, d)
        G += J.T @ J
    return G / X.shape[0]


def _tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=F64),
        torch.nn.Tanh(),
        torch.nn.Conv2d(3, 4, (2, 3), stride=(1, 2), padding=(1, 0), dilation=(1, 2),
                        dtype=F64),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 5 * 1, 2, dtype=F64),
    )


def test_patch_agop_equals_the_jacobian_of_an_independent_patch_forward():
    net = _tiny_cnn()
    X = torch.randn(3, 2, 7, 10, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert net(X).shape == (3, 2)
    for index in (0, 2):
        G = nfa.patch_agop(net, net[index], X)
        d = net[index].weight[0].numel()
        assert G.shape == (d, d) and G.dtype == F64
        ref = _reference_patch_agop(net, index, X)
        torch.testing.assert_close(G, ref, rtol=1e-8, atol=1e-12)
        # image chunks of any size give the same sum
        torch.testing.assert_close(nfa.patch_agop(net, net[index], X, batch_size=2), ref,
                                   rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(nfa.patch_agop(net, net[index], X, batch_size=np.int64(2)),
                                   ref, rtol=1e-8, atol=1e-12)  # a NumPy integer size too
    # the two correlation conventions of the report are measures.pearson / cosine
    report = nfa.cnfa(net, X)
    assert [r["layer"] for r in report] == ["0", "2"]
    F = nfa.filter_covariance(net[2])
    ref = _reference_patch_agop(net, 2, X)
    assert report[1]["pearson"] == pytest.approx(pearson(F, ref), rel=1e-8)
    assert report[1]["cosine"] == pytest.approx(cosine(F, ref), rel=1e-8)


def test_patch_agop_of_a_float32_network_is_float32():
    net = _tiny_cnn().float()
    X = torch.randn(3, 2, 7, 10, generator=torch.Generator().manual_seed(1))
    G = nfa.patch_agop(net, net[0], X)
    assert G.dtype == torch.float32
    net64 = _tiny_cnn()
    ref = nfa.patch_agop(net64, net64[0], X.double())
    torch.testing.assert_close(G.double(), ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "shape"), [
    ({"kernel_size": 3, "padding": 1}, (7, 6)),
    ({"kernel_size": 3, "stride": 2, "padding": 2, "dilation": 2}, (9, 8)),
    ({"kernel_size": (2, 3), "padding": "same"}, (5, 6)),
    ({"kernel_size": (4, 2), "padding": "same", "dilation": (1, 3)}, (6, 8)),
    ({"kernel_size": 2, "padding": "valid", "stride": (2, 1)}, (5, 6)),
    ({"kernel_size": 3, "padding": 1, "padding_mode": "reflect"}, (5, 6)),
    ({"kernel_size": 3, "padding": (2, 1), "padding_mode": "circular"}, (5, 6)),
    ({"kernel_size": 3, "padding": 1, "padding_mode": "replicate", "bias": False}, (5, 6)),
])
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv_patches_reproduce_the_convolution(kwargs, shape):
    conv = torch.nn.Conv2d(2, 3, dtype=F64, **kwargs)
    H = torch.randn(2, 2, *shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    P = nfa.conv_patches(conv, H)
    out = conv(H)
    assert P.shape == (2, 2 * conv.weight[0, 0].numel(), out.shape[2] * out.shape[3])
    z = nfa.filter_matrix(conv) @ P
    if conv.bias is not None:
        z = z + conv.bias.detach()[:, None]
    torch.testing.assert_close(z.reshape(out.shape), out.detach(), rtol=1e-12, atol=1e-12)


def test_patch_agop_closed_form_of_a_linear_network():
    """``f_c(x) = a_c sum conv(x)``: every patch gradient is ``a_c W~^T 1``, so
    ``G = L (sum_c a_c^2) s s^T`` with ``s = W~^T 1`` and ``L`` output positions."""
    conv = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=F64)
    X = torch.randn(4, 2, 5, 6, dtype=F64, generator=torch.Generator().manual_seed(2))
    L = conv(X).shape[2] * conv(X).shape[3]
    a = torch.tensor([0.5, -2.0], dtype=F64)
    total = torch.nn.Linear(3 * L, 2, bias=False, dtype=F64)
    with torch.no_grad():
        total.weight.copy_(a[:, None] * torch.ones(2, 3 * L, dtype=F64))
    net = torch.nn.Sequential(conv, torch.nn.Flatten(), total)
    s = nfa.filter_matrix(conv).sum(dim=0)
    expected = L * float((a * a).sum()) * torch.outer(s, s)
    for batch_size in (None, 1, 3, 10):
        torch.testing.assert_close(nfa.patch_agop(net, conv, X, batch_size=batch_size),
                                   expected, rtol=1e-12, atol=1e-12)
    with config_context(working_memory_mb=1e-4):  # one image per chunk
        torch.testing.assert_close(nfa.patch_agop(net, conv, X), expected)
    F = nfa.filter_covariance(conv)
    torch.testing.assert_close(F, nfa.filter_matrix(conv).T @ nfa.filter_matrix(conv))
    torch.testing.assert_close(nfa.filter_covariance(conv, scale="mean"), F / 3)
    (row,) = nfa.cnfa(net, X)
    assert row["pearson"] == pytest.approx(pearson(F, torch.outer(s, s)), rel=1e-10)
    assert row["cosine"] == pytest.approx(cosine(F, torch.outer(s, s)), rel=1e-10)
    # a rank-one G: its square root is a multiple of itself
    (half,) = nfa.cnfa(net, X, power=0.5)
    assert half["pearson"] == pytest.approx(row["pearson"], rel=1e-8)


def _digits_cnn(seed, width=8):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1, dtype=F64), torch.nn.ReLU(),
        torch.nn.Conv2d(width, width, 3, padding=1, dtype=F64), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(width * 64, 10, dtype=F64),
    )
    with torch.no_grad():  # a smaller initial scale, so that training shapes the filters
        net[0].weight.mul_(0.3)
        net[2].weight.mul_(0.3)
    return net


def test_cnfa_holds_for_a_small_cnn_trained_on_digits():
    """Two conv layers, 500 digits, 20 Adam epochs (about a second).  Measured over seeds
    0-11: first layer pearson 0.86-0.98 (cosine 0.88-0.99) trained, 0.31-0.66 for the
    initial filters against the same AGOP; second layer 0.94-0.98 trained, <= 0.14 for
    the initial filters; with power 1/2 the first layer is >= 0.966."""
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    images, labels = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(images))[:500]
    X = torch.from_numpy(images[idx].reshape(-1, 1, 8, 8) / 16.0)
    y = torch.from_numpy(labels[idx])
    net = _digits_cnn(seed=0)
    init = copy.deepcopy(net)
    hist = nfa.train(net, X, y, epochs=20, lr=3e-3, optimizer="adam", batch_size=64,
                     loss="cross_entropy", seed=0)
    assert hist[-1]["loss"] < 0.2
    assert float((net(X).argmax(1) == y).double().mean()) > 0.95
    report = nfa.cnfa(net, X[:200], initial=init)
    first, second = report
    assert first["pearson"] > 0.8 and first["cosine"] > 0.8, first
    assert second["pearson"] > 0.9 and second["cosine"] > 0.9, second
    # the AGOP matches the learned filters, not the initial ones
    assert first["pearson"] > first["init_pearson"] + 0.15, first
    assert second["init_pearson"] < 0.3, second
    # nor a random covariance of the same size
    G = nfa.patch_agop(net, net[0], X[:200])
    R = torch.randn(G.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert first["pearson"] > pearson(R @ R.T, G) + 0.25
    assert nfa.cnfa(net, X[:200], layers=net[0], power=0.5)[0]["pearson"] > 0.95
    # initial weights given as tensors instead of a module
    weights = [init[0].weight, init[2].weight]
    assert nfa.cnfa(net, X[:200], initial=weights) == report
    F0 = nfa.filter_covariance(init[0])
    assert first["init_nfm_pearson"] == pytest.approx(
        pearson(F0, nfa.filter_covariance(net[0])), rel=1e-10)


def test_bad_input_raises_clear_errors():
    net = _tiny_cnn()
    X = torch.randn(2, 2, 7, 10, dtype=F64)
    with pytest.raises(ValueError, match="must be an nn.Conv2d"):
        nfa.patch_agop(net, net[1], X)
    with pytest.raises(ValueError, match="must be an nn.Conv2d"):
        nfa.patch_agop(net, net[5], X)
    with pytest.raises(ValueError, match="not a module of model"):
        nfa.patch_agop(net, torch.nn.Conv2d(2, 3, 3, dtype=F64), X)
    grouped = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, groups=2), torch.nn.Flatten())
    with pytest.raises(ValueError, match="groups=2"):
        nfa.patch_agop(grouped, grouped[0], torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="groups=2"):
        nfa.cnfa(grouped, torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"4-D \(n, C, H, W\)"):
        nfa.patch_agop(net, net[0], X.reshape(2, -1))
    with pytest.raises(ValueError, match="no images"):
        nfa.patch_agop(net, net[0], X[:0])
    with pytest.raises(TypeError, match="real numbers"):
        nfa.patch_agop(net, net[0], np.full((1, 2, 7, 10), "a"))
    with pytest.raises(TypeError, match="real numbers"):
        nfa.patch_agop(net, net[0], X.to(torch.complex128))
    bad = X.clone()
    bad[1, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity"):
        nfa.patch_agop(net, net[0], bad)
    with pytest.raises(ValueError, match="NaN or infinity"):
        nfa.cnfa(net, np.where(np.isnan(bad.numpy()), np.inf, bad.numpy()))
    bn = torch.nn.Sequential(net[0], torch.nn.BatchNorm2d(3, dtype=F64), torch.nn.Flatten())
    stats = bn[1].running_mean.clone()
    with pytest.raises(ValueError, match=r"BatchNorm2d '1' is in training mode.*model\.eval"):
        nfa.patch_agop(bn, bn[0], X)
    torch.testing.assert_close(bn[1].running_mean, stats, rtol=0, atol=0)  # untouched
    assert nfa.patch_agop(bn.eval(), bn[0], X).shape == (18, 18)
    with pytest.raises(TypeError, match="nn.Module"):
        nfa.patch_agop(lambda x: x, net[0], X)
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        nfa.cnfa(torch.nn.Sequential(torch.nn.Linear(2, 2)), X)
    with pytest.raises(ValueError, match="batch_size"):
        nfa.patch_agop(net, net[0], X, batch_size=0)
    with pytest.raises(ValueError, match="power"):
        nfa.cnfa(net, X, power=0.0)
    with pytest.raises(ValueError, match="scale"):
        nfa.filter_covariance(net[0], scale="max")
    with pytest.raises(ValueError, match="architecture"):
        nfa.cnfa(net, X, initial=torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3)))
    with pytest.raises(ValueError, match="initial weight of shape"):
        nfa.cnfa(net, X, initial=[net[2].weight, net[0].weight])
    with pytest.raises(ValueError, match=r"the input of this layer must be \(n, 3, H, W\)"):
        nfa.conv_patches(net[2], X)
    shared = torch.nn.Conv2d(2, 2, 3, padding=1, dtype=F64)
    twice = torch.nn.Sequential(shared, torch.nn.Tanh(), shared, torch.nn.Flatten())
    with pytest.raises(ValueError, match="twice"):
        nfa.patch_agop(twice, shared, X)
    unused = torch.nn.Conv2d(2, 2, 3, dtype=F64)
    skips = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(140, 1, dtype=F64))
    skips[1].unused = unused  # a submodule that forward never calls
    with pytest.raises(ValueError, match="did not run"):
        nfa.patch_agop(skips, unused, X)
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, c\)"):
        nfa.patch_agop(torch.nn.Sequential(net[0]), net[0], X)
