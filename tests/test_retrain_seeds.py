"""Retraining with several seeds per subset, its reliability, and diffusion's recorded loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_cli
from test_retrain import _config, stores  # noqa: F401  (the fixture)

from attrib.data import DataRef, open_dataset, undecoded
from attrib.evaluate import retrain as retrain_module
from attrib.evaluate.groundtruth import load_groundtruth
from attrib.evaluate.options import RetrainOptions
from attrib.evaluate.reliability import split_half_reliability
from attrib.evaluate.retrain import retrain
from attrib.store import Store
from attrib.tasks import ModelRef, TaskOptions, load_task
from attrib.training.loop import BatchSource, outputs


def test_seeds_average_models_and_seed_zero_is_the_single_seed_run(tmp_path, stores):  # noqa: F811
    # Batches of 2 (of 8 rows): the seed's shuffling then changes the model.
    one = retrain(_config(stores, tmp_path / "one.npz").replace(batch_size=2))
    two = retrain(_config(stores, tmp_path / "two.npz", seeds=2).replace(batch_size=2))
    by_seed = two.extra["outputs_by_seed"]
    assert by_seed.shape == (2, 4, 4)
    np.testing.assert_array_equal(by_seed[0], one.outputs)  # same seed as before --seeds
    assert not np.allclose(by_seed[1], by_seed[0])  # another model per subset
    np.testing.assert_allclose(two.outputs, by_seed.mean(0), rtol=0, atol=0)
    loaded = load_groundtruth(tmp_path / "two.npz")
    np.testing.assert_array_equal(loaded.extra["outputs_by_seed"], by_seed)
    assert len(list((tmp_path / "two.npz.parts").glob("subset-*-seed1.npy"))) == 4


def test_more_subsets_and_seeds_extend_an_earlier_run(tmp_path, stores, monkeypatch):  # noqa: F811
    fresh = retrain(_config(stores, tmp_path / "fresh.npz", seeds=2).replace(batch_size=2))
    out = tmp_path / "grown.npz"
    retrain(_config(stores, out).replace(subsets=2, batch_size=2))
    trained = []
    real_train = retrain_module.train
    monkeypatch.setattr(
        retrain_module, "train", lambda *a, **k: trained.append(a[-1]) or real_train(*a, **k)
    )
    grown = retrain(_config(stores, out, seeds=2).replace(batch_size=2))
    # Only the new parts trained: subsets 2-3 for seed 0, all four for seed 1.
    assert len(trained) == 6
    np.testing.assert_array_equal(grown.masks, fresh.masks)
    np.testing.assert_array_equal(grown.extra["outputs_by_seed"], fresh.extra["outputs_by_seed"])
    # Other settings still refuse the parts.
    with pytest.raises(Exception, match="other settings \\(recipe\\)"):
        retrain(_config(stores, out, seeds=2).replace(batch_size=4))


def test_split_half_reliability_of_known_noise():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(400, 300))  # subsets x queries
    same = split_half_reliability(np.stack([signal, signal]))
    assert same.split_half == pytest.approx(1.0) and same.ceiling == pytest.approx(1.0)
    # Noise of the signal's variance in each seed: Pearson reliability 1/2 per seed; Spearman
    # of normals is (6/pi) asin(r/2) = 0.483 at r = 1/2. Spearman-Brown of the mean: 0.651.
    noisy = np.stack([signal + rng.normal(size=signal.shape) for _ in range(2)])
    result = split_half_reliability(noisy)
    assert result.split_half == pytest.approx(6 / np.pi * np.arcsin(0.25), abs=0.01)
    assert result.full == pytest.approx(2 * result.split_half / (1 + result.split_half))
    assert result.ceiling == pytest.approx(np.sqrt(result.full))
    with pytest.raises(Exception, match="at least 2 seeds"):
        split_half_reliability(noisy[:1])


def test_timesteps_apply_to_diffusion_only(tmp_path, stores):  # noqa: F811
    with pytest.raises(Exception, match="diffusion models only"):
        retrain(_config(stores, tmp_path / "gt.npz", timesteps=4))
    code, _, err = run_cli(
        "evaluate", "retrain", "--train", stores[0].path, "--queries", stores[1].path,
        "--out", tmp_path / "gt.npz", "--seeds", "0", "-q",
    )  # fmt: skip
    assert code == 2 and "--seeds must be at least 1" in err


def test_diffusion_records_the_loss_over_its_own_timesteps_and_noise(tmp_path, ddpm, monkeypatch):
    pipe, data = ddpm
    store = tmp_path / "store"
    code, _, err = run_cli(
        "featurize", "--model", pipe, "--data", data, "--out", store, "--timesteps", "2",
        "--proj-dim", "4", "--device", "cpu", "-q",
    )  # fmt: skip
    assert code == 0, err
    # No training: every subset's model is the checkpoint, so the recorded outputs must be
    # the checkpoint's loss over 5 timesteps with noise seed 9 (not the store's 2 and 0).
    monkeypatch.setattr(retrain_module, "train", lambda *a, **k: None)
    options = RetrainOptions(
        train=store, queries=store, out=tmp_path / "gt.npz", subsets=2, epochs=1,
        timesteps=5, noise_seed=9, device="cpu", progress=False,
    )  # fmt: skip
    truth = retrain(options)
    task = load_task(
        ModelRef(str(pipe)), None, torch.float32, TaskOptions(timesteps=5, noise_seed=9)
    )
    dataset = open_dataset(DataRef(str(data)))
    columns = task.bind_columns(dataset)
    source = BatchSource(task, undecoded(dataset, columns["image"]), columns, torch.device("cpu"))
    want = outputs(task, source, len(dataset), "loss")
    np.testing.assert_allclose(truth.outputs[0], want, rtol=1e-6)
    np.testing.assert_allclose(truth.outputs[1], want, rtol=1e-6)
    assert Store(store).settings["task_options"]["options"]["timesteps"] == 2
