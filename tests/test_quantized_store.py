"""Quantized stores (`--store-dtype int8 | int4`): rounding within its bound, every reader
decodes the same values, and scoring, ensembles and query stores work on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli

from attrib.featurize.options import FeaturizeOptions
from attrib.featurize.run import run_featurize
from attrib.store import Store, shards

LEVELS = {"int8": 127, "int4": 7}


def _config(model, data, out, **kw) -> FeaturizeOptions:
    kw = {"proj_dim": 4, "shard_size": 5, "batch_size": 4, "progress": False, "device": "cpu",
          **kw}  # fmt: skip
    return FeaturizeOptions(model=str(model), data=str(data), out=Path(out), **kw)


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize("dim", [1, 6, 7])  # int4: an odd width pads its last byte
def test_rounding_is_to_nearest_and_decodes_to_its_grid(dtype, dim):
    rng = np.random.default_rng(dim)
    matrix = rng.normal(size=(9, dim)).astype(np.float32) * rng.uniform(1e-3, 1e3, (9, 1))
    matrix[3] = 0.0  # a row of zeros stays zeros (scale 0)
    values, scale = shards.quantize(matrix, dtype)
    back = shards.dequantize(values, scale, dim, dtype)
    assert back.shape == matrix.shape and back.dtype == np.float32
    assert np.all(back[3] == 0) and scale[3] == 0
    # Each entry is off by at most half a step of its row (float32 rounding aside), and the
    # row's largest entry is kept exactly: the scale is chosen from it.
    step = np.abs(matrix).max(axis=1, keepdims=True) / LEVELS[dtype]
    assert np.all(np.abs(back - matrix) <= step * (0.5 + 1e-5))
    largest = np.abs(matrix).argmax(axis=1)
    rows = np.arange(len(matrix))
    np.testing.assert_allclose(back[rows, largest], matrix[rows, largest], rtol=1e-6)
    # Values already on the grid come back exactly.
    again = shards.dequantize(*shards.quantize(back, dtype), dim, dtype)
    np.testing.assert_allclose(again, back, rtol=1e-6, atol=0)


def test_int4_packs_two_values_a_byte():
    matrix = np.array([[7, -7, 1, 0, -3]], dtype=np.float32)
    values, scale = shards.quantize(matrix, "int4")
    assert values.dtype == np.uint8 and values.shape == (1, 3) and scale[0] == 1.0
    # Low nibble first, offset by 8; the pad nibble is 8 (zero).
    assert values[0].tolist() == [15 | (1 << 4), 9 | (8 << 4), 5 | (8 << 4)]


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_quantized_store_equals_the_float32_store_within_its_step(
    tmp_path, gpt2_dir, text_data, dtype
):  # fmt: skip
    full = Store(run_featurize(_config(gpt2_dir, text_data, tmp_path / "f", store_dtype="float32")))
    small = Store(run_featurize(_config(gpt2_dir, text_data, tmp_path / "q", store_dtype=dtype)))
    assert small.settings["store_dtype"] == dtype
    assert small.size_bytes() < full.size_bytes()
    reference = {}
    for name in full.module_names:
        exact, decoded = full.matrix(name), small.matrix(name)
        step = np.abs(exact).max(axis=1, keepdims=True) / LEVELS[dtype]
        assert np.all(np.abs(decoded - exact) <= step * (0.5 + 1e-5) + 1e-30)
        reference[name] = decoded
    # Every reader decodes the same numbers: whole-store blocks, per-module parts, matrix().
    whole = torch.cat([phi for _, _, phi in small.iter_features()])
    parts = [torch.cat(p) for p in zip(*[part for _, _, part in small.iter_parts("cpu")])]
    expected = np.concatenate([reference[n] for n in small.module_names], axis=1)
    np.testing.assert_array_equal(whole.numpy(), expected)
    np.testing.assert_array_equal(torch.cat(parts, dim=1).numpy(), expected)


def test_a_quantized_store_scores_and_ensembles_from_the_cli(tmp_path, gpt2_dir, text_data):
    train, queries = tmp_path / "t", tmp_path / "q"
    base = ["featurize", "--model", gpt2_dir, "--proj-dim", "6", "-q"]
    code, _, err = run_cli(*base, "--data", text_data, "--out", train, "--store-dtype", "int4")
    assert code == 0, err
    # Queries in another dtype are the same space: the dtype is how rows are kept.
    code, _, err = run_cli(*base, "--data", text_data, "--out", queries, "--max-examples", "3")
    assert code == 0, err
    full = tmp_path / "full"
    code, _, err = run_cli(*base, "--data", text_data, "--out", full, "--store-dtype", "float32")
    assert code == 0, err
    scores = {}
    for name, store in (("int4", train), ("float32", full)):
        out = tmp_path / f"{name}.npy"
        code, _, err = run_cli("score", "-t", store, "--queries", queries, "--out", out, "-q")
        assert code == 0, err
        scores[name] = np.load(out)
    # 4 bits a feature: each query's ranking follows the float32 store's closely.
    for a, b in zip(scores["int4"], scores["float32"]):
        assert np.corrcoef(a, b)[0, 1] > 0.95
    code, _, err = run_cli("ensemble", train, train, "--out", tmp_path / "ens", "-q")
    assert code == 0, err
    ensemble = Store(tmp_path / "ens")
    assert ensemble.settings["store_dtype"] == "int4"
    member = Store(train)
    name = member.module_names[0]
    np.testing.assert_allclose(
        ensemble.matrix(f"{ensemble.module_names[0]}"), member.matrix(name), rtol=1e-6
    )


def test_scoring_an_int4_query_store_says_what_it_costs(tmp_path, gpt2_dir, text_data):
    base = ["featurize", "--model", gpt2_dir, "--data", text_data, "--proj-dim", "4", "-q"]
    stores = {}
    for dtype in ("int4", "int8"):
        stores[dtype] = tmp_path / dtype
        code, _, err = run_cli(*base, "--out", stores[dtype], "--max-examples", "3",
                               "--store-dtype", dtype)  # fmt: skip
        assert code == 0, err
    warned = {}
    for dtype, store in stores.items():
        code, _, err = run_cli("score", "-t", stores["int8"], "--queries", store, "--top", "2")
        assert code == 0, err
        warned[dtype] = "featurize queries with --store-dtype int8 or float16" in err
    assert warned == {"int4": True, "int8": False}
