"""The fault probe, as tests: damaged stores, concurrent processes, replacement that loses
nothing, and the litter of killed writers. Each case ends as the right answer, or as exit
code 2 with one line and the previous good output intact. (Hostile inputs: test_hostile.py.)
Kills are simulated at chosen points by a test hook (an exception from a patched writer) or by
leaving what a SIGKILL leaves; processes that hold locks are real, synchronised by pipes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from builders import save_image_data
from helpers import run_cli
from test_cli_errors import _assert_one_line_error

from attrib.store import Store
from attrib.store.writer import StoreWriter

ARGS = ["--proj-dim", "4", "--shard-size", "6", "--batch-size", "6", "--device", "cpu", "-q"]


def _featurize(model, data, out, *extra):
    return run_cli("featurize", "--model", model, "--data", data, "--out", out, *ARGS, *extra)


def _bytes(store):
    return {p.name: p.read_bytes() for p in sorted((store / "shards").iterdir())}


def _litter(folder):
    """Temporaries, staging folders and rank reports anywhere at or beside `folder`."""
    names = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    if folder.exists():
        names += [p.name for p in folder.rglob("*") if ".part" in p.name or ".rank-" in p.name]
    return names


@pytest.fixture(scope="module")
def made(tmp_path_factory, resnet_dir, image_data):
    """A good store (24 images, 4 shards) and a copy source for damaging."""
    root = tmp_path_factory.mktemp("faults")
    code, _, err = _featurize(resnet_dir, image_data, root / "good")
    assert code == 0, err
    return root / "good"


def _copy(made, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(made, out, ignore=shutil.ignore_patterns(".lock", "cache"))
    return out


def _score(store):
    return run_cli(
        "score", "--train", store, "--queries", store, "--top", "3", "--format", "jsonl", "-q"
    )


# -- stores are checked, not trusted ---------------------------------------------------------
def _edit_manifest(store, change):
    manifest = json.loads((store / "manifest.json").read_text())
    change(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))


DAMAGE = {
    "shard listed twice": lambda s: _edit_manifest(
        s, lambda m: m["shards"].insert(1, dict(m["shards"][0]))
    ),
    "shard path outside the store": lambda s: _edit_manifest(
        s, lambda m: m["shards"][0].update(file="../../elsewhere.arrow")
    ),
    "absolute shard path": lambda s: _edit_manifest(
        s, lambda m: m["shards"][0].update(file="/etc/passwd")
    ),
    "missing keys": lambda s: _edit_manifest(s, lambda m: m["settings"].pop("modules")),
    "negative sizes": lambda s: _edit_manifest(s, lambda m: m["settings"].update(num_examples=-24)),
    "shards swapped": lambda s: _swap(s / "shards"),
    "bytes flipped": lambda s: _flip(sorted((s / "shards").glob("*.arrow"))[1]),
    "truncated shard": lambda s: _truncate(sorted((s / "shards").glob("*.arrow"))[2]),
    "empty shard": lambda s: sorted((s / "shards").glob("*.arrow"))[3].write_bytes(b""),
}


def _swap(folder):
    a, b = sorted(folder.glob("*.arrow"))[:2]
    tmp = folder / "x"
    a.rename(tmp), b.rename(a), tmp.rename(b)


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the feature values, not the Arrow framing
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_store_is_refused_in_one_line(made, tmp_path, case):
    store = _copy(made, tmp_path)
    DAMAGE[case](store)
    code, out, err = _score(store)
    _assert_one_line_error(code, err, str(store))
    assert out == ""


@pytest.mark.parametrize("case", ["bytes flipped", "truncated shard", "shards swapped"])
def test_featurize_repairs_a_damaged_store(made, tmp_path, resnet_dir, image_data, case):
    store = _copy(made, tmp_path)
    DAMAGE[case](store)
    code, _, err = _featurize(resnet_dir, image_data, store)
    assert code == 0, err
    assert _bytes(store) == _bytes(made)
    assert _score(store)[0] == 0
    code, out, err = run_cli("inspect", store, "--verify")
    assert code == 0 and json.loads(out)["verified"], err


def test_a_cached_kernel_is_not_reused_after_the_shards_changed(made, tmp_path):
    store = _copy(made, tmp_path)
    assert _score(store)[0] == 0  # builds the block kernel cache
    cached = sorted((store / "cache").iterdir())
    _flip(sorted((store / "shards").glob("*.arrow"))[1])
    _edit_manifest(store, lambda m: None)  # same manifest: only the bytes changed
    code, _, err = _score(store)
    _assert_one_line_error(code, err, "differs from its checksum")
    assert sorted((store / "cache").iterdir()) == cached


# -- replacing a store loses nothing -------------------------------------------------------
def test_overwrite_refuses_a_folder_attrib_did_not_make(tmp_path, resnet_dir, image_data):
    app = tmp_path / "webapp"
    app.mkdir()
    (app / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    (app / "index.html").write_text("<html></html>")
    code, _, err = _featurize(resnet_dir, image_data, app, "--overwrite")
    _assert_one_line_error(code, err, "is not an attrib store", "choose another --out")
    assert "--overwrite" not in err.replace("--out", "")
    assert sorted(p.name for p in app.iterdir()) == ["index.html", "manifest.json"]


def test_a_failed_overwrite_keeps_the_old_store(made, tmp_path, resnet_dir):
    store = _copy(made, tmp_path)
    bad = save_image_data(tmp_path / "bad.parquet", 24, seed=3)
    _break_row(bad, 14)
    code, _, err = _featurize(resnet_dir, bad, store, "--overwrite")
    _assert_one_line_error(code, err, "row 14")
    assert _bytes(store) == _bytes(made) and _score(store)[0] == 0
    assert _litter(store) == []


def _break_row(path, row):
    import datasets

    data = datasets.load_dataset("parquet", data_files=str(path), split="train")
    data = data.cast_column("image", datasets.Image(decode=False))
    rows = data.to_dict()
    rows["image"][row] = {"bytes": b"not an image", "path": None}
    datasets.Dataset.from_dict(rows, features=data.features).to_parquet(str(path))


class Killed(Exception):
    pass


def test_a_killed_overwrite_keeps_the_old_store_and_resumes(
    made, tmp_path, resnet_dir, image_data, monkeypatch
):
    store = _copy(made, tmp_path)
    original, written = StoreWriter.write_shard, []

    def die_after_one(self, start, end, data):
        if written:
            raise Killed
        written.append(start)
        return original(self, start, end, data)

    monkeypatch.setattr(StoreWriter, "write_shard", die_after_one)
    with pytest.raises(Killed):
        _featurize(resnet_dir, image_data, store, "--overwrite", "--seed", "1")
    monkeypatch.setattr(StoreWriter, "write_shard", original)
    assert _bytes(store) == _bytes(made) and _score(store)[0] == 0  # the old store, untouched
    code, _, err = _featurize(resnet_dir, image_data, store, "--overwrite", "--seed", "1")
    assert code == 0, err
    fresh = tmp_path / "fresh"
    assert _featurize(resnet_dir, image_data, fresh, "--seed", "1")[0] == 0
    assert _bytes(store) == _bytes(fresh)
    assert Store(store).manifest["options"]["seed"] == 1
    assert _litter(store) == []


def test_a_swap_cut_short_is_finished_by_the_next_run(made, tmp_path, resnet_dir, image_data):
    from attrib.store import replace

    store = _copy(made, tmp_path)
    shutil.copytree(made, replace.staging(store), ignore=shutil.ignore_patterns(".lock"))
    store.rename(replace.retired(store))  # killed between the two renames
    code, _, err = _featurize(resnet_dir, image_data, store)
    assert code == 0, err
    assert _bytes(store) == _bytes(made) and _litter(store) == []


# -- one writer or many readers --------------------------------------------------------------
def _holder(store, exclusive):
    """A process holding the store's lock until its stdin closes."""
    code = (
        "import sys; from attrib.store.lock import lock_store; "
        f"lock_store({str(store)!r}, {exclusive}); print('held', flush=True); sys.stdin.read()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def _release(process):
    process.stdin.close()
    process.wait()


def test_a_store_being_written_is_not_read(made, tmp_path):
    store = _copy(made, tmp_path)
    writer = _holder(store, True)
    try:
        code, _, err = _score(store)
        _assert_one_line_error(code, err, f"being written by process {writer.pid}")
    finally:
        _release(writer)
    assert _score(store)[0] == 0


def test_two_writers_never_share_a_store(made, tmp_path, resnet_dir, image_data):
    store = _copy(made, tmp_path)
    _flip(sorted((store / "shards").glob("*.arrow"))[0])  # so featurize has work to do
    writer = _holder(store, True)
    try:
        code, _, err = _featurize(resnet_dir, image_data, store)
        _assert_one_line_error(code, err, f"in use by process {writer.pid}")
    finally:
        _release(writer)
    assert _featurize(resnet_dir, image_data, store)[0] == 0
    assert _bytes(store) == _bytes(made)


def test_a_store_being_read_is_not_replaced_under_its_reader(
    made, tmp_path, resnet_dir, image_data
):
    store = _copy(made, tmp_path)
    reader = _holder(store, False)
    try:
        code, _, err = _featurize(resnet_dir, image_data, store, "--overwrite", "--seed", "2")
        _assert_one_line_error(code, err, "in use by")
        assert _bytes(store) == _bytes(made)  # the reader's store is whole
    finally:
        _release(reader)
    code, _, err = _featurize(resnet_dir, image_data, store, "--overwrite", "--seed", "2")
    assert code == 0, err  # the completed replacement is swapped in, not rebuilt
    assert Store(store).manifest["options"]["seed"] == 2 and _litter(store) == []


# -- temporaries -----------------------------------------------------------------------------
def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_killed_writers_temporaries_are_removed_and_a_live_ones_kept(made, tmp_path):
    store = _copy(made, tmp_path)
    out = tmp_path / "scores.npy"
    dead = tmp_path / f".scores.npy.{_dead_pid()}.abc.part"
    live = tmp_path / f".scores.npy.{os.getppid()}.def.part"
    dead.write_bytes(b"half"), live.write_bytes(b"busy")
    code, _, err = run_cli("score", "--train", store, "--queries", store, "--out", out, "-q")
    assert code == 0, err
    assert not dead.exists() and live.exists()
    assert np.load(out).shape == (24, 24)


def test_a_planted_symlink_is_never_followed(made, tmp_path):
    store = _copy(made, tmp_path)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    for name in (".scores.npy.part", f".scores.npy.{os.getpid()}.x.part"):
        (tmp_path / name).symlink_to(target)
    out = tmp_path / "scores.npy"
    code, _, err = run_cli("score", "--train", store, "--queries", store, "--out", out, "-q")
    assert code == 0, err
    assert target.read_text() == "keep me" and np.load(out).shape == (24, 24)


def test_files_honour_the_umask(made):
    mask = os.umask(0)
    os.umask(mask)
    for path in [made / "manifest.json", *(made / "shards").iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


# -- every writer, killed at a chosen point, leaves the old output or none, and no litter ----
def test_killed_writers_leave_nothing_half_written(made, tmp_path, monkeypatch):
    from attrib.score import stream
    from attrib.weights import run as learn_run

    store = _copy(made, tmp_path)
    out, weights = tmp_path / "scores.npy", tmp_path / "w.safetensors"
    assert run_cli("score", "--train", store, "--queries", store, "--out", out, "-q")[0] == 0
    before = out.read_bytes()
    original = stream.check_finite
    calls = []

    def die_on_third_shard(*args):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return original(*args)

    monkeypatch.setattr(stream, "check_finite", die_on_third_shard)
    with pytest.raises(Killed):
        run_cli("score", "--train", store, "--queries", store, "--out", out, "--top", "1")
    monkeypatch.setattr(stream, "check_finite", original)
    assert out.read_bytes() == before  # the previous scores, whole

    learn = ["learn-weights", "--train", store, "--queries", store, "--out", weights, "-q"]
    assert run_cli(*learn)[0] == 0
    first = weights.read_bytes()
    monkeypatch.setattr(learn_run, "save_weights", _raise_killed)
    with pytest.raises(Killed):
        run_cli(*learn, "--k", "3")
    monkeypatch.undo()
    assert weights.read_bytes() == first
    assert run_cli(*learn)[0] == 0 and weights.read_bytes() == first  # rerun: same bytes
    assert [p.name for p in tmp_path.iterdir() if ".part" in p.name] == []


def _raise_killed(*args, **kwargs):
    raise Killed


def test_a_kill_while_creating_a_store_leaves_no_folder(tmp_path, resnet_dir, image_data):
    from attrib.store import writer as writer_module

    out = tmp_path / "new"
    original = writer_module.write_json_atomic
    writer_module.write_json_atomic = _raise_killed
    try:
        with pytest.raises(Killed):
            _featurize(resnet_dir, image_data, out)
    finally:
        writer_module.write_json_atomic = original
    assert not out.exists()
    assert _featurize(resnet_dir, image_data, out)[0] == 0 and _litter(out) == []
