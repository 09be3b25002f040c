"""Retraining ground truth: reproducible for a seed, resumable, splittable into shards."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from test_score import _store

from attrib.evaluate import retrain as retrain_module
from attrib.evaluate.groundtruth import load_groundtruth
from attrib.evaluate.options import RetrainOptions
from attrib.evaluate.retrain import retrain
from attrib.execution import MERGE_LOCK


@pytest.fixture(scope="module")
def stores(tmp_path_factory, resnet_dir, image_data):
    root = tmp_path_factory.mktemp("retrain")
    train = _store(resnet_dir, image_data, root / "train", max_examples=16)
    queries = _store(resnet_dir, image_data, root / "queries", max_examples=4)
    return train, queries


def _config(stores, out, **kw):
    return RetrainOptions(
        train=stores[0].path,
        queries=stores[1].path,
        out=out,
        subsets=4,
        epochs=2,
        lr=0.01,
        batch_size=8,
        device="cpu",
        progress=False,
        **kw,
    )


def test_same_seed_reproduces_masks_and_outputs(tmp_path, stores):
    a = retrain(_config(stores, tmp_path / "a.npz"))
    b = retrain(_config(stores, tmp_path / "b.npz"))
    assert a.masks.shape == (4, 16) and a.outputs.shape == (4, 4)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert a.higher_is_better  # classifiers record the margin
    assert np.unique(a.outputs, axis=0).shape[0] == 4  # every subset trains another model
    loaded = load_groundtruth(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded.outputs, a.outputs)
    other = retrain(_config(stores, tmp_path / "c.npz", seed=1))
    assert not np.array_equal(other.masks, a.masks)


class Killed(Exception):
    pass


def test_killed_retrain_resumes_and_shards_merge(tmp_path, stores, monkeypatch):
    whole = retrain(_config(stores, tmp_path / "whole.npz"))
    original = retrain_module.train
    calls = []

    def die_on_third(*args, **kwargs):
        if len(calls) == 2:
            raise Killed
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(retrain_module, "train", die_on_third)
    out = tmp_path / "resumed.npz"
    with pytest.raises(Killed):
        retrain(_config(stores, out))
    assert len(list((tmp_path / "resumed.npz.parts").glob("subset-*.npy"))) == 2
    assert not out.exists()
    monkeypatch.setattr(retrain_module, "train", original)
    resumed = retrain(_config(stores, out))
    np.testing.assert_array_equal(resumed.outputs, whole.outputs)

    split = tmp_path / "split.npz"
    assert retrain(_config(stores, split, shard="1/2")) is None  # half done: no file yet
    assert not split.exists()
    merged = retrain(_config(stores, split, shard="0/2"))
    np.testing.assert_array_equal(merged.outputs, whole.outputs)


def test_only_one_array_task_merges_the_parts(tmp_path, stores):
    out = tmp_path / "split.npz"
    assert retrain(_config(stores, out, shard="1/2")) is None
    # Task 0 finds every part done while task 1 (here: this test) holds the merge: it leaves
    # the file to that task instead of writing it too.
    fd = os.open(Path(f"{out}.parts") / MERGE_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    assert retrain(_config(stores, out, shard="0/2")) is None
    assert not out.exists()
    os.close(fd)
    assert retrain(_config(stores, out, shard="0/2")) is not None  # its parts kept: a merge
    written = out.stat().st_mtime_ns
    # A task that finishes after the merge finds the file newer than every part: no rewrite.
    assert retrain(_config(stores, out, shard="1/2")) is None
    assert out.stat().st_mtime_ns == written


def test_retrain_refuses_other_settings_in_the_same_folder(tmp_path, stores):
    retrain(_config(stores, tmp_path / "gt.npz"))
    code, _, err = run_cli(
        "evaluate",
        "retrain",
        "--train",
        stores[0].path,
        "--queries",
        stores[1].path,
        "--out",
        tmp_path / "gt.npz",
        "--subsets",
        "4",
        "--epochs",
        "3",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 2 and "other settings (recipe)" in err


def test_start_from_fine_tunes_from_the_model_the_run_started_from(
    tmp_path, stores, resnet_dir, image_data
):
    """A store of a fine-tuned model, retrained with --start-from BASE, gives the outputs of
    retraining from BASE itself; without it, retraining starts from the fine-tuned weights."""
    import torch
    import transformers

    finetuned = tmp_path / "finetuned"
    model = transformers.AutoModelForImageClassification.from_pretrained(resnet_dir)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(finetuned)
    transformers.AutoImageProcessor.from_pretrained(resnet_dir).save_pretrained(finetuned)
    ft_stores = (
        _store(finetuned, image_data, tmp_path / "ft-train", max_examples=16),
        _store(finetuned, image_data, tmp_path / "ft-queries", max_examples=4),
    )
    base = retrain(_config(stores, tmp_path / "base.npz", init="finetune"))
    started = retrain(
        _config(ft_stores, tmp_path / "s.npz", init="finetune", start_from=str(resnet_dir))
    )
    plain = retrain(_config(ft_stores, tmp_path / "p.npz", init="finetune"))
    np.testing.assert_array_equal(started.outputs, base.outputs)
    assert not np.allclose(plain.outputs, base.outputs)


def test_start_from_needs_finetune(tmp_path, stores, resnet_dir):
    code, _, err = run_cli(
        "evaluate", "retrain", "-t", stores[0].path, "--queries", stores[1].path,
        "--out", tmp_path / "gt.npz", "--init", "scratch", "--start-from", resnet_dir,
    )  # fmt: skip
    assert code == 2 and "needs --init finetune" in err and len(err.strip().splitlines()) == 1
