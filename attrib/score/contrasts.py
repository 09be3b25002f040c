"""`score --contrast` / `--contrast-queries`: each query's contrast, featurized with the
training store's settings exactly as the queries are, and which contrast each query row
subtracts (methods/contrast.py does the algebra)."""

from __future__ import annotations

import numpy as np
import torch

from attrib.errors import AttribError
from attrib.methods.contrast import Contrast
from attrib.score import queries
from attrib.store import Store


def given(request, store: Store) -> tuple[Store | None, list[str]]:
    """The contrasts as a query store, or as values (files, texts, JSON objects)."""
    if request.contrast_queries is not None:
        return Store(request.contrast_queries), []
    return None, queries.resolve_text_values(store, list(request.contrast), [])


def rows_of(query_rows: list[int], contrasts: int):
    """For each query row: which contrast it subtracts and its share of it (a query's T
    per-token rows take 1/T each)."""
    if contrasts not in (1, max(query_rows, default=0) + 1):
        raise AttribError(
            f"{contrasts} contrasts for {max(query_rows) + 1} queries: one per query row"
        )
    counts = np.bincount(query_rows)
    rows = [q if contrasts > 1 else 0 for q in query_rows]
    scales = [1.0 / counts[q] for q in query_rows]
    return torch.tensor(rows), torch.tensor(scales)


def query_rows(chosen) -> list[int]:
    """The query each row of `chosen` belongs to (one row per query, or per token)."""
    return [q for q, _, _ in chosen.tokens] if chosen.tokens else list(range(len(chosen.ids)))


def featurized(request, runtime, store: Store, chosen) -> Contrast | None:
    """The contrasts of `chosen`'s queries, featurized as the queries are, or None."""
    if not (request.contrast or request.contrast_queries):
        return None
    other_store, values = given(request, store)
    if other_store is not None:
        other = queries.from_store(store, other_store)
    else:
        other = queries.from_values(
            store, values, str(runtime.device), request.batch_size, request.trust_remote_code,
            list(request.prompt) or None,
        )  # fmt: skip
    rows, scales = rows_of(query_rows(chosen), len(other.ids))
    return Contrast(other.features, rows, scales, other.ids)
