"""How noisy a retraining ground truth is: its split-half reliability.

With S >= 2 models per subset (`evaluate retrain --seeds S`), the seeds split into two halves
(even and odd); each half's mean output is an independent measurement of the same subsets.
Their Spearman correlation over subsets, per query and averaged, is the split-half
reliability r; Spearman-Brown gives the reliability of the full S-seed mean, 2r / (1 + r).
A method that predicted the noise-free outputs perfectly would reach an LDS of about the
square root of that: the ceiling the table's numbers should be read against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attrib.errors import AttribError
from attrib.evaluate.metrics import spearman


@dataclass(frozen=True)
class Reliability:
    split_half: float  # mean over queries of Spearman(half A, half B) over subsets
    full: float  # Spearman-Brown: the reliability of the mean of all seeds
    ceiling: float  # about the LDS of a perfect predictor of the noise-free outputs
    per_query: np.ndarray  # Q split-half correlations


def split_half_reliability(by_seed: np.ndarray) -> Reliability:
    """`by_seed`: S x M x Q outputs (seed, subset, query)."""
    by_seed = np.asarray(by_seed, dtype=np.float64)
    if by_seed.ndim != 3 or by_seed.shape[0] < 2:
        raise AttribError("split-half reliability needs outputs of at least 2 seeds per subset")
    first, second = by_seed[0::2].mean(0), by_seed[1::2].mean(0)  # M x Q each
    per_query = spearman(first.T, second.T)
    r = float(per_query.mean())
    full = 2 * r / (1 + r) if r > -1 else float("nan")
    return Reliability(r, full, float(np.sqrt(max(full, 0.0))), per_query)
