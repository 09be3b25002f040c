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
from attrib.index import transform
from attrib.index.options import IndexOptions, require_faiss
from attrib.jsonio import load_json
from attrib.methods import Method, get_method, method_class
from attrib.methods.kernels import CACHE_DIR
from attrib.store import Store

INDEX_VERSION = 2
SAMPLE_PER_LIST = 64  # k-means training rows per list (FAISS warns below 39)
SEARCH_SETTINGS = ("probe", "ef_search")  # kept with the index; changing them rebuilds nothing


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


def check_indexable(method: Method | type[Method]) -> None:
    if not method.linear:
        raise AttribError(
            f"--method {method.name} is not an inner product of query and training features "
            "(it squares it): an index cannot rank by it; score it without --index"
        )


def default_lists(rows: int) -> int:
    """sqrt(N) lists (about 1,000 at a million rows): k-means and assigning every row stay a
    few minutes on a laptop CPU; at most N/39 (FAISS's fewest training rows per list)."""
    return max(1, min(round(math.sqrt(rows)), rows // 39))


def build_index(options: IndexOptions) -> Path:
    """Build (or find already built) the index; return its path."""
    faiss = require_faiss()
    store = Store(options.store)
    check_indexable(method_class(options.method))  # before the store is asked of it
    method = get_method(options.method, store, options.damping)
    path, meta_path = index_paths(store, method, options.kind)
    params = _params(options, store)
    if path.exists() and meta_path.exists():
        meta = load_json(meta_path)
        built = {k: v for k, v in meta.get("params", {}).items() if k not in SEARCH_SETTINGS}
        if built == {k: v for k, v in params.items() if k not in SEARCH_SETTINGS}:
            if meta["params"] != params:  # only how it is searched changed: no rebuild
                with atomic_path(meta_path) as part:
                    part.write_text(json.dumps({**meta, "params": params}, indent=1))
            log.info(f"{path} is already built with these settings")
            return path
    method.prepare()
    start = time.perf_counter()
    size = transform.width(store.layout.total, options.kind)
    index = _empty(faiss, options.kind, size, params)
    max_norm = None
    if options.kind in transform.L2_KINDS:
        sample, max_norm = _first_pass(store, method, params["lists"] * SAMPLE_PER_LIST, options)
        index.train(transform.train_side(sample, max_norm, size))
    for _, scalars, phi in store.iter_features():
        rows = _rows(method, phi, scalars)
        index.add(rows if max_norm is None else transform.train_side(rows, max_norm, size))
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
        "max_norm": max_norm,  # the ivf kinds' scale (attrib.index.transform)
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
        size = transform.width(dim, "ivfpq")
        pq_bytes = options.pq_bytes or size // transform.PQ_SUBVECTOR
        if size % pq_bytes:
            raise AttribError(
                f"--pq-bytes {pq_bytes} must divide the index width {size} (D={dim} features, "
                "one more coordinate, zeros to whole sub-vectors of 4)"
            )
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
    quantizer = faiss.IndexFlatL2(dim)  # the ivf kinds search in Euclidean space (transform)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, params["lists"])
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, params["lists"], params["pq_bytes"], 8)
    index.own_fields = True  # the index frees its quantizer; Python must not as well
    quantizer.this.disown()
    return index


def _rows(method: Method, phi, scalars) -> np.ndarray:
    psi = method.train_preconditioned(phi, scalars)
    return np.ascontiguousarray(psi.float().numpy())


def _first_pass(store: Store, method: Method, wanted: int, options) -> tuple[np.ndarray, float]:
    """A seeded random sample of training rows (psi) for k-means and product quantizers, and
    the largest norm of any row (the ivf kinds' scale)."""
    rng = np.random.default_rng(options.seed)
    count = min(store.num_examples, max(wanted, 256 * 39 if options.kind == "ivfpq" else 0))
    chosen = np.sort(rng.choice(store.num_examples, count, replace=False))
    parts, max_norm = [], 0.0
    for block, scalars, phi in store.iter_features():
        rows = _rows(method, phi, scalars)
        max_norm = max(max_norm, float(np.linalg.norm(rows, axis=1).max(initial=0.0)))
        inside = chosen[(chosen >= block.start) & (chosen < block.end)] - block.start
        parts.append(rows[inside])
    if not max_norm > 0:
        raise AttribError(f"every training row of {store.path} is zero for {method.name}")
    return np.concatenate(parts), max_norm
