"""Fine-grained recall@k: the share of each query's top-k training examples that belong to its
known contributor set (the paper's subject / style / background evaluation), and the mean
reciprocal rank of the first contributor (fact tracing: DATE-LM's factual attribution)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attrib.errors import AttribError
from attrib.evaluate.blocks import first_relevant_ranks, score_blocks
from attrib.evaluate.metrics import mean_ci, recall_at_k
from attrib.score.lexical import dense_top
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
    mrr: float = float("nan")  # mean over queries of 1 / the first contributor's rank
    mrr_ci: float = float("nan")

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
    queries: Store | None = None,
) -> RecallResult:
    """`queries`: the query store (a lexical method reads its rows' words)."""
    if k < 1:
        raise AttribError("--k must be at least 1")

    def blocks():
        return score_blocks(train, method, features, queries, weights, runtime)

    if method.requires.reads_words:
        dense = torch.cat([scores for _, _, scores in blocks()], 1).numpy()
        top = dense_top(dense, k, train.column("index"), False)
    else:
        top = score(train, method, features, k, weights, runtime=runtime)
    values = recall_at_k(top.indices, contributors, min(k, train.num_examples))
    mean, ci = mean_ci(np.asarray(values))
    position = {int(r): i for i, r in enumerate(train.column("index"))}
    relevant = [np.array(sorted(position[i] for i in rows if i in position), dtype=np.int64)
                for rows in contributors]  # fmt: skip
    ranks = first_relevant_ranks(blocks, relevant, train.num_examples)
    reciprocal = np.array([1.0 / r if len(rows) else 0.0 for r, rows in zip(ranks, relevant)])
    mrr, mrr_ci = mean_ci(reciprocal)
    return RecallResult(method.label, weights_name, k, mean, ci, len(values), mrr, mrr_ci)
