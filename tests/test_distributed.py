"""Two CPU processes (gloo) write the same store as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
