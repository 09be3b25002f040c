"""Mislabel AUC, recall@k, per-group LDS and tail-patch against hand computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_evaluate_lds import _linear_datamodel
from test_score import _store

from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.evaluate.groups import group_strength
from attrib.evaluate.lds import evaluate_lds
from attrib.evaluate.mislabel import normalized_self_influence
from attrib.evaluate.tailpatch import PatchStep, relative_increases
from attrib.methods import get_method
from attrib.score import queries as query_features
from attrib.store import Store
from attrib.store.arrays import write_arrays
from attrib.tasks import load_task_from_settings
from attrib.training.sources import store_source
from attrib.weights.contributions import group_columns
from attrib.weights.groups import group_modules


def _outliers(tmp_path, n=120, bad=12):
    """Clean examples cluster; `bad` ones point elsewhere with large gradients."""
    rng = np.random.default_rng(3)
    centre = rng.standard_normal(8)
    phi = centre + 0.3 * rng.standard_normal((n, 8))
    flipped = rng.choice(n, bad, replace=False)
    phi[flipped] = 3.0 * rng.standard_normal((bad, 8))
    store = Store(
        write_arrays(
            tmp_path / "s", {"a": phi[:, :5].astype(np.float32), "b": phi[:, 5:].astype(np.float32)}
        )
    )
    return store, phi, np.sort(flipped)


def test_normalized_self_influence_equals_hand_computation(tmp_path):
    store, phi, _ = _outliers(tmp_path)
    method = get_method("tracin", store).prepare()
    got = normalized_self_influence(store, method, None, norm_k=3)
    dense = phi @ phi.T
    want = np.diag(dense) / np.sort(dense, axis=1)[:, -3:].sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_mislabel_auc_from_the_cli(tmp_path):
    store, _, flipped = _outliers(tmp_path)
    path = tmp_path / "mislabeled.npy"
    np.save(path, flipped)
    code, out, err = run_cli(
        "evaluate",
        "mislabel",
        "--train",
        store.path,
        "--mislabeled",
        path,
        "--method",
        "tracin",
        "--norm-k",
        "0",
        "--format",
        "jsonl",
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["auc"] > 0.9 and record["mislabeled"] == 12 and record["examples"] == 120
    np.save(path, np.array([3, 120]))
    code, _, err = run_cli("evaluate", "mislabel", "--train", store.path, "--mislabeled", path)
    _assert_one_line_error(code, err, "index 120 is out of range")


def test_recall_from_the_cli(tmp_path):
    train, queries, _, _, _ = _linear_datamodel(tmp_path, n=60, q=4)
    g = np.concatenate([queries.matrix(n) for n in queries.module_names], 1)
    p = np.concatenate([train.matrix(n) for n in train.module_names], 1)
    top = np.argsort(-(g @ p.T), axis=1)[:, :5]
    contributors = {str(q): [int(top[q, 0]), int(top[q, 1]), 59 - q] for q in range(4)}
    path = tmp_path / "contributors.json"
    path.write_text(json.dumps(contributors))
    code, out, err = run_cli(
        "evaluate",
        "recall",
        "--train",
        train.path,
        "--queries",
        queries.path,
        "--contributors",
        path,
        "--method",
        "tracin",
        "--k",
        "5",
        "--format",
        "jsonl",
    )
    assert code == 0, err
    extra = sum((59 - q) in top[q] for q in range(4))
    assert json.loads(out)["recall"] == pytest.approx(100 * (8 + extra) / 20)  # percent
    path.write_text(json.dumps({"0": [1]}))
    code, _, err = run_cli(
        "evaluate",
        "recall",
        "--train",
        train.path,
        "--queries",
        queries.path,
        "--contributors",
        path,
    )
    _assert_one_line_error(code, err, "no entry for query row 1")


@pytest.mark.parametrize("method", ["tracin", "trak"])
def test_group_strength_equals_lds_with_one_hot_weights(tmp_path, method):
    train, queries, masks, outputs, _ = _linear_datamodel(tmp_path)
    truth = GroundTruth(masks, outputs, True)
    names, mapping = group_modules(train.module_names)
    prepared = get_method(method, train).prepare()
    features = query_features.from_store(train, queries).features
    got = group_strength(train, prepared, features, group_columns(train, mapping, names), truth)
    for j, name in enumerate(names):
        weights = torch.from_numpy(train.layout.expand([float(n == name) for n in names])).float()
        want = evaluate_lds(train, queries, truth, method, None, weights)
        assert got[j][0] == pytest.approx(want.lds, abs=1e-9)
    path = tmp_path / "gt.npz"
    save_groundtruth(path, truth)
    code, out, err = run_cli(
        "evaluate",
        "groups",
        "--train",
        train.path,
        "--queries",
        queries.path,
        "--groundtruth",
        path,
        "--method",
        method,
        "--plot",
        tmp_path / "groups.png",
        "--format",
        "jsonl",
    )
    assert code == 0, err
    assert [json.loads(line)["group"] for line in out.splitlines()] == names
    assert (tmp_path / "groups.png").exists()


def test_tail_patch_step_on_the_query_itself_raises_its_probability(
    tmp_path, resnet_dir, image_data
):
    store = _store(resnet_dir, image_data, tmp_path / "s", max_examples=12)
    task = load_task_from_settings(store.settings)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    source = store_source(task, store, torch.device("cpu"))
    own = np.arange(12)[:, None]  # each query's only proponent is itself
    others = (np.arange(12)[:, None] + 6) % 12
    step = PatchStep(k=1, lr=0.05)
    mine = relative_increases(task, source, source, own, step)
    theirs = relative_increases(task, source, source, others, step)
    assert (mine > 0).all() and mine.mean() > theirs.mean()
    for key, value in task.model.state_dict().items():  # the checkpoint is restored
        torch.testing.assert_close(value, before[key])
