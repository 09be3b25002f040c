"""A ranking's top rows per query: what exhaustive scoring and an index search both return."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TopK:
    scores: torch.Tensor  # (Q x k) descending
    positions: torch.Tensor  # (Q x k) row positions in the training store
    indices: np.ndarray  # (Q x k) the store's `index` column (row in the source split)
    # With opponents: the k lowest scores (the most harmful rows), ascending.
    bottom: TopK | None = None

    def negated(self) -> TopK:
        return TopK(-self.scores, self.positions, self.indices)
