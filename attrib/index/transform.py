"""Maximum inner product search as nearest-neighbour search, for the ivf kinds.

k-means lists (and product quantizers) are fit in Euclidean space, where the training side's
large common mean and varied norms make inner-product lists miss most of the top (recall@10
of 0.43 on a real store's distribution, benchmarks/index_scale.py). The standard reduction
(Bachrach et al., 2014) fixes that: each training vector x, divided by the largest norm M,
gains one coordinate sqrt(1 - |x/M|^2), so every row has unit norm; a query is unit-normalized
and gains a 0. Then |q' - x'|^2 = 2 - 2 q.x / (|q| M): the nearest rows are exactly the
largest inner products, and scores come back as (2 - d) / 2 * |q| M. Scaling a query does not
change its ranking, so nothing is lost; distances stay in [0, 4], so nothing cancels.
"""

from __future__ import annotations

import numpy as np

L2_KINDS = ("ivf", "ivfpq")
PQ_SUBVECTOR = 4  # dims per product-quantizer byte by default


def width(dim: int, kind: str) -> int:
    """The index's vector width for D features: D + 1, padded with zeros to whole
    product-quantizer sub-vectors for ivfpq."""
    if kind not in L2_KINDS:
        return dim
    if kind == "ivfpq":
        return -(-(dim + 1) // PQ_SUBVECTOR) * PQ_SUBVECTOR
    return dim + 1


def train_side(psi: np.ndarray, max_norm: float, size: int) -> np.ndarray:
    x = psi.astype(np.float64) / max_norm
    out = np.zeros((len(x), size), np.float32)
    out[:, : x.shape[1]] = x
    out[:, x.shape[1]] = np.sqrt(np.clip(1.0 - (x * x).sum(1), 0.0, None))
    return out


def query_side(u: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit queries padded to the index width, their norms)."""
    norms = np.linalg.norm(u.astype(np.float64), axis=1)
    out = np.zeros((len(u), size), np.float32)
    out[:, : u.shape[1]] = u / np.where(norms > 0, norms, 1.0)[:, None]
    return out, norms


def scores(distances: np.ndarray, norms: np.ndarray, max_norm: float) -> np.ndarray:
    return ((2.0 - distances.astype(np.float64)) / 2.0 * norms[:, None] * max_norm).astype(
        np.float32
    )
