"""featurize as an array job: independent tasks (`--shard i/n`) share --out, each writes its
own shards, and the one that finds every shard written merges the manifest, once."""

from __future__ import annotations

import fcntl
import json
import os

from helpers import run_cli

from attrib.execution import MERGE_LOCK

COMMON = ["--proj-dim", "4", "--shard-size", "7", "--batch-size", "5", "--device", "cpu"]
COMMON += ["--store-dtype", "float32"]


def _featurize(resnet_dir, image_data, out, *extra):
    return run_cli("featurize", "--model", resnet_dir, "--data", image_data, "--out", out,
                   *COMMON, *extra)  # fmt: skip


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_array_tasks_write_the_store_of_one_process(tmp_path, resnet_dir, image_data):
    one = tmp_path / "one"
    assert _featurize(resnet_dir, image_data, one)[0] == 0

    out = tmp_path / "array"
    code, _, err = _featurize(resnet_dir, image_data, out, "--shard", "1/2")
    assert code == 0 and "the array's other tasks write the rest" in err
    assert not _manifest(out)["complete"]
    written = sorted(p.name for p in (out / "shards").glob("*.arrow"))
    assert written and len(written) < len(list((one / "shards").glob("*.arrow")))

    # The last task finds the merge taken by another (here: this test): it leaves it.
    fd = os.open(out / MERGE_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    code, _, err = _featurize(resnet_dir, image_data, out, "--shard", "0/2")
    assert code == 0 and "another array task is merging" in err
    assert not _manifest(out)["complete"]
    os.close(fd)

    # Run again, it finds every shard written (its own kept) and merges.
    code, _, err = _featurize(resnet_dir, image_data, out, "--shard", "0/2")
    assert code == 0 and "wrote 24 examples" in err
    manifest = _manifest(out)
    assert manifest["complete"] and manifest["array_tasks"] == 2 and manifest["world_size"] == 1
    assert manifest["shards"] == _manifest(one)["shards"]  # names, rows and checksums
    assert sorted(p.name for p in out.glob(".rank-*")) == []

    # A task that finishes after the merge has nothing to do, and writes nothing.
    before = (out / "manifest.json").read_bytes()
    code, _, err = _featurize(resnet_dir, image_data, out, "--shard", "1/2")
    assert code == 0 and "already complete" in err
    assert (out / "manifest.json").read_bytes() == before


def test_an_array_task_cannot_overwrite(tmp_path, resnet_dir, image_data):
    code, _, err = _featurize(resnet_dir, image_data, tmp_path / "s", "--shard", "0/2",
                              "--overwrite")  # fmt: skip
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_an_array_tasks_shards_resume_under_one_process(tmp_path, resnet_dir, image_data):
    one = tmp_path / "one"
    assert _featurize(resnet_dir, image_data, one)[0] == 0
    out = tmp_path / "resumed"
    assert _featurize(resnet_dir, image_data, out, "--shard", "1/3")[0] == 0
    code, _, err = _featurize(resnet_dir, image_data, out)  # the rest, then the manifest
    assert code == 0 and "kept" in err
    manifest = _manifest(out)
    assert manifest["complete"] and manifest["world_size"] == 1 and "array_tasks" not in manifest
    assert manifest["shards"] == _manifest(one)["shards"]
    assert list(out.glob(".rank-*")) == []
