"""Two nodes simulated on one machine: two torchrun agents meet through a c10d rendezvous on
localhost (gloo, one process each), as two machines of a cluster would. Every stage gives the
answer of one process: stores and ground truths bitwise, scores and magic (sharded too)
within float rounding; a kernel is fitted once per launch; a launch whose nodes were given
different work is refused on both; parts made by two nodes resume under one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attrib.execution import ArrayTask, Execution

ATTRIB = str(Path(sys.executable).parent / "attrib")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _agent(port: int, args: list) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "nodes",
        # "--": torchrun's parser would take `magic --run` for an abbreviation of its --run-path
        "--no-python", "--", ATTRIB, *[str(a) for a in args],
    ]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def two_nodes(*args, expect: int = 0, node_args=None) -> tuple[str, str]:
    """Run `attrib ARGS` on two simulated nodes; (both stdouts, both stderrs) joined.
    `node_args`: per node, arguments that replace ARGS (a mismatched launch)."""
    port = _free_port()
    agents = [_agent(port, (node_args or {}).get(n, list(args))) for n in range(2)]
    outs = [agent.communicate(timeout=300) for agent in agents]
    codes = [agent.returncode for agent in agents]
    err = "\n".join(e for _, e in outs)
    assert all((c == 0) == (expect == 0) for c in codes), f"{codes}\n{err[-4000:]}"
    return "".join(o for o, _ in outs), err


def one_process(*args) -> str:
    result = subprocess.run(
        [ATTRIB, *[str(a) for a in args]], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


FEATURIZE = ["--shard-size", "4", "--batch-size", "3", "--proj-dim", "4", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, resnet_dir, image_data):
    """A run `attrib train` recorded (one epoch of 24 images), its training store, 3 queries."""
    root = tmp_path_factory.mktemp("nodes")
    run = root / "run"
    one_process(
        "train", "--model", resnet_dir, "--data", image_data, "--out", run,
        "--batch-size", "8", "--epochs", "1", "--device", "cpu", "-q",
    )  # fmt: skip
    for name, extra in (("train", []), ("q", ["--max-examples", "3"])):
        one_process(
            "featurize", "--model", run / "model", "--data", image_data, "--out", root / name,
            *FEATURIZE, *extra,
        )  # fmt: skip
    return root


def test_workers_cover_every_unit_once():
    from attrib.distributed import Runtime

    for world in (1, 2, 3):
        for count in (1, 2, 3):
            seen = []
            for index in range(count):
                for rank in range(world):
                    runtime = Runtime("cpu", rank, world)
                    seen += Execution(runtime, ArrayTask(index, count)).mine(range(17))
            assert sorted(seen) == list(range(17))


def test_featurize_and_score_on_two_nodes_equal_one_process(recorded, image_data, tmp_path):
    model = recorded / "run" / "model"
    two_nodes(
        "featurize", "--model", model, "--data", image_data, "--out", tmp_path / "two", *FEATURIZE
    )
    two, one = tmp_path / "two", recorded / "train"
    assert json.loads((two / "manifest.json").read_text())["world_size"] == 2
    names = sorted(p.name for p in (one / "shards").iterdir())
    assert names == sorted(p.name for p in (two / "shards").iterdir())
    for name in names:  # the same rows, batches and threads: the same bytes
        assert (two / "shards" / name).read_bytes() == (one / "shards" / name).read_bytes()

    score = ["score", "--queries", recorded / "q", "--method", "trak-block", "--top", "5"]
    dense = ["--format", "jsonl", "--device", "cpu", "--out"]
    stdout, err = two_nodes(*score, "-t", two, *dense, tmp_path / "two.npy")
    assert err.count("computing the block kernel") == 1  # fitted once, read by the other
    expected = one_process(*score, "-t", one, *dense, tmp_path / "one.npy")
    made = json.loads((tmp_path / "two.npy.json").read_text())
    assert made["made_by"] == {"processes": 2} and made["method"] == "trak-block"
    assert json.loads((tmp_path / "one.npy.json").read_text())["made_by"] == {"processes": 1}
    assert made["shape"] == list(np.load(tmp_path / "two.npy").shape)
    got = [json.loads(line) for line in stdout.splitlines()]
    want = [json.loads(line) for line in expected.splitlines()]
    assert [(r["query"], r["index"]) for r in got] == [(r["query"], r["index"]) for r in want]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], rtol=1e-5)


def _truth(path: Path) -> dict:
    with np.load(path) as truth:
        return {k: truth[k] for k in truth.files}


def test_ground_truths_and_magic_on_two_nodes_equal_one_process(recorded, tmp_path):
    both = ["--train", recorded / "train", "--queries", recorded / "q", "--device", "cpu", "-q"]
    retrain = ["evaluate", "retrain", *both, "--subsets", "4", "--alpha", "0.5", "--epochs", "1"]
    one_process(*retrain, "--out", tmp_path / "one.npz")
    two_nodes(*retrain, "--out", tmp_path / "two.npz")
    one, two = _truth(tmp_path / "one.npz"), _truth(tmp_path / "two.npz")
    for key in ("masks", "outputs"):
        assert np.array_equal(one[key], two[key]), key
    assert json.loads(str(two["made_by"])) == {"processes": 2}

    # Parts two nodes made resume under one process: only the missing subset is retrained.
    parts = sorted((tmp_path / "two.npz.parts").glob("subset-*.npy"))
    assert len(parts) == 4
    parts[2].unlink()
    (tmp_path / "two.npz").unlink()
    one_process(*retrain, "--out", tmp_path / "two.npz")
    assert np.array_equal(_truth(tmp_path / "two.npz")["outputs"], one["outputs"])

    same_run = ["evaluate", "retrain", *both, "--same-run", recorded / "run", "--subsets", "3"]
    one_process(*same_run, "--out", tmp_path / "same-one.npz")
    two_nodes(*same_run, "--out", tmp_path / "same-two.npz")
    a, b = _truth(tmp_path / "same-one.npz"), _truth(tmp_path / "same-two.npz")
    assert np.array_equal(a["outputs"], b["outputs"])

    magic = ["magic", "--run", recorded / "run", "--queries", recorded / "q", "--block", "1"]
    magic += ["--device", "cpu", "--format", "jsonl", "-q"]
    expected = one_process(*magic, "--out", tmp_path / "m1.npy", "--cache", tmp_path / "c1")
    stdout, _ = two_nodes(*magic, "--out", tmp_path / "m2.npy", "--cache", tmp_path / "c2")
    assert np.array_equal(np.load(tmp_path / "m1.npy"), np.load(tmp_path / "m2.npy"))
    assert stdout == expected  # one process of the two reports, as one process would
    assert json.loads((tmp_path / "m2.npy.json").read_text())["made_by"] == {"processes": 2}

    # Sharded over the two nodes (a ResNet: BatchNorm's statistics are replicated, and their
    # adjoints split among the processes), and refused where the nodes were given other work.
    sharded = [*magic, "--out", tmp_path / "m3.npy", "--cache", tmp_path / "c3", "--fsdp"]
    two_nodes(*sharded)
    want = np.load(tmp_path / "m1.npy")
    np.testing.assert_allclose(
        np.load(tmp_path / "m3.npy"), want, rtol=0, atol=1e-5 * np.abs(want).max()
    )
    other = list(sharded)
    other[other.index("--block") + 1] = "2"
    _, err = two_nodes(*sharded, expect=2, node_args={1: other})
    assert "was given other magic settings (run, queries or options) than process 0" in err


def test_a_launch_with_different_work_per_node_is_refused(recorded, image_data, tmp_path):
    args = ["featurize", "--model", recorded / "run" / "model", "--data", image_data]
    args += ["--out", tmp_path / "s", *FEATURIZE]
    other = list(args)
    other[other.index("--proj-dim") + 1] = "8"  # the second node asks for another projection
    _, err = two_nodes(*args, expect=2, node_args={1: other})
    assert "was given other settings (model, data or options) than process 0" in err
    assert not (tmp_path / "s" / "manifest.json").exists()


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the launcher's child process with RANK=rank (read from /proc)."""
    for child in Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split():
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(child)
    return None


