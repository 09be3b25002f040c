"""TRAK and its relatives: one kernel (Phi^T Phi + lambda I)^-1, global or per module."""

from __future__ import annotations

from functools import cached_property

from attrib.methods.base import Method, scalar, weighted
from attrib.methods.requirements import Requirements


class Trak(Method):
    name = "trak"
    summary = (
        "g_q^T (Phi^T Phi + lambda I)^-1 g_n Q_n, one global kernel (LoGra on factored features)"
    )
    requires = Requirements(train_output="margin")
    # On an ensemble store the global kernel is each member's own (TRAK over several models:
    # the sum of each model's TRAK scores), never one across members.
    preconditioner = "gram-global"
    default_damping = 1.0
    calibrated = True
    ensembles = True

    def query_vectors(self, g, weights):
        return self._apply(weighted(g, weights))

    def train_scale(self, phi, scalars):
        if self._members is not None:
            return None  # applied per member by train_features
        return scalar(scalars, "out_to_loss")

    def train_features(self, phi, scalars):
        if self._members is None:
            return phi
        scaled = phi.clone()
        for columns, name in self._members:
            scaled[:, columns] *= scalar(scalars, name)[:, None]
        return scaled

    def module_factors(self, scalars):
        if self._members is None:
            return None
        factors = []
        for part in self.slices:  # a member's modules are contiguous
            name = next(n for cols, n in self._members if cols.start <= part.start < cols.stop)
            factors.append(scalar(scalars, name))
        return factors

    def train_preconditioned(self, phi, scalars):
        if self._members is not None:  # the block kernel keeps each member's columns apart
            return self.train_features(self._apply(phi), scalars)
        return self._apply(phi) * scalar(scalars, "out_to_loss")[:, None]

    @cached_property
    def _members(self):
        """An ensemble store's (member columns, out-to-loss column) pairs, else None (worked
        out once: it is read for every streamed block)."""
        from attrib.store.ensemble import is_ensemble, member_ranges

        return member_ranges(self.store) if is_ensemble(self.store) else None


class TrakBlock(Trak):
    name = "trak-block"
    summary = "TRAK with one kernel per module (block-diagonal), damped per block"
    preconditioner = "gram-block"
    default_damping = 0.1


class DTrak(Trak):
    name = "dtrak"
    summary = "D-TRAK: TRAK on gradients of L_square = mean ||eps_theta||^2 (diffusion)"
    requires = Requirements(train_output="square", fallback=False)


class JourneyTrak(Trak):
    name = "jtrak"
    summary = (
        "Journey-TRAK (adapted): query gradients along its sampling trajectory, "
        "training side as TRAK (diffusion)"
    )
    # L_simple on the training side, the sampling trajectory's on the query side
    requires = Requirements(train_output="loss", query_output="journey")
    ensembles = False  # not measured on ensembles of trajectories


class Das(Trak):
    """DAS, following the main paper's Appendix B.3 (Eq. 16):
    tau = ( g_q^T K g_n * r_n / (1 - h_n) )^2,  h_n = g_n^T K g_n,  K = (Phi^T Phi + lambda)^-1,
    on DAS features (per-timestep normalized gradients of mean eps_theta) and the stored mean
    residual r_n. Weights act inside the square (on g_q); learn-weights' contributions are
    those of the linear part."""

    name = "das"
    summary = "DAS: leverage-corrected, residual-scaled TRAK on DAS features, squared (diffusion)"
    requires = Requirements(train_output="das", fallback=False, scalars=("residual",))
    linear = False
    scale_reads_features = True
    ensembles = False  # squared per model: the ensemble's would be a sum of squares

    def train_scale(self, phi, scalars):
        leverage = (self._apply(phi) * phi).sum(1)
        residual = scalar(scalars, "residual").to(leverage.device)
        return residual / (1.0 - leverage).clamp(min=1e-6)

    def finalize(self, scores):
        return scores.pow(2)

    def train_preconditioned(self, phi, scalars):
        return self._apply(phi) * self.train_scale(phi, scalars)[:, None]
