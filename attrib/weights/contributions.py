"""Per-query, per-group contributions C[q, n, j] = q_j . psi_j(n) (the paper's C^(i)).

psi(n) = s(n) K phi(n) is the training side with the method's kernel applied (computed once
per training example), q = the query side before weights, so that sum_j C[q, n, j] is the
method's unweighted score and the weighted score is sum_j w_j C[q, n, j].

Memory is bounded by the command's budget (`attrib.memory`): the kernel, the queries and the
streamed training blocks are reserved first (`plan_streaming`); then C takes up to half of
what is left: all of it (Q x N x M float32) computed once when it fits, otherwise chunks of
queries recomputed on every pass (the learning loop visits queries in the same order either
way, so the result is the same). psi is kept when it fits in the rest, else recomputed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from attrib.memory import Budget, plan_streaming
from attrib.methods import Method
from attrib.store import Store
from attrib.weights.options import LearnOptions

# Streamed training blocks take this share of the budget left after the kernel and queries.
STREAM_SHARE = 0.25


def group_columns(store: Store, module_to_group: dict[str, str], groups: list[str]):
    """For each group, the feature columns (in the store's layout) of its modules."""
    columns: dict[str, list[int]] = {g: [] for g in groups}
    for name, part in zip(store.module_names, store.layout.slices):
        columns[module_to_group[name]] += list(range(part.start, part.stop))
    return [torch.tensor(columns[g], dtype=torch.long) for g in groups]


class Contributions:
    def __init__(
        self,
        store: Store,
        method: Method,
        queries: torch.Tensor,
        columns: list[torch.Tensor],
        budget: Budget | None = None,
        device: torch.device | str = "cpu",
    ):
        """`budget`: one `plan_streaming` has reserved the kernel, queries and blocks in (a
        fresh one at learn-weights' default --memory-gb when not given). `device`: where the
        products (queries x training rows x groups) are computed; C is kept in (CPU) memory."""
        self.store, self.method, self.columns = store, method, columns
        self.device = torch.device(device)
        self.count, self.n, self.m = len(queries), store.num_examples, len(columns)
        if budget is None:
            budget = Budget(LearnOptions.default("memory_gb"))
            plan_streaming(budget, store, method, self.count, 2 * self.m * 4, STREAM_SHARE)
        self.plain = method.query_plain(queries.float())
        per_query = self.n * self.m * 4
        fix = "use fewer groups (--groups block or a rules file) or fewer training examples"
        what = f"contributions ({self.n} examples x {self.m} groups per query)"
        self.chunk = min(self.count, budget.rows(per_query, what, fix, share=0.5))
        budget.reserve(self.chunk * per_query, what, fix)
        psi_bytes = self.n * store.layout.total * 4
        self._psi: list | None = [] if psi_bytes <= budget.left else None
        self._psi_done = False
        self._cached: torch.Tensor | None = None
        self._buffer: torch.Tensor | None = None

    @property
    def in_memory(self) -> bool:
        return self.chunk >= self.count

    def _psi_shards(self) -> Iterator[tuple[int, torch.Tensor]]:
        if self._psi_done:
            yield from self._psi
            return
        for shard, scalars, phi in self.store.iter_features():
            psi = self.method.train_preconditioned(phi, scalars)
            if self._psi is not None:
                self._psi.append((shard.start, psi))
            yield shard.start, psi
        self._psi_done = self._psi is not None

    def _uniform_width(self) -> int | None:
        """The common width when the groups tile the features in order with equal widths
        (one group per equally sized module): then one batched product does all groups."""
        width = len(self.columns[0])
        start = 0
        for cols in self.columns:
            expected = torch.arange(start, start + width)
            if len(cols) != width or not torch.equal(cols, expected):
                return None
            start += width
        return width if start == self.plain.shape[1] else None

    def compute(self, start: int, end: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """C for queries [start, end): (end - start) x N x M float32 (into `out` if given)."""
        if out is None:
            out = torch.empty(end - start, self.n, self.m)
        width = self._uniform_width()
        queries = self.plain[start:end].to(self.device)
        if width is not None:
            plain = queries.reshape(end - start, self.m, width).transpose(0, 1)
            for row, psi in self._psi_shards():
                psi = psi.to(self.device)
                blocks = psi.reshape(len(psi), self.m, width).permute(1, 2, 0)  # M x F x rows
                product = torch.bmm(plain, blocks).permute(1, 2, 0)
                out[:, row : row + len(psi)] = product.cpu()
            return out
        plain = [queries[:, cols.to(self.device)] for cols in self.columns]
        for row, psi in self._psi_shards():
            rows = slice(row, row + len(psi))
            psi = psi.to(self.device)
            for j, cols in enumerate(self.columns):
                out[:, rows, j] = (plain[j] @ psi[:, cols.to(self.device)].T).cpu()
        return out

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(first query, C for a chunk of queries), covering all queries in order."""
        if self.in_memory:
            if self._cached is None:
                self._cached = self.compute(0, self.count)
            yield 0, self._cached
            return
        # One buffer for the object's lifetime, refilled for each chunk: callers are done with
        # a chunk before asking for the next, so two never exist at once (a fresh buffer per
        # pass would double the peak while the last pass's loop variable still holds one).
        if self._buffer is None:
            self._buffer = torch.empty(self.chunk, self.n, self.m)
        for start in range(0, self.count, self.chunk):
            end = min(start + self.chunk, self.count)
            yield start, self.compute(start, end, self._buffer[: end - start])
