"""`score --opponents`: the most harmful rows are the bottom of the dense score matrix, for
every method a store serves, from the same streaming pass as the proponents."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli

from attrib.store import Store
from attrib.summary import serving_methods

ARGS = ["--proj-dim", "4", "--shard-size", "7", "--batch-size", "8", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, resnet_dir, image_data):
    root = tmp_path_factory.mktemp("opponents")
    for method in ("trak", "ekfac"):
        for name, extra in (("train", []), ("q", ["--max-examples", "3"])):
            code, _, err = run_cli(
                "featurize",
                "--model",
                resnet_dir,
                "--data",
                image_data,
                "--out",
                root / f"{name}-{method}",
                "--method",
                method,
                *ARGS,
                *extra,
            )
            assert code == 0, err
    return root


def _cases():
    return [("trak", m) for m in ("trak", "trak-block")] + [
        ("ekfac", m) for m in ("tracin", "cosine", "kfac", "ekfac")
    ]


@pytest.mark.parametrize("kind, method", _cases())
def test_opponents_are_the_bottom_of_the_dense_scores(stores, tmp_path, kind, method):
    train, queries = stores / f"train-{kind}", stores / f"q-{kind}"
    assert method in serving_methods(Store(train))
    dense = tmp_path / "all.npy"
    code, out, err = run_cli(
        "score",
        "-t",
        train,
        "--queries",
        queries,
        "--method",
        method,
        "--top",
        "3",
        "--opponents",
        "--out",
        dense,
        "--format",
        "jsonl",
        "--no-preview",
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    matrix = np.load(dense)
    for q in range(matrix.shape[0]):
        for name, order in (("proponents", -matrix[q]), ("opponents", matrix[q])):
            mine = [r for r in records if r["query"] == q and r["list"] == name]
            assert [r["rank"] for r in mine] == [1, 2, 3]
            expected = np.argsort(order, kind="stable")[:3]
            np.testing.assert_allclose(
                [r["score"] for r in mine], matrix[q, expected], rtol=1e-5, atol=1e-6
            )
            assert [r["index"] for r in mine] == expected.tolist()
