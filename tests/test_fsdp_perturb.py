"""`perturb --fsdp`: each perturbed copy sharded over 2 processes (FSDP2 on gloo) is the copy
one unsharded process trains, bitwise: its weights, its recorded outputs and the output
stores. Copies saved by a sharded launch reload sharded for new --queries (GPT-2's tied
embedding included) and resume in one process. Without a launch it is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from safetensors.numpy import load_file
from test_cli_errors import _assert_one_line_error
from test_fsdp_training import _attrib

from attrib.store import Store
from attrib.store.lock import unlock_store

FLAGS = ["--copies", "2", "--batch-size", "8", "--lr", "1e-2", "--device", "cpu"]


@pytest.fixture(scope="module")
def gpt2_stores(tmp_path_factory, gpt2_dir, text_data):
    """The tiny GPT-2's training store and two query stores (3 and 5 rows)."""
    root = tmp_path_factory.mktemp("fsdp-perturb")
    sizes = {"train": [], "q": ["--max-examples", "3"], "q2": ["--max-examples", "5"]}
    for name, extra in sizes.items():
        _attrib("featurize", "--model", gpt2_dir, "--data", text_data, "--out", root / name,
                "--proj-dim", "4", "--device", "cpu", "-q", *extra)  # fmt: skip
    return root


def _copies(out: Path) -> dict:
    """Every copy's saved weights and recorded outputs, by file."""
    found = {}
    for path in sorted((out / "copies").rglob("*")):
        if path.suffix == ".npy":
            found[path.relative_to(out)] = {"values": np.load(path)}
        elif path.suffix == ".safetensors":
            found[path.relative_to(out)] = load_file(path)
    return found


def _rows(path: Path) -> np.ndarray:
    """An output store's rows; its read lock is released (a reader holds it for the rest
    of the process), since a later perturb into the same --out rewrites the store."""
    rows = Store(path).matrix("copies")
    unlock_store(path)
    return rows


def _assert_same_copies(one: Path, two: Path) -> None:
    a, b = _copies(one), _copies(two)
    assert a.keys() == b.keys() and any(p.suffix == ".safetensors" for p in a)
    for name in a:
        assert a[name].keys() == b[name].keys()
        assert all(np.array_equal(a[name][k], b[name][k]) for k in a[name]), name


def test_fsdp_perturb_equals_one_unsharded_process(gpt2_stores, tmp_path):
    train, q, q2 = (gpt2_stores / n for n in ("train", "q", "q2"))
    args = ["perturb", "--train", train, "--queries", q, *FLAGS]  # white-box: hessian
    _attrib(*args, "--out", tmp_path / "one", "-q")
    sharded = _attrib(*args, "--out", tmp_path / "two", "--fsdp", launch=True)
    assert "3 FSDP units; this process holds" in sharded.stderr  # really sharded
    assert sharded.stdout.split() == [str(tmp_path / "two" / n) for n in ("train", "q")]
    _assert_same_copies(tmp_path / "one", tmp_path / "two")
    for name in ("train", "q"):
        assert np.array_equal(_rows(tmp_path / "one" / name), _rows(tmp_path / "two" / name))
        manifest = json.loads((tmp_path / "two" / name / "manifest.json").read_text())
        assert manifest["world_size"] == 2 and manifest["fsdp"] is True
    # New queries: the sharded launch reloads each saved copy into its shards.
    more = [*args[: -len(FLAGS)], "--queries", q2, *FLAGS]
    _attrib(*more, "--out", tmp_path / "one", "-q")
    _attrib(*more, "--out", tmp_path / "two", "--fsdp", "-q", launch=True)
    _assert_same_copies(tmp_path / "one", tmp_path / "two")
    # A sharded launch's copies resume in one unsharded process: only copy 1 trains again.
    (tmp_path / "two" / "copies" / "copy-00001" / "outputs" / "train.npy").unlink()
    _attrib(*more, "--out", tmp_path / "two", "-q")
    _assert_same_copies(tmp_path / "one", tmp_path / "two")


def test_fsdp_perturb_is_refused_without_a_launch_or_from_scratch(gpt2_stores, tmp_path):
    base = ["perturb", "--train", gpt2_stores / "train", "--out", tmp_path / "copies", *FLAGS]
    code, _, err = run_cli(*base, "--fsdp")
    _assert_one_line_error(code, err, "start 2 or more with torchrun")
    code, _, err = run_cli(*base, "--fsdp", "--init", "scratch", "--black-box")
    _assert_one_line_error(code, err, "--fsdp trains each copy from the checkpoint")
    assert not list(tmp_path.iterdir())  # nothing written


def test_fsdp_perturb_trains_a_lora_adapter_as_one_process(gpt2_dir, text_data, tmp_path):
    """Copies of a LoRA adapter (the case FSDP is for: a large base, a small adapter) are one
    process's, bitwise, and reload into the sharded model for new queries (peft's own loader
    cannot: it writes whole tensors)."""
    from builders import save_lora_adapter

    adapter = save_lora_adapter(gpt2_dir, tmp_path / "adapter", ["c_attn"])
    for name, extra in (("train", []), ("q", ["--max-examples", "3"])):
        flags = ["--adapter", adapter, "--proj-dim", "4", "--device", "cpu", "-q", *extra]
        _attrib("featurize", "--model", gpt2_dir, "--data", text_data, "--out", tmp_path / name,
                *flags)  # fmt: skip
    args = ["perturb", "--train", tmp_path / "train", *FLAGS, "-q"]
    _attrib(*args, "--out", tmp_path / "one")
    _attrib(*args, "--out", tmp_path / "two", "--fsdp", launch=True)
    _assert_same_copies(tmp_path / "one", tmp_path / "two")
    assert (tmp_path / "two" / "copies" / "copy-00000" / "model" / "adapter_config.json").is_file()
    more = [*args, "--queries", tmp_path / "q"]
    _attrib(*more, "--out", tmp_path / "one")
    _attrib(*more, "--out", tmp_path / "two", "--fsdp", launch=True)
    _assert_same_copies(tmp_path / "one", tmp_path / "two")
    assert len(list((tmp_path / "two" / "copies").glob("*/outputs/queries-*.npy"))) == 2
