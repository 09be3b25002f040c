"""Mislabeled-data detection by self-influence (the paper's Appendix B.2.2).

Each training example's self-influence tau(i, i) is divided by the sum of the top-`norm_k`
scores of its own row tau(i, .) (over all training examples, itself included), then examples
are ranked; ROC AUC with the mislabeled examples as positives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attrib.errors import AttribError
from attrib.evaluate.metrics import roc_auc
from attrib.methods import Method
from attrib.score.stream import score, self_influence
from attrib.store import Store


@dataclass
class MislabelResult:
    method: str
    weights: str
    auc: float
    norm_k: int
    examples: int
    mislabeled: int

    def record(self) -> dict:
        return dict(self.__dict__)


def load_mislabeled(path: Path, store: Store, flag: str = "--mislabeled",
                    kind: str = "mislabeled") -> np.ndarray:  # fmt: skip
    """Boolean mask over the training store's rows from a .npy of source-row indices (the
    mislabeled rows; `evaluate filter`'s planted rows)."""
    path = Path(path)
    if not path.is_file():
        raise AttribError(f"{flag} {path}: no such file")
    try:
        indices = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise AttribError(f"{flag} {path} is not a .npy array ({exc})") from None
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise AttribError(f"{flag} {path} must hold a 1-D array of integer row indices")
    rows = store.column("index")
    position = {int(r): i for i, r in enumerate(rows)}
    bad = [int(i) for i in indices if int(i) not in position]
    if bad:
        raise AttribError(
            f"{flag} {path}: index {bad[0]} is out of range (the training store holds "
            f"rows {int(rows.min())}..{int(rows.max())} of its split)"
        )
    mask = np.zeros(len(rows), dtype=bool)
    mask[[position[int(i)] for i in indices]] = True
    if mask.all() or not mask.any():
        raise AttribError(f"{flag} {path}: needs some {kind} and some other rows")
    return mask


def normalized_self_influence(
    store: Store, method: Method, weights: torch.Tensor | None, norm_k: int, runtime=None
) -> np.ndarray:
    values, _ = self_influence(store, method, weights)
    if norm_k == 0:
        return values
    sums = []
    for _, _, phi in store.iter_features():  # each shard of training rows as queries
        top = score(store, method, phi, norm_k, weights, runtime=runtime)
        sums.append(top.scores.sum(1).numpy())
    return values / np.concatenate(sums)


def evaluate_mislabel(
    store: Store,
    method: Method,
    mislabeled: np.ndarray,
    weights=None,
    norm_k: int = 10,
    weights_name: str = "none",
    runtime=None,
) -> MislabelResult:
    if norm_k < 0:
        raise AttribError("--norm-k must be at least 0")
    scores = normalized_self_influence(store, method, weights, norm_k, runtime)
    auc = roc_auc(scores, mislabeled)
    return MislabelResult(
        method.label, weights_name, auc, norm_k, len(scores), int(mislabeled.sum())
    )
