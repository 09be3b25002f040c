"""Attribution methods: one small strategy object each, in a registry.

Every method scores as  tau(q, n) = u(q) . phi(n) * s(n)  where
- u(q) = `query_vectors`: the query's features, optionally weighted per group (weights act on
  the query side only, METHODS.md section 4), then through the method's kernel;
- phi(n) = the stored training features, streamed shard by shard;
- s(n) = `train_scale`: a per-example factor (TRAK's out-to-loss factor Q_n, cosine's 1/|phi|).
Kernels are symmetric, so applying them to the (few) queries instead of the (many) training
examples gives the same scores at a fraction of the cost. New methods (EK-FAC, D-TRAK, DAS,
Journey-TRAK, Daunce) plug in by adding a class here and registering it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from attrib.errors import AttribError
from attrib.methods import kernels
from attrib.store import Store

# Relative damping: lambda = c * mean diag of the kernel's Gram matrix. Defaults per method
# were chosen on the validation queries of the digits and pydoc benchmark tasks (README).
DEFAULT_DAMPING = 0.1


class Method(ABC):
    name: ClassVar[str]
    output: ClassVar[str]  # output function it wants for classifiers: loss | margin
    summary: ClassVar[str]
    uses_damping: ClassVar[bool] = False
    kernel_kind: ClassVar[str | None] = None  # global | block | None (no kernel)
    default_damping: ClassVar[float] = DEFAULT_DAMPING
    # A kernel fit to the training features' own second moments (TRAK's Gram, EK-FAC's
    # corrected eigenvalues) already puts every group on the scale the influence needs;
    # learn-weights then starts from (and is pulled toward) the method's own weighting.
    calibrated: ClassVar[bool] = False

    def __init__(self, store: Store, damping: float | None = None):
        damping = self.default_damping if damping is None else damping
        if damping < 0:
            raise AttribError("--lambda must be at least 0")
        self.store, self.damping = store, damping
        self.slices = store.layout.slices

    def prepare(self) -> Method:
        """Load or compute what the method needs from the training store (its kernel)."""
        return self

    @abstractmethod
    def query_vectors(self, g: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """(Q x D) query features -> (Q x D) vectors to dot with training features."""

    def train_scale(self, phi: torch.Tensor, scalars: dict) -> torch.Tensor | None:
        """A per-example factor for the training side of one shard (rows x D), or None."""
        return None

    # -- the factorization learn-weights uses: tau = sum_j w_j q_j . psi_j -----------------
    def query_plain(self, g: torch.Tensor) -> torch.Tensor:
        """The query side before weights and kernel (cosine normalizes, others keep g)."""
        return g

    def train_preconditioned(self, phi: torch.Tensor, scalars: dict) -> torch.Tensor:
        """The training side with the kernel applied: psi(n) = s(n) K phi(n), so that the
        unweighted score is query_plain(g) . psi(n)."""
        scale = self.train_scale(phi, scalars)
        return phi if scale is None else phi * scale[:, None]

    def finalize(self, scores: torch.Tensor) -> torch.Tensor:
        """A last elementwise step on the scores (DAS squares them)."""
        return scores

    def self_scores(self, phi, scalars, weights: torch.Tensor | None) -> torch.Tensor:
        """tau(n, n) for every example of one shard."""
        scores = (self.query_vectors(phi, weights) * phi).sum(1)
        scale = self.train_scale(phi, scalars)
        return self.finalize(scores if scale is None else scores * scale)


def _weighted(g: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return g if weights is None else g * weights.to(g.dtype)


def _out_to_loss(scalars: dict) -> torch.Tensor:
    return torch.from_numpy(scalars["out_to_loss"]).float()


class TracIn(Method):
    name = "tracin"
    output = "loss"
    summary = "gradient dot product at the final checkpoint (K = I)"

    def query_vectors(self, g, weights):
        return _weighted(g, weights)


class Cosine(Method):
    name = "cosine"
    output = "loss"
    summary = "unit-normalized gradients (RelatIF / TrackStar-style cosine)"

    def query_plain(self, g):
        return g / g.norm(dim=1, keepdim=True).clamp(min=1e-30)

    def query_vectors(self, g, weights):
        return _weighted(self.query_plain(g), weights)

    def train_scale(self, phi, scalars):
        return 1.0 / phi.norm(dim=1).clamp(min=1e-30)

    def self_scores(self, phi, scalars, weights):
        unit = phi / phi.norm(dim=1, keepdim=True).clamp(min=1e-30)
        return (_weighted(unit, weights) * unit).sum(1)


class Trak(Method):
    name = "trak"
    output = "margin"
    summary = (
        "g_q^T (Phi^T Phi + lambda I)^-1 g_n Q_n, one global kernel (LoGra on factored features)"
    )
    uses_damping = True
    kernel_kind = "global"
    default_damping = 1.0
    calibrated = True

    def prepare(self):
        self.eigens = kernels.eigen(self.store, self.kernel_kind)
        return self

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_kind == "global":
            return self.eigens[0].apply_inverse(x, self.damping)
        return kernels.apply_block_inverse(self.eigens, x, self.slices, self.damping)

    def query_vectors(self, g, weights):
        return self._apply(_weighted(g, weights))

    def train_scale(self, phi, scalars):
        return _out_to_loss(scalars)

    def train_preconditioned(self, phi, scalars):
        return self._apply(phi) * _out_to_loss(scalars)[:, None]


class TrakBlock(Trak):
    name = "trak-block"
    summary = "TRAK with one kernel per module (block-diagonal), damped per block"
    kernel_kind = "block"
    default_damping = 0.1


class KFac(Method):
    name = "kfac"
    output = "loss"
    summary = "K-FAC: per-module Kronecker-factored inverse Fisher A (x) S, damped per module"
    uses_damping = True
    kernel_kind = "block"  # block-diagonal by module
    default_damping = 1e-3  # digits validation queries: LDS rises as damping falls to ~1e-3
    corrected = False

    def prepare(self):
        from attrib.methods.kronecker import kronecker_eigen

        self.blocks = kronecker_eigen(self.store, self.corrected)
        return self

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for block, part in zip(self.blocks, self.slices):
            out[:, part] = block.apply_inverse(x[:, part], self.damping)
        return out

    def query_vectors(self, g, weights):
        return self._apply(_weighted(g, weights))

    def train_preconditioned(self, phi, scalars):
        return self._apply(phi)


class EKFac(KFac):
    name = "ekfac"
    summary = "EK-FAC: K-FAC eigenbasis with eigenvalues re-fit on the per-example features"
    corrected = True
    calibrated = True


class DTrak(Trak):
    name = "dtrak"
    output = "square"
    summary = "D-TRAK: TRAK on gradients of L_square = mean ||eps_theta||^2 (diffusion)"


class JourneyTrak(Trak):
    name = "jtrak"
    output = "journey"
    summary = (
        "Journey-TRAK (adapted): query gradients along its sampling trajectory, "
        "training side as TRAK (diffusion)"
    )


class Das(Trak):
    """DAS, following the main paper's Appendix B.3 (Eq. 16):
    tau = ( g_q^T K g_n * r_n / (1 - h_n) )^2,  h_n = g_n^T K g_n,  K = (Phi^T Phi + lambda)^-1,
    on DAS features (per-timestep normalized gradients of mean eps_theta) and the stored mean
    residual r_n. Weights act inside the square (on g_q), so learn-weights' contributions are
    those of the linear part."""

    name = "das"
    output = "das"
    summary = "DAS: leverage-corrected, residual-scaled TRAK on DAS features, squared (diffusion)"

    def train_scale(self, phi, scalars):
        leverage = (self._apply(phi) * phi).sum(1)
        residual = torch.from_numpy(scalars["residual"]).float()
        return residual / (1.0 - leverage).clamp(min=1e-6)

    def finalize(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.pow(2)

    def train_preconditioned(self, phi, scalars):
        return self._apply(phi) * self.train_scale(phi, scalars)[:, None]


METHODS: dict[str, type[Method]] = {
    m.name: m for m in (TracIn, Cosine, Trak, TrakBlock, KFac, EKFac, DTrak, Das, JourneyTrak)
}
# Methods whose featurize pass also accumulates Kronecker factors.
FACTOR_METHODS = ("kfac", "ekfac")
METHOD_OUTPUTS: dict[str, str] = {name: cls.output for name, cls in METHODS.items()}


def get_method(name: str, store: Store, damping: float | None = None) -> Method:
    """The method, not yet prepared: call `prepare()` once the cheap checks have passed."""
    if name not in METHODS:
        raise AttribError(f"unknown --method {name!r}; choose {', '.join(METHODS)}")
    return METHODS[name](store, damping)
