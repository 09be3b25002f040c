"""K-FAC, EK-FAC and eigenvalue-corrected Shampoo preconditioners on stored features, one
block per module.

For module m, the stored feature of example n is F_n (k_out x k_in, row-major flattened), the
projected gradient. With the Kronecker factors A (inputs) and S (output gradients) and their
eigendecompositions A = Q_A diag(a) Q_A^T, S = Q_S diag(s) Q_S^T (float64):
  K-FAC:  H = (Q_S (x) Q_A) diag(s_i a_j) (Q_S (x) Q_A)^T
  EK-FAC: the eigenvalues replaced by  Lambda_ij = mean_n [(Q_S^T F_n Q_A)_ij]^2  (George et
          al. 2018; Grosse et al. 2023), one pass over the stored per-example features.
  Shampoo (eigenvalue-corrected, as bergson's): the eigenbases of L = mean_n F_n F_n^T and
          R = mean_n F_n^T F_n, the per-example gradients' own second moments, with EK-FAC's
          eigenvalue correction. Both come from the stored features: no factors needed, so any
          store of factored or exact gradients serves it.
Applying (H + lambda I)^-1 to a feature: rotate into the eigenbasis, divide by Lambda + lambda,
rotate back. Damping follows attrib's rule: lambda = c * mean(Lambda) of that module.
Results are cached next to the store like the TRAK kernels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from safetensors.torch import load_file

from attrib import log
from attrib.eigh import eigh
from attrib.methods.kernels import CACHE_DIR, save_tensors
from attrib.store import Store
from attrib.store.factors import total_factors

KFAC_VERSION = 1


@dataclass
class KroneckerEigen:
    q_out: torch.Tensor  # (k_out x k_out) eigenvectors of S
    q_in: torch.Tensor  # (k_in x k_in) eigenvectors of A
    values: torch.Tensor  # (k_out x k_in) eigenvalues, float64

    def apply_inverse(self, x: torch.Tensor, relative: float) -> torch.Tensor:
        """x (n x k_out*k_in) -> x (H + lambda I)^-1 (H is symmetric)."""
        values = self.values.clamp(min=0)
        lam = float(relative * values.mean())
        inverse = (1.0 / (values + lam)).to(x.dtype)
        k_out, k_in = values.shape
        q_out, q_in = self.q_out.to(x.dtype), self.q_in.to(x.dtype)
        rotated = q_out.T @ x.reshape(-1, k_out, k_in) @ q_in
        return (q_out @ (rotated * inverse) @ q_in.T).reshape(x.shape)


def _key(store: Store, corrected: bool) -> str:
    payload = json.dumps({"v": KFAC_VERSION, "ekfac": corrected, "store": store.content_key()})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def kronecker_bytes(store: Store) -> int:
    """Peak memory of computing the factors' eigenbases: every module's summed factors
    (float64, the size of one shard's factor file), their float32 eigenvectors, and the
    eigenvalues and their EK-FAC sums (float64, one per feature)."""
    from attrib.store.factors import shard_factor_path

    path = shard_factor_path(store.path, store.shards[0].file) if store.shards else None
    factors = path.stat().st_size if path is not None and path.exists() else 0
    return 2 * factors + 2 * store.layout.total * 8


def kronecker_eigen(store: Store, corrected: bool) -> list[KroneckerEigen]:
    """Per module (store order), computing and caching on first use."""
    kind = "ekfac" if corrected else "kfac"
    path = store.path / CACHE_DIR / f"{kind}-{_key(store, corrected)}.safetensors"
    names = store.module_names
    if path.exists():
        return load_blocks(path, len(names))
    log.info(f"computing the {kind} factors of {store.path} (cached for later runs)")
    factors = total_factors(store)
    result = [eigen_of(*factors[name].means()) for name in names]
    if corrected:
        _correct(store, result)
    save_blocks(path, result)
    return result


def eigen_of(a: torch.Tensor, s: torch.Tensor) -> KroneckerEigen:
    """K-FAC's eigenbasis and eigenvalues from a module's mean factors A and S."""
    a_values, q_in = eigh(a)
    s_values, q_out = eigh(s)
    values = torch.outer(s_values.clamp(min=0), a_values.clamp(min=0))
    return KroneckerEigen(q_out.float(), q_in.float(), values)


def load_blocks(path, count: int) -> list[KroneckerEigen]:
    t = load_file(str(path))
    return [KroneckerEigen(t[f"q_out.{i}"], t[f"q_in.{i}"], t[f"values.{i}"]) for i in range(count)]


def save_blocks(path, blocks: list[KroneckerEigen]) -> None:
    tensors = {}
    for i, item in enumerate(blocks):
        tensors[f"q_out.{i}"] = item.q_out.contiguous()
        tensors[f"q_in.{i}"] = item.q_in.contiguous()
        tensors[f"values.{i}"] = item.values
    save_tensors(path, tensors)


def matrix_shapes(store: Store) -> list[tuple[int, int]] | None:
    """Each module's stored feature as a (k_out x k_in) matrix (row-major), or None when the
    store's projection does not keep that shape (dense: one Gaussian over the whole gradient)."""
    projection = store.settings["projection"]
    sides = {name: (k_out, k_in) for name, k_out, k_in in projection.get("sides") or ()}
    shapes = []
    for spec in store.modules:
        if projection["kind"] == "none":
            shape = (spec.d_out, spec.d_in)
        elif spec.name in sides:  # a sqrt-size allocation's (featurize/allocation.py)
            shape = sides[spec.name]
        elif projection["kind"] == "factored":
            shape = (min(projection["dim"], spec.d_out), min(projection["dim"], spec.d_in))
        else:
            return None
        if shape[0] * shape[1] != store.feature_dims[spec.name]:
            return None
        shapes.append(shape)
    return shapes


class ShampooMoments:
    """Running sums of G G^T and G^T G per module (float64), for per-example gradient
    matrices G read off a store or recomputed exactly, and the eigenbases they give."""

    def __init__(self, shapes: list[tuple[int, int]]):
        self.left = [torch.zeros(o, o, dtype=torch.float64) for o, _ in shapes]
        self.right = [torch.zeros(i, i, dtype=torch.float64) for _, i in shapes]

    def add(self, module: int, g: torch.Tensor) -> None:
        """g: (rows, k_out, k_in) of one module."""
        g = g.double()
        self.left[module] += torch.einsum("noi,npi->op", g, g)
        self.right[module] += torch.einsum("noi,noj->ij", g, g)

    def bases(self, count: int) -> list[KroneckerEigen]:
        """Each module's eigenbases of the means; eigenvalues left to the correction pass."""
        result = []
        for left, right in zip(self.left, self.right):
            q_out, q_in = eigh(left / count)[1], eigh(right / count)[1]
            values = torch.zeros(len(q_out), len(q_in), dtype=torch.float64)
            result.append(KroneckerEigen(q_out.float(), q_in.float(), values))
        return result


def shampoo_eigen(store: Store) -> list[KroneckerEigen]:
    """Eigenvalue-corrected Shampoo per module (store order), computed and cached on first use:
    one pass for L and R, one for the corrected eigenvalues."""
    path = store.path / CACHE_DIR / f"shampoo-{_key(store, True)}.safetensors"
    if path.exists():
        return load_blocks(path, len(store.module_names))
    shapes = matrix_shapes(store)
    log.info(f"computing the shampoo eigenbases of {store.path} (cached for later runs)")
    moments = ShampooMoments(shapes)
    for _, _, phi in store.iter_features():
        for m, part in enumerate(store.layout.slices):
            moments.add(m, phi[:, part].reshape(-1, *shapes[m]))
    result = moments.bases(store.num_examples)
    _correct(store, result)
    save_blocks(path, result)
    return result


def _correct(store: Store, result: list[KroneckerEigen]) -> None:
    """EK-FAC: eigenvalues from the per-example features, in the K-FAC eigenbasis."""
    sums = [torch.zeros_like(item.values) for item in result]
    for _, _, phi in store.iter_features():
        for item, total, part in zip(result, sums, store.layout.slices):
            k_out, k_in = item.values.shape
            rotated = item.q_out.T @ phi[:, part].reshape(-1, k_out, k_in) @ item.q_in
            total += rotated.double().pow(2).sum(0)
    for item, total in zip(result, sums):
        item.values = total / store.num_examples
