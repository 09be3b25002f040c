"""Fine-grained recall@k: the share of each query's top-k training examples that belong to its
known contributor set (the paper's subject / style / background evaluation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attrib.errors import AttribError
from attrib.evaluate.metrics import mean_ci, recall_at_k
from attrib.score.stream import score
from attrib.store import Store


@dataclass
class RecallResult:
    method: str
    weights: str
    k: int
    recall: float
    ci: float
    queries: int

    def record(self) -> dict:
        return dict(self.__dict__)


def load_contributors(path: Path, queries: Store) -> list[set[int]]:
    """A JSON object {query row index: [training row indices]}, keyed by the query store's
    `index` column (rows of its split); every query must have an entry."""
    path = Path(path)
    from attrib.jsonio import load_json

    try:
        data = load_json(path, f"--contributors {path} ({{query index: [training indices]}})")
    except OSError:
        raise AttribError(f"--contributors {path}: no such file") from None
    sets = []
    for row in queries.column("index"):
        entry = data.get(str(int(row)))
        if entry is None:
            raise AttribError(f"--contributors {path}: no entry for query row {int(row)}")
        sets.append({int(i) for i in entry})
    return sets


def evaluate_recall(
    train: Store,
    method,
    features,
    contributors: list[set[int]],
    k: int = 10,
    weights=None,
    weights_name: str = "none",
    runtime=None,
) -> RecallResult:
    if k < 1:
        raise AttribError("--k must be at least 1")
    top = score(train, method, features, k, weights, runtime=runtime)
    values = recall_at_k(top.indices, contributors, min(k, train.num_examples))
    mean, ci = mean_ci(np.asarray(values))
    return RecallResult(method.label, weights_name, k, mean, ci, len(values))
