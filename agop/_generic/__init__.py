"""Array-API-only implementations (the fallback of every op); each takes a keyword ``xp``."""

from ._kernel_ops import (
    AGOPAccumulator,
    agop,
    kernel_matrix,
    kernel_mv,
    pairwise_grads,
    predictor_grads,
)
from ._patches import patches

__all__ = [
    "AGOPAccumulator",
    "agop",
    "kernel_matrix",
    "kernel_mv",
    "pairwise_grads",
    "patches",
    "predictor_grads",
]
