"""A recorded run gets a store's guarantees: every damaged or foreign file of its record is
named in one line (exit 2), a run whose data or model changed is refused before any replay,
flags are checked before work, one writer per run folder, and results derived from a run
(magic's blocks, same-run parts) are bound to it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from helpers import run_cli
from test_cli_errors import _assert_one_line_error

RUN = ["--epochs", "2", "--batch-size", "8", "--device", "cpu", "-q"]


def _train(model, data, out, *extra):
    code, _, err = run_cli("train", "--model", model, "--data", data, "--out", out, *RUN, *extra)
    assert code == 0, err
    return Path(out)


def _featurize(model, data, out, *extra):
    code, _, err = run_cli(
        "featurize", "--model", model, "--data", data, "--out", out, "--device", "cpu", "-q",
        *extra,
    )  # fmt: skip
    assert code == 0, err
    return Path(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, resnet_dir, image_data, gpt2_dir, text_data):
    root = tmp_path_factory.mktemp("records")
    data = root / "train.parquet"
    shutil.copy(image_data, data)  # a copy this module may change and restore
    base = _train(resnet_dir, data, root / "base")
    other = _train(resnet_dir, data, root / "seed1", "--seed", "1")
    queries = _featurize(base / "model", data, root / "q", "--max-examples", "4", "--no-gradients")
    train = _featurize(base / "model", data, root / "train", "--proj-dim", "4")
    foreign = _featurize(resnet_dir, data, root / "q-foreign", "--max-examples", "4")
    text = _featurize(gpt2_dir, text_data, root / "q-text", "--max-examples", "2")
    return {"root": root, "base": base, "other": other, "q": queries, "train": train,
            "foreign": foreign, "text": text, "data": data, "model": resnet_dir}  # fmt: skip


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".lock", "magic"))
    return to


def _magic(run, queries, *extra):
    return run_cli("magic", "--run", run, "--queries", queries, "--device", "cpu", "-q", *extra)


def _edit_meta(change):
    def apply(run: Path, _runs) -> None:
        meta = json.loads((run / "run.json").read_text())
        change(meta)
        (run / "run.json").write_text(json.dumps(meta))

    return apply


def _replace(name: str, content):
    def apply(run: Path, runs) -> None:
        target = run / name
        if callable(content):
            content(target, runs)
        else:
            target.write_bytes(content)

    return apply


def _npz(**arrays):
    def write(target: Path, _runs) -> None:
        with open(target, "wb") as handle:
            np.savez(handle, **arrays)

    return write


SNAPSHOT = "snapshots/step-00000003.safetensors"
DAMAGE = {
    "batches.npz missing": (
        lambda run, _: (run / "batches.npz").unlink(),
        "batches.npz is missing",
    ),
    "batches.npz truncated": (_replace("batches.npz", b"PK\x03\x04"), "batches.npz"),
    "batches.npz garbage": (_replace("batches.npz", b"x" * 948), "batches.npz"),
    "batches.npz of another permutation": (
        _replace("batches.npz", lambda t, r: shutil.copy(r["other"] / "batches.npz", t)),
        "batches.npz differs from its checksum",
    ),
    "batches.npz with rows out of range": (
        _replace("batches.npz", _npz(rows=np.arange(48) + 100, offsets=np.arange(0, 49, 8))),
        "batches.npz",
    ),
    "batches.npz with float rows": (
        _replace("batches.npz", _npz(rows=np.zeros(48), offsets=np.arange(0, 49, 8))),
        "batches.npz",
    ),
    "batches.npz with wrong keys": (_replace("batches.npz", _npz(x=np.zeros(3))), "batches.npz"),
    "snapshot of another seed's run": (
        _replace(SNAPSHOT, lambda t, r: shutil.copy(r["other"] / SNAPSHOT, t)),
        "differs from its checksum",
    ),
    "snapshot truncated": (
        _replace(SNAPSHOT, lambda t, r: t.write_bytes(t.read_bytes()[:100])),
        SNAPSHOT,
    ),
    "snapshot empty": (_replace(SNAPSHOT, b""), SNAPSHOT),
    "snapshot garbage": (
        _replace(SNAPSHOT, lambda t, r: t.write_bytes(b"\x00" * t.stat().st_size)),
        "differs from its checksum",
    ),
    "snapshot deleted": (lambda run, _: (run / SNAPSHOT).unlink(), "is missing"),
    "model file changed": (
        _replace("model/config.json", lambda t, r: t.write_text(t.read_text() + " ")),
        "model/config.json",
    ),
    "snapshots out of order": (_edit_meta(lambda m: m.update(snapshots=[0, 6, 3])), "snapshots"),
    "seed not a number": (_edit_meta(lambda m: m["recipe"].update(seed="x")), "not of type int"),
    "complete is 'no'": (_edit_meta(lambda m: m.update(complete="no")), "complete"),
    "steps missing": (_edit_meta(lambda m: m.pop("steps")), "steps"),
    "steps null": (_edit_meta(lambda m: m.update(steps=None)), "steps"),
    "steps not whole": (_edit_meta(lambda m: m.update(steps=6.5)), "steps"),
    "rows a string": (_edit_meta(lambda m: m.update(rows="24")), "rows"),
    "snapshots null": (_edit_meta(lambda m: m.update(snapshots=None)), "snapshots"),
    "unknown recipe key": (_edit_meta(lambda m: m["recipe"].update(foo=1)), "foo"),
    "a file unlisted": (_edit_meta(lambda m: m["files"].pop(SNAPSHOT)), "not listed"),
    "a file entry planted": (
        _edit_meta(lambda m: m["files"].update({"../x": {"size": 1, "sha256": "0" * 64}})),
        "not a file of a run",
    ),
    "run.json not JSON": (_replace("run.json", b"{"), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_every_damaged_file_of_a_run_is_named_in_one_line(runs, tmp_path, case):
    damage, phrase = DAMAGE[case]
    run = _copy(runs["base"], tmp_path / "run")
    damage(run, runs)
    code, _, err = _magic(run, runs["q"])
    _assert_one_line_error(code, err, phrase)


def test_a_damaged_run_is_repaired_by_training_it_again(runs, tmp_path):
    run = _copy(runs["base"], tmp_path / "run")
    (run / SNAPSHOT).unlink()
    (run / "snapshots/step-00000006.safetensors").write_bytes(b"x")
    _train(runs["model"], runs["data"], run)
    for name in ("batches.npz", SNAPSHOT, "snapshots/step-00000006.safetensors",
                 "model/model.safetensors"):  # fmt: skip
        assert (run / name).read_bytes() == (runs["base"] / name).read_bytes(), name
    code, _, err = _magic(run, runs["q"])
    assert code == 0, err


@pytest.fixture()
def changed_data(runs):
    """The run's data with its rows reordered, restored afterwards."""
    data, saved = runs["data"], runs["data"].read_bytes()
    rows = datasets.load_dataset("parquet", data_files=str(data), split="train")
    rows.select(list(reversed(range(len(rows))))).to_parquet(str(data))
    yield data
    data.write_bytes(saved)


