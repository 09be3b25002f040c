"""learn-weights time and peak memory on synthetic stores.

    python benchmarks/learn_weights_speed.py [--skip-large]

Rows: 500 queries x 5,000 training examples x 128 groups (target: under 30 s on a 2-core
CPU) and 1,000 x 50,000 x 256 (target: completes within 24 GiB; its contributions, 51 GB in
float32, do not fit, so they are computed in chunks under the memory budget). Each row runs
`attrib learn-weights` (trak-block, k = 20, 10 epochs) in a fresh process, timed end to end
including reading the stores, the kernel and the contributions, with its peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from attrib.store.arrays import write_generated


def make(path: Path, n: int, groups: int, dim: int, seed: int) -> Path:
    names = {f"block.{i // 8}.module.{i % 8}": dim for i in range(groups)}

    def rows(start, end):
        rng = np.random.default_rng(seed * 1_000_003 + start)
        return {k: rng.standard_normal((end - start, dim), np.float32) for k in names}, {}

    return write_generated(path, names, n, rows, shard_size=4096, store_dtype="float16")


def run(train: Path, queries: Path, out: Path, memory_gb: float) -> tuple[float, float]:
    command = [
        sys.executable,
        "-c",
        "from attrib_cli.app import main; main()",
        "learn-weights",
        "--train",
        str(train),
        "--queries",
        str(queries),
        "--out",
        str(out),
        "--method",
        "trak-block",
        "--k",
        "20",
        "--memory-gb",
        str(memory_gb),
        "-q",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # GiB, max over runs
    return seconds, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="only the 500 x 5,000 row")
    parser.add_argument("--dim", type=int, default=16, help="features per group")
    args = parser.parse_args()
    cases = [(500, 5_000, 128, 6.0)]
    if not args.skip_large:
        cases.append((1_000, 50_000, 256, 6.0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for q, n, m, memory in cases:
            root = Path(tmp) / f"{q}-{n}-{m}"
            train = make(root / "train", n, m, args.dim, seed=1)
            queries = make(root / "queries", q, m, args.dim, seed=2)
            seconds, peak = run(train, queries, root / "w.safetensors", memory)
            rows.append((q, n, m, memory, seconds, peak))
    table = Table(title=f"learn-weights (trak-block, k=20, 10 epochs, {args.dim} features/group)")
    for column in ("queries", "train", "groups", "budget GiB", "seconds", "peak RSS GiB"):
        table.add_column(column, justify="right")
    for q, n, m, memory, seconds, peak in rows:
        table.add_row(f"{q:,}", f"{n:,}", str(m), f"{memory:g}", f"{seconds:.1f}", f"{peak:.2f}")
    Console().print(table)
    print("peak RSS is the maximum over the child processes run so far", file=sys.stderr)


if __name__ == "__main__":
    main()
