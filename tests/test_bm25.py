"""BM25 (`--method bm25`): the training store's rows' words ranked against a query's, equal
to bm25s run by hand on the dataset's texts, through score and evaluate lds alike."""

from __future__ import annotations

import json

import bm25s
import datasets
import numpy as np
import pytest
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_score import _store

from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.training.parts import make_masks

ROWS = 12


@pytest.fixture(scope="module")
def stores(tmp_path_factory, gpt2_dir, text_data):
    root = tmp_path_factory.mktemp("bm25")
    train = _store(gpt2_dir, text_data, root / "train", max_examples=ROWS)
    queries = _store(gpt2_dir, text_data, root / "queries", max_examples=3)
    return train, queries


def _texts(text_data) -> list[str]:
    return datasets.load_dataset("parquet", data_files=str(text_data), split="train")["text"]


def _by_hand(corpus: list[str], queries: list[str]) -> np.ndarray:
    index = bm25s.BM25()
    index.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    words = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
    return np.stack([index.get_scores(w) for w in words])


def _score(store, out, *extra) -> list[dict]:
    code, stdout, stderr = run_cli(
        "score", "-t", store.path, "--method", "bm25", "--out", out, "--top", str(ROWS), *extra
    )
    assert code == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()]


def test_text_queries_equal_bm25s_on_the_rows_texts(stores, text_data, tmp_path):
    train, _ = stores
    corpus = _texts(text_data)[:ROWS]
    query = " ".join(corpus[5].split()[:6])
    records = _score(train, tmp_path / "s.npy", "--text", query, "--opponents")
    want = _by_hand(corpus, [query])
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want, rtol=1e-6)
    top = [r for r in records if r.get("list") == "proponents"]
    assert top[0]["index"] == int(np.argmax(want[0]))
    assert [r["score"] for r in top] == pytest.approx(sorted(want[0], reverse=True), rel=1e-6)
    assert top[0]["score"] > 0 and "text" in top[0]  # previews as every method's records


def test_query_store_rows_find_themselves_and_lds_matches_the_scores_file(stores, tmp_path):
    train, queries = stores
    out = tmp_path / "q.npy"
    records = _score(train, out, "--queries", queries.path)
    assert {r["query"]: r["index"] for r in records if r["rank"] == 1} == {0: 0, 1: 1, 2: 2}
    masks = make_masks(ROWS, 16, 0.5, seed=0)
    noise = np.random.default_rng(0).normal(0, 1e-3, (16, 3))
    truth = tmp_path / "truth.npz"
    save_groundtruth(truth, GroundTruth(masks, masks.astype(float) @ np.load(out).T + noise, True))
    code, stdout, stderr = run_cli(
        "evaluate", "lds", "--train", train.path, "--queries", queries.path, "--groundtruth",
        truth, "--method", "bm25,tracin", "--scores", out, "--device", "cpu",
    )  # fmt: skip
    assert code == 0, stderr
    rows = {r["method"]: r for r in map(json.loads, stdout.splitlines())}
    assert set(rows) == {"tracin", "bm25", "q.npy"}
    assert rows["bm25"]["lds"] == pytest.approx(rows["q.npy"]["lds"], abs=1e-9)
    assert rows["bm25"]["lds"] > 90 > rows["tracin"]["lds"]  # the outputs were made from it


def test_bm25_misuse_is_one_line(stores, resnet_dir, image_data, tmp_path):
    train, queries = stores
    images = _store(resnet_dir, image_data, tmp_path / "img", max_examples=4)
    code, _, err = run_cli("score", "-t", images.path, "--queries", images.path, "--method", "bm25")
    _assert_one_line_error(code, err, "not a language model's store of texts")
    code, _, err = run_cli(
        "score", "-t", train.path, "--text", "x", "--method", "bm25", "--per-token", "--rif"
    )
    _assert_one_line_error(code, err, "ranks rows by their words", "--per-token, --rif")
    code, _, err = run_cli("score", "-t", train.path, "--text", "", "--method", "bm25")
    _assert_one_line_error(code, err)


def test_commands_on_features_refuse_bm25(stores, tmp_path):
    train, queries = stores
    np.save(tmp_path / "m.npy", np.array([0, 1]))
    for args in (
        ("learn-weights", "--train", train.path, "--queries", queries.path, "--out",
         tmp_path / "w.safetensors", "--method", "bm25"),
        ("index", "build", train.path, "--method", "bm25"),
        ("evaluate", "mislabel", "--train", train.path, "--mislabeled", tmp_path / "m.npy",
         "--method", "bm25"),
    ):  # fmt: skip
        code, _, err = run_cli(*args)
        _assert_one_line_error(code, err, "ranks rows by their words")
    assert not (tmp_path / "w.safetensors").exists()
