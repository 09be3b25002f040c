"""`attrib index build`'s options, defined once (the CLI is built from this class)."""

from __future__ import annotations

from pathlib import Path

from attrib.errors import AttribError
from attrib.methods import STORE_DEFAULT_HELP, default_for_store, method_names, require_features
from attrib.options import Options, at_least, existing_store, option

# What each kind stores and how it searches (docs/score.md: "Millions of rows: an index").
KINDS = ("flat", "ivf", "ivfpq", "hnsw")


class IndexOptions(Options):
    """Build a FAISS maximum-inner-product index of a training store for one method: every
    method here but DAS scores by an inner product once its kernel is folded into the training
    side, so `attrib score --index KIND` answers from the index instead of a pass over the
    store. Written next to the store (cached, keyed by the store's contents, method, damping
    and kind); one index serves every weights file (weights act on the query side)."""

    store: Path = option(help="Training store (from featurize).", argument=True)
    method: str | None = option(
        None, help="Attribution method " + STORE_DEFAULT_HELP + ".", choices=method_names
    )
    damping: float | None = option(
        None, flag="--lambda", help="Relative kernel damping (default: the method's own)."
    )
    kind: str = option(
        "ivf",
        choices=KINDS,
        help="flat: exact, all vectors; ivf: k-means lists, vectors kept whole (scores exact, "
        "recall set by --probe); ivfpq: lists of product-quantized codes (smallest, scores "
        "approximate); hnsw: a neighbour graph (fast, largest to build).",
    )
    lists: int | None = option(
        None, help="ivf, ivfpq: number of k-means lists (default sqrt(N), at most N/39)."
    )
    probe: int = option(
        256,
        help="ivf, ivfpq: lists searched per query (recall against speed; kept with the index, "
        "changed without a rebuild). 256 of 1,000 lists: recall@10 0.975 at 1M rows.",
    )
    pq_bytes: int | None = option(
        None,
        help="ivfpq: bytes per vector (default: one per 4 of the index's D + 1 coordinates, "
        "padded to a multiple of 4; must divide that width).",
    )
    neighbors: int = option(32, help="hnsw: links per node (M).")
    ef_search: int = option(
        512,
        help="hnsw: candidates searched per query (recall against speed; kept with the index, "
        "changed without a rebuild). 512: recall@10 0.975 at 1M rows.",
    )
    seed: int = option(0, help="Seed of the k-means training sample.")

    def check(self) -> None:
        existing_store(self.store, "STORE")
        if self.method is None:
            object.__setattr__(self, "method", default_for_store(self.store))
        require_features(self.method, "an index")
        at_least(self.damping, 0, "--lambda")
        for flag, value in (
            ("--lists", self.lists),
            ("--probe", self.probe),
            ("--pq-bytes", self.pq_bytes),
            ("--neighbors", self.neighbors),
            ("--ef-search", self.ef_search),
        ):
            at_least(value, 1, flag)
        if self.pq_bytes is not None and self.kind != "ivfpq":
            raise AttribError("--pq-bytes is for --kind ivfpq")


def require_faiss():
    """The faiss module, or a one-line error saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise AttribError("indexes need FAISS: pip install 'attrib[index]' (faiss-cpu)") from None
    return faiss
