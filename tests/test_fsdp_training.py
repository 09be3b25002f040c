"""`--fsdp` training: each model sharded over 2 processes (FSDP2 on gloo). `evaluate retrain
--fsdp` gives the ground truth of one unsharded process, bitwise, for random subsets and for
the same-run replay of a recorded run, and its parts resume without the launch; `train
--fsdp` records the run one process records. Without a launch it is refused before anything
is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from test_cli_errors import _assert_one_line_error

ATTRIB = str(Path(sys.executable).parent / "attrib")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]


def _attrib(*args, launch: bool = False) -> subprocess.CompletedProcess:
    command = [*TORCHRUN, "--no-python", "--"] if launch else []
    result = subprocess.run(
        [*command, ATTRIB, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory, gpt2_dir, text_data):
    """A GPT-2 run `attrib train` recorded, its training store and 3 query rows."""
    root = tmp_path_factory.mktemp("fsdp")
    _attrib("train", "--model", gpt2_dir, "--data", text_data, "--out", root / "run",
            "--batch-size", "4", "--epochs", "1", "--device", "cpu", "-q")  # fmt: skip
    for name, extra in (("train", []), ("q", ["--max-examples", "3"])):
        _attrib("featurize", "--model", root / "run" / "model", "--data", text_data, "--out",
                root / name, "--proj-dim", "4", "--device", "cpu", "-q", *extra)  # fmt: skip
    return root


def _truth(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("kind", ["subsets", "same-run"])
def test_fsdp_retrain_equals_one_unsharded_process(gpt2_run, gpt2_dir, tmp_path, kind):
    args = ["evaluate", "retrain", "--train", gpt2_run / "train", "--queries", gpt2_run / "q"]
    args += ["--subsets", "2", "--device", "cpu"]
    if kind == "subsets":  # from the model the run started from: loaded into the shards
        args += ["--epochs", "1", "--batch-size", "4", "--lr", "1e-2", "--start-from", gpt2_dir]
    else:
        args += ["--same-run", gpt2_run / "run"]
    _attrib(*args, "--out", tmp_path / "one.npz", "-q")
    sharded = _attrib(*args, "--out", tmp_path / "two.npz", "--fsdp", launch=True)
    assert "3 FSDP units; this process holds" in sharded.stderr  # really sharded
    one, two = _truth(tmp_path / "one.npz"), _truth(tmp_path / "two.npz")
    assert np.array_equal(one["masks"], two["masks"])
    assert np.array_equal(one["outputs"], two["outputs"])  # the same models: equal, not close
    assert not np.array_equal(two["outputs"][0], two["outputs"][1])  # the subsets differ
    assert json.loads(str(two["made_by"])) == {"processes": 2, "fsdp": True}
    parts = sorted((tmp_path / "two.npz.parts").glob("subset-*.npy"))
    assert len(parts) == 2
    # The sharded launch's parts resume under one unsharded process: only subset 1 retrains.
    parts[1].unlink()
    (tmp_path / "two.npz").unlink()
    _attrib(*args, "--out", tmp_path / "two.npz", "-q")
    assert np.array_equal(_truth(tmp_path / "two.npz")["outputs"], one["outputs"])


def test_fsdp_is_refused_without_a_launch_or_from_scratch(gpt2_run, text_data, tmp_path):
    base = ["evaluate", "retrain", "--train", gpt2_run / "train", "--queries", gpt2_run / "q"]
    out = tmp_path / "gt.npz"
    code, _, err = run_cli(*base, "--out", out, "--fsdp", "--device", "cpu")
    _assert_one_line_error(code, err, "start 2 or more with torchrun")
    code, _, err = run_cli(*base, "--out", out, "--fsdp", "--init", "scratch")
    _assert_one_line_error(code, err, "--fsdp retrains from the checkpoint")
    train = ["train", "--model", gpt2_run / "run" / "model", "--data", text_data]
    code, _, err = run_cli(*train, "--out", tmp_path / "run", "--fsdp", "--device", "cpu")
    _assert_one_line_error(code, err, "start 2 or more with torchrun")
    code, _, err = run_cli("train", "--check", gpt2_run / "run", "--fsdp")
    _assert_one_line_error(code, err, "drop --fsdp")
    assert not list(tmp_path.iterdir())  # nothing written, not even the parts folder


def test_fsdp_train_records_the_unsharded_run(gpt2_run, gpt2_dir, text_data, tmp_path):
    """`train --fsdp` over 2 processes writes the run one process writes: every snapshot,
    the checkpoint and the batches bitwise; one unsharded process then replays it."""
    from safetensors.numpy import load_file

    args = ["train", "--model", gpt2_dir, "--data", text_data, "--batch-size", "4"]
    args += ["--epochs", "1", "--device", "cpu"]
    launched = _attrib(*args, "--out", tmp_path / "run", "--fsdp", launch=True)
    assert launched.stdout.split() == [str(tmp_path / "run")]  # said once, not per process
    one, two = gpt2_run / "run", tmp_path / "run"
    files = sorted(p.relative_to(one) for p in one.rglob("*.safetensors"))
    assert any(str(f).startswith("snapshots") for f in files) and Path("model") in {
        f.parent for f in files
    }
    for name in files:
        a, b = load_file(one / name), load_file(two / name)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a), name
    for key in ("rows", "offsets"):
        assert np.array_equal(np.load(one / "batches.npz")[key], np.load(two / "batches.npz")[key])
    made = json.loads((two / "run.json").read_text())
    assert made["complete"] and made["environment"]["processes"] == 2
    checked = _attrib("train", "--check", two, "--device", "cpu", "-q")  # stdout is a pipe
    assert json.loads(checked.stdout)["identical"] is True


def test_fsdp_train_refuses_a_node_started_with_another_recipe(gpt2_dir, text_data, tmp_path):
    from test_two_nodes import two_nodes

    args = ["train", "--model", gpt2_dir, "--data", text_data, "--out", tmp_path / "run"]
    args += ["--batch-size", "4", "--device", "cpu", "--fsdp"]
    _, err = two_nodes(*args, expect=2, node_args={1: [*args, "--lr", "1e-2"]})
    assert "was given other run settings (model, data or recipe) than process 0" in err
    assert not (tmp_path / "run").exists()
