"""Pure metric functions (numpy in, numbers out), as in dattri."""

from __future__ import annotations

import numpy as np


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties sharing their average rank (1-based)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, axis=-1, kind="mergesort")
    sorted_values = np.take_along_axis(values, order, axis=-1)
    ranks = np.empty_like(values)
    flat_sorted = sorted_values.reshape(-1, values.shape[-1])
    flat_order = order.reshape(-1, values.shape[-1])
    flat_ranks = ranks.reshape(-1, values.shape[-1])
    for row, (vals, idx) in enumerate(zip(flat_sorted, flat_order)):
        start = 0
        n = len(vals)
        while start < n:
            stop = start + 1
            while stop < n and vals[stop] == vals[start]:
                stop += 1
            flat_ranks[row, idx[start:stop]] = (start + stop + 1) / 2.0
            start = stop
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation along the last axis (rows of a with rows of b).
    A row with no spread (constant) has correlation 0."""
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean(-1, keepdims=True)
    rb -= rb.mean(-1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(-1) * (rb**2).sum(-1))
    numerator = (ra * rb).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def lds(predicted: np.ndarray, actual: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Per-query LDS: Spearman over subsets between predicted (Q x M, sum of the query's scores
    over each subset) and actual outputs (Q x M). Scores say how much a training example helps,
    so losses are negated first."""
    actual = np.asarray(actual, dtype=np.float64)
    return spearman(predicted, actual if higher_is_better else -actual)


def lds_bootstrap_draws(
    predicted: list[np.ndarray], actual: np.ndarray, higher_is_better: bool, draws: int = 200
) -> np.ndarray:
    """(len(predicted) x draws) mean LDS of each prediction when the queries and the retrained
    subsets are resampled with replacement, the same resamples for every prediction (seeded),
    so differences between them are paired."""
    rng = np.random.default_rng(0)
    actual = np.asarray(actual, dtype=np.float64)
    count, subsets = actual.shape
    out = np.empty((len(predicted), draws))
    for d in range(draws):
        rows, cols = rng.integers(0, count, count), rng.integers(0, subsets, subsets)
        truth = actual[rows][:, cols]
        for i, values in enumerate(predicted):
            out[i, d] = lds(values[rows][:, cols], truth, higher_is_better).mean()
    return out


def half_width(draws: np.ndarray) -> float:
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(high - low) / 2


def lds_bootstrap_ci(
    predicted: np.ndarray, actual: np.ndarray, higher_is_better: bool, draws: int = 200
) -> float:
    """95% CI half-width of the mean LDS when both the queries and the retrained subsets are
    resampled (with replacement). Every query's correlation is over the same subsets, so the
    usual CI over queries leaves out how lucky that one sample of subsets was."""
    return half_width(lds_bootstrap_draws([predicted], actual, higher_is_better, draws)[0])


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and 95% CI half-width (1.96 * std / sqrt(n))."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of `scores` for the boolean `positive` labels (Mann-Whitney, ties averaged)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both positive and negative examples")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def recall_at_k(ranked: np.ndarray, relevant: list[set[int]], k: int) -> np.ndarray:
    """Per query: the fraction of its top-k ranked indices that are in its relevant set."""
    return np.array([len(set(map(int, row[:k])) & rel) / k for row, rel in zip(ranked, relevant)])
