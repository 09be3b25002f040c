"""Kernels built from stored training features, cached next to the store.

TRAK's kernel is (Phi^T Phi + lambda I)^-1. We cache the eigendecomposition of the Gram matrix
Phi^T Phi (computed once per store, in float64) rather than one inverse per lambda: applying
U diag(1 / (s + lambda)) U^T costs two matrix products, so any damping can be used (and swept)
without recomputing anything. `global` has one Gram matrix over all D features; `block` has one
per module (block-diagonal kernel).

When a store has fewer examples than features (N < D: a diffusion UNet or an LLM with a few
hundred or thousand examples), the global kernel comes from the N x N dual Phi Phi^T = V S V^T
instead: Phi^T Phi has the same nonzero eigenvalues S with eigenvectors U = Phi^T V S^-1/2, and
eigenvalue 0 on the rest, so (Phi^T Phi + lambda I)^-1 = U diag(1/(S + lambda)) U^T + (I - U U^T)
/ lambda exactly. It costs N^2 D and N D memory instead of D^3 and D^2 (13k features x 1,000
examples: seconds instead of ten minutes).

Damping rule (documented for users): `--lambda c` means lambda = c * mean(diag(Phi^T Phi)) of the
kernel it damps (for `block`, of each module's own block), so the same c means the same
relative regularization whatever the model size, projection or number of examples.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from attrib import log
from attrib.atomic import atomic_path
from attrib.eigh import eigh
from attrib.errors import AttribError
from attrib.store import Store

CACHE_DIR = "cache"
KERNEL_VERSION = 1
GLOBAL_KERNEL_LIMIT_BYTES = 8 * 2**30


@dataclass
class Eigen:
    """Eigendecomposition of one d x d Gram block: vectors (d x r, float32) and values (r,
    float64). r = d when complete; from the dual, r <= N directions and eigenvalue 0 on the
    other d - r."""

    vectors: torch.Tensor
    values: torch.Tensor

    @property
    def dim(self) -> int:
        return self.vectors.shape[0]

    @property
    def complete(self) -> bool:
        return self.vectors.shape[1] == self.dim

    def damping(self, relative: float) -> float:
        """relative x mean(diag G) = relative x trace(G) / d."""
        return float(relative * self.values.clamp(min=0).sum() / self.dim)

    def apply_inverse(self, x: torch.Tensor, relative: float) -> torch.Tensor:
        """x (n x d) -> x (G + lambda I)^-1, with lambda from the relative damping rule."""
        lam = self.damping(relative)
        inv = 1.0 / (self.values.clamp(min=0) + lam)
        if not torch.isfinite(inv).all() or (not self.complete and lam <= 0):
            raise AttribError("the kernel is singular with --lambda 0; pass a positive --lambda")
        if self.complete:
            vectors = self.vectors.to(x.device, x.dtype)
            return ((x @ vectors) * inv.to(x.device, x.dtype)) @ vectors.T
        # Dual: the span of U through 1/(s + lambda), the rest through 1/lambda. float64,
        # because a training feature lies almost wholly in the span and x - x U U^T cancels.
        vectors = self.vectors.to(x.device, torch.float64)
        x64 = x.double()
        inside = x64 @ vectors
        out = (inside * (inv.to(x.device) - 1.0 / lam)) @ vectors.T + x64 / lam
        return out.to(x.dtype)


def kernel_slices(store: Store, kind: str) -> list[slice]:
    """The feature columns of each diagonal block: all of them (global), each module (block),
    or each member of an ensemble store (member: every member's own global kernel)."""
    if kind == "global":
        return [slice(0, store.layout.total)]
    if kind == "member":
        from attrib.store.ensemble import member_ranges

        return [columns for columns, _ in member_ranges(store)]
    return list(store.layout.slices)


def uses_dual(store: Store, part: slice) -> bool:
    return store.num_examples < part.stop - part.start


def dual_eigen(phi: torch.Tensor) -> Eigen:
    """A block's nonzero eigenpairs from the N x N dual Phi Phi^T (phi: N x d, float64)."""
    values, v = eigh(phi @ phi.T)
    # Directions below float64's resolution of the largest eigenvalue are numerically zero:
    # they join the complement (eigenvalue 0) instead of dividing by ~0 here.
    keep = values > values.max().clamp(min=0) * phi.shape[1] * torch.finfo(torch.float64).eps
    values, v = values[keep], v[:, keep]
    vectors = (phi.T @ v) / values.sqrt()
    return Eigen(vectors.float().contiguous(), values)


def _gather(store: Store, parts: list[slice]) -> list[torch.Tensor]:
    """These blocks' features of every row (float64), in one pass."""
    chunks = [[] for _ in parts]
    for _, _, phi in store.iter_features():
        for chunk, part in zip(chunks, parts):
            chunk.append(phi[:, part].double())
    return [torch.cat(chunk) for chunk in chunks]


def gram_blocks(store: Store, parts: list[slice]) -> list[torch.Tensor]:
    """Phi^T Phi (float64) of each block, in one pass."""
    for part in parts:
        need = (part.stop - part.start) ** 2 * 8
        if need > GLOBAL_KERNEL_LIMIT_BYTES:
            raise AttribError(
                f"a kernel over D={part.stop - part.start} features of {store.num_examples} "
                f"rows needs {need / 2**30:.0f} GiB; use --method trak-block or a smaller "
                "--proj-dim"
            )
    grams = [torch.zeros(p.stop - p.start, p.stop - p.start, dtype=torch.float64) for p in parts]
    for _, _, phi in store.iter_features():
        for gram, part in zip(grams, parts):
            block = phi[:, part]
            gram += (block.T @ block).double()
    return grams


def _key(store: Store, kind: str) -> str:
    payload = json.dumps(
        {
            "v": KERNEL_VERSION,
            "kind": kind,
            "store": store.content_key(),
            "modules": store.module_names,
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def kernel_path(store: Store, kind: str) -> Path:
    return store.path / CACHE_DIR / f"gram-{kind}-{_key(store, kind)}.safetensors"


def kernel_bytes(store: Store, kind: str) -> int:
    """Memory the kernel holds: its cached eigenvectors (float32), or, to compute it, the
    float64 Gram matrices of one pass, one block's eigh (float64 in and out) and the float32
    eigenvectors kept."""
    path = kernel_path(store, kind)
    if path.exists():
        return path.stat().st_size
    n, parts = store.num_examples, kernel_slices(store, kind)
    widths = [p.stop - p.start for p in parts]
    # Dual blocks: Phi (float64) of all, U twice in float64 and once in float32 for one, and
    # the N x N eigh; primal blocks: Gram matrices of one pass and one block's eigh.
    dual = [w for p, w in zip(parts, widths) if uses_dual(store, p)]
    squares = [w * w for p, w in zip(parts, widths) if not uses_dual(store, p)]
    dual_bytes = n * sum(dual) * 12 + n * max(dual, default=0) * 16 + n * n * 24 * bool(dual)
    return dual_bytes + sum(squares) * 12 + max(squares, default=0) * 16


def eigen(store: Store, kind: str) -> list[Eigen]:
    """The cached eigendecompositions for `kind` (global | block | member), computing them if
    needed: from the N x N dual for blocks wider than the store has rows."""
    path = kernel_path(store, kind)
    if path.exists():
        tensors = load_file(str(path))
        count = len([k for k in tensors if k.startswith("vectors.")])
        return [Eigen(tensors[f"vectors.{i}"], tensors[f"values.{i}"]) for i in range(count)]
    log.info(f"computing the {kind} kernel of {store.path} (cached for later runs)")
    parts = kernel_slices(store, kind)
    dual = [p for p in parts if uses_dual(store, p)]
    features = iter(_gather(store, dual)) if dual else iter(())
    grams = iter(gram_blocks(store, [p for p in parts if not uses_dual(store, p)]))
    result = []
    for part in parts:
        if uses_dual(store, part):
            result.append(dual_eigen(next(features)))
        else:
            values, vectors = eigh(next(grams))
            result.append(Eigen(vectors.float().contiguous(), values))
    _save(path, result)
    return result


def _save(path: Path, result: list[Eigen]) -> None:
    tensors = {}
    for i, item in enumerate(result):
        tensors[f"vectors.{i}"] = item.vectors
        tensors[f"values.{i}"] = item.values
    save_tensors(path, tensors)


def save_tensors(path: Path, tensors: dict) -> None:
    """Cache tensors atomically next to a store; a read-only store only costs a warning."""
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
    except OSError as exc:
        log.warn(f"cannot cache the kernel in {path.parent} ({exc}); it is recomputed next time")


def apply_block_inverse(
    eigens: list[Eigen], x: torch.Tensor, slices: list[slice], relative: float
) -> torch.Tensor:
    """Block-diagonal kernel: each module's slice of x through its own damped inverse."""
    out = torch.empty_like(x)
    for item, part in zip(eigens, slices):
        out[:, part] = item.apply_inverse(x[:, part], relative)
    return out


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
