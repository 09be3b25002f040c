"""`attrib perturb` and Daunce: scores equal their definition over the copies' recorded
outputs, the perturbed objective's gradient equals its formula, a resumed run equals an
uninterrupted one, two processes equal one, and wrong pairings are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from test_cli_errors import _assert_one_line_error

from attrib.perturb.options import PerturbOptions
from attrib.store import Store

ATTRIB = str(Path(sys.executable).parent / "attrib")
COPY_FLAGS = "--copies 4 --batch-size 8 --lr 0.01 --device cpu -q".split()


@pytest.fixture(scope="module")
def stores(tmp_path_factory, resnet_dir, image_data):
    root = tmp_path_factory.mktemp("perturb")
    common = ["--model", resnet_dir, "--data", image_data, "--proj-dim", "4", "-q"]
    for name, extra in (("train", []), ("queries", ["--max-examples", "6"])):
        code, _, err = run_cli("featurize", *common, "--out", root / name, *extra)
        assert code == 0, err
    return root / "train", root / "queries"


def _perturb(train, queries, out, *extra):
    code, stdout, err = run_cli(
        "perturb", "--train", train, "--queries", queries, "--out", out, *COPY_FLAGS, *extra
    )
    assert code == 0, err
    return stdout.split()


def _recorded(out: Path, role: str) -> np.ndarray:
    """(rows x K) float64 outputs as each copy saved them."""
    copies = sorted((out / "copies").iterdir())
    pattern = "train.npy" if role == "train" else "queries-*.npy"
    return np.stack([np.load(next((c / "outputs").glob(pattern))) for c in copies], axis=1)


def _dense(train, queries, method, path):
    args = ["score", "-t", train, "--queries", queries, "--method", method, "--out", path]
    code, _, err = run_cli(*args, "-q")
    assert code == 0, err
    return np.load(path)


@pytest.mark.parametrize("objective", ["hessian", "trak"])
def test_daunce_scores_equal_covariance_and_correlation(tmp_path, stores, objective):
    out = tmp_path / "copies"
    written = _perturb(*stores, out, "--objective", objective)
    assert written == [str(out / "train"), str(out / "queries")]
    train, queries = _recorded(out, "train"), _recorded(out, "queries")
    assert Store(out / "train").layout.total == 4 and np.ptp(train, axis=1).max() > 0
    k = train.shape[1]
    dq, dn = queries - queries.mean(1, keepdims=True), train - train.mean(1, keepdims=True)
    covariance = dq @ dn.T / (k - 1)
    correlation = (dq / np.linalg.norm(dq, axis=1, keepdims=True)) @ (
        dn / np.linalg.norm(dn, axis=1, keepdims=True)
    ).T
    got = _dense(out / "train", out / "queries", "daunce", tmp_path / "cov.npy")
    # The store keeps float32 outputs: deviations lose ~1e-7 of the outputs' size.
    scale = np.abs(covariance).max()
    np.testing.assert_allclose(got, covariance, atol=1e-4 * scale)
    got = _dense(out / "train", out / "queries", "daunce-corr", tmp_path / "corr.npy")
    np.testing.assert_allclose(got, correlation, atol=1e-3)


@pytest.mark.parametrize("objective", ["hessian", "fisher", "trak"])
def test_objective_gradient_at_the_checkpoint_is_its_formula(resnet_dir, image_data, objective):
    """At theta = theta0 the squared terms have no gradient and the hessian objective's is
    mean_i grad L_i: the step is -mean_i c_i grad out_i (+ mean grad L for hessian)."""
    from attrib.perturb.objective import PerturbedObjective
    from attrib.tasks import load_task
    from attrib.tasks.options import ModelRef, TaskOptions
    from attrib.training.loop import BatchSource, trainable_parameters

    def fresh():
        task = load_task(ModelRef(str(resnet_dir)), None, torch.float32, TaskOptions())
        return task

    task, frozen = fresh(), fresh()
    import datasets

    data = datasets.load_dataset("parquet", data_files=str(image_data), split="train")
    columns = task.bind_columns(data)
    source = BatchSource(task, data, columns, torch.device("cpu"))
    rows = np.arange(6)
    batch = source.batch(rows.tolist())
    xi = np.random.default_rng(0).random(len(data))
    objective = PerturbedObjective(task, frozen, objective, xi, black_box=False)
    params = trainable_parameters(task)
    for p in params:
        p.requires_grad_(True)
    got = torch.autograd.grad(objective(batch, rows, params), params)
    output = "margin" if objective.kind == "trak" else "loss"
    want = [torch.zeros_like(p) for p in params]
    for i in rows:
        single = source.batch([int(i)])
        value = task.outputs(single, output).values.sum()
        grads = torch.autograd.grad(value, params)
        c = 2 * xi[i] if objective.kind == "hessian" else 2 * xi[i] - 1
        base = 1.0 if objective.kind == "hessian" else 0.0
        for w, g in zip(want, grads):
            w += (base - c) * g / len(rows)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, stores, monkeypatch):
    from attrib.perturb import run as perturb_run

    whole = tmp_path / "whole"
    _perturb(*stores, whole)
    calls = []
    real_train = perturb_run.train

    def killed_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed in the middle of copy 2
        return real_train(*args, **kwargs)

    monkeypatch.setattr(perturb_run, "train", killed_on_the_third)
    resumed = tmp_path / "resumed"
    options = PerturbOptions(
        train=stores[0], queries=(str(stores[1]),), out=resumed, copies=4, batch_size=8,
        lr=0.01, device="cpu", progress=False,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        perturb_run.run_perturb(options)
    assert not (resumed / "train").exists()
    calls.clear()
    perturb_run.run_perturb(options)
    assert len(calls) == 2  # copies 2 and 3 only
    for role in ("train", "queries"):
        np.testing.assert_array_equal(_recorded(resumed, role), _recorded(whole, role))
        a, b = Store(resumed / role), Store(whole / role)
        np.testing.assert_array_equal(a.matrix("copies"), b.matrix("copies"))
    # Fewer copies reuse the first ones: no training, stores of their K columns.
    calls.clear()
    perturb_run.run_perturb(options.replace(copies=2))
    assert calls == []
    np.testing.assert_array_equal(
        Store(resumed / "train").matrix("copies"), Store(whole / "train").matrix("copies")[:, :2]
    )


def test_two_processes_equal_one(tmp_path, stores):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, launcher in (
        ("one", []),
        ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]),
    ):
        out = tmp_path / name
        args = ["perturb", "--train", stores[0], "--queries", stores[1], "--out", out]
        command = [*launcher, ATTRIB, *map(str, args), *COPY_FLAGS]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = out
    for role in ("train", "queries"):
        np.testing.assert_array_equal(_recorded(runs["two"], role), _recorded(runs["one"], role))
    meta = json.loads((runs["two"] / "meta.json").read_text())
    assert meta["ratio"] == 0.3 and Store(runs["two"] / "train").layout.total == 4


def test_wrong_pairings_are_one_line_errors(tmp_path, stores, gpt2_dir, text_data, image_data):
    out = tmp_path / "copies"
    _perturb(*stores, out)
    # A copy is a checkpoint featurize reads (weights, config and processor): ensemble members.
    copy = out / "copies" / "copy-00001" / "model"
    code, _, err = run_cli(
        "featurize", "--model", copy, "--data", image_data, "--out", tmp_path / "member",
        "--proj-dim", "4", "-q",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("score", "-t", stores[0], "--queries", stores[1], "--method", "daunce")
    _assert_one_line_error(code, err, "scores the outputs of perturbed copies", "attrib perturb")
    code, _, err = run_cli("score", "-t", out / "train", "--queries", out / "queries")
    _assert_one_line_error(code, err, "holds outputs of perturbed copies", "--method daunce")
    code, _, err = run_cli(
        "score", "-t", out / "train", "--queries", stores[1], "--method", "daunce"
    )
    _assert_one_line_error(code, err, "other settings")
    code, _, err = run_cli(
        "featurize", "--model", gpt2_dir, "--data", text_data, "--out", tmp_path / "x",
        "--method", "daunce",
    )  # fmt: skip
    _assert_one_line_error(code, err, "attrib perturb")
    code, _, err = run_cli(
        "perturb", "--train", stores[0], "--out", out, *COPY_FLAGS, "--ratio", "0.5"
    )
    _assert_one_line_error(code, err, "other settings (ratio)")


def test_independent_copies_from_scratch(tmp_path, stores):
    """--init scratch --black-box: each copy is a model trained from its own fresh init."""
    out = tmp_path / "scratch"
    flags = ["--init", "scratch", "--black-box", "--ratio", "1", "--copies", "2", "--epochs", "2"]
    code, _, err = run_cli(
        "perturb", "--train", stores[0], "--out", out, *flags, "--device", "cpu", "-q"
    )
    assert code == 0, err
    train = _recorded(out, "train")
    assert train.shape == (24, 2) and np.abs(train[:, 0] - train[:, 1]).max() > 1e-3
    code, _, err = run_cli(
        "perturb", "--train", stores[0], "--out", tmp_path / "x", "--init", "scratch", "-q"
    )
    _assert_one_line_error(code, err, "add --black-box")


@pytest.mark.parametrize("with_adapter", [False, True])
def test_queries_added_later_equal_queries_given_at_once(
    tmp_path, gpt2_dir, text_data, with_adapter
):
    """A later run with new --queries reloads each kept copy (the whole model, or only its
    LoRA adapter) and records what the copy recorded when it was trained."""
    from builders import save_lora_adapter

    common = ["--model", gpt2_dir, "--data", text_data, "--proj-dim", "4", "-q"]
    if with_adapter:
        common += ["--adapter", save_lora_adapter(gpt2_dir, tmp_path / "adapter", ["c_attn"])]
    train, queries = tmp_path / "train", tmp_path / "queries"
    for out, extra in ((train, ["--max-examples", "10"]), (queries, ["--max-examples", "3"])):
        code, _, err = run_cli("featurize", *common, "--out", out, *extra)
        assert code == 0, err
    flags = ["--copies", "2", "--batch-size", "4", "--lr", "0.01", "--device", "cpu", "-q"]
    code, _, err = run_cli("perturb", "--train", train, "--queries", queries, "-o", tmp_path / "a",
                           *flags)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("perturb", "--train", train, "-o", tmp_path / "b", *flags)
    assert code == 0 and not (tmp_path / "b" / "queries").exists(), err
    code, _, err = run_cli("perturb", "--train", train, "--queries", queries, "-o", tmp_path / "b",
                           *flags)  # fmt: skip
    assert code == 0, err
    kept = _recorded(tmp_path / "a", "queries")
    assert np.ptp(kept, axis=1).max() > 0  # the copies differ on the queries
    np.testing.assert_allclose(_recorded(tmp_path / "b", "queries"), kept, rtol=1e-6)


def test_black_box_daunce_from_a_store_without_gradients(tmp_path, resnet_dir, image_data):
    """featurize --no-gradients records rows and outputs without hooking any layer;
    perturb --black-box needs nothing more, and its Daunce scores are the covariance."""
    rows = tmp_path / "rows"
    args = ["featurize", "--model", resnet_dir, "--data", image_data, "--out", rows]
    code, _, err = run_cli(*args, "--no-gradients", "-q")
    assert code == 0, err
    assert Store(rows).module_names == [] and np.isfinite(Store(rows).column("loss")).all()
    code, _, err = run_cli("score", "-t", rows, "--queries", rows, "--method", "tracin", "-q")
    _assert_one_line_error(code, err, "without gradients", "attrib perturb")
    out = tmp_path / "copies"
    code, _, err = run_cli(
        "perturb", "--train", rows, "--queries", rows, "--out", out, "--black-box",
        "--copies", "3", "--batch-size", "8", "--lr", "0.01", "--device", "cpu", "-q",
    )  # fmt: skip
    assert code == 0, err
    train = _recorded(out, "train")
    deviations = train - train.mean(1, keepdims=True)
    got = _dense(out / "train", out / "rows", "daunce", tmp_path / "s.npy")
    want = deviations @ deviations.T / 2
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
