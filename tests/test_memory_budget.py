"""--memory-gb bounds score, learn-weights and evaluate: a small budget streams the training
store in blocks of a few rows and gives the same results as whole shards; a budget that cannot
hold what must be held whole is a one-line error before anything is read or written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli
from test_evaluate_lds import _linear_datamodel

from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.memory import Budget, plan_streaming
from attrib.methods import get_method
from attrib.store import Store
from attrib.store.arrays import write_arrays

# ~16 kB: the stores below hold 200 rows of 16 features in shards of 64; with 12 queries this
# leaves blocks of a handful of rows (checked below), so every shard is read in several parts.
SMALL_GB = 16e3 / 2**30


def test_blocks_cover_every_row_once_with_the_shards_values(tmp_path):
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((70, 5)).astype(np.float32)
    store = Store(write_arrays(tmp_path / "s", {"a": phi[:, :2], "b": phi[:, 2:]}, shard_size=32))
    store.block_rows = 7
    starts, parts = [], []
    for block, scalars, features in store.iter_features():
        assert block.rows <= 7 and list(scalars["index"]) == list(range(block.start, block.end))
        starts.append(block.start)
        parts.append(features.numpy())
    # Blocks never straddle a shard (32 rows): 0, 7, ..., 28, 32, 39, ..., 63, 64.
    assert starts == [0, 7, 14, 21, 28, 32, 39, 46, 53, 60, 64]
    np.testing.assert_array_equal(np.concatenate(parts), phi)


def test_plan_sets_blocks_from_what_is_left(tmp_path):
    train, *_ = _linear_datamodel(tmp_path)
    method = get_method("trak-block", train)
    rows = plan_streaming(Budget(SMALL_GB), train, method, queries=12)
    assert 1 <= rows < 64 and train.block_rows == rows


@pytest.mark.parametrize("method", ["tracin", "trak-block", "trak"])
def test_score_in_small_blocks_equals_whole_shards(tmp_path, method):
    train, queries, *_ = _linear_datamodel(tmp_path)
    outputs = {}
    for name, budget in (("whole", "6"), ("small", str(SMALL_GB))):
        out = tmp_path / f"{name}.npy"
        args = ["score", "-t", train.path, "--queries", queries.path, "--method", method]
        code, stdout, err = run_cli(*args, "--top", "5", "--out", out, "--memory-gb", budget)
        assert code == 0, err
        records = [json.loads(line) for line in stdout.splitlines()]
        outputs[name] = (np.load(out), [(r["query"], r["index"]) for r in records])
    np.testing.assert_allclose(outputs["small"][0], outputs["whole"][0], rtol=1e-5, atol=1e-6)
    assert outputs["small"][1] == outputs["whole"][1]


def test_lds_and_groups_in_small_blocks_equal_whole_shards(tmp_path):
    train, queries, masks, values, _ = _linear_datamodel(tmp_path)
    truth = tmp_path / "gt.npz"
    save_groundtruth(truth, GroundTruth(masks, values, True))
    for command in ("lds", "groups"):
        results = []
        # The masks (60 x 200 float32, 47 kB) and the groups' outputs are held whole.
        for budget in ("6", str(SMALL_GB + 60e3 / 2**30)):
            args = ["evaluate", command, "-t", train.path, "--queries", queries.path]
            code, stdout, err = run_cli(
                *args, "--groundtruth", truth, "--format", "jsonl", "--memory-gb", budget
            )
            assert code == 0, err
            results.append([json.loads(line)["lds"] for line in stdout.splitlines()])
        np.testing.assert_allclose(results[1], results[0], rtol=1e-9)


def test_a_budget_too_small_for_the_kernel_is_one_line_and_writes_nothing(tmp_path):
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((400, 300)).astype(np.float32)
    train = write_arrays(tmp_path / "train", {"a": phi}, shard_size=64)
    queries = write_arrays(tmp_path / "queries", {"a": phi[:3]})
    out = tmp_path / "scores.npy"
    # The global kernel's computation holds 300^2 x 28 bytes (2.4 MiB): refused at 1 MiB.
    args = ["score", "-t", train, "--queries", queries, "--method", "trak", "--out", out]
    code, stdout, err = run_cli(*args, "--memory-gb", str(1 / 1024))
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "the trak kernel takes 2.4 MiB" in err
    assert "raise --memory-gb, or use --method trak-block" in err
    assert not out.exists() and not (train / "cache").exists()
    # Fewer rows than features: the dual holds 40 x 300 x 28 + 40^2 x 24 bytes (365.6 KiB).
    few = write_arrays(tmp_path / "few", {"a": phi[:40]}, shard_size=16)
    args = ["score", "-t", few, "--queries", queries, "--method", "trak", "--out", out]
    code, _, err = run_cli(*args, "--memory-gb", str(1 / 4096))
    assert code == 2 and "the trak kernel takes 365.6 KiB" in err
    assert not out.exists() and not (few / "cache").exists()
