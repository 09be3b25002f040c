"""Seeded random projections of per-example gradients.

Every matrix is a pure function of (global seed, module name, part): it is generated on the CPU
with its own `torch.Generator`, so the same run on another machine, rank or day projects with
the same numbers. Entries are Gaussian with variance 1 / (output dimension), which preserves
inner products in expectation.

Kinds:
- factored (LoGra / bergson style): the gradient of a linear map is a sum of outer products
  dy_t x_t^T, so `P_out^T G P_in = sum_t (P_out^T dy_t)(P_in^T x_t)^T`: p*p numbers per example
  without building G. Flattened row-major it equals `vec_row(G) @ kron(P_out, P_in)`.
- dense (TRAK style): the full per-example gradient times a seeded (D x p*p) Gaussian matrix,
  generated in fixed row blocks so it never needs to exist at once.
A module whose gradient is no larger than the projection keeps it exactly (identity), per side
on the factored path (a 10-class head's output side stays exact) and whole on the dense one.

Allocations of the factored path's features (allocation.py): uniform, p x p a module; or
sqrt-size, the same total shared among modules by the square root of each one's size, each
module's sides in its own aspect (the default for K-FAC's family: docs/quality.md).
- none: the exact per-example gradient (`--proj-dim full`), for small modules and references.

A normalizer (`featurize --optimizer-state`, TrackStar) divides each gradient elementwise by
the square root of the optimizer's second moment before any of these; normalizer.py.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from attrib.errors import AttribError

KINDS = ("factored", "dense", "none")
ALLOCATIONS = ("uniform", "sqrt-size")
DENSE_BLOCK_ROWS = 16384  # rows of the dense matrix generated from one seed


def derive_seed(seed: int, module: str, part: str) -> int:
    digest = hashlib.sha256(f"{seed}\x00{module}\x00{part}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def gaussian(rows: int, cols: int, seed: int, module: str, part: str) -> torch.Tensor:
    """A (rows x cols) float32 CPU matrix with N(0, 1/cols) entries, fixed by its key."""
    generator = torch.Generator(device="cpu").manual_seed(derive_seed(seed, module, part))
    matrix = torch.randn(rows, cols, generator=generator, dtype=torch.float32)
    return matrix.mul_(1.0 / math.sqrt(cols))


@dataclass(frozen=True)
class NormalizerRef:
    """The optimizer state gradients are normalized by: where it was read, and the digest of
    the per-module scales it gave (None until they are computed)."""

    source: str
    sha256: str | None = None


@dataclass(frozen=True)
class ProjectionSpec:
    kind: str  # factored | dense | none
    dim: int | None  # p (features per module = p*p); None for kind "none"
    seed: int = 0
    normalizer: NormalizerRef | None = None
    allocation: str = "uniform"
    # Each module's (name, k_out, k_in) under a sqrt-size allocation, set once the modules
    # are known (allocation.allocate); None for a uniform one, where p decides every side.
    sides: tuple[tuple[str, int, int], ...] | None = None

    @classmethod
    def from_dict(cls, data: dict) -> ProjectionSpec:
        data = dict(data)
        if data.get("normalizer") is not None:
            data["normalizer"] = NormalizerRef(**data["normalizer"])
        if data.get("sides") is not None:
            data["sides"] = tuple((str(n), int(o), int(i)) for n, o, i in data["sides"])
        return cls(**data)

    def unprojected(self) -> ProjectionSpec:
        """The exact gradients of the same space (`score --rescore`): no projection, the
        same normalizer."""
        return ProjectionSpec("none", None, self.seed, self.normalizer)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AttribError(f"--projection must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "none" and self.dim is not None:
            raise AttribError("projection kind 'none' (--proj-dim full) takes no dimension")
        if self.kind != "none" and (self.dim is None or self.dim < 1):
            raise AttribError(f"--proj-dim must be a positive integer or 'full', got {self.dim}")
        if self.allocation not in ALLOCATIONS:
            raise AttribError(
                f"--proj-allocation must be one of {', '.join(ALLOCATIONS)}, got "
                f"{self.allocation!r}"
            )
        if self.allocation != "uniform" and not self.factored:
            raise AttribError(
                f"--proj-allocation {self.allocation} shares the factored projection's features "
                "among modules: drop it, or use the default --projection factored"
            )

    @property
    def factored(self) -> bool:
        """P_out^T G P_in per module, never building G (the default)."""
        return self.kind == "factored"

    @property
    def dense(self) -> bool:
        """The full per-example gradient times one seeded Gaussian matrix (TRAK's)."""
        return self.kind == "dense"

    @property
    def exact(self) -> bool:
        """No projection: the per-example gradient itself (`--proj-dim full`)."""
        return self.kind == "none"

    def side_dims(self, d_out: int, d_in: int, module: str | None = None) -> tuple[int, int]:
        """Factored projection sizes per side: p, or the side itself when it is not larger
        (a side of at most p entries is kept exactly: projecting it would only add noise);
        under a sqrt-size allocation, the module's own sides."""
        if self.allocation == "uniform":
            return min(self.dim, d_out), min(self.dim, d_in)
        for name, k_out, k_in in self.sides or ():  # allocation.allocate set them
            if name == module:
                return k_out, k_in
        raise AttribError(f"the projection allocates no features to module {module!r}")

    def feature_dim(self, d_out: int, d_in: int, module: str | None = None) -> int:
        """Features per example for a module whose gradient is a (d_out x d_in) matrix."""
        if self.exact:
            return d_out * d_in
        if self.dense:
            return min(self.dim * self.dim, d_out * d_in)
        k_out, k_in = self.side_dims(d_out, d_in, module)
        return k_out * k_in

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "dim": self.dim, "seed": self.seed}
        if self.normalizer is not None:  # absent otherwise: older stores' settings still match
            out["normalizer"] = {
                "source": self.normalizer.source, "sha256": self.normalizer.sha256,
            }  # fmt: skip
        if self.allocation != "uniform":  # likewise
            out["allocation"] = self.allocation
            out["sides"] = [list(side) for side in self.sides or ()]
        return out


