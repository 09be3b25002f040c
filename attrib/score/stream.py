"""Streaming blocked scoring: one shard of training features at a time, a running top-k per
query, and optionally the dense (queries x train) matrix written straight to a .npy file.

Peak memory is the query vectors, one shard and the top-k buffers: it does not grow with the
number of training examples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attrib.atomic import atomic_path
from attrib.distributed import Runtime
from attrib.errors import AttribError
from attrib.methods import Method
from attrib.methods.topk import TopK
from attrib.progress import progress_bar
from attrib.score.dense import shared_output
from attrib.store import Store


def stream(
    store: Store,
    method: Method,
    queries: torch.Tensor,
    weights: torch.Tensor | None = None,
    runtime: Runtime | None = None,
):
    """Yield (shard, scalars, scores) with scores (Q x shard rows) = tau(query, example), on
    the runtime's device (default: one CPU process). The kernel is applied to the (few)
    queries; the training side streams through module by module, without a (rows x D) copy,
    unless the method's per-example factor reads the features themselves (cosine's norm,
    DAS's leverage). Under a launcher, only this rank's shards."""
    if not torch.isfinite(queries).all():
        bad = int((~torch.isfinite(queries)).any(1).nonzero()[0, 0])
        raise AttribError(f"query {bad} has NaN or infinite features; featurize it again")
    runtime = runtime or Runtime(torch.device("cpu"))
    vectors = method.query_vectors(queries.float(), weights).to(runtime.device)
    slices = store.layout.slices
    for shard, scalars, parts in store.iter_parts(runtime.device, runtime.rank, runtime.world_size):
        if method.scale_reads_features:
            phi = torch.cat([part.float() for part in parts], dim=1)
            scores = vectors @ method.train_features(phi, scalars).T
            scale = method.train_scale(phi, scalars)
        else:
            scores = _product(vectors, parts, slices, method.module_factors(scalars))
            scale = method.train_scale(None, scalars)
        if scale is not None:
            scores *= scale.to(scores.device)
        scores = method.finalize(scores)
        check_finite(store, shard, scalars, scores)
        yield shard, scalars, scores


def _product(vectors, parts, slices, factors) -> torch.Tensor:
    """sum over modules of vectors[:, module] @ features[module].T, in float32 (a float16
    module is converted on its device, one module at a time)."""
    scores = torch.zeros(len(vectors), len(parts[0]), device=vectors.device)
    for m, (part, columns) in enumerate(zip(parts, slices)):
        part = part.float()
        if factors is not None and factors[m] is not None:
            part = part * factors[m].to(part.device)[:, None]
        scores.addmm_(vectors[:, columns], part.T)
    return scores


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
    runtime: Runtime | None = None,
    opponents: bool = False,
) -> TopK | None:
    """Rank the training store for each row of `queries` (Q x D query features). Under a
    launcher every rank scores its own shards (shard r, r + world, ...) and keeps its top-k;
    rank 0 merges them and gets the result, the others None. `dense_out` is written by
    columns from every rank. `opponents`: also the k lowest scores, in the same pass."""
    runtime = runtime or Runtime(torch.device("cpu"))
    count, device = len(queries), runtime.device
    k = min(top, store.num_examples)
    best = torch.empty(count, 0, device=device)
    best_pos = torch.empty(count, 0, dtype=torch.long, device=device)
    worst, worst_pos = best.clone(), best_pos.clone()  # the negated scores' top-k
    index_column = np.empty(store.num_examples, dtype=np.int64)
    with shared_output(dense_out, (count, store.num_examples), runtime) as dense:
        with progress_bar(show_progress and runtime.is_main, unit="train examples") as bar:
            task = bar.add_task("score", total=store.num_examples)
            for shard, scalars, scores in stream(store, method, queries, weights, runtime):
                if dense is not None:
                    dense.write_columns(shard.start, scores.cpu())
                index_column[shard.start : shard.end] = scalars["index"]
                best, best_pos = _merge(best, best_pos, scores, shard.start, k)
                if opponents:
                    worst, worst_pos = _merge(worst, worst_pos, -scores, shard.start, k)
                bar.advance(task, shard.rows * runtime.world_size)
    best, best_pos = best.cpu(), best_pos.cpu()
    mine = TopK(best, best_pos, index_column[best_pos.numpy()])
    low = None
    if opponents:  # kept negated until merged: the same top-k code serves both lists
        worst, worst_pos = worst.cpu(), worst_pos.cpu()
        low = TopK(worst, worst_pos, index_column[worst_pos.numpy()])
    if runtime.world_size > 1:
        mine = merge_ranks(runtime.gather(mine), k)
        low = merge_ranks(runtime.gather(low), k) if opponents else None
    if mine is not None and low is not None:
        mine.bottom = low.negated()
    return mine


def merge_ranks(tops: list[TopK] | None, k: int) -> TopK | None:
    """Rank 0: one top-k from every rank's (None elsewhere)."""
    if tops is None or tops[0] is None:
        return None
    values = torch.cat([t.scores for t in tops], dim=1)
    order = values.topk(min(k, values.shape[1]), dim=1).indices
    positions = torch.cat([t.positions for t in tops], dim=1).gather(1, order)
    indices = np.concatenate([t.indices for t in tops], axis=1)
    return TopK(values.gather(1, order), positions, np.take_along_axis(indices, order.numpy(), 1))


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
    positions = torch.arange(start, start + scores.shape[1], device=scores.device)
    positions = positions.expand(scores.shape[0], -1)
    values = torch.cat([best, scores], dim=1)
    candidates = torch.cat([best_pos, positions], dim=1)
    top = values.topk(min(k, values.shape[1]), dim=1)
    return top.values, candidates.gather(1, top.indices)


def write_vector(path: Path, values: np.ndarray) -> None:
    """Write a .npy atomically (temporary name, then rename)."""
    with atomic_path(path) as part, open(part, "wb") as handle:
        np.save(handle, values.astype(np.float32))