def test_a_run_whose_data_changed_is_refused_before_any_replay(runs, changed_data, tmp_path):
    phrase = "training data at"
    _assert_one_line_error(*_magic(runs["base"], runs["q"])[::2], phrase)
    code, _, err = run_cli("train", "--check", runs["base"], "--device", "cpu")
    _assert_one_line_error(code, err, phrase)
    code, _, err = run_cli(
        "evaluate", "retrain", "--same-run", runs["base"], "--train", runs["train"],
        "--queries", runs["q"], "--subsets", "2", "--out", tmp_path / "gt.npz", "--device", "cpu",
    )  # fmt: skip
    _assert_one_line_error(code, err, phrase)


def test_a_byte_identical_copy_of_the_data_is_the_same_data(runs):
    runs["data"].write_bytes(runs["data"].read_bytes())  # a new modification time
    code, _, err = run_cli(
        "train", "--model", runs["model"], "--data", runs["data"], "--out", runs["base"], *RUN[:-1]
    )
    assert code == 0 and "nothing to do" in err, err


def test_queries_of_another_task_or_checkpoint_are_refused(runs, tmp_path):
    _assert_one_line_error(
        *_magic(runs["base"], runs["text"])[::2],
        "holds queries for task causal-lm, but run",
        "trained task image-classification",
    )
    _assert_one_line_error(*_magic(runs["base"], runs["foreign"])[::2], "another checkpoint")
    code, _, err = run_cli(
        "evaluate", "retrain", "--same-run", runs["base"], "--train", runs["train"],
        "--queries", runs["text"], "--subsets", "2", "--out", tmp_path / "gt.npz",
    )  # fmt: skip
    _assert_one_line_error(code, err, "holds queries for task causal-lm")


