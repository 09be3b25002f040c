"""Is the run smooth enough for metagradients? (bergson calls it metasmoothness.)

A metagradient predicts how a query's output moves when rows are removed: f(1) - sum over
the removed rows of df/dw_i. In a chaotic run (a high learning rate, too few steps of a
large model, low precision) the actual change is dominated by the butterfly effect of any
perturbation and the prediction is noise. The check removes a random small fraction of the
rows K times, replays the run each time, and compares the predicted with the actual changes:
their correlation across checks and queries says whether the scores can be trusted."""

from __future__ import annotations

import numpy as np

from attrib.training.engine import replay, state_from_snapshot
from attrib.training.magic import output_gradients


def smoothness_check(
    run, loaded, batch, metagrads: np.ndarray, output: str, checks: int, drop: float, seed: int = 0
) -> dict:
    """`metagrads`: (Q x N) df/dw for the queries in `batch`."""
    rows = metagrads.shape[1]
    final = state_from_snapshot(run, run.steps, loaded.stepper, loaded.optimizer)
    base, _ = output_gradients(loaded, final, batch, output)
    rng = np.random.default_rng(seed)
    start = state_from_snapshot(run, 0, loaded.stepper, loaded.optimizer)  # read once
    predicted, actual = [], []
    for _ in range(checks):
        removed = rng.choice(rows, max(1, round(drop * rows)), replace=False)
        weights = np.ones(rows)
        weights[removed] = 0.0
        state = replay(run, loaded, weights, start)
        values, _ = output_gradients(loaded, state, batch, output)
        predicted.append(-metagrads[:, removed].sum(1))
        actual.append(values - base)
    predicted, actual = np.concatenate(predicted), np.concatenate(actual)
    correlation = float(np.corrcoef(predicted, actual)[0, 1]) if len(actual) > 2 else float("nan")
    slope = float(np.dot(predicted, actual) / max(np.dot(predicted, predicted), 1e-300))
    return {
        "checks": checks,
        "queries": int(metagrads.shape[0]),
        "drop": drop,
        "correlation": correlation,
        "slope": slope,  # actual change per predicted change (1: the prediction is exact)
        "verdict": verdict(correlation),
        "predicted": predicted.tolist(),
        "actual": actual.tolist(),
    }


def verdict(correlation: float) -> str:
    if not np.isfinite(correlation):
        return "undetermined"
    if correlation >= 0.8:
        return "smooth: metagradients predict the replayed changes"
    if correlation >= 0.5:
        return "rough: metagradients predict the changes only in part"
    return (
        "chaotic: metagradients do not predict the replayed changes; lower the learning "
        "rate, train longer at a smaller one, or use float32/float64"
    )
