"""LDS and metrics: hand-computed values, and a linear datamodel where the effect of leaving
subsets out is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_cli
from test_cli_errors import _assert_one_line_error

from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.evaluate.lds import evaluate_lds
from attrib.evaluate.metrics import lds, mean_ci, rankdata, recall_at_k, roc_auc, spearman
from attrib.store import Store
from attrib.store.arrays import write_arrays
from attrib.training.parts import make_masks


def test_metrics_equal_hand_computed_values():
    np.testing.assert_array_equal(rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([1, 3, 2, 4.0])) == pytest.approx(0.8)
    assert spearman(np.array([1, 2, 3.0]), np.array([3, 2, 1.0])) == pytest.approx(-1)
    assert spearman(np.array([1, 2, 3.0]), np.array([5, 5, 5.0])) == 0  # no spread
    # Losses: a larger predicted help should mean a smaller loss.
    assert lds(np.array([[1, 2, 3.0]]), np.array([[3, 2, 1.0]]), False)[0] == pytest.approx(1)
    mean, ci = mean_ci(np.array([0.1, 0.3]))
    assert mean == pytest.approx(0.2) and ci == pytest.approx(
        1.96 * np.std([0.1, 0.3], ddof=1) / np.sqrt(2)
    )
    # 4 pairs (pos, neg): (0.9,0.1) (0.9,0.4) (0.35,0.1) (0.35,0.4) -> 3 of 4 ordered right.
    assert roc_auc(np.array([0.9, 0.1, 0.35, 0.4]), np.array([1, 0, 1, 0])) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    got = recall_at_k(np.array([[3, 1, 7, 9], [2, 4, 6, 8]]), [{1, 9}, {5}], 2)
    np.testing.assert_allclose(got, [0.5, 0.0])


def test_masks_have_the_asked_size_and_depend_on_the_seed():
    masks = make_masks(101, 7, 0.5, seed=3)
    assert masks.shape == (7, 101) and (masks.sum(1) == 50).all()
    np.testing.assert_array_equal(masks, make_masks(101, 7, 0.5, seed=3))
    assert not np.array_equal(masks, make_masks(101, 7, 0.5, seed=4))


def _linear_datamodel(tmp_path, n=200, q=12, d=16, m=60, noise=1e-3):
    """Training features Phi, query features G; under subset S the query output is exactly
    sum over S of tau(q, n) = G Phi^T (a linear datamodel), plus a little noise."""
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((n, d)).astype(np.float32)
    g = rng.standard_normal((q, d)).astype(np.float32)
    split = {"a": slice(0, 10), "b": slice(10, 16)}
    train = Store(
        write_arrays(tmp_path / "train", {k: phi[:, s] for k, s in split.items()}, shard_size=64)
    )
    queries = Store(write_arrays(tmp_path / "queries", {k: g[:, s] for k, s in split.items()}))
    masks = make_masks(n, m, 0.5, seed=1)
    effect = g.astype(np.float64) @ phi.T.astype(np.float64)  # tau(q, n)
    outputs = masks @ effect.T + noise * rng.standard_normal((m, q))
    return train, queries, masks, outputs, rng


def test_lds_is_near_one_for_exact_scores_and_near_zero_for_random_ones(tmp_path):
    train, queries, masks, outputs, rng = _linear_datamodel(tmp_path)
    truth = GroundTruth(masks, outputs, higher_is_better=True)
    exact = evaluate_lds(train, queries, truth, "tracin")
    assert exact.lds > 0.99 and exact.subsets == 60 and exact.queries == 12
    # The same truth read as losses (lower = better) flips the sign.
    flipped = evaluate_lds(train, queries, GroundTruth(masks, -outputs, False), "tracin")
    assert flipped.lds == pytest.approx(exact.lds)
    noise = rng.standard_normal((200, 16)).astype(np.float32)
    random_train = Store(
        write_arrays(tmp_path / "random", {"a": noise[:, :10], "b": noise[:, 10:]})
    )
    chance = evaluate_lds(random_train, queries, truth, "tracin")
    assert abs(chance.lds) < 0.1


def test_lds_from_the_cli_as_json_and_mismatched_ground_truth(tmp_path):
    train, queries, masks, outputs, _ = _linear_datamodel(tmp_path)
    path = tmp_path / "gt.npz"
    save_groundtruth(path, GroundTruth(masks, outputs, True))
    code, out, err = run_cli(
        "evaluate",
        "lds",
        "--train",
        train.path,
        "--queries",
        queries.path,
        "--groundtruth",
        path,
        "--method",
        "tracin,cosine",
        "--format",
        "jsonl",
    )
    assert code == 0, err
    import json

    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["method"] for r in rows] == ["tracin", "cosine"]
    keys = {"method", "weights", "lds", "ci", "ci_subsets", "subsets", "queries"}
    assert set(rows[0]) == keys | {"vs_first", "vs_first_ci", "unit"}
    assert all(r["unit"] == "percent" for r in rows)  # a pipeline need not guess the unit
    assert rows[0]["ci_subsets"] >= rows[0]["ci"] / 2
    # In percent, as the table shows them.
    difference = rows[1]["lds"] - rows[0]["lds"]
    assert rows[0]["vs_first"] == 0 and rows[1]["vs_first"] == pytest.approx(difference)
    assert rows[0]["lds"] > 99 and rows[0]["weights"] == "none"
    bad = tmp_path / "bad.npz"
    save_groundtruth(bad, GroundTruth(masks[:, :150], outputs, True))
    code, _, err = run_cli(
        "evaluate", "lds", "--train", train.path, "--queries", queries.path, "--groundtruth", bad
    )
    _assert_one_line_error(code, err, "150 training examples", "200")
    save_groundtruth(bad, GroundTruth(masks, outputs[:, :5], True))
    code, _, err = run_cli(
        "evaluate", "lds", "--train", train.path, "--queries", queries.path, "--groundtruth", bad
    )
    _assert_one_line_error(code, err, "12 queries")


def test_the_subset_bootstrap_ci_sees_what_the_query_ci_cannot():
    from attrib.evaluate.metrics import lds, lds_bootstrap_ci, mean_ci

    rng = np.random.default_rng(0)
    queries, subsets = 200, 100
    # Every query's outputs follow one subset-level effect that the predictions do not know:
    # the queries agree with each other, so their CI is small, but their shared LDS is just
    # this one sample of subsets' luck, whose spread is ~1/sqrt(subsets).
    actual = rng.normal(size=subsets) + 0.1 * rng.normal(size=(queries, subsets))
    predicted = rng.normal(size=subsets) + 0.1 * rng.normal(size=(queries, subsets))
    _, query_ci = mean_ci(lds(predicted, actual, True))
    both = lds_bootstrap_ci(predicted, actual, True)
    assert both > 5 * query_ci
    assert both == pytest.approx(1.96 / np.sqrt(subsets), rel=0.3)
    assert lds_bootstrap_ci(predicted, actual, True) == both  # seeded
    # Independent per-query noise: the same order (resampling subsets adds each query's own
    # sampling error over 100 subsets to the spread over queries).
    actual = rng.normal(size=(queries, subsets))
    predicted = actual + rng.normal(size=(queries, subsets))
    _, query_ci = mean_ci(lds(predicted, actual, True))
    assert query_ci < lds_bootstrap_ci(predicted, actual, True) < 3 * query_ci


def test_a_paired_difference_is_known_more_tightly_than_either_lds():
    from attrib.evaluate.metrics import half_width, lds_bootstrap_ci, lds_bootstrap_draws

    rng = np.random.default_rng(1)
    queries, subsets = 100, 60
    actual = rng.normal(size=subsets) + 0.5 * rng.normal(size=(queries, subsets))
    first = actual + rng.normal(size=(queries, subsets))
    second = first + 0.1 * rng.normal(size=(queries, subsets))  # nearly the same method
    draws = lds_bootstrap_draws([first, second], actual, True)
    # The same resamples as the single-prediction CI (seeded alike).
    assert half_width(draws[0]) == lds_bootstrap_ci(first, actual, True)
    assert half_width(draws[1] - draws[0]) < half_width(draws[0]) / 4
