"""AGOP, FACT and Neural Feature Ansatz measurements of torch networks (SPEC §5, §8).

For every ``nn.Linear`` layer ``z_l = W_l h_l + b_l`` of a network (an MLP, an
``nn.Sequential`` of Linear layers and activations, or any ``nn.Module`` that applies
each of its Linear layers once per forward pass):

- :func:`layer_agops`: the AGOP of the network output with respect to the layer input,
  ``AGOP_l = (1/n) sum_x J_{h_l}(x)^T J_{h_l}(x) = W_l^T K_l W_l``, from the
  pre-activation Jacobians (SPEC §8.3);
- :func:`layer_facts`: ``FACT_l = -(1/(n lambda)) sum_i grad_{h_l} l_i  h_l(x_i)^T``,
  which equals ``W_l^T W_l`` at a critical point of the weight-decayed loss (SPEC §5.1);
- :func:`feature_matrices`: the neural feature matrices ``W_l^T W_l``;
- :func:`nfa_correlations` and :func:`centered_nfa`: the NFA and centered NFA
  correlations (SPEC §8.1, §8.4) with :func:`agop.measures.pearson` or ``cosine``;
- :func:`mlp` and :func:`train`: a small network and a training loop with weight decay.

For every ``nn.Conv2d`` layer (``groups=1``) of a CNN (SPEC §4.5):

- :func:`patch_agop`: the AGOP of the output with respect to the patches of the layer
  input, summed over positions and outputs, averaged over images;
- :func:`filter_covariance`: ``W~^T W~`` of the reshaped filters :func:`filter_matrix`;
- :func:`cnfa`: the Convolutional Neural Feature Ansatz correlations, Pearson and cosine.

torch is imported when a function runs, never by ``import agop``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

from . import measures
from ._lib._compat import import_torch
from ._lib._validation import check_real_scalar

__all__ = [
    "LOSSES",
    "centered_nfa",
    "cnfa",
    "conv_layers",
    "conv_patches",
    "feature_matrices",
    "filter_covariance",
    "filter_matrix",
    "layer_agops",
    "layer_facts",
    "linear_layers",
    "loss_per_sample",
    "matrix_power",
    "mlp",
    "nfa_correlations",
    "patch_agop",
    "pre_activation_moments",
    "train",
]

LOSSES = ("mse", "cross_entropy")
_MEASURES = {"pearson": measures.pearson, "cosine": measures.cosine}


def _torch() -> Any:
    return import_torch("agop.nfa")


def _check_module(model: Any) -> Any:
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return torch


def linear_layers(model: Any) -> list[Any]:
    """The ``nn.Linear`` modules of ``model`` in registration order (the order of an
    ``nn.Sequential``)."""
    torch = _check_module(model)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to measure")
    return layers


def _layers(model: Any, layers: Sequence[Any] | None) -> list[Any]:
    torch = _check_module(model)
    if layers is None:
        return linear_layers(model)
    layers = list(layers)
    owned = {id(m) for m in model.modules()}
    for layer in layers:
        if not isinstance(layer, torch.nn.Linear) or id(layer) not in owned:
            raise ValueError("layers must be nn.Linear modules of model")
    return layers


def _as_input(model: Any, X: Any, name: str = "X", layout: str | None = "(n, d)") -> Any:
    """``X`` as a tensor of the model's dtype and device; ``layout`` names its axes
    (``"(n, d)"`` for rows, ``"(n, C, H, W)"`` for images, ``None`` for any ``(n, ...)``)."""
    torch = _torch()
    p = next(model.parameters())
    if not isinstance(X, torch.Tensor):
        import numpy as np

        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
        X = torch.from_numpy(np.ascontiguousarray(X))
    elif X.dtype.is_complex:
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if layout is None:  # rows of any shape
        if X.ndim < 2:
            raise ValueError(f"{name} must have one row per sample (n, ...), got shape "
                             f"{tuple(X.shape)}")
    elif X.ndim != layout.count(",") + 1:
        raise ValueError(f"{name} must be {layout.count(',') + 1}-D {layout}, got shape "
                         f"{tuple(X.shape)}")
    X = X.to(device=p.device, dtype=p.dtype)
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} contains NaN or infinity; the measures need finite inputs")
    return X


def _check_batch_size(batch_size: Any) -> int | None:
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, numbers.Integral)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
    return None if batch_size is None else int(batch_size)


def _output_matrix(out: Any, n: int) -> Any:
    """The model output as an ``(n, c)`` matrix (a 1-D output is one column)."""
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(f"model must map n inputs to (n,) or (n, c) outputs, got "
                         f"{tuple(out.shape)} for n = {n}")
    return out


def _as_target(model: Any, Y: Any, n: int, loss: Any) -> Any:
    torch = _torch()
    p = next(model.parameters())
    if not isinstance(Y, torch.Tensor):
        import numpy as np

        Y = torch.from_numpy(np.ascontiguousarray(np.asarray(Y)))
    if Y.shape[0] != n:
        raise ValueError(f"Y has {Y.shape[0]} rows but X has {n}")
    if loss == "cross_entropy":
        if Y.dtype.is_complex or Y.dtype == torch.bool or (
            Y.dtype.is_floating_point and not bool(torch.all(Y == torch.round(Y)))
        ):
            raise ValueError("cross_entropy needs integer class labels, got "
                             f"{Y.dtype} values that are not whole numbers")
        return Y.to(device=p.device, dtype=torch.int64)
    return Y.to(device=p.device, dtype=p.dtype)


def loss_per_sample(out: Any, Y: Any, loss: str | Callable[[Any, Any], Any] = "mse") -> Any:
    """Per-sample losses ``l_i``, shape ``(n,)``.

    ``"mse"``: ``1/2 |f(x_i) - y_i|^2`` summed over outputs (a 1-D target is one
    output); ``"cross_entropy"``: softmax cross-entropy of integer labels; a callable
    ``loss(out, Y)`` must return the ``(n,)`` vector itself.
    """
    torch = _torch()
    if callable(loss):
        value = loss(out, Y)
    elif loss == "mse":
        if out.ndim == 1:
            out = out[:, None]
        Y2 = Y[:, None] if Y.ndim == 1 else Y
        if Y2.shape != out.shape:
            raise ValueError(f"Y has shape {tuple(Y.shape)} but the model output has "
                             f"{tuple(out.shape)}")
        value = 0.5 * ((out - Y2) ** 2).sum(dim=1)
    elif loss == "cross_entropy":
        value = torch.nn.functional.cross_entropy(out, Y, reduction="none")
    else:
        raise ValueError(f"loss must be one of {LOSSES} or a callable, got {loss!r}")
    if value.ndim != 1 or value.shape[0] != out.shape[0]:
        raise ValueError(f"the loss must give one value per sample, got shape {tuple(value.shape)}")
    return value


class _Probe:
    """Forward hooks that record each layer's input ``h_l`` and add a zero perturbation
    ``p_l`` to its pre-activation, so that ``d out / d p_l`` is ``d out / d z_l``."""

    def __init__(self, layers: list[Any], n: int, like: Any) -> None:
        torch = _torch()
        self.layers = layers
        self.inputs: list[Any] = [None] * len(layers)
        self.perturb = [torch.zeros((n, lay.out_features), dtype=like.dtype,
                                    device=like.device, requires_grad=True) for lay in layers]
        self.handles: list[Any] = []

    def __enter__(self) -> _Probe:
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_hook(self._hook(i)))
        return self

    def _hook(self, i: int) -> Callable[..., Any]:
        def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
            if self.inputs[i] is not None:
                raise ValueError("a measured nn.Linear layer ran twice in one forward pass; "
                                 "pass layers= that each run once")
            h = args[0]
            if h.ndim != 2:
                raise ValueError(f"layer inputs must be (n, d) matrices, got {tuple(h.shape)}")
            self.inputs[i] = h.detach()
            return out + self.perturb[i]

        return hook

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


def _pre_activation_grads(model: Any, X: Any, layers: list[Any]) -> tuple[list, list, int]:
    """Per output ``c``: ``d f_c / d z_l`` for every layer, plus the layer inputs."""
    torch = _torch()
    with _Probe(layers, X.shape[0], X) as probe:
        out = _output_matrix(model(X), X.shape[0])
    if any(h is None for h in probe.inputs):
        raise ValueError("a measured layer did not run in the forward pass")
    c = out.shape[1]
    per_output = []
    for ell in range(c):
        grads = torch.autograd.grad(out[:, ell].sum(), probe.perturb, retain_graph=ell < c - 1,
                                    allow_unused=True)
        per_output.append([torch.zeros_like(p) if g is None else g
                           for g, p in zip(grads, probe.perturb, strict=True)])
    return per_output, probe.inputs, c


def pre_activation_moments(model: Any, X: Any, *, layers: Sequence[Any] | None = None) -> list:
    """``K_l = (1/n) sum_x sum_c (d f_c / d z_l)(d f_c / d z_l)^T`` (``k_l x k_l``), the
    pre-activation tangent second moments of SPEC §8.3 (one backward pass per output)."""
    _check_module(model)
    layers = _layers(model, layers)
    X = _as_input(model, X)
    per_output, _, _ = _pre_activation_grads(model, X, layers)
    n = X.shape[0]
    Ks = []
    for i in range(len(layers)):
        K = sum(g[i].T @ g[i] for g in per_output) / n
        Ks.append(K.detach())
    return Ks


def layer_agops(model: Any, X: Any, *, layers: Sequence[Any] | None = None) -> list:
    """AGOP of the network output with respect to each layer's input, ``(d_l, d_l)``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, d)`` to ``(n,)`` or ``(n, c)``, each row depending on its own input
        row (eval mode: no batch statistics).
    X : tensor or array, shape (n, d)
    layers : sequence of nn.Linear, optional
        Default: :func:`linear_layers`.

    Returns
    -------
    list of tensors
        ``AGOP_l = (1/n) sum_x sum_c grad_{h_l} f_c grad_{h_l} f_c^T``.

    Notes
    -----
    ``z_l = W_l h_l + b_l`` gives ``grad_{h_l} f_c = W_l^T grad_{z_l} f_c``, so
    ``AGOP_l = W_l^T K_l W_l`` with ``K_l`` of :func:`pre_activation_moments`: one
    backward pass per output gives the Jacobians of all layers (SPEC §8.3, the
    centered_NFA code).  For the first layer this is the AGOP of the network.

    Examples
    --------
    >>> import torch
    >>> from agop.nfa import layer_agops
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
    >>> layer_agops(net, torch.ones(5, 3))[0].diagonal().tolist()
    [1.0, 4.0, 0.0]
    """
    layers = _layers(model, layers)
    Ks = pre_activation_moments(model, X, layers=layers)
    return [(lay.weight.T @ K @ lay.weight).detach() for lay, K in zip(layers, Ks, strict=True)]


def layer_facts(
    model: Any,
    X: Any,
    Y: Any,
    *,
    weight_decay: float,
    loss: str | Callable[[Any, Any], Any] = "mse",
    layers: Sequence[Any] | None = None,
) -> list:
    """FACT of each layer: ``-(1/(n lambda)) sum_i grad_{h_l} l_i(x_i) h_l(x_i)^T``.

    Parameters
    ----------
    model : torch.nn.Module
    X : tensor or array, shape (n, d)
    Y : tensor or array
        Targets of the loss (``(n,)`` or ``(n, c)``; integer labels for cross-entropy).
    weight_decay : float > 0
        ``lambda`` of the training objective ``(1/n) sum_i l_i + (lambda/2)|theta|^2``
        (:func:`train`; SGD's ``weight_decay``).
    loss : {"mse", "cross_entropy"} or callable
        See :func:`loss_per_sample`; it must be the loss the network was trained on.
    layers : sequence of nn.Linear, optional

    Returns
    -------
    list of tensors, ``(d_l, d_l)``, not symmetric in general

    Notes
    -----
    At a critical point ``lambda W_l = -(1/n) sum_i grad_{z_l} l_i h_l(x_i)^T``; left
    multiplication by ``W_l^T`` gives the Features At Convergence Theorem
    ``W_l^T W_l = FACT_l`` (Boix-Adsera, Mallinar, Simon and Belkin, arXiv 2507.05644;
    SPEC §5.1).  Here ``grad_{h_l} l_i = W_l^T grad_{z_l} l_i`` comes from one backward
    pass of ``sum_i l_i`` through the pre-activation perturbations.
    """
    _check_module(model)
    lam = float(weight_decay)
    if not lam > 0:
        raise ValueError(f"weight_decay must be > 0 (FACT divides by it), got {weight_decay!r}")
    torch = _torch()
    layers = _layers(model, layers)
    X = _as_input(model, X)
    Y = _as_target(model, Y, X.shape[0], loss)
    with _Probe(layers, X.shape[0], X) as probe:
        out = model(X)
    total = loss_per_sample(out, Y, loss).sum()
    grads = torch.autograd.grad(total, probe.perturb, allow_unused=True)
    n = X.shape[0]
    facts = []
    for lay, g, h in zip(layers, grads, probe.inputs, strict=True):
        if g is None:
            g = torch.zeros((n, lay.out_features), dtype=X.dtype, device=X.device)
        gh = g @ lay.weight  # rows grad_{h_l} l_i
        facts.append((-(gh.T @ h) / (n * lam)).detach())
    return facts


def feature_matrices(model: Any, *, layers: Sequence[Any] | None = None) -> list:
    """The neural feature matrices ``W_l^T W_l`` (``(d_l, d_l)``)."""
    layers = _layers(model, layers)
    return [(lay.weight.T @ lay.weight).detach() for lay in layers]


def matrix_power(A: Any, power: float) -> Any:
    """``A^power`` of a symmetric PSD torch matrix by ``eigh`` of its symmetric part,
    negative eigenvalues clipped to 0 (SPEC Part A #3): the power step of
    :func:`agop.updates.finish_matrix`, without normalization."""
    from .updates import finish_matrix

    return finish_matrix(A, power=power, normalize="mean", clip=True)


def _measure(measure: str) -> Callable[[Any, Any], float]:
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {sorted(_MEASURES)}, got {measure!r}")
    return _MEASURES[measure]


def nfa_correlations(
    model: Any,
    X: Any,
    *,
    power: float = 0.5,
    measure: str = "pearson",
    layers: Sequence[Any] | None = None,
) -> list[float]:
    """NFA correlation of each layer: ``rho(W_l^T W_l, AGOP_l^power)`` (SPEC §8.1).

    ``power`` is ``s`` of ``W^T W ∝ AGOP^s`` (1/2 in the Science version of the ansatz,
    1 in the original RFM code); ``measure`` is ``"pearson"`` (centered over entries)
    or ``"cosine"`` (SPEC Part A #7).
    """
    rho = _measure(measure)
    layers = _layers(model, layers)
    agops = layer_agops(model, X, layers=layers)
    nfms = feature_matrices(model, layers=layers)
    return [rho(F, matrix_power(A, power)) for F, A in zip(nfms, agops, strict=True)]


def _initial_weights(model: Any, initial: Any, layers: list[Any],
                     find: Callable[[Any], list[Any]]) -> list[Any]:
    """The weights at initialization of ``layers``: from ``initial``, a module of the
    architecture of ``model`` (its layers matched by position in ``find(model)``), or a
    sequence of weight tensors, one per layer, each of the layer's shape."""
    torch = _torch()
    if isinstance(initial, torch.nn.Module):
        init_layers = find(initial)
        model_layers = find(model)
        if len(init_layers) != len(model_layers):
            raise ValueError("initial must have the architecture of model")
        index = {id(m): i for i, m in enumerate(model_layers)}
        W0s = [init_layers[index[id(lay)]].weight.detach() for lay in layers]
    else:
        W0s = [torch.as_tensor(w).detach() for w in initial]
        if len(W0s) != len(layers):
            raise ValueError(f"initial has {len(W0s)} weights for {len(layers)} layers")
    for lay, W0 in zip(layers, W0s, strict=True):
        if tuple(W0.shape) != tuple(lay.weight.shape):
            raise ValueError(f"initial weight of shape {tuple(W0.shape)} for a layer of "
                             f"shape {tuple(lay.weight.shape)}")
    return [W0.to(lay.weight.detach()) for lay, W0 in zip(layers, W0s, strict=True)]


def centered_nfa(
    model: Any,
    initial: Any,
    X: Any,
    *,
    measure: str = "pearson",
    layers: Sequence[Any] | None = None,
) -> list[dict[str, float]]:
    """Uncentered and centered neural feature correlations of each layer (SPEC §8.4).

    Parameters
    ----------
    model : torch.nn.Module
    initial : nn.Module of the same architecture, or a sequence of weight tensors
        The weights ``W_0`` at initialization (e.g. ``copy.deepcopy(model)`` before
        training), one per measured layer.
    X : tensor or array, shape (n, d)
    measure : {"pearson", "cosine"}
    layers : sequence of nn.Linear, optional

    Returns
    -------
    list of dict
        Per layer: ``"nfc"`` = ``rho(W^T W, W^T K W)``, ``"cnfc"`` =
        ``rho(dW^T dW, dW^T K dW)`` with ``dW = W - W_0``, and ``"relative_change"`` =
        ``|dW|_F / |W|_F``; ``K`` is the pre-activation moment of
        :func:`pre_activation_moments`.  ``cnfc`` is NaN while ``dW = 0``.

    Notes
    -----
    Beaglehole, Mitliagkas and Agarwala, arXiv 2402.05271 (TMLR 2024): the centered
    correlation isolates the alignment that training adds to the initial weights.
    """
    torch = _check_module(model)
    rho = _measure(measure)
    layers = _layers(model, layers)
    W0s = _initial_weights(model, initial, layers, linear_layers)
    Ks = pre_activation_moments(model, X, layers=layers)
    out = []
    for lay, W0, K in zip(layers, W0s, Ks, strict=True):
        W = lay.weight.detach()
        dW = W - W0
        out.append({
            "nfc": rho(W.T @ W, W.T @ K @ W),
            "cnfc": rho(dW.T @ dW, dW.T @ K @ dW),
            "relative_change": float(torch.linalg.norm(dW) / torch.linalg.norm(W)),
        })
    return out


# --- convolutional layers: patch AGOP and the CNFA (SPEC §4.5) ------------------------


def conv_layers(model: Any) -> list[Any]:
    """The ``nn.Conv2d`` modules of ``model`` in registration order."""
    torch = _check_module(model)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer to measure")
    return layers


def _check_conv(layer: Any) -> Any:
    torch = _torch()
    if not isinstance(layer, torch.nn.Conv2d):
        raise ValueError(f"layer must be an nn.Conv2d, got {type(layer).__name__}")
    if layer.groups != 1:
        raise ValueError(f"only convolutions with groups=1 have one filter matrix over "
                         f"whole patches; this layer has groups={layer.groups}")
    return layer


def _conv_layers(model: Any, layers: Any) -> list[Any]:
    """``layers`` (one layer, a sequence, or None for all) checked to be groups=1
    ``nn.Conv2d`` modules of ``model``."""
    torch = _check_module(model)
    if layers is None:
        layers = conv_layers(model)
    elif isinstance(layers, torch.nn.Module):
        layers = [layers]
    layers = [_check_conv(layer) for layer in layers]
    owned = {id(m) for m in model.modules()}
    for layer in layers:
        if id(layer) not in owned:
            raise ValueError("layer is not a module of model (pass the model's own "
                             "nn.Conv2d, e.g. model[0])")
    return layers


def filter_matrix(layer: Any) -> Any:
    """The reshaped filters ``W~ = weight.reshape(C_out, C_in q_h q_w)``: row ``o`` is
    filter ``o`` with its coordinates in the order ``(c, kh, kw)`` of
    :func:`conv_patches`."""
    layer = _check_conv(layer)
    return layer.weight.detach().reshape(layer.out_channels, -1)


def filter_covariance(layer: Any, *, scale: str = "sum") -> Any:
    """The filter covariance of a convolution, ``(C_in q_h q_w, C_in q_h q_w)``.

    ``scale="sum"``: ``W~^T W~ = sum_o w_o w_o^T`` (the NFM of the CNFA code);
    ``"mean"``: ``(1/C_out) W~^T W~``.  Correlations do not see the scale.

    Examples
    --------
    >>> import torch
    >>> from agop.nfa import filter_covariance
    >>> conv = torch.nn.Conv2d(1, 2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = conv.weight.copy_(torch.tensor([3.0, 4.0]).reshape(2, 1, 1, 1))
    >>> filter_covariance(conv).item(), filter_covariance(conv, scale="mean").item()
    (25.0, 12.5)
    """
    W = filter_matrix(layer)
    if scale == "sum":
        return W.T @ W
    if scale == "mean":
        return W.T @ W / W.shape[0]
    raise ValueError(f"scale must be 'sum' or 'mean', got {scale!r}")


def _conv_padding(layer: Any, H: Any) -> Any:
    """``H`` padded as ``layer`` pads its input (zeros, reflect, replicate or circular;
    ``padding="same"`` puts the odd pixel at the end, as torch does)."""
    torch = _torch()
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            return H
        pads = []
        for d, k in zip(reversed(layer.dilation), reversed(layer.kernel_size), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
    else:
        pads = [p for p in reversed(layer.padding) for _ in range(2)]
    if not any(pads):
        return H
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    return torch.nn.functional.pad(H, pads, mode=mode)


def conv_patches(layer: Any, H: Any) -> Any:
    """The patches a convolution sees, ``(n, C_in q_h q_w, L)``.

    ``H`` is the layer input ``(n, C_in, H, W)``; ``L`` is the number of output
    positions.  Padding, stride and dilation are the layer's, and the patch
    coordinates are ordered ``(c, kh, kw)`` like :func:`filter_matrix`, so that
    ``conv(H) = W~ P + b`` position by position.
    """
    torch = _torch()
    layer = _check_conv(layer)
    if H.ndim != 4 or H.shape[1] != layer.in_channels:
        raise ValueError(f"the input of this layer must be (n, {layer.in_channels}, H, W), "
                         f"got shape {tuple(H.shape)}")
    return torch.nn.functional.unfold(_conv_padding(layer, H), layer.kernel_size,
                                      dilation=layer.dilation, stride=layer.stride)


class _PatchProbe:
    """A forward hook that runs ``layer`` as ``W~ P + b`` on its patch tensor ``P``,
    made a leaf that requires grad, so that ``d out / d P`` is the patch gradient."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.patches: Any = None
        self.handle: Any = None

    def __enter__(self) -> _PatchProbe:
        self.handle = self.layer.register_forward_hook(self._hook)
        return self

    def _hook(self, module: Any, args: tuple[Any, ...], out: Any) -> Any:
        if self.patches is not None:
            raise ValueError("the measured nn.Conv2d ran twice in one forward pass; the "
                             "patch AGOP needs a layer that runs once")
        P = conv_patches(module, args[0].detach()).requires_grad_(True)
        self.patches = P
        z = filter_matrix(module) @ P
        if module.bias is not None:
            z = z + module.bias.detach()[:, None]
        return z.reshape(out.shape)

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


def _check_eval(model: Any) -> None:
    """Refuse batch normalization or dropout in training mode: their outputs mix the
    images of a batch (or are random), and a forward pass would update running stats."""
    torch = _torch()
    mixing = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd,
              torch.nn.Dropout)
    for name, m in model.named_modules():
        if m.training and isinstance(m, mixing):
            raise ValueError(
                f"{type(m).__name__} {name!r} is in training mode (batch statistics or "
                "random masks; a forward pass would also update running statistics); "
                "call model.eval() before measuring")


def _image_batches(n: int, batch_size: int | None, patch_numel: int, itemsize: int) -> int:
    """Images per chunk: ``batch_size``, or as many as keep the patch tensor, its
    gradient and their reshaped copy within ``working_memory_mb``."""
    if _check_batch_size(batch_size) is not None:
        return int(batch_size)
    from ._lib._config import get_config

    budget = get_config()["working_memory_mb"] * 2**20
    return max(1, min(n, int(budget // (3 * patch_numel * itemsize))))


def patch_agop(model: Any, layer: Any, X: Any, *, batch_size: int | None = None) -> Any:
    """Patch AGOP of the network output at one convolution (SPEC §4.3, §4.5).

    Parameters
    ----------
    model : torch.nn.Module
        Maps images ``(n, C, H, W)`` to ``(n,)`` or ``(n, c)``, each output row
        depending on its own image only (eval mode: batch normalization or dropout in
        training mode raises a ValueError).
    layer : nn.Conv2d
        A module of ``model`` with ``groups=1`` that runs once per forward pass; any
        kernel size, stride, padding (mode), dilation and bias.
    X : tensor or array, shape (n, C, H, W)
        The model's input images (cast to the model's dtype and device).
    batch_size : int, optional
        Images per forward pass; by default as many as keep the patch tensor and its
        gradient within ``working_memory_mb`` (:func:`agop.config_context`).

    Returns
    -------
    tensor, shape (C_in q_h q_w, C_in q_h q_w)
        ``G = (1/n) sum_x sum_{positions l} sum_{outputs c} grad_{p_l} f_c(x)
        grad_{p_l} f_c(x)^T``: summed over positions and outputs, averaged over the
        ``n`` images; coordinates in the order ``(c, kh, kw)`` of :func:`filter_matrix`.

    Notes
    -----
    The patches ``p_l`` of the layer input are an independent variable: a forward hook
    replaces the layer by ``W~ P + b`` on the unfolded input ``P`` (:func:`conv_patches`),
    the rest of the network runs unchanged, and one backward pass per output of
    ``sum_x f_c(x)`` gives ``d f_c(x) / d p_l`` at every image and position (the
    ``PatchConvLayer`` construction of the CNFA code, Beaglehole, Radhakrishnan, Boix-Adsera
    and Belkin, arXiv 2309.00570).  For the first layer ``G`` is the AGOP of the network
    with respect to its input patches.

    Examples
    --------
    ``f(x) = sum of conv(x)`` with one filter ``w`` has ``grad_{p_l} f = w`` at each of
    its ``L = 4`` positions, so ``G = 4 w w^T``:

    >>> import torch
    >>> from agop.nfa import patch_agop
    >>> conv = torch.nn.Conv2d(1, 1, 2, bias=False, dtype=torch.float64)
    >>> total = torch.nn.Linear(4, 1, bias=False, dtype=torch.float64)
    >>> net = torch.nn.Sequential(conv, torch.nn.Flatten(), total)
    >>> with torch.no_grad():
    ...     _ = conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0, 2.0]).reshape(1, 1, 2, 2))
    ...     _ = total.weight.fill_(1.0)
    >>> patch_agop(net, conv, torch.randn(5, 1, 3, 3)).diagonal().tolist()
    [4.0, 0.0, 0.0, 16.0]
    """
    torch = _check_module(model)
    (layer,) = _conv_layers(model, layer)
    _check_eval(model)
    X = _as_input(model, X, layout="(n, C, H, W)")
    n = X.shape[0]
    if n == 0:
        raise ValueError("X has no images")
    d = layer.weight[0].numel()
    G = torch.zeros((d, d), dtype=X.dtype, device=X.device)
    # without batch_size, the first image alone sizes the chunks
    chunk = 1 if batch_size is None else _image_batches(n, batch_size, 0, 0)
    start = 0
    while start < n:
        xb = X[start:start + chunk]
        with _PatchProbe(layer) as probe:
            out = _output_matrix(model(xb), xb.shape[0])
        P = probe.patches
        if P is None:
            raise ValueError("the measured layer did not run in the forward pass")
        c = out.shape[1]
        for ell in range(c):
            (g,) = torch.autograd.grad(out[:, ell].sum(), P, retain_graph=ell < c - 1,
                                       allow_unused=True)
            if g is not None:
                g = g.transpose(1, 2).reshape(-1, d)
                G += g.T @ g
        if start == 0 and batch_size is None:
            chunk = _image_batches(n, batch_size, P[0].numel(), P.element_size())
        start += xb.shape[0]
    return G / n


def cnfa(
    model: Any,
    X: Any,
    *,
    layers: Any = None,
    initial: Any = None,
    power: float = 1.0,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """Convolutional Neural Feature Ansatz report: per convolution, the correlation of
    the filter covariance ``W~^T W~`` with the patch AGOP (SPEC §4.5).

    Parameters
    ----------
    model : torch.nn.Module
        As for :func:`patch_agop`.
    X : tensor or array, shape (n, C, H, W)
    layers : nn.Conv2d or sequence of them, optional
        Default: every ``nn.Conv2d`` of ``model`` (:func:`conv_layers`).
    initial : nn.Module of the same architecture, or a sequence of weight tensors
        The filters at initialization (e.g. ``copy.deepcopy(model)`` before
        training), one per measured layer; adds the ``init_*`` entries.
    power : float > 0
        ``s`` of the ansatz ``W~^T W~ ∝ G^s`` (1 in the CNFA paper; 1/2 is the
        Science-version convention of the NFA).
    batch_size : int, optional
        Images per forward pass of :func:`patch_agop`.

    Returns
    -------
    list of dict
        Per layer: ``"layer"`` (its name in ``model.named_modules()``), ``"pearson"``
        and ``"cosine"`` = ``rho(W~^T W~, G^s)`` with :func:`agop.measures.pearson`
        (centered over entries) and :func:`agop.measures.cosine` (uncentered) — the
        two conventions of the CNFA code (SPEC Part A #7).  With ``initial`` also
        ``"init_pearson"``/``"init_cosine"`` = ``rho(W~_0^T W~_0, G^s)`` (the same AGOP
        against the filters at initialization) and
        ``"init_nfm_pearson"``/``"init_nfm_cosine"`` = ``rho(W~_0^T W~_0, W~^T W~)``
        (the baseline of the CNFA code: how far training moved the filters).

    Notes
    -----
    ``G`` is :func:`patch_agop` (averaged over images; the correlations do not see
    the scale).  The AGOP is always that of ``model``, so at initialization
    ``cnfa(initial, X)`` measures the ansatz of the untrained network.
    """
    _check_module(model)
    layers = _conv_layers(model, layers)
    power = check_real_scalar(power, "power", low=0.0, low_open=True)
    W0s = None if initial is None else _initial_weights(model, initial, layers, conv_layers)
    names = {id(m): name for name, m in model.named_modules()}
    report = []
    for i, layer in enumerate(layers):
        G = patch_agop(model, layer, X, batch_size=batch_size)
        if power != 1.0:
            G = matrix_power(G, power)
        F = filter_covariance(layer)
        row: dict[str, Any] = {"layer": names[id(layer)]}
        row.update({m: rho(F, G) for m, rho in _MEASURES.items()})
        if W0s is not None:
            W0 = W0s[i].reshape(layer.out_channels, -1)
            F0 = W0.T @ W0
            row.update({f"init_{m}": rho(F0, G) for m, rho in _MEASURES.items()})
            row.update({f"init_nfm_{m}": rho(F0, F) for m, rho in _MEASURES.items()})
        report.append(row)
    return report


def mlp(
    d_in: int,
    width: int,
    d_out: int = 1,
    *,
    depth: int = 2,
    activation: str = "relu",
    bias: bool = False,
    dtype: Any = None,
    seed: int | None = 0,
) -> Any:
    """A fully connected ``nn.Sequential``: ``depth`` Linear layers (``depth - 1`` hidden
    layers of ``width``) with ``activation`` in between, PyTorch's default init."""
    torch = _torch()
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU,
            "quadratic": None}
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    for name, v in (("depth", depth), ("d_in", d_in), ("width", width), ("d_out", d_out)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    class Square(torch.nn.Module):
        """``z -> z^2`` (the activation of the grokking networks)."""

        def forward(self, z: Any) -> Any:
            return z * z

    make = {**acts, "quadratic": Square}[activation]
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        sizes = [d_in] + [width] * (depth - 1) + [d_out]
        mods: list[Any] = []
        for i in range(depth):
            mods.append(torch.nn.Linear(sizes[i], sizes[i + 1], bias=bias,
                                        dtype=dtype or torch.float64))
            if i < depth - 1:
                mods.append(make())
    finally:
        if seed is not None:
            torch.random.set_rng_state(gen_state)
    return torch.nn.Sequential(*mods)


def train(
    model: Any,
    X: Any,
    Y: Any,
    *,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    optimizer: str = "sgd",
    batch_size: int | None = None,
    loss: str | Callable[[Any, Any], Any] = "mse",
    callback: Callable[[int, Any, float], Any] | None = None,
    seed: int | None = 0,
) -> list[dict[str, float]]:
    """Train ``model`` on ``(1/n) sum_i l_i + (weight_decay / 2) |theta|^2``.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place.
    X, Y : tensors or arrays
        ``X`` has one sample per row: ``(n, d)`` for an MLP, ``(n, C, H, W)`` images
        for a CNN.
    epochs : int
        Passes over the data (``"lbfgs"``: one optimizer step of up to 20 iterations
        each).
    lr : float
    weight_decay : float >= 0
        ``lambda``: the penalty is part of the objective (the gradient gets
        ``lambda theta``, as SGD's ``weight_decay``), for every parameter.
    optimizer : {"sgd", "adam", "lbfgs"}
        ``"lbfgs"`` (full batch, strong-Wolfe line search) reaches a critical point
        quickly on small problems, where the FACT identity is exact.
    batch_size : int or None
        Mini-batches for "sgd"/"adam" (``None``: full batch).
    loss : {"mse", "cross_entropy"} or callable
        See :func:`loss_per_sample`.
    callback : callable ``cb(epoch, model, objective)``, optional
        Called after each epoch; returning ``True`` stops training.
    seed : int or None
        Seeds the mini-batch order.

    Returns
    -------
    list of dict
        Per epoch: ``"epoch"``, ``"loss"`` (mean of ``l_i`` over all data) and
        ``"objective"`` (with the penalty), measured after the epoch.
    """
    torch = _check_module(model)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    lam = float(weight_decay)
    if not lam >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not float(lr) > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if optimizer not in ("sgd", "adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'sgd', 'adam' or 'lbfgs', got {optimizer!r}")
    _check_batch_size(batch_size)
    X = _as_input(model, X, layout=None)
    Y = _as_target(model, Y, X.shape[0], loss)
    n = X.shape[0]
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=20, history_size=50,
                                tolerance_grad=1e-12, tolerance_change=1e-15,
                                line_search_fn="strong_wolfe")
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        opt = torch.optim.SGD(params, lr=lr)
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)

    def objective(xb: Any, yb: Any) -> Any:
        value = loss_per_sample(model(xb), yb, loss).mean()
        if lam:
            value = value + 0.5 * lam * sum((p * p).sum() for p in params)
        return value

    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        if optimizer == "lbfgs":
            def closure() -> Any:
                opt.zero_grad()
                value = objective(X, Y)
                value.backward()
                return value

            opt.step(closure)
        else:
            if batch_size is None or batch_size >= n:
                batches = [None]
            else:
                perm = torch.randperm(n, generator=gen).to(X.device)
                batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
            for idx in batches:
                xb, yb = (X, Y) if idx is None else (X[idx], Y[idx])
                opt.zero_grad()
                objective(xb, yb).backward()
                opt.step()
        with torch.no_grad():
            data_loss = float(loss_per_sample(model(X), Y, loss).mean())
            penalty = 0.5 * lam * float(sum((p * p).sum() for p in params))
        record = {"epoch": epoch, "loss": data_loss, "objective": data_loss + penalty}
        history.append(record)
        if callback is not None and bool(callback(epoch, model, record["objective"])):
            break
    return history
