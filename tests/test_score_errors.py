"""Bad input to `attrib score`: one line, exit code 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_score import _store

from attrib.weights.artifact import WeightsArtifact, save_weights


@pytest.fixture(scope="module")
def stores(tmp_path_factory, resnet_dir, vit_dir, image_data):
    root = tmp_path_factory.mktemp("stores")
    return _store(resnet_dir, image_data, root / "resnet"), _store(
        vit_dir, image_data, root / "vit"
    )


def test_missing_store(tmp_path):
    code, _, err = run_cli("score", "--train", tmp_path / "nope", "--query", "x.png")
    _assert_one_line_error(code, err, "not an attrib store", "run featurize")


def test_query_image_that_does_not_decode(tmp_path, stores):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    out = tmp_path / "scores.npy"
    code, _, err = run_cli(
        "score", "--train", stores[0].path, "--query", bad, "--out", out, "--device", "cpu"
    )
    _assert_one_line_error(code, err, "broken.png", "cannot be decoded")
    code, _, err = run_cli("score", "--train", stores[0].path, "--query", tmp_path / "none.png")
    _assert_one_line_error(code, err, "no such image file")
    assert not out.exists()


def test_weights_that_do_not_match_the_store(tmp_path, stores):
    resnet, vit = stores
    modules = vit.module_names
    path = tmp_path / "vit.safetensors"
    save_weights(path, WeightsArtifact(np.ones(len(modules)), modules, {m: m for m in modules}))
    out = tmp_path / "scores.npy"
    code, _, err = run_cli(
        "score", "--train", resnet.path, "--queries", resnet.path, "--weights", path, "--out", out
    )
    _assert_one_line_error(
        code, err, "do not match the store's groups", "resnet.embedder.embedder.convolution", "vit."
    )
    assert not out.exists()
    code, _, err = run_cli(
        "score",
        "--train",
        resnet.path,
        "--queries",
        resnet.path,
        "--weights",
        tmp_path / "missing.safetensors",
    )
    _assert_one_line_error(code, err, "no such file")


def test_query_store_from_another_model(tmp_path, stores):
    resnet, vit = stores
    code, _, err = run_cli("score", "--train", resnet.path, "--queries", vit.path)
    _assert_one_line_error(code, err, "other settings", "model.fingerprint", "modules")


def test_queries_and_self_are_exclusive(stores):
    code, _, err = run_cli("score", "--train", stores[0].path)
    _assert_one_line_error(code, err, "--query", "--queries")
    code, _, err = run_cli(
        "score", "--train", stores[0].path, "--self", "--queries", stores[0].path
    )
    _assert_one_line_error(code, err, "--self")


def test_bad_options(stores, tmp_path):
    code, _, err = run_cli("score", "--train", stores[0].path, "--self", "--method", "magic")
    _assert_one_line_error(code, err, "'magic' is not one of")
    code, _, err = run_cli(
        "score", "--train", stores[0].path, "--self", "--out", tmp_path / "x.csv"
    )
    _assert_one_line_error(code, err, ".npy")
    code, _, err = run_cli("score", "--train", stores[0].path, "--self", "--lambda", "-1")
    _assert_one_line_error(code, err, "--lambda")


def test_diffusion_methods_on_a_classifier_are_refused_in_one_line(tmp_path, stores):
    """DAS and D-TRAK are defined on a diffusion model's outputs: featurize refuses them for
    other models (it used to fall back to the loss), and DAS on a store without its residual
    column is refused (it was a KeyError traceback)."""
    for method in ("das", "dtrak"):
        out = tmp_path / method
        code, _, err = run_cli("featurize", "--model", stores[0].settings["model"]["source"],
                               "--data", stores[0].settings["dataset"]["source"], "--out", out,
                               "--method", method, "--device", "cpu")  # fmt: skip
        _assert_one_line_error(code, err, f"--method {method} is defined on")
        assert not out.exists()
    code, _, err = run_cli("score", "--train", stores[0].path, "--self", "--method", "das")
    _assert_one_line_error(code, err, "residual", "featurize with --method das")
