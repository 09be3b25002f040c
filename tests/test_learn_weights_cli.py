"""learn-weights on a small real checkpoint trained in the test, through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from builders import save_image_data
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_score import _store

from attrib.data import DataRef, open_dataset, undecoded
from attrib.tasks import ModelRef, TaskOptions, load_task
from attrib.training.loop import BatchSource, Recipe, train
from attrib.weights.artifact import load_weights
from attrib.weights.options import DECAY_BY_PRIOR


@pytest.fixture(scope="module")
def trained(tmp_path_factory, resnet_dir):
    """A tiny ResNet trained a few epochs on 48 images, with train and query stores."""
    root = tmp_path_factory.mktemp("trained")
    data = save_image_data(root / "train.parquet", 48, seed=1)
    queries = save_image_data(root / "queries.parquet", 10, seed=2)
    task = load_task(ModelRef(str(resnet_dir)), None, torch.float32, TaskOptions())
    dataset = open_dataset(DataRef(str(data)))
    columns = task.bind_columns(dataset)
    source = BatchSource(task, undecoded(dataset, "image"), columns, torch.device("cpu"))
    train(task, source, np.arange(48), Recipe(epochs=3, lr=0.01, batch_size=16), seed=0)
    model = root / "model"
    task.model.save_pretrained(model)
    task.processor.save_pretrained(model)
    train_store = _store(model, data, root / "train-store")
    query_store = _store(model, queries, root / "query-store")
    return root, train_store, query_store


def _learn(train_store, query_store, out, *extra):
    """`attrib learn-weights` on the two stores: (exit code, stdout, stderr)."""
    args = ["--train", train_store.path, "--queries", query_store.path, "--out", out]
    return run_cli("learn-weights", *args, *extra)


def test_weights_learn_save_load_and_change_scores(trained):
    root, train_store, query_store = trained
    weights = root / "trak.safetensors"
    code, _, err = _learn(
        train_store,
        query_store,
        weights,
        "--method",
        "trak",
        "--k",
        "5",
        "--plot",
        root / "weights.png",
    )
    assert code == 0, err
    assert "objective" in err and (root / "weights.png").stat().st_size > 1000
    artifact = load_weights(weights)
    assert artifact.groups == train_store.module_names
    assert artifact.weights.mean() == pytest.approx(1.0, rel=1e-5)
    assert not np.allclose(artifact.weights, 1.0)
    outputs = {}
    for method in ("trak", "tracin"):
        for name, extra in (("plain", []), ("weighted", ["--weights", weights])):
            code, out, err = run_cli(
                "score",
                "--train",
                train_store.path,
                "--queries",
                query_store.path,
                "--method",
                method,
                "--top",
                "48",
                "--no-preview",
                "--format",
                "jsonl",
                *extra,
            )
            assert code == 0, err
            outputs[method, name] = [json.loads(line) for line in out.splitlines()]
    for method in ("trak", "tracin"):  # trak weights apply under tracin too
        plain, weighted = outputs[method, "plain"], outputs[method, "weighted"]
        assert [r["index"] for r in plain] != [r["index"] for r in weighted]


def test_weights_refuse_a_store_of_another_model(trained, vit_dir, image_data, tmp_path):
    root, train_store, query_store = trained
    weights = root / "w.safetensors"
    code, _, err = _learn(
        train_store,
        query_store,
        weights,
        "--k",
        "3",
        "--epochs",
        "1",
        "-q",
    )
    assert code == 0, err
    other = _store(vit_dir, image_data, tmp_path / "vit")
    code, _, err = run_cli(
        "score", "--train", other.path, "--queries", other.path, "--weights", weights
    )
    _assert_one_line_error(code, err, "do not match", "vit.")


def test_learn_weights_bad_input(trained, tmp_path):
    root, train_store, query_store = trained
    out = tmp_path / "w.safetensors"
    code, _, err = _learn(train_store, query_store, out, "--k", "0")
    _assert_one_line_error(code, err, "--k")
    code, _, err = _learn(train_store, query_store, out, "--groups", "nonsense")
    _assert_one_line_error(code, err, "--groups")
    code, _, err = _learn(train_store, query_store, out, "--method", "oracle")
    _assert_one_line_error(code, err, "'oracle' is not one of")
    assert not (tmp_path / "w.safetensors").exists()


def test_cli_and_library_write_byte_identical_weights(trained, tmp_path):
    """`attrib learn-weights` is `run_learn` with the library's defaults: same bytes."""
    from attrib.weights.options import LearnOptions
    from attrib.weights.run import run_learn

    _, train_store, query_store = trained
    cli_out, lib_out = tmp_path / "cli.safetensors", tmp_path / "lib.safetensors"
    code, _, err = _learn(train_store, query_store, cli_out, "-q")
    assert code == 0, err
    run_learn(LearnOptions(train=train_store.path, queries=query_store.path, out=lib_out))
    assert cli_out.read_bytes() == lib_out.read_bytes()
    info = load_weights(cli_out).info
    assert info["weight_decay"] == DECAY_BY_PRIOR[info["prior"]]


def test_weight_decay_defaults_by_prior(trained, tmp_path):
    """Held closer to a calibrated kernel's own weighting (uniform prior) than to the balanced
    start of an uncalibrated method; an explicit value is kept."""
    from attrib.weights.options import LearnOptions

    _, train_store, query_store = trained
    stores = {
        "train": train_store.path,
        "queries": query_store.path,
        "out": tmp_path / "w.safetensors",
    }
    decay = {m: LearnOptions(**stores, method=m).weight_decay for m in ("shampoo", "tracin")}
    assert decay == {"shampoo": 3.0, "tracin": 1.0}
    assert LearnOptions(**stores, method="tracin", prior="uniform").weight_decay == 3.0
    assert LearnOptions(**stores, method="shampoo", weight_decay=0.5).weight_decay == 0.5
