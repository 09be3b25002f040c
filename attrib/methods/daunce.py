"""Daunce (Data attribution through uncertainty estimation): the covariance, over K perturbed
copies of the checkpoint (`attrib perturb`), of a query's and a training example's outputs:

    tau(q, n) = 1/(K-1) sum_k (x_qk - mean_k x_q)(x_nk - mean_k x_n)          (`daunce`)

or their correlation (`daunce-corr`, the paper's choice: the covariance of unit-normalized
deviations, as cosine is to TracIn). The store's rows are the K outputs themselves. Centering
the query side alone is enough: a centered vector's dot product with x_n equals its dot
product with x_n's deviations. Positive = helpful, as for the gradient methods: under the
perturbations, the example and the query gain and lose together.
"""

from __future__ import annotations

from attrib.methods.base import Method, weighted
from attrib.methods.requirements import Requirements
from attrib.store.kinds import PERTURBED


def _deviations(x):
    return x - x.mean(dim=1, keepdim=True)


class Daunce(Method):
    name = "daunce"
    summary = "Daunce: covariance of outputs over K perturbed copies (attrib perturb)"
    requires = Requirements(train_output="perturbed", store=PERTURBED)

    def query_plain(self, g):
        return _deviations(g) / max(g.shape[1] - 1, 1)

    def query_vectors(self, g, weights):
        return weighted(self.query_plain(g), weights)


class DaunceCorr(Daunce):
    name = "daunce-corr"
    summary = "Daunce with the correlation over copies (the paper's default)"
    scale_reads_features = True

    def query_plain(self, g):
        centered = _deviations(g)
        return centered / centered.norm(dim=1, keepdim=True).clamp(min=1e-30)

    def train_scale(self, phi, scalars):
        return 1.0 / _deviations(phi).norm(dim=1).clamp(min=1e-30)
