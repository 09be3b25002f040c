"""Representation similarity (`--method repsim`): the store holds the model's own pooled
hidden states, computed here by hand from the model for each task, and scores are their
cosines, for stored and on-the-fly queries alike."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_score import _store
from transformers import AutoModelForCausalLM, AutoModelForImageClassification, AutoTokenizer

from attrib.featurize.representation import MODULE
from attrib.tasks import load_task_from_settings

# float32 forward passes batched differently (5 rows per batch against one by one here) agree
# to about 1e-6 relative; 1e-5 is far below a wrong pooling (another token set or layer moves
# the features by tens of percent).
RTOL = 1e-5


def _cosines(queries: np.ndarray, train: np.ndarray) -> np.ndarray:
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    return unit(queries.astype(np.float64)) @ unit(train.astype(np.float64)).T


def _score(store, *extra) -> list[dict]:
    code, stdout, stderr = run_cli(
        "score", "-t", store.path, "--method", "repsim", "--device", "cpu", *extra
    )
    assert code == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def text_store(tmp_path_factory, gpt2_dir, text_data):
    out = tmp_path_factory.mktemp("repsim") / "text"
    return _store(gpt2_dir, text_data, out, method="repsim", max_examples=9)


def test_text_features_are_the_last_layer_mean_over_predicted_tokens(text_store, gpt2_dir,
                                                                     text_data):  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(gpt2_dir)
    texts = datasets.load_dataset("parquet", data_files=str(text_data), split="train")["text"]
    want = []
    for text in texts[:9]:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states[-1][0]
        want.append(hidden[1:].mean(0).numpy())  # the tokens predicted: all but the first
    got = text_store.matrix(MODULE)
    np.testing.assert_allclose(got, np.stack(want), rtol=RTOL, atol=RTOL)
    assert text_store.settings["projection"]["kind"] == "representation"


def test_text_queries_score_by_cosine_and_a_row_finds_itself(text_store, text_data):
    texts = datasets.load_dataset("parquet", data_files=str(text_data), split="train")["text"]
    records = _score(text_store, "--text", texts[3], "--top", "9")
    assert records[0]["index"] == 3 and records[0]["score"] == pytest.approx(1.0, abs=1e-5)
    train = text_store.matrix(MODULE)
    want = _cosines(train[3:4], train)[0]
    got = {r["index"]: r["score"] for r in records}
    np.testing.assert_allclose([got[i] for i in range(9)], want, rtol=0, atol=1e-5)


def test_classifier_features_are_what_the_head_reads(tmp_path, resnet_dir, image_data):
    store = _store(resnet_dir, image_data, tmp_path / "img", method="repsim", max_examples=6)
    model = AutoModelForImageClassification.from_pretrained(resnet_dir).eval()
    task = load_task_from_settings(store.settings)
    rows = datasets.load_dataset("parquet", data_files=str(image_data), split="train")
    rows = rows.cast_column("image", datasets.Image(decode=False))[:6]
    batch = task.prepare(rows, range(6), "cpu", {"image": "image", "label": "label"})
    with torch.no_grad():
        pooled = model.resnet(batch["pixel_values"]).pooler_output.flatten(1)
    np.testing.assert_allclose(store.matrix(MODULE), pooled.numpy(), rtol=RTOL, atol=RTOL)
    queries = _store(resnet_dir, image_data, tmp_path / "q", method="repsim", max_examples=2)
    records = _score(store, "--queries", queries.path, "--top", "6")
    top = {r["query"]: r["index"] for r in records if r["rank"] == 1}
    assert top == {0: 0, 1: 1}  # each query row is a training row: it finds itself


def test_diffusion_features_are_the_mid_block_averaged(tmp_path, ddpm):
    pipe, data = ddpm
    store = _store(pipe, data, tmp_path / "ddpm", method="repsim", timesteps=2)
    channels = json.loads((pipe / "unet" / "config.json").read_text())["block_out_channels"][-1]
    features = store.matrix(MODULE)
    assert features.shape == (12, channels) and np.isfinite(features).all()
    # rows differ (not a constant), and two timesteps average into something else than one
    one = _store(pipe, data, tmp_path / "ddpm1", method="repsim", timesteps=1).matrix(MODULE)
    assert np.abs(features - features.mean(0)).max() > 0 and not np.allclose(one, features)


def test_store_kinds_are_refused_in_one_line(tmp_path, text_store, gpt2_dir, text_data):
    code, _, err = run_cli("score", "-t", text_store.path, "--text", "hello", "--method", "trak")
    _assert_one_line_error(code, err, "hidden states", "--method repsim")
    gradients = _store(gpt2_dir, text_data, tmp_path / "g", max_examples=4)
    code, _, err = run_cli("score", "-t", gradients.path, "--text", "hi", "--method", "repsim")
    _assert_one_line_error(code, err, "holds gradients", "featurize with --method repsim")
    code, _, err = run_cli(
        "featurize", "-m", str(gpt2_dir), "-d", str(text_data), "-o", str(tmp_path / "x"),
        "--method", "repsim", "--modules", "*attn*",
    )  # fmt: skip
    _assert_one_line_error(code, err, "hidden states", "--modules")
    assert not (tmp_path / "x").exists()
    code, _, err = run_cli(
        "score", "-t", text_store.path, "--text", "hello", "--method", "repsim", "--per-token"
    )
    _assert_one_line_error(code, err, "--per-token needs a gradient store")


def test_inspect_says_what_a_representation_store_serves(text_store):
    from attrib.summary import serving_methods

    assert serving_methods(text_store) == ["repsim", "bm25"]
