"""`magic --fsdp`: the metagradient of a run whose weights, optimizer state and queries'
adjoints are sharded over 2 processes (gloo), each transformer block's weights gathered
inside the step's graph as it runs and gathered again for backward (training/gathered.py).
Its scores are one process's within float rounding; the blocks it writes resume in one
process; without a launch it is refused in one line."""

from __future__ import annotations

import json

import numpy as np
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_fsdp_training import _attrib, gpt2_run  # noqa: F401 (a fixture)


def test_fsdp_magic_equals_one_unsharded_process(gpt2_run, tmp_path):  # noqa: F811
    args = ["magic", "--run", gpt2_run / "run", "--queries", gpt2_run / "q", "--block", "2"]
    args += ["--device", "cpu", "--format", "jsonl"]
    one = _attrib(*args, "--out", tmp_path / "one.npy", "--cache", tmp_path / "c1", "-q")
    sharded = [*args, "--out", tmp_path / "two.npy", "--cache", tmp_path / "c2", "--fsdp"]
    two = _attrib(*sharded, launch=True)
    assert "3 units gathered as they run; this process holds" in two.stderr  # really sharded
    want, got = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    # float32 steps: the sharded reverse pass runs one query's backward at a time, the
    # unsharded one vectorized over the block (about 1e-7 of the largest score here).
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
    made_by = json.loads((tmp_path / "two.npy.json").read_text())["made_by"]
    assert made_by == {"processes": 2, "fsdp": True}
    ranked = [json.loads(line)["index"] for line in two.stdout.splitlines()]
    assert ranked == [json.loads(line)["index"] for line in one.stdout.splitlines()]

    # The blocks the launch wrote (once: by its main process) resume in one process.
    blocks = sorted((tmp_path / "c2").rglob("queries-*.npy"))
    assert len(blocks) == 2  # 3 queries in blocks of 2
    blocks[1].unlink()
    (tmp_path / "two.npy").unlink()
    resumed = _attrib(*sharded[:-1])
    assert "resuming: 1 of 2 query blocks kept" in resumed.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "two.npy"), got, rtol=0, atol=2e-6 * np.abs(want).max()
    )


def test_fsdp_magic_is_refused_without_a_launch(gpt2_run, tmp_path):  # noqa: F811
    code, _, err = run_cli(
        "magic", "--run", gpt2_run / "run", "--queries", gpt2_run / "q", "--device", "cpu",
        "--out", tmp_path / "m.npy", "--fsdp",
    )  # fmt: skip
    _assert_one_line_error(code, err, "start 2 or more with torchrun")
    assert not (tmp_path / "m.npy").exists()