def test_magic_blocks_are_bound_to_the_run_and_a_cache_may_live_elsewhere(runs, tmp_path):
    cache = tmp_path / "cache"
    base = _copy(runs["base"], tmp_path / "base")
    code, _, err = _magic(base, runs["q"], "--cache", cache, "--out", tmp_path / "a.npy")
    assert code == 0, err
    assert not (base / "magic").exists()  # the run folder was not written
    # The same cache for another run (a run with other rows' order): its own scores, not
    # the first run's blocks.
    other = _copy(runs["other"], tmp_path / "other")
    code, _, err = _magic(other, runs["q"], "--cache", cache, "--out", tmp_path / "b.npy")
    assert code != 2 or "another checkpoint" in err  # other's model made no query store
    queries = _featurize(other / "model", runs["data"], tmp_path / "q-other",
                         "--max-examples", "4", "--no-gradients")  # fmt: skip
    code, _, err = _magic(other, queries, "--cache", cache, "--out", tmp_path / "b.npy")
    assert code == 0, err
    code, _, err = _magic(other, queries, "--out", tmp_path / "c.npy")
    assert code == 0, err
    b, c = np.load(tmp_path / "b.npy"), np.load(tmp_path / "c.npy")
    np.testing.assert_array_equal(b, c)
    assert not np.array_equal(np.load(tmp_path / "a.npy"), b)


def test_same_run_parts_of_two_runs_never_merge(runs, tmp_path):
    out = tmp_path / "gt.npz"
    common = ["--train", runs["train"], "--queries", runs["q"], "--subsets", "2", "--out", out,
              "--device", "cpu", "-q"]  # fmt: skip
    code, _, err = run_cli("evaluate", "retrain", "--same-run", runs["base"], *common,
                           "--shard", "0/2")  # fmt: skip
    assert code == 0, err
    # Another run of the same model, data, recipe and steps (only its precision differs):
    # the parts used to record just those, and merged.
    twin = _copy(runs["base"], tmp_path / "twin")
    meta = json.loads((twin / "run.json").read_text())
    meta["dtype"] = "float64"
    (twin / "run.json").write_text(json.dumps(meta))
    code, _, err = run_cli("evaluate", "retrain", "--same-run", twin, *common, "--shard", "1/2")
    _assert_one_line_error(code, err, "other settings")


FLAGS = {
    "--seed -1": (["--seed", "-1"], "--seed"),
    "--epochs 1e8": (["--epochs", "100000000"], "--epochs"),
    "--memory-gb 0": (["--memory-gb", "0"], "--memory-gb"),
    "--memory-gb -1": (["--memory-gb", "-1"], "--memory-gb"),
    "--lr 1e30": (["--lr", "1e30"], "diverged"),
}


@pytest.mark.parametrize("case", list(FLAGS))
def test_train_flags_are_checked_before_work_and_leave_nothing(runs, tmp_path, case):
    extra, phrase = FLAGS[case]
    out = tmp_path / "run"
    code, _, err = run_cli(
        "train", "--model", runs["model"], "--data", runs["data"], "--out", out, *RUN, *extra
    )
    _assert_one_line_error(code, err, phrase)
    assert not out.exists()


def test_other_misused_flags_are_one_line(runs, tmp_path, gpt2_dir, text_data):
    cases = [
        (["train", "--model", gpt2_dir, "--data", text_data, "--out", tmp_path / "r",
          "--max-length", "0"], "--max-length"),
        (["train", "--check", runs["base"], "--out", tmp_path / "r"], "drop --out"),
        (["evaluate", "retrain", "--train", runs["train"], "--queries", runs["q"],
          "--start-from", tmp_path / "missing", "--out", tmp_path / "gt.npz"], "--start-from"),
        (["evaluate", "retrain", "--train", runs["train"], "--queries", runs["q"],
          "--out", runs["base"] / "gt.npz"], "a folder attrib manages"),
        (["magic", "--run", runs["base"], "--queries", runs["q"], "--memory-gb", "0"],
         "--memory-gb"),
    ]  # fmt: skip
    for argv, phrase in cases:
        _assert_one_line_error(*run_cli(*argv)[::2], phrase)


def test_one_writer_per_run_folder(runs, tmp_path):
    """A second `attrib train` into a folder another process is writing is refused."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from attrib.store.lock import lock_store; "
         f"lock_store({str(out)!r}, True); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_cli(
            "train", "--model", runs["model"], "--data", runs["data"], "--out", out, *RUN
        )
        _assert_one_line_error(code, err, "in use by")
    finally:
        holder.communicate("")
