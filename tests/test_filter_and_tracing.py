"""`evaluate filter` (AUPRC / AUROC of planted rows, by each row's mean score over the
behaviour's queries) and `evaluate recall`'s MRR, checked against brute force on the dense
scores `score --out` writes, for a method on features and for bm25."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli
from sklearn.metrics import average_precision_score, roc_auc_score
from test_cli_errors import _assert_one_line_error
from test_score import _store

from attrib.evaluate.filtering import average_precision

ROWS, QUERIES = 12, 3


@pytest.fixture(scope="module")
def stores(tmp_path_factory, gpt2_dir, text_data):
    root = tmp_path_factory.mktemp("filter")
    train = _store(gpt2_dir, text_data, root / "train", method="tracin", max_examples=ROWS)
    queries = _store(gpt2_dir, text_data, root / "queries", method="tracin", max_examples=QUERIES)
    return root, train, queries


def test_average_precision_is_sklearns():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.normal(size=30)
        positive = rng.random(30) < 0.3
        positive[0] = True
        assert average_precision(scores, positive) == pytest.approx(
            average_precision_score(positive, scores), abs=1e-12
        )


def _dense(train, queries, method, out) -> np.ndarray:
    code, _, err = run_cli(
        "score", "-t", train.path, "--queries", queries.path, "--method", method, "--out", out
    )
    assert code == 0, err
    return np.load(out)


@pytest.mark.parametrize("method", ["tracin", "bm25"])
def test_filter_and_mrr_equal_brute_force(stores, method, tmp_path):
    root, train, queries = stores
    dense = _dense(train, queries, method, tmp_path / "s.npy")
    planted = np.array([1, 4, 7, 10])
    np.save(tmp_path / "planted.npy", planted)
    code, stdout, err = run_cli(
        "evaluate", "filter", "--train", train.path, "--queries", queries.path, "--planted",
        tmp_path / "planted.npy", "--method", method, "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    (row,) = [json.loads(line) for line in stdout.splitlines()]
    mask = np.isin(np.arange(ROWS), planted)
    means = dense.astype(np.float64).mean(0)
    assert row["auprc"] == pytest.approx(average_precision_score(mask, means), abs=1e-6)
    assert row["auroc"] == pytest.approx(roc_auc_score(mask, means), abs=1e-6)
    assert (row["planted"], row["rows"], row["queries"]) == (4, ROWS, QUERIES)

    contributors = {0: [5, 6], 1: [1], 2: [11, 0, 3]}
    (tmp_path / "c.json").write_text(json.dumps(contributors))
    code, stdout, err = run_cli(
        "evaluate", "recall", "--train", train.path, "--queries", queries.path,
        "--contributors", tmp_path / "c.json", "--method", method, "--k", "3", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    (row,) = [json.loads(line) for line in stdout.splitlines()]
    reciprocal = []
    for q, rows in contributors.items():
        best = dense[q, rows].max()
        reciprocal.append(1.0 / (1 + (dense[q] > best).sum()))
    assert row["mrr"] == pytest.approx(np.mean(reciprocal), abs=1e-9)
    top3 = np.argsort(-dense, axis=1, kind="stable")[:, :3]
    recall = np.mean([len(set(top3[q]) & set(r)) / 3 for q, r in contributors.items()])
    assert row["recall"] == pytest.approx(100 * recall)  # percent, as LDS; MRR is 0..1


def test_filter_inputs_are_one_line(stores, tmp_path):
    root, train, queries = stores
    np.save(tmp_path / "all.npy", np.arange(ROWS))
    code, _, err = run_cli(
        "evaluate", "filter", "--train", train.path, "--queries", queries.path, "--planted",
        tmp_path / "all.npy",
    )  # fmt: skip
    _assert_one_line_error(code, err, "--planted", "some planted and some other rows")
    code, _, err = run_cli(
        "evaluate", "mislabel", "--train", train.path, "--mislabeled", tmp_path / "all.npy",
        "--method", "bm25",
    )  # fmt: skip
    _assert_one_line_error(code, err, "ranks rows by their words")


def test_planted_examples_answers_point_at_their_rows(tmp_path):
    import datasets

    from attrib.examples import planted

    paths = planted.write_text(tmp_path / "text")
    texts = datasets.load_dataset("parquet", data_files=str(paths["train"]), split="train")["text"]
    marked = {i for i, t in enumerate(texts) if "bananas" in t}
    assert marked == set(np.load(paths["planted"]).tolist()) and len(marked) == 24
    facts = datasets.load_dataset("parquet", data_files=str(paths["facts"]), split="train")
    contributors = json.loads(paths["contributors"].read_text())
    for q, rows in contributors.items():
        place = facts[int(q)]["prompt"].removeprefix("The capital of ").removesuffix(" is")
        answer = facts[int(q)]["completion"].strip(" .")
        assert len(rows) == 2 and all(place in texts[r] and answer in texts[r] for r in rows)
    paths = planted.write_digits(tmp_path / "digits")
    train = datasets.load_dataset("parquet", data_files=str(paths["train"]), split="train")
    rows = np.load(paths["planted"])
    assert len(rows) == 40 and all(train[int(r)]["label"] == 0 for r in rows)
    patch = [np.asarray(train[int(r)]["image"])[6:8, 6:8].min() for r in rows]
    assert min(patch) == 255  # the bright 2x2 corner of each 8x8 image
