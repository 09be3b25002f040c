"""One memory budget per command (`--memory-gb`, the same option on score, learn-weights and
evaluate).

What a command must hold whole is reserved first: the method's kernel, the query features
and their kernel-applied copies, per-query result buffers. The training store is then
streamed in blocks of as many rows as the rest allows (each row costs its features several
times over: the block being read ahead, the block in use and the method's temporaries), so
peak memory is the budget plus the interpreter and libraries, whatever the store's size.
When even the fixed part does not fit, the command stops before reading anything, with one
line that says what needs the memory and how to need less.

The budget covers attrib's own arrays, not a model loaded to featurize `--query` values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrib.errors import AttribError
from attrib.options import option

if TYPE_CHECKING:
    from attrib.methods import Method
    from attrib.store import Store

GIB = 2**30
DEFAULT_MEMORY_GB = 6.0
# float32 copies of one training row alive at once while streaming: the block read ahead,
# the block in use, and up to four method temporaries (kernel rotations, the scaled copy).
STREAM_COPIES = 6


def memory_option() -> float:
    return option(
        DEFAULT_MEMORY_GB,
        help="Memory budget, GiB: what is held whole is reserved first, the training store "
        "is streamed in blocks that fit the rest.",
    )


def size(nbytes: float) -> str:
    """Bytes as people read them: 512 B, 3.1 MiB, 2.40 GiB."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{int(nbytes)} B"


class Budget:
    """Bytes reserved against a total, and rows per streamed block from what is left."""

    def __init__(self, memory_gb: float, flag: str = "--memory-gb"):
        self.memory_gb, self.total = memory_gb, int(memory_gb * GIB)
        self.flag = flag
        self.reserved: list[tuple[str, int]] = []

    @property
    def used(self) -> int:
        return sum(nbytes for _, nbytes in self.reserved)

    @property
    def left(self) -> int:
        return self.total - self.used

    def reserve(self, nbytes: int, what: str, fix: str) -> None:
        """Hold `nbytes` for the whole command, or stop with what needs it and how to need less."""
        if nbytes > self.left:
            held = "".join(f", {name} {size(amount)}" for name, amount in self.reserved)
            raise AttribError(
                f"{what} takes {size(nbytes)} but {self.flag} {self.memory_gb:g} leaves "
                f"{size(self.left)}{' (after' + held[1:] + ')' if held else ''}: "
                f"raise {self.flag}, or {fix}"
            )
        self.reserved.append((what, int(nbytes)))

    def rows(self, per_row: int, what: str, fix: str, share: float = 1.0) -> int:
        """How many rows of `per_row` bytes fit in `share` of what is left (at least one)."""
        count = int(self.left * share) // max(per_row, 1)
        if count < 1:
            self.reserve(per_row, f"one row of {what}", fix)  # raises, naming the sizes
        return max(count, 1)


def query_bytes(count: int, store: Store) -> int:
    """The query features and one copy of them (float32): the per-module parts while they are
    joined, then the kernel-applied (or normalized) vectors."""
    return 2 * count * store.layout.total * 4


def plan_streaming(
    budget: Budget,
    store: Store,
    method: Method,
    queries: int,
    per_query_row: int = 4,
    share: float = 1.0,
    fewer_queries: str = "score fewer queries per run",
) -> int:
    """Reserve the kernel and `queries` query vectors, then set the store's block size so a
    block of training rows (with `per_query_row` result bytes per query and row) fits in
    `share` of the rest. Returns the rows per block."""
    dims = store.layout.total
    smaller = (
        method.kernel.smaller
        if method.kernel is not None
        else "featurize with a smaller --proj-dim"
    )
    budget.reserve(method.kernel_bytes(), f"the {method.name} kernel", smaller)
    budget.reserve(
        query_bytes(queries, store),
        f"{queries} queries of {dims} features",
        f"{fewer_queries}, or featurize with a smaller --proj-dim",
    )
    per_row = STREAM_COPIES * dims * 4 + queries * per_query_row
    rows = budget.rows(
        per_row, f"{store.path} ({dims} features)", "use a smaller --proj-dim", share
    )
    rows = min(rows, max((shard.rows for shard in store.shards), default=1))
    store.block_rows = rows
    budget.reserve(rows * per_row, "streamed training blocks", "use a smaller --proj-dim")
    return rows
