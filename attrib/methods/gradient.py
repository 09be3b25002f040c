"""Kernel-free methods: TracIn and cosine similarity of gradients."""

from __future__ import annotations

from attrib.methods.base import Method, weighted


class TracIn(Method):
    name = "tracin"
    summary = "gradient dot product at the final checkpoint (K = I)"
    preconditioner = "identity"
    ensembles = True

    def query_vectors(self, g, weights):
        return weighted(g, weights)


class Cosine(Method):
    name = "cosine"
    summary = "unit-normalized gradients (RelatIF / TrackStar-style cosine)"
    preconditioner = "identity"
    scale_reads_features = True

    def query_plain(self, g):
        return g / g.norm(dim=1, keepdim=True).clamp(min=1e-30)

    def query_vectors(self, g, weights):
        return weighted(self.query_plain(g), weights)

    def train_scale(self, phi, scalars):
        return 1.0 / phi.norm(dim=1).clamp(min=1e-30)

    def self_scores(self, phi, scalars, weights):
        unit = phi / phi.norm(dim=1, keepdim=True).clamp(min=1e-30)
        return (weighted(unit, weights) * unit).sum(1)
