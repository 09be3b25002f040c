"""Every query's scores over the training store, block by block, for any method: a method on
features streams its shards (score/stream.py); a lexical one (BM25) scores all rows at once
from the rows' and the query store's words. The ranking evaluations read scores this way."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from attrib.score.stream import stream
from attrib.store import Store


def score_blocks(
    train: Store, method, features: torch.Tensor, queries: Store, weights=None, runtime=None
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(first row, end row, (Q x rows) scores in store order) per block of training rows."""
    if method.requires.reads_words:
        from attrib.score.lexical import dense_scores, store_texts

        yield 0, train.num_examples, torch.from_numpy(dense_scores(train, store_texts(queries)))
        return
    for shard, _, scores in stream(train, method, features, weights, runtime):
        yield shard.start, shard.end, scores.cpu()


def first_relevant_ranks(blocks, relevant: list[np.ndarray], count: int) -> np.ndarray:
    """Per query, the rank (1 = first) of its best-scored relevant row: 1 + the rows scored
    strictly higher. `blocks`: a callable giving a fresh score_blocks iterator (two passes,
    so no (Q x N) matrix is held). `relevant`: per query, positions in store order."""
    best = np.full(len(relevant), -np.inf)
    for start, end, scores in blocks():
        for q, rows in enumerate(relevant):
            mine = rows[(rows >= start) & (rows < end)] - start
            if len(mine):
                best[q] = max(best[q], float(scores[q, mine].max()))
    above = np.zeros(len(relevant), dtype=np.int64)
    for _, _, scores in blocks():
        above += (scores.double().numpy() > best[:, None]).sum(1)
    return above + 1
