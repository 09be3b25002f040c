"""K-FAC and EK-FAC: per-module Kronecker-factored inverse Fisher, from factors featurize
accumulated next to the shards (the preconditioners of the same names)."""

from __future__ import annotations

from attrib.methods.base import Method, weighted
from attrib.methods.requirements import Requirements


class KFac(Method):
    name = "kfac"
    summary = "K-FAC: per-module Kronecker-factored inverse Fisher A (x) S, damped per module"
    requires = Requirements(factors=True)
    preconditioner = "kfac"
    default_damping = 1e-3  # digits validation queries: LDS rises as damping falls to ~1e-3
    # Exact gradients (`score --rescore`, --proj-dim full): chosen on the fine-tuning tasks'
    # validation queries (docs/quality.md, "How many candidates").
    default_exact_damping = 0.1
    ensembles = True
    gains_from_projection = True

    def query_vectors(self, g, weights):
        return self._apply(weighted(g, weights))

    def train_preconditioned(self, phi, scalars):
        return self._apply(phi)


class EKFac(KFac):
    name = "ekfac"
    summary = "EK-FAC: K-FAC eigenbasis with eigenvalues re-fit on the per-example features"
    preconditioner = "ekfac"
    calibrated = True


class Shampoo(KFac):
    name = "shampoo"
    summary = (
        "eigenvalue-corrected Shampoo: EK-FAC's correction in the eigenbases of the gradients' "
        "own left/right second moments (any factored store, no factors needed)"
    )
    requires = Requirements()
    preconditioner = "shampoo"
    calibrated = True
