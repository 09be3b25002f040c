"""LDS: stream the scores shard by shard, summing each query's scores over every subset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attrib.evaluate.groundtruth import GroundTruth
from attrib.evaluate.metrics import half_width, lds, lds_bootstrap_ci, lds_bootstrap_draws, mean_ci
from attrib.methods import get_method
from attrib.score import queries as query_features
from attrib.score.stream import stream
from attrib.store import Store


@dataclass
class LdsResult:
    method: str
    weights: str | None  # None: a --scores file (no weights apply)
    lds: float  # fraction
    ci: float  # over queries
    subsets: int
    queries: int
    per_query: np.ndarray
    ci_subsets: float = float("nan")  # over queries and retrained subsets (bootstrap)
    predicted: np.ndarray | None = None  # Q x M, for paired comparisons

    def record(self) -> dict:
        keys = ("method", "weights", "lds", "ci", "ci_subsets", "subsets", "queries")
        return {k: getattr(self, k) for k in keys}


def paired_to_first(results: list[LdsResult], truth: GroundTruth) -> list[dict]:
    """Records with each row's LDS minus the first row's and the 95% CI of that difference,
    from the same resamples of queries and subsets for both (paired: the subsets' luck is
    shared, so a difference is known more tightly than either LDS)."""
    draws = lds_bootstrap_draws(
        [r.predicted for r in results], truth.outputs.T, truth.higher_is_better
    )
    records = []
    for result, row in zip(results, draws):
        # The same resamples as lds_bootstrap_ci: one set of draws serves both CIs.
        record = {**result.record(), "ci_subsets": half_width(row)}
        if len(results) > 1:
            record["vs_first"] = result.lds - results[0].lds
            record["vs_first_ci"] = half_width(row - draws[0])
        records.append(record)
    return records


def predicted_outputs(
    train: Store, method, queries: torch.Tensor, masks: np.ndarray, weights=None, runtime=None
) -> np.ndarray:
    """(Q x M): each query's scores summed over each subset, without the dense score matrix."""
    device = runtime.device if runtime is not None else "cpu"
    masks_t = torch.from_numpy(masks.astype(np.float32)).to(device)
    predicted = torch.zeros(len(queries), masks.shape[0], dtype=torch.float64, device=device)
    for shard, _, scores in stream(train, method, queries, weights, runtime):
        predicted += (scores @ masks_t[:, shard.start : shard.end].T).double()
    return predicted.cpu().numpy()


def lds_of_scores(path: Path, truth: GroundTruth) -> LdsResult:
    """LDS of a dense score matrix from a file (queries x training rows, higher = more
    helpful): methods attrib computes elsewhere (magic) or other tools' scores."""
    from attrib.errors import AttribError

    try:
        scores = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AttribError(f"--scores {path}: not a readable .npy ({exc})") from None
    expected = (truth.outputs.shape[1], truth.masks.shape[1])
    if scores.ndim != 2 or scores.shape != expected:
        raise AttribError(
            f"--scores {path} is {scores.shape}, the ground truth needs {expected} "
            "(queries x training rows)"
        )
    if not np.isfinite(scores).all():
        raise AttribError(f"--scores {path} holds NaN or infinite scores")
    # The file is the row's "method" (a method attrib ran elsewhere, or another tool's).
    return lds_of_dense(path.name, scores, truth)


def lds_of_dense(name: str, scores: np.ndarray, truth: GroundTruth) -> LdsResult:
    """LDS of a dense (queries x rows) score matrix; no weights file applies to it."""
    predicted = scores.astype(np.float64) @ truth.masks.T.astype(np.float64)
    per_query = lds(predicted, truth.outputs.T, truth.higher_is_better)
    mean, ci = mean_ci(per_query)
    return LdsResult(
        name, None, mean, ci, truth.subsets, len(per_query), per_query, predicted=predicted
    )


def evaluate_lds(
    train: Store,
    queries: Store,
    truth: GroundTruth,
    method: str,
    damping: float | None = None,
    weights: torch.Tensor | None = None,
    weights_name: str = "none",
) -> LdsResult:
    truth.check(train.num_examples, queries.num_examples, "--groundtruth")
    features = query_features.from_store(train, queries).features
    prepared = get_method(method, train, damping).prepare()
    return evaluate_lds_prepared(train, features, truth, prepared, weights, weights_name)


def evaluate_lds_prepared(
    train: Store,
    features: torch.Tensor,
    truth: GroundTruth,
    prepared,
    weights,
    weights_name: str,
    runtime=None,
    subsets_ci: bool = True,
) -> LdsResult:
    """`subsets_ci=False` leaves ci_subsets to the caller (paired_to_first computes it with
    the paired differences, from the same draws)."""
    predicted = predicted_outputs(train, prepared, features, truth.masks, weights, runtime)
    per_query = lds(predicted, truth.outputs.T, truth.higher_is_better)
    mean, ci = mean_ci(per_query)
    both = (
        lds_bootstrap_ci(predicted, truth.outputs.T, truth.higher_is_better)
        if subsets_ci
        else float("nan")
    )
    return LdsResult(
        prepared.label, weights_name, mean, ci, truth.subsets, len(per_query), per_query, both,
        predicted,
    )  # fmt: skip


def two_stage_lds(train, queries, features, truth, options, combinations, runtime) -> list:
    """LDS of `score --rescore N`'s dense answer for every method x weights: the projected
    scores with each query's N candidates re-scored exactly (score/rescore.py)."""
    from attrib.featurize.exact import ExactGradients
    from attrib.score.rescore import (
        DEFAULT_BATCH,
        ExactScorer,
        check_rescorable,
        plan_queries,
        rescore_dense,
    )

    side, cached, results = None, {}, []
    for prepared, vector, label in combinations(train, options, queries.num_examples, truth=truth):
        check_rescorable(prepared, train)
        if side is None:  # checked first: no model is loaded for a refused method
            side = ExactGradients(queries, runtime.device)
        block = plan_queries(
            options.memory_gb, train, prepared, queries.num_examples, options.rescore,
            DEFAULT_BATCH, options.solver != "none",
        )  # fmt: skip

        def query_gradients(rows, block=block, side=side):
            if block < queries.num_examples:  # blocks: recomputed, never all held
                return side.gradients(rows, DEFAULT_BATCH)
            if "all" not in cached:  # one block: computed once for every method
                cached["all"] = side.gradients(range(queries.num_examples), DEFAULT_BATCH)
            return cached["all"][rows]

        dense = torch.cat(
            [scores.cpu() for _, _, scores in stream(train, prepared, features, vector)], 1
        )
        per_module = None
        if vector is not None:  # a weight per module, constant over its columns
            per_module = np.array([float(vector[part.start]) for part in train.layout.slices])
        scorer = ExactScorer.fit(train, prepared, runtime.device, module_weights=per_module,
                                 progress=False, settings=options.solve_settings())  # fmt: skip
        mixed = rescore_dense(scorer, dense, query_gradients, options.rescore, block).double()
        predicted = (mixed @ torch.from_numpy(truth.masks.astype(np.float64)).T).numpy()
        per_query = lds(predicted, truth.outputs.T, truth.higher_is_better)
        mean, ci = mean_ci(per_query)
        solver = "" if options.solver == "none" else f"+{options.solver}"
        name = f"{prepared.label}+rescore{options.rescore}{solver}"
        results.append(
            LdsResult(
                name, label, mean, ci, truth.subsets, len(per_query), per_query, predicted=predicted
            )  # fmt: skip
        )
    return results
