"""Preconditioners: approximations of a damped inverse Hessian (H + lambda I)^-1 applied to
feature rows. A method that has one applies it to the (few) query vectors, and to training
rows where it needs them preconditioned (learn-weights, leverages). Each is fitted from a
store on first use and cached beside it (kernels.py, kronecker.py hold the math).

A new preconditioner is one class here, registered with `@register`; a method names it in
its `preconditioner` and states what it needs in its requirements (a test checks they agree).

torch is imported inside functions: the registry is read by the CLI at start-up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

    from attrib.store import Store

PRECONDITIONERS: dict[str, type[Preconditioner]] = {}


def register(cls: type[Preconditioner]) -> type[Preconditioner]:
    PRECONDITIONERS[cls.name] = cls
    return cls


class Preconditioner(ABC):
    name: ClassVar[str]
    factors: ClassVar[bool] = False  # fitted from the Kronecker factors featurize accumulates
    # `score --rescore` can fit it on exact gradients recomputed from the checkpoint.
    exact: ClassVar[bool] = False
    # What to do when it does not fit --memory-gb.
    smaller: ClassVar[str] = "featurize with a smaller --proj-dim"

    def __init__(self, store: Store, damping: float):
        self.store, self.damping = store, damping

    @abstractmethod
    def fit(self) -> Preconditioner:
        """Read the cache beside the store, or compute it (and cache it)."""

    @abstractmethod
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(n x D) feature rows -> x (H + lambda I)^-1, lambda by attrib's relative rule."""

    def nbytes(self) -> int:
        """Memory it holds while scoring (its peak while it is computed)."""
        return 0

    def leverage(self, phi: torch.Tensor) -> torch.Tensor:
        """h_n = phi_n (H + lambda I)^-1 phi_n for H a sum over the store's rows (RIF)."""
        return (self.apply(phi) * phi).sum(1)


@register
class Identity(Preconditioner):
    """No curvature (TracIn, cosine)."""

    name = "identity"
    exact = True

    def fit(self):
        return self

    def apply(self, x):
        return x


@register
class GramGlobal(Preconditioner):
    """TRAK's (Phi^T Phi + lambda I)^-1 over every feature; on an ensemble store, each
    member's own (TRAK over several models sums each model's TRAK score)."""

    name = "gram-global"
    smaller = "use --method trak-block or ekfac, or featurize with a smaller --proj-dim"
    kind = "global"

    @property
    def _kind(self) -> str:
        from attrib.store.ensemble import is_ensemble

        return "member" if self.kind == "global" and is_ensemble(self.store) else self.kind

    def fit(self):
        import attrib.methods.kernels as kernels

        self.eigens = kernels.eigen(self.store, self._kind)
        self.slices = kernels.kernel_slices(self.store, self._kind)
        return self

    def apply(self, x):
        import attrib.methods.kernels as kernels

        if self._kind == "global":
            return self.eigens[0].apply_inverse(x, self.damping)
        return kernels.apply_block_inverse(self.eigens, x, self.slices, self.damping)

    def nbytes(self):
        import attrib.methods.kernels as kernels

        return kernels.kernel_bytes(self.store, self._kind)


@register
class GramBlock(GramGlobal):
    """One Gram kernel per module (block-diagonal), damped per block."""

    name = "gram-block"
    smaller = "use --method ekfac, or featurize with a smaller --proj-dim"
    kind = "block"


@register
class KFac(Preconditioner):
    """Per-module Kronecker-factored inverse Fisher A (x) S in its eigenbasis."""

    name = "kfac"
    factors = True
    exact = True
    corrected = False

    def fit(self):
        from attrib.methods.kronecker import kronecker_eigen

        self.blocks = kronecker_eigen(self.store, self.corrected)
        return self

    def apply(self, x):
        import torch

        out = torch.empty_like(x)
        for block, part in zip(self.blocks, self.store.layout.slices):
            out[:, part] = block.apply_inverse(x[:, part], self.damping)
        return out

    def nbytes(self):
        from attrib.methods.kronecker import kronecker_bytes

        return kronecker_bytes(self.store)

    def leverage(self, phi):
        # The factors are means over rows, not sums: H = (sum of rows) / N.
        return super().leverage(phi) / self.store.num_examples


@register
class EKFac(KFac):
    """K-FAC's eigenbasis with the eigenvalues re-fit on the per-example features."""

    name = "ekfac"
    corrected = True


@register
class Shampoo(KFac):
    """Eigenvalue-corrected Shampoo: the eigenbases of the per-example gradients' own left and
    right second moments, read off the stored features (no factors needed)."""

    name = "shampoo"
    factors = False

    def __init__(self, store, damping):
        from attrib.errors import AttribError
        from attrib.methods.kronecker import matrix_shapes

        super().__init__(store, damping)
        if matrix_shapes(store) is None:
            raise AttribError(
                f"shampoo reads each module's features as a matrix, and {store.path} was "
                "featurized with --projection dense; featurize with the default projection"
            )

    def fit(self):
        from attrib.methods.kronecker import shampoo_eigen

        self.blocks = shampoo_eigen(self.store)
        return self

    def nbytes(self):
        from attrib.methods.kronecker import matrix_shapes

        # L and R per module (float64) and their float32 eigenvectors, eigenvalues per feature.
        sides = sum(o * o + i * i for o, i in matrix_shapes(self.store) or [])
        return sides * 12 + 2 * self.store.layout.total * 8
