"""The store: contents, determinism, resume after an interruption, settings checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import features, load

from attrib.errors import AttribError
from attrib.featurize.options import FeaturizeOptions
from attrib.featurize.projection import ProjectionSpec
from attrib.featurize.run import run_featurize as featurize
from attrib.store import Store
from attrib.store.writer import StoreWriter


def config(model, data, out, **kw) -> FeaturizeOptions:
    kw.setdefault("proj_dim", 4)
    kw.setdefault("shard_size", 5)
    kw.setdefault("batch_size", 4)
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    return FeaturizeOptions(model=str(model), data=str(data), out=Path(out), **kw)


def shard_bytes(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((store / "shards").glob("*"))}


def test_store_holds_the_features_in_training_order(tmp_path, resnet_dir, image_data):
    out = featurize(
        config(resnet_dir, image_data, tmp_path / "s", store_dtype="float32", method="trak")
    )
    store = Store(out)
    assert store.num_examples == 24
    assert [(s.start, s.end) for s in store.shards] == [
        (0, 5),
        (5, 10),
        (10, 15),
        (15, 20),
        (20, 24),
    ]
    np.testing.assert_array_equal(store.column("index"), np.arange(24))
    task, dataset = load(resnet_dir, image_data)
    want = features(task, dataset, ProjectionSpec("factored", 4), range(24), "margin")
    for name in store.module_names:
        np.testing.assert_allclose(store.matrix(name), want[name].numpy(), rtol=1e-5, atol=1e-7)
    q = store.column("out_to_loss")
    assert ((q > 0) & (q < 1)).all()
    manifest = store.manifest
    assert manifest["complete"] and manifest["settings"]["output_function"] == "margin"
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    assert not list(out.glob(".rank-*"))


def test_same_seed_gives_identical_bytes(tmp_path, gpt2_dir, text_data):
    a = featurize(config(gpt2_dir, text_data, tmp_path / "a", max_examples=12))
    b = featurize(config(gpt2_dir, text_data, tmp_path / "b", max_examples=12))
    assert shard_bytes(a) == shard_bytes(b)
    c = featurize(
        config(
            gpt2_dir,
            text_data,
            tmp_path / "c",
            max_examples=12,
            seed=1,
        )
    )
    assert shard_bytes(a) != shard_bytes(c)


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes_to_the_uninterrupted_result(
    tmp_path, gpt2_dir, text_data, monkeypatch
):
    whole = featurize(config(gpt2_dir, text_data, tmp_path / "whole", max_examples=17))
    out = tmp_path / "resumed"
    original = StoreWriter.write_shard
    written = []

    def write_two_then_die(self, start, end, data):
        if len(written) == 2:
            # Leave what a kill mid-write leaves: a temporary file beside the complete shards.
            name = f".{start:010d}-{end:010d}.arrow.x1y2z3.part"  # as attrib.atomic names it
            (self.path / "shards" / name).write_bytes(b"junk")
            raise Interrupted
        written.append(start)
        return original(self, start, end, data)

    monkeypatch.setattr(StoreWriter, "write_shard", write_two_then_die)
    with pytest.raises(Interrupted):
        featurize(config(gpt2_dir, text_data, out, max_examples=17))
    assert len(list((out / "shards").glob("*.arrow"))) == 2
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(AttribError, match="incomplete"):
        Store(out)
    # A truncated shard under its final name (a disk filled up) is detected and redone.
    first = sorted((out / "shards").glob("*.arrow"))[0]
    first.write_bytes(first.read_bytes()[:100])

    monkeypatch.setattr(StoreWriter, "write_shard", original)
    featurize(config(gpt2_dir, text_data, out, max_examples=17))
    assert shard_bytes(out) == shard_bytes(whole)
    assert Store(out).manifest["shards"] == Store(whole).manifest["shards"]


def test_a_complete_store_is_left_alone_and_other_settings_are_refused(
    tmp_path, gpt2_dir, text_data
):
    out = featurize(config(gpt2_dir, text_data, tmp_path / "s", max_examples=6))
    before = shard_bytes(out)
    featurize(config(gpt2_dir, text_data, out, max_examples=6))
    assert shard_bytes(out) == before
    with pytest.raises(AttribError, match=r"other settings \(.*projection\.dim"):
        featurize(config(gpt2_dir, text_data, out, max_examples=6, proj_dim=3))
    assert shard_bytes(out) == before
    featurize(
        config(
            gpt2_dir,
            text_data,
            out,
            max_examples=6,
            overwrite=True,
            proj_dim=3,
        )
    )
    assert Store(out).settings["projection"]["dim"] == 3


def test_refuses_to_write_into_a_folder_that_is_not_a_store(tmp_path, gpt2_dir, text_data):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(AttribError, match="not an attrib store"):
            featurize(config(gpt2_dir, text_data, folder, overwrite=overwrite))
    assert (folder / "keep.txt").read_text() == "mine"


def test_float16_store_matches_float32_store(tmp_path, vit_dir, image_data):
    half = Store(featurize(config(vit_dir, image_data, tmp_path / "h")))
    full = Store(featurize(config(vit_dir, image_data, tmp_path / "f", store_dtype="float32")))
    for name in full.module_names:
        # float16 keeps 11 significant bits: relative error at most 2^-11 per entry.
        a, b = half.matrix(name), full.matrix(name)
        assert np.abs(a - b).max() <= np.abs(b).max() * 2**-10
