"""Scratch buffers kept for the length of a loop.

The blocked ops allocate one ``block_rows x m`` buffer per call.  Fresh memory is
costly on some machines (virtual machines that hand freed memory back to their host
fault it in again at a few hundred MB/s), and a loop such as the RFM fit calls the same
ops with the same sizes once per iteration.  Inside ``with scratch_pool():`` the ops
take their buffers from a pool that lives as long as the block, so each size is
faulted in once; outside (the default) every call allocates and frees its own.

The pool belongs to the context that opened it: threads started inside the block see no
pool and allocate as usual.  It holds at most one buffer per name (the largest asked
for), each within the op's planned working memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

__all__ = ["scratch", "scratch_pool"]

_POOL: ContextVar[dict[str, np.ndarray] | None] = ContextVar("agop_scratch_pool",
                                                              default=None)


@contextmanager
def scratch_pool() -> Iterator[None]:
    """Keep the ops' scratch buffers until the block ends."""
    token = _POOL.set({})
    try:
        yield
    finally:
        _POOL.reset(token)


def scratch(name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialized C-ordered array: from the open pool (under ``name``) or new."""
    pool = _POOL.get()
    if pool is None:
        return np.empty(shape, dtype=dtype)
    size = math.prod(shape)
    buf = pool.get(name)
    if buf is None or buf.dtype != np.dtype(dtype) or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        pool[name] = buf
    return buf[:size].reshape(shape)
