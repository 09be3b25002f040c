"""`evaluate filter`: the job of finding the rows behind an unwanted behaviour (DATE-LM's
toxicity and bias filtering). Rows were planted to cause it; queries show it; each training
row gets its mean score over the queries, and how well that ranks the planted rows first is
the average precision (AUPRC, the metric that rewards finding them at the top) and the ROC
AUC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attrib.evaluate.blocks import score_blocks
from attrib.evaluate.metrics import roc_auc


@dataclass
class FilterResult:
    method: str
    weights: str | None
    auprc: float
    auroc: float
    planted: int
    rows: int
    queries: int

    def record(self) -> dict:
        return dict(self.__dict__)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mean over the positives of the precision at each one's rank (descending scores; ties
    broken against the positives, so a constant score earns nothing)."""
    order = np.lexsort((positive, -scores))  # among equal scores, negatives first
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def row_means(train, method, features, queries, weights=None, runtime=None) -> np.ndarray:
    means = np.zeros(train.num_examples)
    for start, end, scores in score_blocks(train, method, features, queries, weights, runtime):
        means[start:end] = scores.double().mean(0).numpy()
    return means


def evaluate_filter(train, method, features, queries, planted: np.ndarray, weights=None,
                    weights_name=None, runtime=None) -> FilterResult:  # fmt: skip
    means = row_means(train, method, features, queries, weights, runtime)
    return FilterResult(
        method.label, weights_name, average_precision(means, planted), roc_auc(means, planted),
        int(planted.sum()), len(planted), queries.num_examples,
    )  # fmt: skip
