"""Per-group attribution strength: LDS from one group's contributions alone (Figure 1).

Group j alone scores q against n with C[q, n, j] = q_j . psi_j(n), i.e. the method's score
with weight 1 on group j and 0 elsewhere. One streaming pass sums each group's contributions
over every subset, so all groups cost about one scoring pass.
"""

from __future__ import annotations

import numpy as np
import torch

from attrib.evaluate.groundtruth import GroundTruth
from attrib.evaluate.metrics import lds, mean_ci
from attrib.store import Store


def group_strength(
    train: Store, method, features: torch.Tensor, columns: list[torch.Tensor], truth: GroundTruth
) -> list[tuple[float, float]]:
    """(LDS, CI) for each group, in the order of `columns`."""
    plain = method.query_plain(features.float())
    parts = [plain[:, cols] for cols in columns]
    masks = torch.from_numpy(truth.masks.astype(np.float32))
    predicted = torch.zeros(len(plain), truth.subsets, len(columns), dtype=torch.float64)
    for shard, scalars, phi in train.iter_features():
        psi = method.train_preconditioned(phi, scalars)
        subset = masks[:, shard.start : shard.end].T  # rows x M
        for j, cols in enumerate(columns):
            scores = parts[j] @ psi[:, cols].T  # Q x rows
            predicted[:, :, j] += (scores @ subset).double()
    out = []
    for j in range(len(columns)):
        per_query = lds(predicted[:, :, j].numpy(), truth.outputs.T, truth.higher_is_better)
        out.append(mean_ci(per_query))
    return out


def plot_strength(path, groups: list[str], values: list[tuple[float, float]], title: str):
    from attrib.weights.plot import plot_bars

    plot_bars(
        path,
        groups,
        [100 * v for v, _ in values],
        "LDS (%) of the group alone",
        title,
        errors=[100 * c for _, c in values],
        reference=None,
    )
