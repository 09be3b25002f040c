"""Peak memory of score, learn-weights and evaluate lds on a store larger than --memory-gb.

    python benchmarks/memory_budget.py [--n 4096] [--modules 16] [--dim 4096] [--budget 0.25]

A float32 store of N x (modules x dim) features (1 GiB by default) and a query store of Q
rows are generated; each command runs through the CLI (`attrib ...`, the entry point users
type, with its defaults) in a fresh process under `/usr/bin/time`, once with the default
budget (6 GiB, everything that fits held whole) and once with `--budget`. The table gives peak
RSS, the same minus the start-up constant (the same command on a 64-row store: interpreter,
torch, pyarrow), and whether the results equal the default run's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.store.arrays import write_generated
from attrib.weights.artifact import load_weights

ATTRIB = [str(Path(sys.executable).with_name("attrib"))]  # the console script users run


def make_store(path: Path, n: int, modules: int, dim: int, seed: int) -> Path:
    names = {f"layer.{i}": dim for i in range(modules)}

    def rows(start, end):
        rng = np.random.default_rng([seed, start])
        features = {name: rng.standard_normal((end - start, dim), np.float32) for name in names}
        return features, {}

    return write_generated(path, names, n, rows, shard_size=1024)


def run(args: list) -> tuple[float, float, str]:
    """(peak RSS in GiB, wall seconds, stdout) of one CLI run in a fresh process."""
    command = ["/usr/bin/time", "-f", "%M", *ATTRIB, *map(str, args)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{done.stderr}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return peak_kib / 2**20, wall, done.stdout


def commands(train: Path, queries: Path, truth: Path, out: Path, budget: str) -> dict:
    common = ["-t", train, "--queries", queries, "--memory-gb", budget]
    return {
        "score": ["score", *common, "--method", "tracin", "--out", out / "scores.npy"],
        "learn-weights": [
            "learn-weights",
            *common,
            "--method",
            "tracin",
            "--epochs",
            "1",
            "--out",
            out / "w.safetensors",
        ],
        "evaluate lds": [
            "evaluate",
            "lds",
            *common,
            "--method",
            "tracin",
            "--groundtruth",
            truth,
            "--format",
            "jsonl",
        ],
    }


def result(name: str, out: Path, stdout: str):
    if name == "score":
        return np.load(out / "scores.npy")
    if name == "learn-weights":
        return load_weights(out / "w.safetensors").weights
    return np.array([json.loads(line)["lds"] for line in stdout.splitlines()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--modules", type=int, default=16)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--budget", default="0.25")
    args = parser.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = make_store(root / "train", args.n, args.modules, args.dim, 0)
        queries = make_store(root / "queries", args.queries, args.modules, args.dim, 1)
        tiny = make_store(root / "tiny", 64, args.modules, args.dim, 2)
        rng = np.random.default_rng(0)
        masks = (rng.random((20, args.n)) < 0.5).astype(np.float32)
        truth = root / "gt.npz"
        save_groundtruth(truth, GroundTruth(masks, rng.standard_normal((20, args.queries)), True))
        tiny_truth = root / "tiny.npz"
        save_groundtruth(
            tiny_truth, GroundTruth(masks[:, :64], rng.standard_normal((20, args.queries)), True)
        )
        store_gib = args.n * args.modules * args.dim * 4 / 2**30
        table = Table(
            title=f"Peak RSS, store of {store_gib:.2f} GiB ({args.n} x {args.modules * args.dim}),"
            f" {args.queries} queries"
        )
        for column in ("command", "--memory-gb", "peak RSS GiB", "minus start-up", "s", "same"):
            table.add_column(column)
        for name in ("score", "learn-weights", "evaluate lds"):
            (root / "base").mkdir(exist_ok=True)
            base_cmd = commands(tiny, queries, tiny_truth, root / "base", "6")[name]
            constant, _, _ = run(base_cmd)
            reference = None
            for budget in ("6", args.budget):
                out = root / f"out-{budget}"
                out.mkdir(exist_ok=True)
                peak, wall, stdout = run(commands(train, queries, truth, out, budget)[name])
                value = result(name, out, stdout)
                same = "reference"
                if reference is None:
                    reference = value
                else:
                    same = str(np.allclose(value, reference, rtol=1e-5, atol=1e-6))
                console.print(f"{name} --memory-gb {budget}: {peak:.2f} GiB, {wall:.1f} s")
                table.add_row(
                    name,
                    budget,
                    f"{peak:.2f}",
                    f"{peak - constant:.2f}",
                    f"{wall:.1f}",
                    same,
                )
            table.add_row(name, "(64-row store)", f"{constant:.2f}", "", "", "start-up")
        console.print(table)


if __name__ == "__main__":
    main()
