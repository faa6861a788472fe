"""NFA toolbox: per-layer AGOP and FACT against autograd references, the FACT theorem
on a trained network, the NFA on a low-rank target."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest

from agop.measures import pearson

torch = pytest.importorskip("torch")
from agop import nfa  # noqa: E402
from agop.autodiff import agop_of  # noqa: E402


def _data(n=48, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1] * X[:, 2], np.cos(X[:, 3])], axis=1)
    return torch.from_numpy(X), torch.from_numpy(Y)


def test_layer_agops_equal_autograd_of_the_tail_networks():
    X, _ = _data()
    net = nfa.mlp(4, 6, 2, depth=3, bias=True, activation="tanh", seed=1)
    A = nfa.layer_agops(net, X)
    assert len(A) == 3 and A[0].shape == (4, 4) and A[1].shape == (6, 6)
    torch.testing.assert_close(A[0], agop_of(net, X), rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        H1 = torch.tanh(net[0](X))
        H2 = torch.tanh(net[2](H1))
    torch.testing.assert_close(A[1], agop_of(net[2:], H1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(A[2], agop_of(net[4:], H2), rtol=1e-10, atol=1e-12)
    # W^T K W with the pre-activation moments
    K = nfa.pre_activation_moments(net, X)
    torch.testing.assert_close(A[1], net[2].weight.T @ K[1] @ net[2].weight)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_layer_facts_equal_minus_W_T_grad_W_over_lambda(loss):
    X, Y = _data()
    if loss == "cross_entropy":
        Y = (Y[:, 0] > 0).to(torch.int64)
    net = nfa.mlp(4, 5, 2, depth=3, bias=True, seed=2)
    lam = 0.1
    F = nfa.layer_facts(net, X, Y, weight_decay=lam, loss=loss)
    net.zero_grad()
    nfa.loss_per_sample(net(X), Y, loss).mean().backward()
    for f, layer in zip(F, nfa.linear_layers(net), strict=True):
        torch.testing.assert_close(f, -(layer.weight.T @ layer.weight.grad) / lam,
                                   rtol=1e-10, atol=1e-12)


def test_fact_theorem_holds_for_a_network_trained_to_convergence():
    """W_l^T W_l = FACT_l at a critical point of the weight-decayed loss (SPEC §5.1)."""
    X, Y = _data(n=64, d=5, seed=3)
    Y = Y[:, :1]
    lam = 1e-2
    net = nfa.mlp(5, 16, 1, depth=3, bias=True, activation="tanh", seed=0)
    before = [pearson(W, F) for W, F in zip(nfa.feature_matrices(net),
                                            nfa.layer_facts(net, X, Y, weight_decay=lam),
                                            strict=True)]
    hist = nfa.train(net, X, Y, epochs=20, lr=1.0, weight_decay=lam, optimizer="lbfgs")
    assert hist[-1]["objective"] < hist[0]["objective"]
    after = [pearson(W, F) for W, F in zip(nfa.feature_matrices(net),
                                           nfa.layer_facts(net, X, Y, weight_decay=lam),
                                           strict=True)]
    assert after[0] > 0.99, after
    assert min(after) > 0.99, after
    assert before[0] < 0.9, before  # the identity is a property of convergence


def test_nfa_first_layer_matches_the_root_agop_on_a_low_rank_target():
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(256, 10)))
    y = X[:, 0] * X[:, 1]
    net = nfa.mlp(10, 32, 1, depth=2, seed=0)
    init = copy.deepcopy(net)
    start = nfa.nfa_correlations(net, X)[0]
    nfa.train(net, X, y, epochs=300, lr=1e-2, weight_decay=1e-2, optimizer="adam")
    rho = nfa.nfa_correlations(net, X, power=0.5)
    assert rho[0] > 0.9, rho
    assert rho[0] > start + 0.1  # training made the alignment (0.77 at initialization)
    assert nfa.nfa_correlations(net, X, measure="cosine")[0] > 0.9
    # the learned features are the two coordinates of the target
    w, V = torch.linalg.eigh(nfa.layer_agops(net, X)[0])
    top = V[:, -2:]
    assert float(torch.linalg.norm(top[:2, :])) ** 2 > 1.9
    cn = nfa.centered_nfa(net, init, X)
    K = nfa.pre_activation_moments(net, X)[0]
    W, W0 = net[0].weight.detach(), init[0].weight.detach()
    dW = W - W0
    assert cn[0]["nfc"] == pytest.approx(pearson(W.T @ W, W.T @ K @ W), rel=1e-12)
    assert cn[0]["cnfc"] == pytest.approx(pearson(dW.T @ dW, dW.T @ K @ dW), rel=1e-12)
    assert cn[0]["relative_change"] == pytest.approx(float(dW.norm() / W.norm()), rel=1e-12)
    assert cn[0]["nfc"] == pytest.approx(pearson(W.T @ W, nfa.layer_agops(net, X)[0]), rel=1e-10)
    assert nfa.centered_nfa(net, [W0, init[2].weight], X) == cn  # weights instead of a module
    at_init = nfa.centered_nfa(init, init, X)
    assert math.isnan(at_init[0]["cnfc"]) and at_init[0]["relative_change"] == 0.0


def test_train_and_argument_checks():
    X, Y = _data()
    net = nfa.mlp(4, 8, 2, depth=2, seed=0)
    seen = []
    hist = nfa.train(net, X, Y, epochs=50, lr=0.05, weight_decay=1e-3, batch_size=16,
                     callback=lambda e, m, obj: seen.append(obj) or e == 9)
    assert len(hist) == 10 and len(seen) == 10
    assert hist[-1]["loss"] < hist[0]["loss"]
    with pytest.raises(ValueError, match="weight_decay"):
        nfa.layer_facts(net, X, Y, weight_decay=0.0)
    with pytest.raises(ValueError, match="optimizer"):
        nfa.train(net, X, Y, optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size"):
        nfa.train(net, X, Y, batch_size=0)
    with pytest.raises(ValueError, match="width"):
        nfa.mlp(4, 0, 2)
    with pytest.raises(ValueError, match="loss"):
        nfa.layer_facts(net, X, Y, weight_decay=1.0, loss="hinge")
    with pytest.raises(ValueError, match="integer class labels"):  # no silent 0.7 -> 0
        nfa.layer_facts(net, X, Y[:, 0], weight_decay=1.0, loss="cross_entropy")
    with pytest.raises(ValueError, match="measure"):
        nfa.nfa_correlations(net, X, measure="spearman")
    with pytest.raises(TypeError, match="nn.Module"):
        nfa.layer_agops(lambda x: x, X)
    with pytest.raises(ValueError, match="no nn.Linear"):
        nfa.layer_agops(torch.nn.Sequential(torch.nn.Tanh()), X)
    with pytest.raises(ValueError, match="layers must be"):
        nfa.layer_agops(net, X, layers=[torch.nn.Linear(4, 8)])
    with pytest.raises(ValueError, match="architecture"):
        nfa.centered_nfa(net, nfa.mlp(4, 8, 2, depth=3), X)
    shared = torch.nn.Linear(4, 4)
    twice = torch.nn.Sequential(shared, torch.nn.Tanh(), shared)
    with pytest.raises(ValueError, match="twice"):
        nfa.layer_agops(twice, X.float())


def test_importing_agop_nfa_does_not_import_torch():
    code = "import sys, agop, agop.nfa, agop.measures; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
