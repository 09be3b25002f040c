"""BM25: a method without a model (score/lexical.py computes it); registered so that
`--method bm25` is listed, checked and refused like every other method."""

from __future__ import annotations

from attrib.errors import AttribError
from attrib.methods.base import Method
from attrib.methods.requirements import WORDS, Requirements


class BM25(Method):
    name = "bm25"
    summary = "BM25 over the rows' words (bm25s; a baseline: no model, no features)"
    requires = Requirements(store=WORDS)

    def __init__(self, store, damping: float | None = None):
        # No features are read: only the store's task must be text (its rows' words).
        if store.settings.get("task") != "causal-lm":
            raise AttribError(
                f"--method {self.name} ranks rows by their words and {store.path} is not a "
                "language model's store of texts; use a gradient method"
            )
        self.store, self.damping = store, 0.0

    def query_vectors(self, g, weights):
        raise AttribError(
            f"--method {self.name} ranks rows by their words: it is measured by `score` and "
            "`evaluate lds` only"
        )
