"""`magic --replicas`: the scores are the mean of each run's own magic (each replica replayed
for RUN's queries), the provenance names the replicas, and a replica of other rows, the run
itself or a folder that is no run is refused in one line before anything is replayed (queries
of another task: tests/test_run_record.py)."""

from __future__ import annotations

import json

import builders
import numpy as np
import pytest
from helpers import featurize_store, run_cli, train_run
from test_cli_errors import _assert_one_line_error
from test_magic import _magic

FLAGS = ["--epochs", "2", "--lr", "1e-3", "--weight-decay", "0.1", "--schedule", "cosine"]
FLAGS += ["--warmup", "2", "--dtype", "float64"]  # lm_run's recipe (tests/conftest.py)


@pytest.fixture(scope="module")
def replica(lm_run, gpt2_dir, text_data, tmp_path_factory):
    """lm_run's recipe on its rows with another seed, and its own query store (the same rows)."""
    root = tmp_path_factory.mktemp("replica")
    run = train_run(gpt2_dir, text_data, root / "run", *FLAGS, "--seed", "1")
    featurize_store(run / "model", text_data, root / "q", "--max-examples", "3")
    return run, root / "q"


@pytest.fixture(scope="module")
def queries(lm_run, text_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("queries") / "q"
    return featurize_store(lm_run / "model", text_data, out, "--max-examples", "3")


def test_replicas_average_each_runs_own_magic(lm_run, replica, queries, tmp_path):
    alone, _ = _magic(lm_run, queries, tmp_path / "a.npy")
    other, _ = _magic(replica[0], replica[1], tmp_path / "b.npy")
    assert np.corrcoef(alone.ravel(), other.ravel())[0, 1] < 0.999  # another batch order
    both, records = _magic(lm_run, queries, tmp_path / "ab.npy", "--replicas", replica[0])
    # float32 files, each rounded once: the mean of the two within their rounding
    np.testing.assert_allclose(both, (alone + other) / 2, rtol=0, atol=1e-6 * np.abs(both).max())
    assert records[0]["score"] == pytest.approx(both[0].max())
    made = json.loads((tmp_path / "ab.npy.json").read_text())
    assert made["run"] == str(lm_run) and made["replicas"] == [str(replica[0])]
    assert list((replica[0] / "magic").rglob("queries-*.npy"))  # kept for a resume


def test_replicas_of_other_rows_or_no_run_are_refused(lm_run, queries, gpt2_dir, texts, tmp_path):
    fewer = builders.save_text_data(tmp_path / "fewer.parquet", texts[:20])
    other_rows = train_run(gpt2_dir, fewer, tmp_path / "other", *FLAGS)
    for replica, phrase in (
        (other_rows, "did not train task causal-lm"),
        (lm_run, "is the run itself"),
        (tmp_path / "nothing", "is not a recorded run"),
    ):
        out = tmp_path / "scores.npy"
        code, _, err = run_cli(
            "magic", "--run", lm_run, "--queries", queries, "--out", out,
            "--replicas", replica, "--device", "cpu", "-q",
        )  # fmt: skip
        _assert_one_line_error(code, err, "--replicas", phrase)
        assert not out.exists()
