"""Answering top-k queries from a built index (`attrib score --index KIND`)."""

from __future__ import annotations

import json

import numpy as np
import torch

from attrib import log
from attrib.errors import AttribError
from attrib.index.build import check_indexable, index_paths
from attrib.index.options import require_faiss
from attrib.methods import Method
from attrib.methods.base import weighted
from attrib.score.stream import TopK
from attrib.store import Store


def search(
    store: Store, method: Method, kind: str, queries: torch.Tensor, top: int, weights=None
) -> TopK:
    """Each query's top-k training rows by the index: u(q) = weights * query_plain(g) against
    the indexed psi(n). flat, ivf and hnsw return exact scores for the rows they find; ivfpq's
    are approximate (product-quantized codes)."""
    faiss = require_faiss()
    check_indexable(method)
    path, meta_path = index_paths(store, method, kind)
    if not path.exists() or not meta_path.exists():
        raise AttribError(
            f"no {kind} index of {store.path} for --method {method.name} at this --lambda: run "
            f"`attrib index build {store.path} --method {method.name} --kind {kind}` first"
        )
    meta = json.loads(meta_path.read_text())
    index = faiss.read_index(str(path))
    params = meta["params"]
    if "probe" in params:
        index.nprobe = params["probe"]
    if "ef_search" in params:
        index.hnsw.efSearch = params["ef_search"]
    if not torch.isfinite(queries).all():
        bad = int((~torch.isfinite(queries)).any(1).nonzero()[0, 0])
        raise AttribError(f"query {bad} has NaN or infinite features; featurize it again")
    vectors = weighted(method.query_plain(queries.float()), weights)
    k = min(top, store.num_examples)
    scores, positions = index.search(np.ascontiguousarray(vectors.numpy(), np.float32), k)
    index_column = store.column("index")
    found = positions >= 0  # an ivf search can find fewer than k rows in its probed lists
    if not found.all():
        k = int(found.sum(1).min())
        log.warn(
            f"the {kind} index found only {k} rows for some queries in the lists it probed: "
            "rebuild it with a larger --probe for more"
        )
        scores, positions = scores[:, :k], positions[:, :k]
    return TopK(
        torch.from_numpy(scores.copy()),
        torch.from_numpy(positions.astype(np.int64)),
        index_column[positions],
    )
