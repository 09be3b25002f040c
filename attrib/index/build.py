"""Building a FAISS maximum-inner-product index of a store's training side.

Every linear method scores as  tau(q, n) = u(q) . psi(n)  with  u(q) = weights * query_plain(g_q)
and  psi(n) = train_preconditioned(phi(n)) (the kernel and the per-example factor folded into
the training side, METHODS.md section 4): the index holds psi, one row per training example in
store order, and is searched with u(q). It is cached next to the store, keyed like the kernels
(the store's contents, method, damping, kind): another store, method or damping is another
index, and a changed store is never answered from a stale one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from attrib import log
from attrib.atomic import atomic_path
from attrib.errors import AttribError
from attrib.index.options import IndexOptions, require_faiss
from attrib.methods import Method, get_method
from attrib.methods.kernels import CACHE_DIR
from attrib.store import Store

INDEX_VERSION = 1
SAMPLE_PER_LIST = 64  # k-means training rows per list (FAISS warns below 39)


def index_paths(store: Store, method: Method, kind: str) -> tuple[Path, Path]:
    """(index file, its metadata) for this store, method, damping and kind."""
    payload = json.dumps(
        {
            "v": INDEX_VERSION,
            "kind": kind,
            "method": method.name,
            "damping": method.damping,
            "store": store.content_key(),
            "modules": store.module_names,
        }
    )
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    stem = store.path / CACHE_DIR / f"index-{kind}-{method.name}-{key}"
    return stem.with_suffix(".faiss"), stem.with_suffix(".json")


def check_indexable(method: Method) -> None:
    if not method.linear:
        raise AttribError(
            f"--method {method.name} is not an inner product of query and training features "
            "(it squares it): an index cannot rank by it; score it without --index"
        )


def default_lists(rows: int) -> int:
    return max(1, min(int(4 * math.sqrt(rows)), rows // 39))


def build_index(options: IndexOptions) -> Path:
    """Build (or find already built) the index; return its path."""
    faiss = require_faiss()
    store = Store(options.store)
    method = get_method(options.method, store, options.damping)
    check_indexable(method)
    path, meta_path = index_paths(store, method, options.kind)
    params = _params(options, store)
    if path.exists() and meta_path.exists():
        if json.loads(meta_path.read_text()).get("params") == params:
            log.info(f"{path} is already built with these settings")
            return path
    method.prepare()
    start = time.perf_counter()
    index = _empty(faiss, options.kind, store.layout.total, params)
    if not index.is_trained:
        index.train(_training_sample(store, method, params["lists"] * SAMPLE_PER_LIST, options))
    for _, scalars, phi in store.iter_features():
        index.add(_rows(method, phi, scalars))
    seconds = time.perf_counter() - start
    with atomic_path(path) as part:
        faiss.write_index(index, str(part))
    meta = {
        "kind": options.kind,
        "method": method.name,
        "damping": method.damping,
        "rows": store.num_examples,
        "dim": store.layout.total,
        "params": params,
        "build_seconds": round(seconds, 3),
        "bytes": path.stat().st_size,
    }
    with atomic_path(meta_path) as part:
        part.write_text(json.dumps(meta, indent=1))
    log.info(
        f"built a {options.kind} index of {store.num_examples} rows in {seconds:.1f} s "
        f"({meta['bytes'] / 2**20:.1f} MiB): {path}"
    )
    return path


def _params(options: IndexOptions, store: Store) -> dict:
    dim = store.layout.total
    lists = options.lists or default_lists(store.num_examples)
    if options.kind in ("ivf", "ivfpq") and lists > store.num_examples:
        raise AttribError(f"--lists {lists} is more than the store's {store.num_examples} rows")
    params: dict = {"lists": lists if options.kind in ("ivf", "ivfpq") else 0}
    if options.kind in ("ivf", "ivfpq"):
        params["probe"] = min(options.probe, lists)
    if options.kind == "ivfpq":
        pq_bytes = options.pq_bytes or max(1, dim // 4)
        if dim % pq_bytes:
            raise AttribError(f"--pq-bytes {pq_bytes} must divide the feature width D={dim}")
        params["pq_bytes"] = pq_bytes
    if options.kind == "hnsw":
        params.update(neighbors=options.neighbors, ef_search=options.ef_search)
    return params


def _empty(faiss, kind: str, dim: int, params: dict):
    inner = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["neighbors"], inner)
        index.hnsw.efConstruction = max(40, 2 * params["neighbors"])
        return index
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, params["lists"], inner)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, params["lists"], params["pq_bytes"], 8, inner)
    index.own_fields = True  # the index frees its quantizer; Python must not as well
    quantizer.this.disown()
    return index


def _rows(method: Method, phi, scalars) -> np.ndarray:
    psi = method.train_preconditioned(phi, scalars)
    return np.ascontiguousarray(psi.float().numpy())


def _training_sample(store: Store, method: Method, wanted: int, options) -> np.ndarray:
    """A seeded random sample of training rows (psi), for k-means and product quantizers."""
    rng = np.random.default_rng(options.seed)
    count = min(store.num_examples, max(wanted, 256 * 39 if options.kind == "ivfpq" else 0))
    chosen = np.sort(rng.choice(store.num_examples, count, replace=False))
    parts = []
    for block, scalars, phi in store.iter_features():
        inside = chosen[(chosen >= block.start) & (chosen < block.end)] - block.start
        if len(inside):
            parts.append(_rows(method, phi[inside], {k: v[inside] for k, v in scalars.items()}))
    return np.concatenate(parts)
