"""Test configuration: hypothesis profiles, the backend fixture, the CUDA simulator.

Backends under test come from ``AGOP_TEST_BACKENDS`` (comma-separated; default
``numpy,torch,array_api_strict``).  A name whose library is missing skips its tests; an
unknown name fails the whole run, so a typo cannot silently test nothing.
"""

from __future__ import annotations

import importlib
import os

# Must be set before numba.cuda is imported anywhere (CUDA tests run in the simulator
# on machines without a GPU).
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=40,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

_NAMESPACES = {
    "numpy": "numpy",
    "torch": "torch",
    "array_api_strict": "array_api_strict",
    "cupy": "cupy",
}


def _requested_backends() -> list[str]:
    raw = os.environ.get("AGOP_TEST_BACKENDS", "numpy,torch,array_api_strict")
    names = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = [n for n in names if n not in _NAMESPACES]
    if unknown:
        raise pytest.UsageError(
            f"AGOP_TEST_BACKENDS names unknown backend(s) {unknown}; known: {sorted(_NAMESPACES)}"
        )
    return names


def pytest_generate_tests(metafunc):
    if "xp" in metafunc.fixturenames:
        metafunc.parametrize("xp", _requested_backends(), indirect=True)


@pytest.fixture
def xp(request):
    """The array namespace module under test (numpy, torch, array_api_strict, cupy)."""
    try:
        return importlib.import_module(_NAMESPACES[request.param])
    except ImportError:
        pytest.skip(f"{request.param} is not installed")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
