"""Two CPU processes (gloo) write the same store as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attrib.store import Store

ATTRIB = str(Path(sys.executable).parent / "attrib")
LAUNCHERS = {
    # Without GPUs accelerate needs --multi_gpu to start N processes; attrib then uses gloo.
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch"]
    + "--multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no".split()
    + "--dynamo_backend no".split(),
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"],
}
OPTIONS = "--shard-size 4 --batch-size 3 --proj-dim 4 --device cpu -q".split()


def _featurize(model, data, out, launcher=None, method="trak"):
    args = [
        "featurize",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out,
        "--method",
        method,
        *OPTIONS,
    ]
    args = [str(a) for a in args]
    command = [*LAUNCHERS[launcher], ATTRIB, *args] if launcher else [ATTRIB, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return Store(out)


@pytest.mark.parametrize("launcher, method", [("accelerate", "trak"), ("torchrun", "ekfac")])
def test_two_processes_equal_one(tmp_path, resnet_dir, image_data, launcher, method):
    one = _featurize(resnet_dir, image_data, tmp_path / "one", method=method)
    two = _featurize(resnet_dir, image_data, tmp_path / "two", launcher, method)
    assert two.manifest["world_size"] == 2  # really two ranks
    assert one.manifest["world_size"] == 1
    assert [(s.start, s.end) for s in two.shards] == [(s.start, s.end) for s in one.shards]
    np.testing.assert_array_equal(two.column("index"), one.column("index"))
    for name in one.module_names + ["loss", "out_to_loss"]:
        a = one.matrix(name) if name in one.module_names else one.column(name)
        b = two.matrix(name) if name in one.module_names else two.column(name)
        # Same shards, same batches, one thread each: equal up to float16 rounding.
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3 * np.abs(a).max())
    if method == "ekfac":  # Kronecker factors, summed over shards, agree too
        from attrib.store.factors import total_factors

        f1, f2 = total_factors(one), total_factors(two)
        assert set(f1) == set(f2) == set(one.module_names)
        for name in f1:
            np.testing.assert_allclose(f2[name].a.numpy(), f1[name].a.numpy(), rtol=1e-5)
            np.testing.assert_allclose(f2[name].s.numpy(), f1[name].s.numpy(), rtol=1e-5)
            assert f2[name].a_count == f1[name].a_count


def test_fsdp_sharded_featurize_writes_the_unsharded_store(tmp_path, gpt2_dir, text_data):
    """--fsdp: GPT-2's blocks and root sharded over 2 processes (FSDP2 on gloo), 5 shards of
    8 rows so one process runs discarded batches to keep the collectives in step."""
    base = ["--model", gpt2_dir, "--data", text_data, "--method", "ekfac", "--proj-dim", "4"]
    base += ["--shard-size", "8", "--batch-size", "3", "--store-dtype", "float32"]
    base += ["--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [ATTRIB, "featurize", *map(str, base), "--out", str(tmp_path / "one"), "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [*LAUNCHERS["torchrun"], "--no-python", "--", ATTRIB, "featurize", *map(str, base)]
        + ["--out", str(tmp_path / "two"), "--fsdp"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert "3 FSDP units; this process holds 0.07 of 0.14 MiB" in two.stderr  # really sharded
    a, b = Store(tmp_path / "one"), Store(tmp_path / "two")
    assert b.manifest["world_size"] == 2
    for name in a.module_names:  # the gathered weights are the weights: equal, not close
        np.testing.assert_array_equal(b.matrix(name), a.matrix(name))
    np.testing.assert_array_equal(b.column("loss"), a.column("loss"))
    from attrib.store.factors import total_factors

    fa, fb = total_factors(a), total_factors(b)
    for name in fa:
        assert torch.equal(fa[name].a, fb[name].a) and torch.equal(fa[name].s, fb[name].s)


def test_fsdp_needs_a_launch(tmp_path, gpt2_dir, text_data):
    from helpers import run_cli
    from test_cli_errors import _assert_one_line_error

    out = tmp_path / "s"
    code, _, err = run_cli(
        "featurize", "--model", gpt2_dir, "--data", text_data, "--out", out, "--fsdp"
    )
    _assert_one_line_error(code, err, "start 2 or more with torchrun")
    assert not out.exists()