def factored_matrices(spec: ProjectionSpec, module: str, d_out: int, d_in: int):
    """(P_out: d_out x k_out, P_in: d_in x k_in) for a module; d_in includes the bias column.
    A side no larger than p gets the identity."""
    k_out, k_in = spec.side_dims(d_out, d_in, module)
    p_out = torch.eye(d_out) if k_out == d_out else gaussian(d_out, k_out, spec.seed, module, "out")
    p_in = torch.eye(d_in) if k_in == d_in else gaussian(d_in, k_in, spec.seed, module, "in")
    return p_out, p_in


def dense_block(spec: ProjectionSpec, module: str, block: int, rows: int) -> torch.Tensor:
    """Rows [block*DENSE_BLOCK_ROWS, ...+rows) of the module's dense (D x p*p) matrix."""
    return gaussian(rows, spec.dim * spec.dim, spec.seed, module, f"dense:{block}")


class DenseProjector:
    """Projects flattened full gradients (B x D) with the module's seeded Gaussian matrix.

    Blocks are cached while they fit in `cache_bytes`; beyond that they are regenerated for each
    batch (exact, only slower): the dense path is the reference, not the fast one.
    """

    def __init__(self, spec: ProjectionSpec, module: str, total_rows: int, cache_bytes: int):
        self.spec, self.module, self.total_rows = spec, module, total_rows
        width = spec.dim * spec.dim
        self._cache: dict[tuple[int, str], torch.Tensor] | None = (
            {} if total_rows * width * 4 <= cache_bytes else None
        )

    def _block(self, block: int, rows: int, device: torch.device) -> torch.Tensor:
        key = (block, str(device))
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        matrix = dense_block(self.spec, self.module, block, rows).to(device)
        if self._cache is not None:
            self._cache[key] = matrix
        return matrix

    def __call__(self, flat_grads: torch.Tensor) -> torch.Tensor:
        out = None
        for block, start in enumerate(range(0, self.total_rows, DENSE_BLOCK_ROWS)):
            rows = min(DENSE_BLOCK_ROWS, self.total_rows - start)
            part = flat_grads[:, start : start + rows] @ self._block(block, rows, flat_grads.device)
            out = part if out is None else out.add_(part)
        return out

    def full_matrix(self) -> torch.Tensor:
        """The whole (D x p*p) matrix on the CPU, for tests on tiny modules."""
        blocks = [
            dense_block(self.spec, self.module, b, min(DENSE_BLOCK_ROWS, self.total_rows - s))
            for b, s in enumerate(range(0, self.total_rows, DENSE_BLOCK_ROWS))
        ]
        return torch.cat(blocks, dim=0)
