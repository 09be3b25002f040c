"""Hostile and non-finite inputs: each ends as exit code 2 with one line naming the problem,
or as the right answer; nothing half-written is left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import png_bytes, save_image_data
from helpers import run_cli
from PIL import Image
from test_cli_errors import _assert_one_line_error
from test_faults import ARGS, _featurize
from test_score import _store

from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.store.arrays import write_arrays


@pytest.fixture(scope="module")
def store(tmp_path_factory, resnet_dir, image_data):
    return _store(resnet_dir, image_data, tmp_path_factory.mktemp("hostile") / "s")


def test_a_row_with_nan_features_is_named_not_ranked_first(tmp_path):
    rng = np.random.default_rng(0)
    features = {"m": rng.standard_normal((10, 4)).astype(np.float32)}
    features["m"][7, 2] = np.nan
    train = write_arrays(tmp_path / "train", features, shard_size=4)
    queries = write_arrays(tmp_path / "q", {"m": rng.standard_normal((2, 4))}, shard_size=4)
    for extra in ((), ("--self",)):
        source = () if extra else ("--queries", queries)
        code, out, err = run_cli(
            "score", "--train", train, *source, *extra, "--method", "tracin", "--format", "jsonl"
        )
        _assert_one_line_error(code, err, "training example 7", "not finite")
        assert out == ""


@pytest.mark.parametrize(
    "values, phrase",
    [
        ([1.0, np.nan], "NaN or infinite"),
        ([1.0, np.inf], "NaN or infinite"),
        ([1.0, -0.5], "negative"),
        ("zeros", "only zeros"),
    ],
)
def test_weights_that_are_not_finite_positive_are_refused(tmp_path, store, values, phrase):
    names = list(store.module_names)
    path = tmp_path / "w.safetensors"
    # Written as a file another tool could have made: the artifact's own checks are bypassed.
    import torch
    from safetensors.torch import save_file

    if values == "zeros":
        weights = np.zeros(len(names), dtype=np.float32)
    else:
        weights = np.array(values + [1.0] * (len(names) - len(values)), dtype=np.float32)
    record = {"groups": names, "module_to_group": {n: n for n in names}, "info": {}}
    meta = {"attrib-weights/2": json.dumps(record)}
    save_file({"weights": torch.from_numpy(weights)}, str(path), metadata=meta)
    code, _, err = run_cli(
        "score", "--train", store.path, "--queries", store.path, "--weights", path
    )
    _assert_one_line_error(code, err, phrase)


def test_a_malformed_weights_file_is_refused(tmp_path, store):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    meta = {"attrib-weights/2": json.dumps({"groups": ["a"]})}  # no module_to_group
    save_file({"weights": torch.ones(1)}, str(path), metadata=meta)
    code, _, err = run_cli(
        "score", "--train", store.path, "--queries", store.path, "--weights", path
    )
    _assert_one_line_error(code, err, "not an attrib weights file")


@pytest.mark.parametrize(
    "change, phrase",
    [
        (lambda t: t.outputs.__setitem__((1, 2), np.nan), "subset 1, query 2 is not finite"),
        (lambda t: setattr(t, "masks", t.masks.astype(np.float32) * 0.5), "masks must be 0/1"),
        (lambda t: setattr(t, "higher_is_better", np.array([True, False])), "one boolean"),
    ],
)
def test_ground_truth_that_cannot_be_right_is_refused(tmp_path, store, change, phrase):
    masks = np.random.default_rng(0).random((4, store.num_examples)) < 0.5
    truth = GroundTruth(masks, np.zeros((4, store.num_examples)), True)
    change(truth)
    path = tmp_path / "gt.npz"
    np.savez(
        path, masks=truth.masks, outputs=truth.outputs, higher_is_better=truth.higher_is_better
    )
    code, _, err = run_cli(
        "evaluate", "lds", "--train", store.path, "--queries", store.path, "--groundtruth", path
    )
    _assert_one_line_error(code, err, phrase)


def _bomb(path, pixels=Image.MAX_IMAGE_PIXELS + 1):
    """A tiny PNG that decodes to more pixels than PIL allows (only its header is large)."""
    side = int(pixels**0.5) + 1
    Image.new("1", (side, side)).save(path, format="PNG", optimize=True)
    return path


def test_a_decompression_bomb_is_refused(tmp_path, store, resnet_dir):
    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 2_000_000
    code, _, err = run_cli("score", "--train", store.path, "--query", bomb, "--device", "cpu")
    _assert_one_line_error(code, err, "bomb.png", "cannot be decoded")
    data = save_image_data(tmp_path / "train.parquet", 6, seed=1)
    _replace_image(data, 4, bomb.read_bytes())
    code, _, err = _featurize(resnet_dir, data, tmp_path / "out")
    _assert_one_line_error(code, err, "row 4", "cannot be decoded")
    assert not (tmp_path / "out").exists()


def _replace_image(path, row, data):
    import datasets

    table = datasets.load_dataset("parquet", data_files=str(path), split="train")
    table = table.cast_column("image", datasets.Image(decode=False))
    rows = table.to_dict()
    rows["image"][row] = {"bytes": data, "path": None}
    datasets.Dataset.from_dict(rows, features=table.features).to_parquet(str(path))


def test_a_resume_with_another_batch_size_is_refused(tmp_path, resnet_dir, image_data):
    out = tmp_path / "s"
    assert _featurize(resnet_dir, image_data, out)[0] == 0
    code, _, err = _featurize(resnet_dir, image_data, out, "--batch-size", "4")
    _assert_one_line_error(code, err, "other settings", "batch_size")


def test_a_long_text_query_is_not_echoed_whole(tmp_path, gpt2_dir, text_data):
    out = tmp_path / "s"
    code, _, err = run_cli(
        "featurize", "--model", gpt2_dir, "--data", text_data, "--out", out, *ARGS
    )
    assert code == 0, err
    text = "the cat sat on the mat " * 2000
    code, stdout, err = run_cli(
        "score", "--train", out, "--query", text, "--top", "2", "--format", "jsonl"
    )
    assert code == 0, err
    records = [json.loads(line) for line in stdout.splitlines()]
    assert len(records) == 2 and all(len(r["query_id"]) < 300 for r in records)
    assert records[0]["query_id"].endswith(f"({len(text)} characters)")


def test_generate_overwrite_only_replaces_its_own_folders(tmp_path, ddpm):
    pipe, _ = ddpm
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(png_bytes(np.zeros((4, 4, 3), np.uint8)))
    steps = ["--steps", "2", "--trajectory", "2"]
    code, _, err = run_cli("generate", "--model", pipe, "--out", mine, "--overwrite", *steps)
    _assert_one_line_error(code, err, "not a query set attrib generated")
    assert [p.name for p in mine.iterdir()] == ["holiday.jpg"]
    out = tmp_path / "queries"
    for _ in range(2):  # a folder it generated is replaced, whole
        code, _, err = run_cli("generate", "--model", pipe, "--out", out, "--overwrite", *steps)
        assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "attrib-generate.json",
        "png",
        "queries.parquet",
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_k_at_or_above_the_training_set_is_refused(tmp_path, store):
    out = tmp_path / "w.safetensors"
    code, _, err = run_cli(
        "learn-weights",
        "--train",
        store.path,
        "--queries",
        store.path,
        "--out",
        out,
        "--k",
        str(store.num_examples),
    )
    _assert_one_line_error(code, err, "--k", "smaller than the training store")
    assert not out.exists()


def test_ground_truth_for_other_stores_is_refused(tmp_path, store, resnet_dir):
    other_data = save_image_data(tmp_path / "other.parquet", 24, seed=9)
    other = _store(resnet_dir, other_data, tmp_path / "other")
    masks = np.random.default_rng(0).random((3, store.num_examples)) < 0.5
    meta = json.dumps({"train": store.fingerprint(), "queries": other.fingerprint()})
    path = tmp_path / "gt.npz"
    save_groundtruth(path, GroundTruth(masks, np.zeros((3, 24)), True, {"recipe": meta}))
    lds = ["evaluate", "lds", "--train", store.path, "--groundtruth", path, "-q"]
    code, _, err = run_cli(*lds, "--queries", store.path)
    _assert_one_line_error(code, err, "made for another --queries store")
    assert run_cli(*lds, "--queries", other.path)[0] == 0


def test_a_text_query_against_an_image_store_says_so(store):
    code, _, err = run_cli("score", "--train", store.path, "--query", "a photo of a cat")
    _assert_one_line_error(code, err, "made from an image model", "not text")
