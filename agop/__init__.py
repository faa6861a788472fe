"""agop: feature learning with the Average Gradient Outer Product.

Kernels with a learned feature matrix M, the AGOP of kernel machines, and the
Recursive Feature Machine family (one feature-learning loop, ``agop.rfm``), written
once against the Python Array
API so they run on NumPy, torch, CuPy and any Array-API library.

``import agop`` needs only NumPy, SciPy, numba and array-api-compat; torch, CuPy and
numba-cuda are imported only when your data or options need them.
"""

from ._backends import available_backends
from ._lib._config import config_context, get_config, set_config
from ._ops import agop, fact, kernel_matrix, kernel_mv, predictor_grads
from .autodiff import agop_of, grads_of
from .io import load, save
from .kernels import (
    Gaussian,
    GeneralizedExponential,
    Kernel,
    Laplace,
    LpqLaplace,
    ProductLaplace,
    Quadratic,
    make_kernel,
)
from .rfm import FitResult, fit_feature_machine
from .solvers import solve_kernel_ridge, solve_ridge
from .updates import AGOPUpdate, FACTUpdate, KernelMachine, UpdateRule

__version__ = "0.1.0.dev0"

_LAZY = {
    "RFMRegressor": "agop.estimators",
    "RFMClassifier": "agop.estimators",
    "xRFMRegressor": "agop.tree",
    "xRFMClassifier": "agop.tree",
    "ConvKernel": "agop.conv",
    "ConvRFMClassifier": "agop.conv",
    "ConvRFMRegressor": "agop.conv",
    "DeepConvRFMClassifier": "agop.conv",
    "PatchAGOPUpdate": "agop.conv",
    "extract_patches": "agop.conv",
}


def __getattr__(name: str):
    # the estimators import scikit-learn (when installed) for their base classes: load
    # them on first use so that ``import agop`` stays light
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "AGOPUpdate",
    "ConvKernel",
    "ConvRFMClassifier",
    "ConvRFMRegressor",
    "DeepConvRFMClassifier",
    "PatchAGOPUpdate",
    "extract_patches",
    "FACTUpdate",
    "FitResult",
    "KernelMachine",
    "RFMClassifier",
    "RFMRegressor",
    "UpdateRule",
    "xRFMClassifier",
    "xRFMRegressor",
    "Gaussian",
    "GeneralizedExponential",
    "Kernel",
    "Laplace",
    "LpqLaplace",
    "ProductLaplace",
    "Quadratic",
    "__version__",
    "agop",
    "agop_of",
    "fit_feature_machine",
    "available_backends",
    "config_context",
    "fact",
    "get_config",
    "grads_of",
    "kernel_matrix",
    "kernel_mv",
    "load",
    "make_kernel",
    "predictor_grads",
    "save",
    "set_config",
    "solve_kernel_ridge",
    "solve_ridge",
]
