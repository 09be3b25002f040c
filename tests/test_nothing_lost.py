"""Nothing lost, round 2: each failure the second fault probe found, as a test (item numbers
are the issue's). Every case ends as the right answer, or as exit code 2 with one line and the
previous output intact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from safetensors.torch import save_file
from test_cli_errors import _assert_one_line_error
from test_faults import _bytes, _copy, _featurize, _holder, _litter, _release

from attrib.store.arrays import write_arrays


@pytest.fixture(scope="module")
def made(tmp_path_factory, resnet_dir, image_data):
    root = tmp_path_factory.mktemp("lost")
    code, _, err = _featurize(resnet_dir, image_data, root / "good")
    assert code == 0, err
    return root / "good"


@pytest.fixture
def small(tmp_path):
    """Array stores: a training store (20 rows, 2 modules) and a query store."""
    rng = np.random.default_rng(0)
    train = write_arrays(
        tmp_path / "train", {n: rng.standard_normal((20, 3)) for n in "ab"}, shard_size=8
    )
    queries = write_arrays(tmp_path / "q", {n: rng.standard_normal((4, 3)) for n in "ab"})
    return train, queries


def _learn(train, queries, out, *extra):
    return run_cli(
        "learn-weights", "-t", train, "--queries", queries, "--out", out, "--k", "3",
        "--method", "tracin", "--epochs", "1", "-q", *extra,
    )  # fmt: skip


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- 1: a second --overwrite never removes a live run's staging folder ------------------------
def test_a_live_replacement_is_not_removed_by_a_second_one(made, tmp_path, resnet_dir, image_data):
    store = _copy(made, tmp_path)
    staging = tmp_path / ".store.new"
    shutil.copytree(made, staging, ignore=shutil.ignore_patterns(".lock", "cache"))
    writer = _holder(staging, True)  # run A, building its replacement
    before = _snapshot(staging)
    try:
        code, _, err = _featurize(resnet_dir, image_data, store, "--overwrite", "--seed", "2")
        _assert_one_line_error(code, err, f"being written by process {writer.pid}")
        assert _snapshot(staging) == before
    finally:
        _release(writer)
    assert _bytes(store) == _bytes(made)


# -- 2: no output lands inside a store --------------------------------------------------------
@pytest.mark.parametrize("inside", ["manifest.json", "shards/0000000000-0000000008.arrow", "x/w"])
def test_no_output_lands_inside_a_store(small, inside):
    train, queries = small
    before = _snapshot(train)
    target = train / (inside if inside.endswith((".json", ".arrow")) else inside + ".safetensors")
    code, _, err = _learn(train, queries, target)
    _assert_one_line_error(code, err, "lies inside", str(train))
    code, _, err = run_cli("score", "-t", train, "--queries", queries, "--out", train / "s.npy")
    _assert_one_line_error(code, err, "lies inside")
    assert _snapshot(train) == before


# -- 3: a retired store whose removal was cut short is finished, not an error forever --------
def test_a_half_removed_retired_store_does_not_block_overwrite(made, tmp_path, small):
    train, _ = small
    old = tmp_path / ".store.old" / "shards"
    old.mkdir(parents=True)
    shutil.copy(sorted((made / "shards").glob("*.arrow"))[0], old)  # no manifest left
    store = _copy(made, tmp_path)
    code, _, err = run_cli("ensemble", made, store, "--out", tmp_path / "store", "--overwrite")
    assert code == 0, err
    assert not (tmp_path / ".store.old").exists()
    keep = tmp_path / ".other.old"  # a folder with a file attrib never writes is kept
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    (tmp_path / "other").mkdir()
    shutil.copytree(made, tmp_path / "other", dirs_exist_ok=True)
    run_cli("ensemble", made, store, "--out", tmp_path / "other", "--overwrite")
    assert (keep / "notes.txt").read_text() == "mine"


# -- 4: a killed ensemble resumes -------------------------------------------------------------
def test_a_killed_ensemble_is_finished_by_rerunning_it(made, tmp_path):
    other = _copy(made, tmp_path)
    out = tmp_path / "ens"
    args = ("ensemble", made, other, "--out", out, "-q")
    assert run_cli(*args)[0] == 0
    reference = _bytes(out)
    # What a SIGKILL after the second shard leaves: an incomplete manifest, missing shards, a
    # rank report's temporary and a staging temporary of a dead process.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(complete=False, shards=[])
    (out / "manifest.json").write_text(json.dumps(manifest))
    for shard in sorted((out / "shards").glob("*.arrow"))[2:]:
        shard.unlink()
    dead = _dead_pid()
    (out / f"..rank-0.json.{dead}.abc.part").write_text("{")
    (tmp_path / f"..ens.new.{dead}.abc.part").mkdir()
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert _bytes(out) == reference
    code, _, err = run_cli(*args)  # complete: nothing to do
    assert code == 0 and _bytes(out) == reference
    assert run_cli(*args[:-1], "--overwrite")[0] == 0
    assert _bytes(out) == reference and _litter(out) == []


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# -- 5: subnormal weights ---------------------------------------------------------------------
def test_subnormal_weights_are_refused(small, tmp_path):
    train, queries = small
    path = tmp_path / "w.safetensors"
    record = {"groups": ["a", "b"], "module_to_group": {"a": "a", "b": "b"}, "info": {}}
    weights = torch.full((2,), 1e-45)
    save_file({"weights": weights}, str(path), metadata={"attrib-weights/2": json.dumps(record)})
    code, _, err = run_cli("score", "-t", train, "--queries", queries, "--weights", path)
    _assert_one_line_error(code, err, "subnormal")


# -- 6, 7: a full disk and a read-only folder: one line, nothing left ------------------------
@contextmanager
def _tmpfs(where: Path, size: str = "1m", read_only: bool = False):
    where.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:80]})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> None:
    """Leave a few KiB free on a small tmpfs."""
    free = shutil.disk_usage(folder).free
    (folder / "ballast").write_bytes(b"\0" * max(0, free - 8192))


def test_a_full_disk_is_one_line_and_leaves_nothing(made, small, tmp_path, resnet_dir, image_data):
    with _tmpfs(tmp_path / "disk") as disk:
        _fill(disk)
        code, _, err = _featurize(resnet_dir, image_data, disk / "store")
        _assert_one_line_error(code, err, "no space left", "MiB free")
        assert _litter(disk / "store") == []
        code, _, err = run_cli(
            "score", "-t", made, "--queries", made, "--out", disk / "s.npy", "-q"
        )
        _assert_one_line_error(code, err, "could not write", "no space left")
        assert sorted(p.name for p in disk.iterdir()) == ["ballast", "store"] or sorted(
            p.name for p in disk.iterdir()
        ) == ["ballast"]
        code, _, err = _learn(*small, disk / "w.safetensors")
        _assert_one_line_error(code, err, "no space left")
        assert not (disk / "w.safetensors").exists()
        (disk / "ballast").unlink()  # space freed: the same command now works
        assert _learn(*small, disk / "w.safetensors")[0] == 0


def test_a_read_only_folder_is_refused_before_any_work(made, tmp_path, resnet_dir, image_data):
    with _tmpfs(tmp_path / "ro", read_only=True) as ro:
        for code, _, err in (
            _featurize(resnet_dir, image_data, ro / "store"),
            run_cli("score", "-t", made, "--queries", made, "--out", ro / "s.npy"),
            _learn(made, made, ro / "w.safetensors"),
        ):
            _assert_one_line_error(code, err, "read-only file system")


def test_a_write_error_in_a_library_is_one_line(small, tmp_path, monkeypatch):
    """safetensors reports a full disk as text: it is still recognised, the temporary gone."""
    from safetensors import SafetensorError

    import attrib.weights.artifact as artifact

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull })"
        )

    monkeypatch.setattr(artifact, "save_file", full)
    train, queries = small
    code, _, err = _learn(train, queries, tmp_path / "w.safetensors")
    _assert_one_line_error(code, err, f"could not write {tmp_path / 'w.safetensors'}")
    assert [p.name for p in tmp_path.iterdir() if ".part" in p.name] == []


# -- 8: paths of the wrong kind are refused before the work ----------------------------------
def test_outputs_of_the_wrong_kind_are_refused_first(small, tmp_path):
    train, queries = small
    (tmp_path / "folder").mkdir()
    code, _, err = _learn(train, queries, tmp_path / "folder")
    _assert_one_line_error(code, err, "is a folder")
    code, _, err = _learn(train, queries, tmp_path / "w.safetensors", "--plot", tmp_path / "x.json")
    _assert_one_line_error(code, err, "--plot", ".png")
    assert not (tmp_path / "w.safetensors").exists()
    (tmp_path / "file").write_text("")
    code, _, err = run_cli("ensemble", train, train, "--out", tmp_path / "file")
    _assert_one_line_error(code, err, "is a file")


# -- 9: hostile JSON --------------------------------------------------------------------------
def _manifest(store: Path, text: str) -> None:
    (store / "manifest.json").write_text(text)


@pytest.mark.parametrize(
    "damage, phrase",
    [
        (lambda s: _manifest(s, "[" * 200_000 + "]" * 200_000), "nests deeper"),
        (lambda s: _manifest(s, "[]"), "JSON list"),
        (lambda s: _edit(s, lambda m: m["shards"][0].update(end=8.0)), "not whole numbers"),
    ],
)
def test_hostile_manifests_are_one_line(small, damage, phrase):
    train, queries = small
    damage(train)
    code, _, err = run_cli("score", "-t", train, "--queries", queries)
    _assert_one_line_error(code, err, phrase)


def _edit(store, change):
    manifest = json.loads((store / "manifest.json").read_text())
    change(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))


def test_weights_metadata_nested_deep_is_refused(small, tmp_path):
    train, queries = small
    path = tmp_path / "w.safetensors"
    nested = "[" * 100_000 + "]" * 100_000
    save_file({"weights": torch.ones(2)}, str(path), metadata={"attrib-weights/2": nested})
    code, _, err = run_cli("score", "-t", train, "--queries", queries, "--weights", path)
    _assert_one_line_error(code, err, "nests deeper")


# -- 10, 11: bad text ------------------------------------------------------------------------
def test_a_stdin_line_that_is_not_utf8_is_named(small, monkeypatch):
    import io
    import sys

    train, _ = small
    stdin = io.TextIOWrapper(io.BytesIO(b"fine\nthe cat \xff\xfe sat\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, _, err = run_cli("score", "-t", train, "--query", "-")
    _assert_one_line_error(code, err, "stdin line 2 is not UTF-8")


def test_empty_texts(tmp_path, gpt2_dir):
    import datasets

    def data(texts):
        path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.parquet"
        datasets.Dataset.from_dict({"text": texts}).to_parquet(str(path))
        return path

    code, _, err = _featurize(gpt2_dir, data(["", "", ""]), tmp_path / "a")
    _assert_one_line_error(code, err, "every text", "empty")
    assert not (tmp_path / "a").exists()
    code, _, err = run_cli(
        "featurize", "--model", gpt2_dir, "--data", data(["a cat sat", "", "", "dogs run"]),
        "--out", tmp_path / "b", "--proj-dim", "4", "--batch-size", "2", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert "2 of 4 texts are empty" in err
    from attrib.store import Store

    features = Store(tmp_path / "b").matrix(Store(tmp_path / "b").module_names[0])
    assert not features[1:3].any() and features[0].any()  # the empty batch: zero rows


# -- 12: pickle checkpoints never run code ----------------------------------------------------
class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/attrib-pwned",))


def test_a_malicious_pickle_checkpoint_is_refused_in_one_line(tmp_path, gpt2_dir, text_data):
    model = tmp_path / "model"
    shutil.copytree(gpt2_dir, model)
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    torch.save({"transformer.wte.weight": _Exploit()}, model / "pytorch_model.bin")
    Path("/tmp/attrib-pwned").unlink(missing_ok=True)
    code, _, err = _featurize(model, text_data, tmp_path / "out")
    _assert_one_line_error(code, err, "pickle")
    assert not Path("/tmp/attrib-pwned").exists()
    assert not (tmp_path / "out").exists()


# -- 13: nan and inf options ------------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_float_options_refuse_nan_and_inf(small, tmp_path, value):
    train, queries = small
    (tmp_path / "g.npz").write_bytes(b"")
    for args in (
        ("score", "-t", train, "--queries", queries),
        ("learn-weights", "-t", train, "--queries", queries, "--out", tmp_path / "w.safetensors"),
        ("evaluate", "lds", "-t", train, "--queries", queries, "--groundtruth", tmp_path / "g.npz"),
    ):
        code, _, err = run_cli(*args, "--memory-gb", value)
        _assert_one_line_error(code, err, "--memory-gb must be a finite number")


# -- 14: files honour the umask ---------------------------------------------------------------
def test_weights_and_caches_honour_the_umask(small, tmp_path):
    train, queries = small
    old = os.umask(0o022)
    try:
        assert _learn(train, queries, tmp_path / "w.safetensors", "--method", "trak-block")[0] == 0
    finally:
        os.umask(old)
    written = [tmp_path / "w.safetensors", *(train / "cache").glob("*.safetensors")]
    assert len(written) >= 2
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o644, path
