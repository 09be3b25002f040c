"""Contrastive queries (`score --contrast`, `--contrast-queries`): a query's scores minus its
contrast's, for every kind of method, equal to the difference of two plain `score` runs."""

from __future__ import annotations

import json

import builders
import numpy as np
import pytest
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_score import _store

ROWS = 10
# chosen / rejected completions of the same prompts
A = ['{"prompt": "the cat", "completion": " sat on the mat"}',
     '{"prompt": "the dog", "completion": " ran far away"}']  # fmt: skip
B = ['{"prompt": "the cat", "completion": " ate a bird"}',
     '{"prompt": "the dog", "completion": " slept all day"}']  # fmt: skip
# float32 products of a few thousand features: the difference of two runs and the run of the
# difference agree to rounding (~1e-7 of the largest score); 1e-5 of it is far below any
# real gap (a contrast dropped or taken twice moves scores by their own size).
ATOL = 1e-5


@pytest.fixture(scope="module")
def stores(tmp_path_factory, gpt2_dir, text_data, texts):
    root = tmp_path_factory.mktemp("contrast")
    made = {
        kind: _store(gpt2_dir, text_data, root / kind, method=kind, max_examples=ROWS)
        for kind in ("tracin", "trak", "ekfac")
    }
    other_rows = builders.save_text_data(root / "other.parquet", texts[20:23])
    made["queries"] = _store(gpt2_dir, text_data, root / "q", method="tracin", max_examples=3)
    made["contrasts"] = _store(gpt2_dir, other_rows, root / "c", method="tracin")
    return made


def _dense(store, out, *args) -> list[dict]:
    code, stdout, stderr = run_cli(
        "score", "-t", store.path, "--out", out, "--device", "cpu", "--top", "3", *args
    )
    assert code == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()]


def _texts(flag: str, values: list[str]) -> list[str]:
    return [arg for value in values for arg in (flag, value)]


@pytest.mark.parametrize(
    "store, method", [("tracin", "tracin"), ("tracin", "cosine"), ("trak", "trak-block"),
                      ("ekfac", "ekfac"), ("tracin", "bm25")],
)  # fmt: skip
def test_a_contrast_is_the_difference_of_the_two_scores(stores, store, method, tmp_path):
    train = stores[store]
    flags = ("--method", method)
    _dense(train, tmp_path / "a.npy", *_texts("--text", A), *flags)
    _dense(train, tmp_path / "b.npy", *_texts("--text", B), *flags)
    records = _dense(
        train, tmp_path / "ab.npy", *_texts("--text", A), *_texts("--contrast", B), *flags
    )
    want = np.load(tmp_path / "a.npy") - np.load(tmp_path / "b.npy")
    got = np.load(tmp_path / "ab.npy")
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL * np.abs(want).max())
    assert np.abs(want).max() > 0
    assert [r["contrast"] for r in records if r["rank"] == 1] == B
    top = [r["score"] for r in records if r["query"] == 0]
    tolerance = float(ATOL * np.abs(want).max())
    assert top == pytest.approx(sorted(want[0].tolist(), reverse=True)[:3], abs=tolerance)


def test_one_contrast_for_all_and_per_token_rows_sum_to_the_sequence(stores, tmp_path):
    train = stores["tracin"]
    _dense(train, tmp_path / "seq.npy", *_texts("--text", A), "--contrast", B[0], "--method",
           "tracin")  # fmt: skip
    records = _dense(
        train, tmp_path / "tok.npy", *_texts("--text", A), "--contrast", B[0], "--method",
        "tracin", "--per-token",
    )  # fmt: skip
    tokens = np.load(tmp_path / "tok.npy")
    query_of_row = []
    for record in records:
        if record["rank"] == 1:
            query_of_row.append(record["query"])
    sums = np.stack([tokens[np.array(query_of_row) == q].sum(0) for q in range(len(A))])
    want = np.load(tmp_path / "seq.npy")
    np.testing.assert_allclose(sums, want, rtol=0, atol=ATOL * np.abs(want).max())


def test_contrast_query_stores_subtract_row_by_row(stores, tmp_path):
    train, queries, contrasts = stores["tracin"], stores["queries"], stores["contrasts"]
    _dense(train, tmp_path / "a.npy", "--queries", queries.path, "--method", "tracin")
    _dense(train, tmp_path / "b.npy", "--queries", contrasts.path, "--method", "tracin")
    records = _dense(
        train, tmp_path / "ab.npy", "--queries", queries.path, "--contrast-queries",
        contrasts.path, "--method", "tracin", "--html", tmp_path / "r.html",
    )  # fmt: skip
    want = np.load(tmp_path / "a.npy") - np.load(tmp_path / "b.npy")
    np.testing.assert_allclose(np.load(tmp_path / "ab.npy"), want, atol=ATOL * np.abs(want).max())
    assert {r["query"]: r["contrast"] for r in records} == {0: 0, 1: 1, 2: 2}
    assert "<b>minus</b> row 1" in (tmp_path / "r.html").read_text()


def test_bad_contrasts_are_one_line(stores, tmp_path, texts):
    train, queries = stores["tracin"], stores["queries"]
    cases = [
        (("--text", A[0], "--text", A[1], "--contrast", B[0], "--contrast", B[0], "--contrast",
          B[1]), "3 --contrast values for 2 queries"),
        (("--queries", queries.path, "--contrast", B[0]), "--contrast-queries"),
        (("--text", A[1], "--contrast", '{"prompt": "the dog", "completion": ""}'),
         "no tokens to attribute"),
    ]  # fmt: skip
    for args, phrase in cases:
        code, _, err = run_cli("score", "-t", train.path, "--method", "tracin", *args)
        _assert_one_line_error(code, err, phrase)
    other = builders.save_tiny_gpt2(tmp_path / "other-model", texts, seed=1)
    foreign = _store(other, builders.save_text_data(tmp_path / "d.parquet", texts[:3]),
                     tmp_path / "foreign", method="tracin")  # fmt: skip
    code, _, err = run_cli(
        "score", "-t", train.path, "--queries", queries.path, "--contrast-queries", foreign.path
    )
    _assert_one_line_error(code, err, "other settings")
    code, _, err = run_cli(
        "score", "-t", train.path, "--queries", queries.path, "--contrast-queries",
        stores["contrasts"].path, "--method", "tracin", "--self",
    )  # fmt: skip
    _assert_one_line_error(code, err)


def test_preference_data_featurizes_each_side(gpt2_dir, stores, tmp_path):
    import datasets

    prompts = ["the cat", "the dog", "a bird"]
    chosen, rejected = [" sat on the mat", " ran far", " sang"], [" ate", " slept", " fell"]
    pairs = tmp_path / "pairs.parquet"
    datasets.Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected}
                               ).to_parquet(str(pairs))  # fmt: skip
    plain = tmp_path / "plain.parquet"
    datasets.Dataset.from_dict({"prompt": prompts, "completion": rejected}).to_parquet(str(plain))
    side = _store(gpt2_dir, pairs, tmp_path / "rejected", method="tracin",
                  completion_column="rejected")  # fmt: skip
    same = _store(gpt2_dir, plain, tmp_path / "same", method="tracin")
    for name in side.module_names:
        np.testing.assert_array_equal(side.matrix(name), same.matrix(name))
    code, _, err = run_cli(
        "featurize", "-m", str(gpt2_dir), "-d", str(pairs), "-o", str(tmp_path / "x")
    )
    _assert_one_line_error(code, err, "--completion-column chosen / rejected")
    assert not (tmp_path / "x").exists()
