"""A newcomer's first hour: the wrong answer and the papercuts a first walk through the README
found, as tests (item numbers are the issue's)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from helpers import run_cli
from test_cli_errors import _assert_one_line_error

from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.store.arrays import write_arrays
from attrib.weights.artifact import WeightsArtifact, save_weights

COMMON = ["--proj-dim", "4", "--batch-size", "8", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def text_store(tmp_path_factory, gpt2_dir, text_data):
    root = tmp_path_factory.mktemp("first-hour")
    code, _, err = run_cli(
        "featurize", "--model", gpt2_dir, "--data", text_data, "--out", root / "train",
        "--method", "trak", *COMMON,
    )  # fmt: skip
    assert code == 0, err
    return root / "train"


def _score(store, *args):
    code, out, err = run_cli("score", "-t", store, *args, "--top", "2", "--format", "jsonl")
    return code, [json.loads(line) for line in out.splitlines()], err


# -- 1: a file of queries is read, a missing one is an error, --text is literal ---------------
def test_a_query_file_is_read_line_by_line(text_store, tmp_path):
    queries = tmp_path / "query.txt"
    queries.write_text("the cat sat on the mat\n\nthe dog ran in the park\n")
    code, records, err = _score(text_store, "--query", queries, "-q")
    assert code == 0, err
    assert [r["query_id"] for r in records] == ["the cat sat on the mat"] * 2 + [
        "the dog ran in the park"
    ] * 2
    code, _, err = _score(text_store, "--query", tmp_path / "missing.txt")
    _assert_one_line_error(code, err, "no such file", "--text")
    code, records, err = _score(text_store, "--text", "query.txt", "-q")
    assert code == 0 and records[0]["query_id"] == "query.txt"
    code, records, err = _score(text_store, "--query", "the cat sat", "-q")
    assert code == 0 and records[0]["query_id"] == "the cat sat"  # plain text is still text


# -- 3: say what is happening before the first bar --------------------------------------------
def test_score_says_what_it_loads(text_store, monkeypatch):
    from rich.console import Console

    from attrib import log

    # Said to a person at a terminal; kept out of stderr captured by programs.
    console = Console(stderr=True, force_terminal=True, no_color=True, highlight=False)
    monkeypatch.setattr(log, "_console", console)
    code, _, err = _score(text_store, "--query", "the cat sat")
    assert code == 0, err
    assert "loading" in err and "to featurize 1 query" in err and "scoring" in err


# -- 4: a missing data file is missing, not unreachable ---------------------------------------
def test_a_missing_data_file_says_no_such_file(tmp_path, gpt2_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("featurize", "--model", gpt2_dir, "--data", "train.csv", "--out", "s")
    _assert_one_line_error(code, err, "train.csv: no such file")


# -- 5, 17: the LDS table fits 80 columns, says what it means, and the pipe uses its unit ------
@pytest.fixture
def lds_inputs(tmp_path):
    rng = np.random.default_rng(0)
    train = write_arrays(tmp_path / "train", {n: rng.standard_normal((30, 4)) for n in "ab"})
    queries = write_arrays(tmp_path / "q", {n: rng.standard_normal((5, 4)) for n in "ab"})
    masks = rng.random((8, 30)) < 0.5
    save_groundtruth(tmp_path / "gt.npz", GroundTruth(masks, rng.standard_normal((8, 5)), False))
    weights = tmp_path / "a-rather-long-weights-file-name.safetensors"
    save_weights(weights, WeightsArtifact(np.array([2.0, 0.5]), ["a", "b"], {"a": "a", "b": "b"}))
    return train, queries, tmp_path / "gt.npz", weights


def _lds(inputs, fmt):
    train, queries, truth, weights = inputs
    return run_cli(
        "evaluate", "lds", "-t", train, "--queries", queries, "--groundtruth", truth,
        "--method", "tracin,trak-block", "--weights", f"none,{weights}", "--format", fmt, "-q",
    )  # fmt: skip


def test_the_lds_table_fits_80_columns_with_verdicts(lds_inputs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = _lds(lds_inputs, "table")
    assert code == 0, err
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    assert "row 2 (" in out and ("within the noise" in out or "beyond the noise" in out)
    code, piped, _ = _lds(lds_inputs, "jsonl")
    rows = [json.loads(line) for line in piped.splitlines()]
    shown = re.findall(r"│\s*(-?\d+\.\d\d)\s*│", out)
    assert f"{rows[0]['lds']:.2f}" in shown  # the same number, in percent, on both


# -- 6: help at 80 columns -----------------------------------------------------------------
@pytest.mark.parametrize(
    "command", [["featurize"], ["score"], ["learn-weights"], ["evaluate", "lds"]]
)
def test_help_is_readable_at_80_columns(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli(*command, "--help")
    assert code == 0
    assert "…" not in out and "<bool>" not in out and "<str>" not in out
    assert max(len(line) for line in out.splitlines()) <= 80


# -- 7: records of a query store say what the query is -----------------------------------
def test_query_store_records_echo_the_query(text_store):
    code, records, err = _score(text_store, "--queries", text_store, "-q")
    assert code == 0, err
    assert records[0]["query_preview"].startswith("text: ")


# -- 8, 16: inspect describes weights, ground truths, and what a store serves ---------------
def test_inspect_describes_every_file_attrib_writes(lds_inputs, text_store):
    train, _, truth, weights = lds_inputs
    code, out, err = run_cli("inspect", weights, "--format", "json")
    assert code == 0, err
    described = json.loads(out)
    assert described["kind"] == "weights" and described["weights"] == {"a": 2.0, "b": 0.5}
    code, out, err = run_cli("inspect", truth, "--format", "json")
    described = json.loads(out)
    assert (described["subsets"], described["queries"], described["training_rows"]) == (8, 5, 30)
    code, out, err = run_cli("inspect", text_store, "--format", "json")
    described = json.loads(out)
    assert described["featurized_for"] == "trak"
    assert "trak" in described["serves"] and "ekfac" not in described["serves"]
    # Journey-TRAK's queries are diffusion trajectories; TrackStar needs --optimizer-state.
    assert "jtrak" not in described["serves"] and "trackstar" not in described["serves"]
    code, out, _ = run_cli("inspect", text_store, "--format", "table")
    assert "featurized for" in out and "serves" in out


# -- 9, 10: learn-weights warns about overlap and says what the objective means ------------
def test_learn_weights_warns_when_queries_are_training_rows(text_store, tmp_path):
    code, _, err = run_cli(
        "learn-weights", "-t", text_store, "--queries", text_store, "--out",
        tmp_path / "w.safetensors", "--k", "3", "--epochs", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "weight-learning queries are rows of the training store" in err
    assert "lower is better" in err and "held-out queries" in err


# -- 11: a method the store cannot serve is refused before any work ----------------------
def test_kfac_on_a_store_without_factors_is_refused_first(text_store):
    code, _, err = _score(text_store, "--queries", text_store, "--method", "kfac")
    _assert_one_line_error(code, err, "needs Kronecker factors", "--method kfac")


# -- 12: the demo says what it measures against on a warm cache ---------------------------
def test_the_demo_does_not_promise_retraining_on_a_warm_cache():
    from attrib_cli.demo import _answer
    from rich.console import Console

    from attrib.demo.run import DemoResult

    console = Console(record=True, width=100)
    result = DemoResult({"index": 0, "label": 3}, [], {}, None, None, {}, "ekfac")
    _answer(console, result, shipped=False)
    assert "cached ground truth" in console.export_text()
    result.retraining = True
    _answer(console, result, shipped=False)
    assert "retrained in this run" in console.export_text()


def test_the_demo_folder_is_ignored_by_git():
    root = os.path.join(os.path.dirname(__file__), "..")
    assert "/attrib-demo/" in open(os.path.join(root, ".gitignore")).read().split()


def test_without_method_a_store_is_scored_by_the_method_it_was_featurized_for(
    tmp_path, gpt2_dir, text_data, text_store
):
    """featurize with no --method (shampoo for a language model), then score with no
    --method: Shampoo, not trak-block; an EK-FAC store is scored by EK-FAC and a trak store
    by trak-block."""
    from attrib.evaluate.options import MislabelOptions
    from attrib.weights.options import LearnOptions

    default, ekfac = tmp_path / "default", tmp_path / "ekfac"
    for out, extra in ((default, ()), (ekfac, ("--method", "ekfac"))):
        code, _, err = run_cli("featurize", "-m", gpt2_dir, "-d", text_data, "-o", out,
                               "--max-examples", "8", "-q", *extra)  # fmt: skip
        assert code == 0, err
    manifest = json.loads((default / "manifest.json").read_text())
    # no factor pass: Shampoo's eigenbases come from the stored gradients
    assert manifest["options"]["method"] == "shampoo" and not manifest["settings"]["factors"]
    # K-FAC's family: p = 45 kept in int8 (docs/quality.md, "Bits for dimensions")
    assert manifest["settings"]["projection"]["dim"] == 45
    assert manifest["settings"]["store_dtype"] == "int8"
    assert json.loads((ekfac / "manifest.json").read_text())["settings"]["factors"]

    def top(store, *method):
        code, out, err = run_cli("score", "--train", store, "--query", "the cat sat", "--top",
                                 "3", "--format", "jsonl", *method)  # fmt: skip
        assert code == 0, err
        # rounded: a kernel computed on first use and one read back from its cache differ
        # in the last float32 bits
        return [(r["index"], round(r["score"], 4)) for r in map(json.loads, out.splitlines())]

    plain = top(default)
    assert plain == top(default, "--method", "shampoo") != top(default, "--method", "trak-block")
    assert top(ekfac) == top(ekfac, "--method", "ekfac") != top(ekfac, "--method", "shampoo")
    assert top(text_store) == top(text_store, "--method", "trak-block")
    learn = LearnOptions(train=default, queries=default, out=tmp_path / "w.safetensors")
    assert learn.method == "shampoo"
    np.save(tmp_path / "planted.npy", np.array([0]))
    assert MislabelOptions(train=default, mislabeled=tmp_path / "planted.npy").methods == (
        "shampoo",
    )
    assert MislabelOptions(train=ekfac, mislabeled=tmp_path / "planted.npy").methods == ("ekfac",)
