"""Bad input: one line on stderr naming the problem and the fix, exit code 2, no traceback,
nothing half-written."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from builders import png_bytes, save_image_data
from helpers import run_cli

from attrib.errors import AttribError


def _featurize(model, data, out, *extra):
    return run_cli("featurize", "--model", model, "--data", data, "--out", out, "-q", *extra)


def _assert_one_line_error(code, err, *phrases):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_unknown_model_path(tmp_path, text_data):
    code, _, err = _featurize(tmp_path / "no" / "such-model", text_data, tmp_path / "out")
    _assert_one_line_error(code, err, "no such folder")
    assert not (tmp_path / "out").exists()


def test_unknown_hub_model_offline(tmp_path, text_data):
    code, _, err = _featurize("nobody-here/no-such-model", text_data, tmp_path / "out")
    _assert_one_line_error(code, err, "cannot load model 'nobody-here/no-such-model'")
    assert not (tmp_path / "out").exists()


def test_dataset_without_the_needed_column(tmp_path, gpt2_dir, image_data):
    code, _, err = _featurize(gpt2_dir, image_data, tmp_path / "out")
    _assert_one_line_error(code, err, "no text column", "--text-column")
    code, _, err = _featurize(gpt2_dir, image_data, tmp_path / "out", "--text-column", "caption")
    _assert_one_line_error(code, err, "no column 'caption'")
    assert not (tmp_path / "out").exists()


def test_unreadable_image_leaves_nothing_behind(tmp_path, resnet_dir):
    data = tmp_path / "bad.parquet"
    save_image_data(data, 9)
    table = datasets.load_dataset("parquet", data_files=str(data), split="train")
    table = table.cast_column("image", datasets.Image(decode=False))
    rows = table.to_list()
    rows[7]["image"] = {"bytes": b"definitely not a png", "path": None}
    good = png_bytes(np.zeros((4, 4, 3), np.uint8))
    assert rows[0]["image"]["bytes"][:4] == good[:4]
    datasets.Dataset.from_list(rows, features=table.features).to_parquet(str(data))
    code, _, err = _featurize(resnet_dir, data, tmp_path / "out", "--shard-size", "4")
    _assert_one_line_error(code, err, "row 7", "cannot be decoded")
    assert not (tmp_path / "out").exists()


def test_empty_split(tmp_path, gpt2_dir):
    data = tmp_path / "empty.parquet"
    features = datasets.Features({"text": datasets.Value("string")})
    datasets.Dataset.from_dict({"text": []}, features=features).to_parquet(str(data))
    code, _, err = _featurize(gpt2_dir, data, tmp_path / "out")
    _assert_one_line_error(code, err, "has no rows")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name, content, phrase",
    [
        ("empty.jsonl", "", "the file is empty (no rows)"),
        ("empty.txt", "", "the file is empty (no rows)"),
        ("header.csv", "text,label\n", "the file has no rows"),
        ("broken.parquet", "not parquet", "not a parquet file"),
    ],
)
def test_empty_or_broken_data_files_get_no_hub_advice(tmp_path, gpt2_dir, name, content, phrase):
    data = tmp_path / name
    data.write_text(content)
    code, _, err = _featurize(gpt2_dir, data, tmp_path / "out")
    _assert_one_line_error(code, err, phrase)
    assert "hub" not in err and not (tmp_path / "out").exists()


def test_store_made_with_other_settings(tmp_path, gpt2_dir, text_data):
    out = tmp_path / "out"
    code, _, err = _featurize(gpt2_dir, text_data, out, "--max-examples", "4", "--proj-dim", "4")
    assert code == 0, err
    before = sorted(p.name for p in (out / "shards").iterdir())
    code, _, err = _featurize(gpt2_dir, text_data, out, "--max-examples", "4", "--proj-dim", "5")
    _assert_one_line_error(code, err, "other settings", "projection.dim", "--overwrite")
    assert sorted(p.name for p in (out / "shards").iterdir()) == before


@pytest.mark.parametrize("value", ["0", "-3", "big"])
def test_bad_projection_dimension(tmp_path, gpt2_dir, text_data, value):
    code, _, err = _featurize(gpt2_dir, text_data, tmp_path / "out", "--proj-dim", value)
    _assert_one_line_error(code, err, "--proj-dim")
    assert not (tmp_path / "out").exists()


def test_inspect_of_a_folder_that_is_not_a_store(tmp_path):
    code, _, err = run_cli("inspect", tmp_path)
    _assert_one_line_error(code, err, "not an attrib store")


def test_data_that_is_not_utf8_or_not_json_is_one_line(tmp_path, gpt2_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe bad"}\n')
    code, _, err = _featurize(gpt2_dir, bad, tmp_path / "a")
    _assert_one_line_error(code, err, "not valid UTF-8")
    assert not (tmp_path / "a").exists()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": "broken\n')
    code, _, err = _featurize(gpt2_dir, broken, tmp_path / "b")  # no datasets log line first
    _assert_one_line_error(code, err, "cannot read it as json")


def test_an_empty_data_file_is_refused_before_anything_loads(tmp_path):
    from attrib.featurize.options import FeaturizeOptions
    from attrib.training.options import TrainOptions

    empty = tmp_path / "empty.jsonl"
    empty.touch()
    for options in (FeaturizeOptions, TrainOptions):
        with pytest.raises(AttribError, match="the file is empty"):
            options(model=str(tmp_path), data=str(empty), out=tmp_path / "out")


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path, gpt2_dir, text_data):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(gpt2_dir / name, bare / name)
    code, _, err = _featurize(bare, text_data, tmp_path / "out")
    _assert_one_line_error(code, err, "encodes every text to nothing")
    assert not (tmp_path / "out").exists()


def test_an_image_query_on_a_text_store_says_what_the_store_is(tmp_path, gpt2_dir, text_data):
    code, _, err = _featurize(gpt2_dir, text_data, tmp_path / "s", "--proj-dim", "4")
    assert code == 0, err
    image = tmp_path / "cat.png"
    image.write_bytes(png_bytes(np.zeros((8, 8, 3), dtype=np.uint8)))
    code, _, err = run_cli("score", "-t", tmp_path / "s", "--query", image)
    _assert_one_line_error(code, err, "is an image", "causal-lm model")
