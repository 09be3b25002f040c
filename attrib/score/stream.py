"""Streaming blocked scoring: one shard of training features at a time, a running top-k per
query, and optionally the dense (queries x train) matrix written straight to a .npy file.

Peak memory is the query vectors, one shard and the top-k buffers: it does not grow with the
number of training examples.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attrib.atomic import atomic_path
from attrib.errors import AttribError
from attrib.methods import Method
from attrib.progress import progress_bar
from attrib.store import Store


@dataclass
class TopK:
    scores: torch.Tensor  # (Q x k) descending
    positions: torch.Tensor  # (Q x k) row positions in the training store
    indices: np.ndarray  # (Q x k) the store's `index` column (row in the source split)


def stream(
    store: Store, method: Method, queries: torch.Tensor, weights: torch.Tensor | None = None
):
    """Yield (shard, scalars, scores) with scores (Q x shard rows) = tau(query, example)."""
    if not torch.isfinite(queries).all():
        bad = int((~torch.isfinite(queries)).any(1).nonzero()[0, 0])
        raise AttribError(f"query {bad} has NaN or infinite features; featurize it again")
    vectors = method.query_vectors(queries.float(), weights)
    for shard, scalars, phi in store.iter_features():
        scores = vectors @ method.train_features(phi, scalars).T
        scale = method.train_scale(phi, scalars)
        if scale is not None:
            scores *= scale
        scores = method.finalize(scores)
        check_finite(store, shard, scalars, scores)
        yield shard, scalars, scores


def check_finite(store: Store, shard, scalars: dict, scores: torch.Tensor) -> None:
    """A NaN would rank first for every query and print as invalid JSON: name the example."""
    finite = torch.isfinite(scores)
    if not finite.all():
        column = int((~finite).any(0).nonzero()[0, 0])
        raise AttribError(
            f"{store.path}: training example {int(scalars['index'][column])} (shard "
            f"{shard.file}) gets NaN or infinite scores; its features or scalars are not "
            "finite: featurize it again or leave it out"
        )


def score(
    store: Store,
    method: Method,
    queries: torch.Tensor,
    top: int,
    weights: torch.Tensor | None = None,
    dense_out: Path | None = None,
    show_progress: bool = False,
) -> TopK:
    """Rank the training store for each row of `queries` (Q x D query features)."""
    count = len(queries)
    k = min(top, store.num_examples)
    best = torch.empty(count, 0)
    best_pos = torch.empty(count, 0, dtype=torch.long)
    index_column = np.empty(store.num_examples, dtype=np.int64)
    with atomic_path(dense_out) if dense_out is not None else nullcontext() as part:
        dense = DenseWriter(part, (count, store.num_examples)) if part is not None else None
        with progress_bar(show_progress, unit="train examples") as bar:
            task = bar.add_task("score", total=store.num_examples)
            for shard, scalars, scores in stream(store, method, queries, weights):
                if dense is not None:
                    dense.write_columns(shard.start, scores)
                index_column[shard.start : shard.end] = scalars["index"]
                best, best_pos = _merge(best, best_pos, scores, shard.start, k)
                bar.advance(task, shard.rows)
        if dense is not None:
            dense.close()
    return TopK(best, best_pos, index_column[best_pos.numpy()])


class DenseWriter:
    """A (Q x N) float32 .npy filled by column blocks with plain writes: unlike a memory map,
    written pages do not count against the process's memory, whatever Q x N is."""

    def __init__(self, path: Path, shape: tuple[int, int]):
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        self.offset, self.columns = header.offset, shape[1]
        del header  # only the header and the file's size were wanted
        self.handle = open(path, "r+b")

    def write_columns(self, start: int, scores: torch.Tensor) -> None:
        values = scores.numpy().astype(np.float32, copy=False)
        for q, row in enumerate(values):
            self.handle.seek(self.offset + (q * self.columns + start) * 4)
            self.handle.write(row.tobytes())

    def close(self) -> None:
        self.handle.close()


def self_influence(
    store: Store, method: Method, weights: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(tau(n, n) for every training example, the `index` column), in store order."""
    values, index = [], []
    for shard, scalars, phi in store.iter_features():
        own = method.self_scores(phi, scalars, weights)
        check_finite(store, shard, scalars, own[None])
        values.append(own.numpy())
        index.append(scalars["index"])
    return np.concatenate(values), np.concatenate(index)


def _merge(best, best_pos, scores, start, k):
    positions = torch.arange(start, start + scores.shape[1]).expand(scores.shape[0], -1)
    values = torch.cat([best, scores], dim=1)
    candidates = torch.cat([best_pos, positions], dim=1)
    top = values.topk(min(k, values.shape[1]), dim=1)
    return top.values, candidates.gather(1, top.indices)


def write_vector(path: Path, values: np.ndarray) -> None:
    """Write a .npy atomically (temporary name, then rename)."""
    with atomic_path(path) as part, open(part, "wb") as handle:
        np.save(handle, values.astype(np.float32))
