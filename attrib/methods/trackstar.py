"""TrackStar (Chang et al., 2024): gradients divided by sqrt(Adam's second moment) before the
projection (`featurize --optimizer-state`), whitened by the store's Gram kernel and compared
by cosine:

    tau(q, n) = q^T K n / sqrt(q^T K q) / sqrt(n^T K n),  K = (Phi^T Phi + lambda I)^-1

with K per module (trak-block's kernel, attrib's best Gram kernel on every task measured).
The paper's R^-1/2 on both sides followed by unit normalization is this score.
"""

from __future__ import annotations

from attrib.methods.base import Method, weighted
from attrib.methods.requirements import Requirements


class TrackStar(Method):
    name = "trackstar"
    summary = (
        "TrackStar: gradients over sqrt(Adam's second moment) (featurize --optimizer-state), "
        "whitened per module by the Gram kernel, cosine"
    )
    requires = Requirements(optimizer_state=True)
    preconditioner = "gram-block"
    default_damping = 0.1
    scale_reads_features = True

    def _inverse_norm(self, phi):
        return self.kernel.leverage(phi.float()).clamp(min=1e-30).rsqrt()

    def query_plain(self, g):
        return g * self._inverse_norm(g)[:, None]

    def query_vectors(self, g, weights):
        return self._apply(weighted(self.query_plain(g), weights))

    def train_scale(self, phi, scalars):
        return self._inverse_norm(phi)

    def train_preconditioned(self, phi, scalars):
        return self._apply(phi) * self.train_scale(phi, scalars)[:, None]