def test_a_killed_process_fails_the_launch_in_one_line_and_the_stage_resumes(recorded, tmp_path):
    import signal
    import time

    out = tmp_path / "gt.npz"
    retrain = ["evaluate", "retrain", "--train", recorded / "train", "--queries", recorded / "q"]
    retrain += ["--subsets", "8", "--epochs", "150", "--device", "cpu", "-q"]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--no-python",
         "--", ATTRIB, *map(str, retrain), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    parts = Path(f"{out}.parts")
    deadline = time.monotonic() + 120
    while not list(parts.glob("subset-*.npy")) and launcher.poll() is None:
        assert time.monotonic() < deadline, "no subset finished in 2 minutes"
        time.sleep(0.1)  # polling for the first finished unit, not timing anything
    victim = _rank_pid(launcher.pid, 1)
    assert victim is not None and launcher.poll() is None
    os.kill(victim, signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: process 0 of 2 was stopped by its launcher (another process failed or the job "
        "was cancelled; the launcher's summary names it); run the same command again to resume "
        "(finished work is kept)"
    ]
    assert "Signal 9 (SIGKILL)" in err  # torchrun's summary names the killed process
    kept = len(list(parts.glob("subset-*.npy")))
    assert 1 <= kept < 8 and not out.exists()
    one_process(*retrain, "--out", out)  # the same command, now one process: the rest
    one_process(*retrain, "--out", tmp_path / "whole.npz")
    assert np.array_equal(_truth(out)["outputs"], _truth(tmp_path / "whole.npz")["outputs"])


def test_a_collective_broken_by_a_lost_peer_is_one_line(monkeypatch):
    import torch.distributed as dist

    from attrib.distributed import lost_peer_message

    broken = dist.DistNetworkError("Connection closed by peer [127.0.0.1]:4242\nmore detail")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert lost_peer_message(broken) is None  # one process has no peer to lose
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert lost_peer_message(broken) == (
        "process 1 of 2 lost another process of its launch (Connection closed by peer "
        "[127.0.0.1]:4242); the launcher's summary names it; run the same command again to "
        "resume (finished work is kept)"
    )
    assert lost_peer_message(RuntimeError("[gloo] Connection reset by peer")) is not None
    assert lost_peer_message(ValueError("a bug")) is None  # anything else keeps its traceback
