"""`attrib index build` and `score --index`: a flat index, and an ivf index probing every list,
answer exactly what exact scoring answers (with and without weights); hnsw finds nearly all of
it; the index is cached per store contents, method and damping; bad requests are one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from attrib.store.arrays import write_arrays
from attrib.weights.artifact import WeightsArtifact, save_weights

pytest.importorskip("faiss")

ROWS, TOP = 600, 10


@pytest.fixture
def stores(tmp_path):
    rng = np.random.default_rng(0)
    # Per-module scales differ, as real gradients' do, so weights change the ranking.
    phi = rng.standard_normal((ROWS, 24)).astype(np.float32) * np.repeat([1.0, 3.0], 12)
    g = rng.standard_normal((6, 24)).astype(np.float32)
    split = {"a": slice(0, 12), "b": slice(12, 24)}
    loss_factor = {"out_to_loss": rng.uniform(0.5, 1.5, ROWS).astype(np.float32)}
    train = write_arrays(
        tmp_path / "train", {k: phi[:, s] for k, s in split.items()}, loss_factor, shard_size=128
    )
    queries = write_arrays(tmp_path / "queries", {k: g[:, s] for k, s in split.items()})
    weights = tmp_path / "w.safetensors"
    save_weights(weights, WeightsArtifact(np.array([2.0, 0.1]), ["a", "b"], {"a": "a", "b": "b"}))
    return train, queries, weights


def _score(train, queries, *extra):
    code, out, err = run_cli(
        "score", "-t", train, "--queries", queries, "--top", TOP, "--format", "jsonl",
        "--no-preview", *extra,
    )  # fmt: skip
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def _build(train, *extra):
    code, out, err = run_cli("index", "build", train, *extra)
    assert code == 0, err
    return out.strip()


def _pairs(records):
    return [(r["query"], r["rank"], r["index"]) for r in records]


@pytest.mark.parametrize("method", ["tracin", "trak-block", "cosine"])
@pytest.mark.parametrize("weighted", [False, True])
def test_exact_kinds_answer_as_exact_scoring(stores, method, weighted):
    train, queries, weights = stores
    extra = ["--method", method, *(["--weights", weights] if weighted else [])]
    exact = _score(train, queries, *extra)
    _build(train, "--method", method, "--kind", "flat")
    _build(train, "--method", method, "--kind", "ivf", "--lists", "8", "--probe", "8")
    for kind in ("flat", "ivf"):  # ivf probing all 8 lists searches every row
        got = _score(train, queries, *extra, "--index", kind)
        assert _pairs(got) == _pairs(exact)
        np.testing.assert_allclose(
            [r["score"] for r in got], [r["score"] for r in exact], rtol=1e-5, atol=1e-6
        )


def test_approximate_kinds_find_most_of_the_top(stores):
    train, queries, _ = stores
    exact = _score(train, queries)
    _build(train, "--kind", "hnsw")
    _build(train, "--kind", "ivf", "--lists", "16", "--probe", "4")
    truth = {(q, i) for q, _, i in _pairs(exact)}
    for kind, least in (("hnsw", 0.95), ("ivf", 0.5)):
        found = {(q, i) for q, _, i in _pairs(_score(train, queries, "--index", kind))}
        assert len(found & truth) / len(truth) >= least, kind


def test_index_is_cached_and_keyed_by_store_contents_and_damping(stores):
    train, queries, _ = stores
    path = _build(train, "--kind", "flat")
    written = Path(path).stat().st_mtime_ns
    assert _build(train, "--kind", "flat") == path
    assert Path(path).stat().st_mtime_ns == written  # found, not rebuilt
    assert _build(train, "--kind", "flat", "--lambda", "0.5") != path
    ivf = Path(_build(train, "--kind", "ivf", "--probe", "2"))
    written = ivf.stat().st_mtime_ns
    _build(train, "--kind", "ivf", "--probe", "5")  # a search setting: the metadata only
    assert ivf.stat().st_mtime_ns == written
    assert json.loads(ivf.with_suffix(".json").read_text())["params"]["probe"] == 5
    code, _, err = run_cli("score", "-t", train, "--queries", queries, "--index", "hnsw")
    assert code == 2 and "attrib index build" in err and "--kind hnsw" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        "score", "-t", train, "--queries", queries, "--index", "flat", "--lambda", "0.7"
    )
    assert code == 2 and "--lambda 0.7 --kind flat" in err  # the command that builds this one


def test_bad_requests_are_one_line(stores):
    train, queries, _ = stores
    for args, words in (
        (["index", "build", train, "--method", "das"], "squares"),
        (["score", "-t", train, "--queries", queries, "--index", "ivf", "--out", "s.npy"], "top"),
        (["index", "build", train, "--kind", "ivfpq", "--pq-bytes", "5"], "divide"),
        (["index", "build", train, "--kind", "ivf", "--lists", "601"], "rows"),
        (["index", "build", train, "--kind", "flat", "--pq-bytes", "4"], "ivfpq"),
    ):
        code, _, err = run_cli(*args)
        assert code == 2 and words in err, (args, err)
        assert len(err.strip().splitlines()) == 1


def test_without_faiss_the_error_says_how_to_install_it(stores, monkeypatch):
    train, _, _ = stores
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    code, _, err = run_cli("index", "build", train)
    assert code == 2 and "pip install 'attrib[index]'" in err
    assert len(err.strip().splitlines()) == 1
