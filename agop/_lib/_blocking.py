"""The memory planner: how many rows one block of a blocked reduction may hold.

A reduction over an ``n x m`` kernel (``kernel_mv``, ``predictor_grads``, ``agop``)
never materializes the whole kernel.  It walks over row blocks of the evaluation points;
each block needs ``bytes_per_row`` bytes of temporaries (a few length-``m`` rows of the
kernel block, the block's slice of the gradient tensor, ...) on top of ``fixed_bytes``
shared by all blocks.  The planner picks the largest block that fits the configured
working memory (``agop.config_context(working_memory_mb=...)``), or the forced size
``block_rows``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ._config import get_config

__all__ = ["BlockPlan", "plan_blocks"]


@dataclass(frozen=True)
class BlockPlan:
    """A row-block plan: ``n_rows`` rows in blocks of at most ``block_rows``."""

    n_rows: int
    block_rows: int
    bytes_per_row: int
    fixed_bytes: int

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block_rows)

    @property
    def peak_bytes(self) -> int:
        """Planned peak of temporaries: one full block plus the fixed part."""
        return self.fixed_bytes + self.block_rows * self.bytes_per_row

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.n_rows, self.block_rows):
            yield start, min(start + self.block_rows, self.n_rows)


def plan_blocks(n_rows: int, bytes_per_row: int, fixed_bytes: int = 0) -> BlockPlan:
    """Plan row blocks for ``n_rows`` rows needing ``bytes_per_row`` bytes each."""
    cfg = get_config()
    if cfg["block_rows"] is not None:
        rows = cfg["block_rows"]
    else:
        budget = int(cfg["working_memory_mb"] * 2**20) - fixed_bytes
        rows = budget // max(bytes_per_row, 1)
    rows = max(1, min(int(rows), n_rows))
    return BlockPlan(n_rows, rows, int(bytes_per_row), int(fixed_bytes))
