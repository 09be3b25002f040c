"""Scoring streams module by module and across processes: the module-by-module product equals
the dense definition; two processes (torchrun, gloo) give exactly the top-k and the dense
matrix of one; a float16 store scores like its float32 values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attrib.methods import get_method
from attrib.score.stream import score
from attrib.store import Store
from attrib.store.arrays import write_arrays

ATTRIB = str(Path(sys.executable).parent / "attrib")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def _stores(tmp_path, dtype="float32"):
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((45, 12)).astype(np.float32)  # 6 shards of 8: ranks unequal
    g = rng.standard_normal((5, 12)).astype(np.float32)
    scalars = {"out_to_loss": rng.uniform(0.5, 1.5, 45).astype(np.float32)}
    split = {"a": slice(0, 5), "b": slice(5, 12)}
    train = write_arrays(
        tmp_path / f"train-{dtype}",
        {k: phi[:, s] for k, s in split.items()},
        scalars,
        shard_size=8,
        store_dtype=dtype,
    )
    queries = write_arrays(tmp_path / "queries", {k: g[:, s] for k, s in split.items()})
    return train, queries, phi, g, scalars["out_to_loss"]


@pytest.mark.parametrize("method", ["tracin", "trak-block", "cosine"])
def test_streamed_scores_equal_the_dense_definition(tmp_path, method):
    train, queries, phi, g, out_to_loss = _stores(tmp_path)
    store = Store(train)
    prepared = get_method(method, store).prepare()
    top = score(store, prepared, torch.from_numpy(g), 45)
    phi_t = torch.from_numpy(phi)
    expected = prepared.query_vectors(torch.from_numpy(g), None) @ phi_t.T
    if method == "trak-block":
        expected *= torch.from_numpy(out_to_loss)
    if method == "cosine":
        expected /= phi_t.norm(dim=1)
    dense = np.zeros((5, 45), np.float32)
    np.put_along_axis(dense, top.positions.numpy(), top.scores.numpy(), 1)
    np.testing.assert_allclose(dense, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_float16_store_scores_its_values_in_float32(tmp_path):
    train, queries, phi, g, _ = _stores(tmp_path, "float16")
    store = Store(train)
    top = score(store, get_method("tracin", store), torch.from_numpy(g), 45)
    rounded = phi.astype(np.float16).astype(np.float32)
    dense = np.zeros((5, 45), np.float32)
    np.put_along_axis(dense, top.positions.numpy(), top.scores.numpy(), 1)
    np.testing.assert_allclose(dense, g @ rounded.T, rtol=1e-5, atol=1e-5)


def _score_cli(train, queries, out, method, launcher=()):
    command = [*launcher, ATTRIB, "score", "-t", str(train), "--queries", str(queries)]
    command += ["--method", method, "--top", "7", "--out", str(out), "--device", "cpu"]
    command += ["--format", "jsonl", "--no-preview"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("method", ["trak-block", "cosine"])
def test_two_processes_score_exactly_as_one(tmp_path, method):
    train, queries, *_ = _stores(tmp_path)
    one = _score_cli(train, queries, tmp_path / "one.npy", method)
    two = _score_cli(train, queries, tmp_path / "two.npy", method, TORCHRUN)
    assert len(one) == 5 * 7 and two == one  # rank 0 alone prints the merged top-k
    np.testing.assert_array_equal(np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"))
    assert not list(tmp_path.glob(".*part*"))  # the temporary matrix was renamed into place
