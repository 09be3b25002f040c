"""Answering top-k queries from a built index (`attrib score --index KIND`)."""

from __future__ import annotations

import numpy as np
import torch

from attrib import log
from attrib.errors import AttribError
from attrib.index import transform
from attrib.index.build import check_indexable, index_paths
from attrib.index.options import require_faiss
from attrib.jsonio import load_json
from attrib.methods import Method
from attrib.methods.base import weighted
from attrib.methods.topk import TopK
from attrib.store import Store


class LoadedIndex:
    """A built index, read once and searched many times (the library's way to keep it in
    memory between queries; `score --index` reads it once per command)."""

    def __init__(self, store: Store, method: Method, kind: str):
        self.faiss = require_faiss()
        check_indexable(method)
        path, meta_path = index_paths(store, method, kind)
        if not path.exists() or not meta_path.exists():
            damping = (
                "" if method.damping == method.default_damping else f" --lambda {method.damping:g}"
            )
            raise AttribError(
                f"no {kind} index of {store.path} for --method {method.name} at this --lambda: "
                f"run `attrib index build {store.path} --method {method.name}{damping} "
                f"--kind {kind}`"
            )
        self.store, self.method, self.kind = store, method, kind
        self.meta = load_json(meta_path)
        self.index = self.faiss.read_index(str(path))
        params = self.meta["params"]
        if "probe" in params:
            self.index.nprobe = params["probe"]
        if "ef_search" in params:
            self.index.hnsw.efSearch = params["ef_search"]
        self.index_column = store.column("index")

    def search(self, queries: torch.Tensor, top: int, weights=None) -> TopK:
        """Each query's top-k training rows: u(q) = weights * query_plain(g) against the
        indexed psi(n). flat, ivf and hnsw return exact scores for the rows they find; ivfpq's
        are approximate (product-quantized codes)."""
        if not torch.isfinite(queries).all():
            bad = int((~torch.isfinite(queries)).any(1).nonzero()[0, 0])
            raise AttribError(f"query {bad} has NaN or infinite features; featurize it again")
        vectors = weighted(self.method.query_plain(queries.float()), weights)
        k = min(top, self.store.num_examples)
        vectors = np.ascontiguousarray(vectors.numpy(), np.float32)
        max_norm = self.meta.get("max_norm")
        if max_norm is None:  # an inner-product index
            scores, positions = self.index.search(vectors, k)
        else:
            unit, norms = transform.query_side(vectors, self.index.d)
            distances, positions = self.index.search(unit, k)
            scores = transform.scores(distances, norms, max_norm)
        found = positions >= 0  # an ivf search can find fewer than k rows in its probed lists
        if not found.all():
            k = int(found.sum(1).min())
            log.warn(
                f"the {self.kind} index found only {k} rows for some queries in the lists it "
                "probed: rebuild it with a larger --probe for more"
            )
            scores, positions = scores[:, :k], positions[:, :k]
        return TopK(
            torch.from_numpy(scores.copy()),
            torch.from_numpy(positions.astype(np.int64)),
            self.index_column[positions],
        )


def search(
    store: Store, method: Method, kind: str, queries: torch.Tensor, top: int, weights=None
) -> TopK:
    """Read the index of this store, method and kind, and search it once."""
    return LoadedIndex(store, method, kind).search(queries, top, weights)
